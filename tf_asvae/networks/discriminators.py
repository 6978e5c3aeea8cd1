"""The (x, z) critic of AS-VAE Figs. 5-8, also AVB's T(x, z)."""

from __future__ import annotations

import keras
from keras import ops

from tf_asvae.networks.blocks import (INIT, ConvTrunk, apply, as_sizes, as_triples,
                                      check_activation, mlp_layers)

CRITIC_FORMS = ("mlp", "quadratic")


@keras.saving.register_keras_serializable(package="tf_asvae")
class JointDiscriminator(keras.layers.Layer):
    """(x [B, H, W, C], z [B, D]) -> logit [B].

    x-branch: strided convolutions + global average pooling (``x_pooling="flatten"``:
    all positions kept; with ``x_conv=()``, flatten) + ``x_mlp``; z-branch: MLP; the two are concatenated and an MLP head with
    dropout gives one logit (``form="mlp"``, the papers' joint critic).  By Lemma 1 the
    logit trained with the logistic loss estimates log p(x, z) - log q(x, z) for
    positives ~ p and negatives ~ q.

    ``form="quadratic"`` adds to that logit terms that can represent the log-ratios the
    critics stand for without saturating:

    * ``sum_d a_d(x) z_d + b_d(x) z_d^2 + c(x)``: for Gaussians q(z|x) = N(mu(x), s(x)^2)
      and p(z) = N(0, I), ``log q(z|x) - log p(z)`` is exactly of this form
      (``a = mu / s^2``, ``b = 1/2 - 1 / (2 s^2)``), and it grows quadratically in z
      where a ReLU network grows at most linearly;
    * an inner product ``<u(x), v(z)>`` of x- and z-features (the form of AVB's
      adversary on its synthetic data, Mescheder et al. 2017, Sec. 5; a Bernoulli
      ``log p(x|z)`` is an inner product of the pixels with the decoder's logits).

    a, b, c and u start at zero, so an untrained quadratic critic is the MLP critic.
    ``latent_dim`` is needed for ``form="quadratic"``.

    ``spectral_norm``: the hidden layers (convolutions and MLPs) are spectrally
    normalised (:class:`tf_asvae.networks.blocks.SpectralNorm`, Miyato et al. 2018);
    the output layers are not, so that the logit's scale stays free (a log-ratio of
    hundreds of nats must remain reachable).
    """

    def __init__(self, x_conv=(), x_mlp=(), z_mlp=(512,), joint_mlp=(512, 512),
                 batch_norm=True, dropout=0.2, activation="relu", form="mlp",
                 latent_dim=None, inner_dim=64, spectral_norm=False, x_pooling="average",
                 **kwargs):
        super().__init__(**kwargs)
        if form not in CRITIC_FORMS:
            raise ValueError(f"Unknown critic form: Received: form={form!r}. "
                             f"Expected one of {CRITIC_FORMS}.")
        if form == "quadratic" and (not isinstance(latent_dim, int) or latent_dim <= 0):
            raise ValueError("form='quadratic' needs latent_dim, a positive integer. "
                             f"Received: latent_dim={latent_dim!r}.")
        if not isinstance(inner_dim, int) or inner_dim <= 0:
            raise ValueError(f"inner_dim must be a positive integer. "
                             f"Received: inner_dim={inner_dim!r}.")
        self.x_conv = as_triples(x_conv)
        self.x_mlp = as_sizes(x_mlp)
        self.z_mlp = as_sizes(z_mlp)
        self.joint_mlp = as_sizes(joint_mlp)
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.activation = check_activation(activation)
        self.form = form
        self.latent_dim = latent_dim
        self.inner_dim = inner_dim
        self.spectral_norm = bool(spectral_norm)
        sn = self.spectral_norm
        self.x_pooling = x_pooling
        self.x_branch = ConvTrunk(self.x_conv, self.x_mlp, x_pooling, self.batch_norm, 0.0,
                                  activation, spectral_norm=sn)
        self.z_layers = mlp_layers(self.z_mlp, 0.0, activation=activation, spectral_norm=sn)
        self.joint_layers = mlp_layers(self.joint_mlp, self.dropout, activation=activation,
                                       spectral_norm=sn)
        self.logit = keras.layers.Dense(1, kernel_initializer=INIT)
        if form == "quadratic":
            width = self.joint_mlp[-1] if self.joint_mlp else 512
            self.x_coeff_layers = mlp_layers((width,), 0.0, activation=activation)
            self.linear_coeff = keras.layers.Dense(latent_dim, kernel_initializer="zeros")
            self.square_coeff = keras.layers.Dense(latent_dim, kernel_initializer="zeros")
            self.x_offset = keras.layers.Dense(1, kernel_initializer="zeros")
            self.x_inner = keras.layers.Dense(inner_dim, kernel_initializer="zeros")
            self.z_inner = keras.layers.Dense(inner_dim, kernel_initializer=INIT)

    def call(self, x, z, training=None, seed=None, groups=1):
        """``seed``/``groups``: the dropout masks' stateless seed and the number of
        batches stacked in the rows (2 for ``concat([positives, negatives])``)."""
        hx = self.x_branch(x, training=training)
        hz = apply(self.z_layers, z, training)
        h = apply(self.joint_layers, ops.concatenate([hx, hz], axis=-1), training, seed,
                  groups)
        logit = ops.squeeze(self.logit(h), axis=-1)
        if self.form == "quadratic":
            hq = apply(self.x_coeff_layers, hx, training)
            z = ops.cast(z, hq.dtype)
            quadratic = ops.sum(self.linear_coeff(hq) * z + self.square_coeff(hq) * z * z,
                                axis=-1)
            inner = ops.sum(self.x_inner(hq) * self.z_inner(hz), axis=-1)
            logit = logit + quadratic + inner + ops.squeeze(self.x_offset(hq), axis=-1)
        return logit

    def get_config(self):
        return {**super().get_config(), "x_conv": self.x_conv, "x_mlp": self.x_mlp,
                "z_mlp": self.z_mlp, "joint_mlp": self.joint_mlp,
                "batch_norm": self.batch_norm, "dropout": self.dropout,
                "activation": self.activation, "form": self.form,
                "latent_dim": self.latent_dim, "inner_dim": self.inner_dim,
                "spectral_norm": self.spectral_norm, "x_pooling": self.x_pooling}
