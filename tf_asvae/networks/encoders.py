"""Encoders: a Gaussian head for q(z|x) and AVB's noise-input black box."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tf_asvae.distributions import sample_moments
from tf_asvae.networks.blocks import (INIT, ConvTrunk, apply, as_sizes, as_triples,
                                      check_activation, mlp_layers)


def _check_latent(latent_dim):
    if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim <= 0:
        raise ValueError(f"latent_dim must be a positive integer. Received: latent_dim={latent_dim!r}.")


@keras.saving.register_keras_serializable(package="tf_asvae")
class GaussianEncoder(keras.layers.Layer):
    """x -> (loc, scale, features) of a diagonal Gaussian q(z|x).

    ``scale = min_scale + softplus(raw)`` keeps it positive and bounded away from 0.
    ``features`` (the trunk's output) is returned as the context for amortised flows.
    """

    def __init__(self, latent_dim, conv=(), mlp=(), batch_norm=True, dropout=0.0,
                 min_scale=1e-3, activation="relu", **kwargs):
        super().__init__(**kwargs)
        _check_latent(latent_dim)
        self.latent_dim = latent_dim
        self.conv = as_triples(conv)
        self.mlp = as_sizes(mlp)
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.min_scale = float(min_scale)
        self.activation = check_activation(activation)
        self.trunk = ConvTrunk(self.conv, self.mlp, "flatten", self.batch_norm, self.dropout,
                               activation)
        self.head = keras.layers.Dense(2 * latent_dim, kernel_initializer=INIT)

    def call(self, x, training=None, seed=None, update_stats=True):
        """``seed``: stateless seed of the dropout masks (see ``SeededDropout``);
        ``update_stats``: whether training mode updates batch norm's moving statistics."""
        h = self.trunk(x, training=training, seed=seed, update_stats=update_stats)
        raw = self.head(h)
        loc, raw_scale = ops.split(raw, 2, axis=-1)
        scale = self.min_scale + ops.softplus(raw_scale)
        return loc, scale, h

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "conv": self.conv,
                "mlp": self.mlp, "batch_norm": self.batch_norm, "dropout": self.dropout,
                "min_scale": self.min_scale, "activation": self.activation}


@keras.saving.register_keras_serializable(package="tf_asvae")
class NoiseEncoder(keras.layers.Layer):
    """AVB's black-box encoder z = z_phi(x, eps) (Mescheder et al. 2017, Sec. 3).

    The trunk maps x to features h once; the head maps concat(h, eps) to z, so that many
    noise draws per example (adaptive contrast's Monte-Carlo moments) reuse one trunk
    pass: ``call(x, eps)`` accepts eps of shape [B, E] or [S, B, E].
    """

    def __init__(self, latent_dim, noise_dim, conv=(), mlp=(), head=(256,), batch_norm=True,
                 dropout=0.0, activation="relu", **kwargs):
        super().__init__(**kwargs)
        _check_latent(latent_dim)
        if not isinstance(noise_dim, int) or noise_dim <= 0:
            raise ValueError(f"noise_dim must be a positive integer. Received: noise_dim={noise_dim!r}.")
        self.latent_dim = latent_dim
        self.noise_dim = noise_dim
        self.conv = as_triples(conv)
        self.mlp = as_sizes(mlp)
        self.head_units = as_sizes(head)
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.activation = check_activation(activation)
        self.trunk = ConvTrunk(self.conv, self.mlp, "flatten", self.batch_norm, self.dropout,
                               activation)
        self.head_layers = mlp_layers(self.head_units, 0.0, activation=activation)
        self.out = keras.layers.Dense(latent_dim, kernel_initializer=INIT)

    def features(self, x, training=None, seed=None, update_stats=True):
        return self.trunk(x, training=training, seed=seed, update_stats=update_stats)

    def head(self, h, eps, training=None):
        """h [B, F], eps [..., B, E] -> z [..., B, D]."""
        if len(eps.shape) > len(h.shape):
            h = tf.broadcast_to(h, tf.concat([tf.shape(eps)[:-1], tf.shape(h)[-1:]], 0))
        u = ops.concatenate([h, eps], axis=-1)
        return self.out(apply(self.head_layers, u, training))

    @property
    def noise_size(self):
        """Length of the noise vector per example."""
        return self.noise_dim

    @property
    def noise_blocks(self):
        """(number of independent noise blocks, units per block): one block."""
        return 1, self.noise_dim

    def moments(self, h, eps, covariance="diagonal"):
        """(mean [B, D], variance [B, D] or covariance [B, D, D]) of the codes of the
        noise draws ``eps`` [S, E] (the same draws for every example): S passes of the
        head per example."""
        eps = tf.broadcast_to(tf.cast(eps[:, tf.newaxis], h.dtype),
                              tf.stack([tf.shape(eps)[0], tf.shape(h)[0], self.noise_dim]))
        return sample_moments(tf.cast(self.head(h, eps), tf.float32), covariance)

    def call(self, x, eps, training=None, seed=None):
        return self.head(self.features(x, training=training, seed=seed), eps,
                         training=training)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "noise_dim": self.noise_dim, "conv": self.conv, "mlp": self.mlp,
                "head": self.head_units, "batch_norm": self.batch_norm,
                "dropout": self.dropout, "activation": self.activation}


@keras.saving.register_keras_serializable(package="tf_asvae")
class BasisNoiseEncoder(keras.layers.Layer):
    """AVB's encoder for adaptive contrast on MNIST (Mescheder et al. 2017, Sec. 5,
    "MNIST"): a linear combination of learned noise basis vectors,

        z = z_0(x) + sum_k a_k(x) * v_k(eps_k),   eps_k ~ N(0, I_E), k = 1..K,

    with ``*`` elementwise.  The basis vectors v_k are small MLPs of their own noise and
    do not see x; the coefficients a_k(x) > 0 and the offset z_0(x) come from the trunk.
    q(z|x) has no density, but its moments follow from the moments of the v_k, which do
    not depend on x (the eps_k are independent of each other):

        E[z | x]   = z_0(x) + sum_k a_k(x) * E[v_k]
        Cov[z | x] = sum_k diag(a_k(x)) Cov[v_k] diag(a_k(x)),

    so the contrast r(z|x) of adaptive contrast costs one pass of the basis networks over
    S noise draws per step, shared by the whole batch, instead of S passes of a head per
    example (:meth:`moments`).  Every code given x is then a fixed set of random vectors
    rescaled by x: the whitened z~ the critic sees differs between examples only through
    the ratios of the a_k(x).

    a_k(x) = elu(u_k(x) - ``COEF_OFFSET``) + 1 > 0 starts near e^-5 = 0.007, a narrow
    posterior that widens as training asks for it (the official AVB code's choice, read
    as a reference); z_0's kernel starts small for the same reason.

    ``call(x, eps)`` and ``head(h, eps)`` take eps of shape [B, K * E] or [S, B, K * E],
    as :class:`NoiseEncoder` does.
    """

    COEF_OFFSET = 5.0

    def __init__(self, latent_dim, noise_dim, num_basis=32, conv=(), mlp=(),
                 basis_units=(128, 128, 128), batch_norm=True, dropout=0.0,
                 activation="relu", **kwargs):
        super().__init__(**kwargs)
        _check_latent(latent_dim)
        for name, value in (("noise_dim", noise_dim), ("num_basis", num_basis)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer. "
                                 f"Received: {name}={value!r}.")
        self.latent_dim = latent_dim
        self.noise_dim = noise_dim
        self.num_basis = num_basis
        self.conv = as_triples(conv)
        self.mlp = as_sizes(mlp)
        self.basis_units = as_sizes(basis_units)
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.activation = check_activation(activation)
        self.trunk = ConvTrunk(self.conv, self.mlp, "flatten", self.batch_norm, self.dropout,
                               activation)
        self.loc = keras.layers.Dense(
            latent_dim, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-5))
        self.coef = keras.layers.Dense(num_basis * latent_dim, kernel_initializer=INIT)
        self.act = keras.activations.get(activation)

    @property
    def noise_size(self):
        """Length of the noise vector per example: K basis vectors of E units."""
        return self.num_basis * self.noise_dim

    @property
    def noise_blocks(self):
        """(number of independent noise blocks, units per block): one per basis vector;
        the moments assume the blocks independent, so each is matched on its own."""
        return self.num_basis, self.noise_dim

    def build(self, input_shape=None):
        # The K basis networks as one batched MLP: kernels [K, in, out], biases [K, out].
        sizes = (self.noise_dim,) + self.basis_units + (self.latent_dim,)
        self.basis_kernels, self.basis_biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.basis_kernels.append(self.add_weight(
                name=f"basis_kernel{i}", shape=(self.num_basis, fan_in, fan_out),
                initializer=keras.initializers.GlorotUniform()))
            self.basis_biases.append(self.add_weight(
                name=f"basis_bias{i}", shape=(self.num_basis, fan_out), initializer="zeros"))
        super().build(input_shape)

    features = NoiseEncoder.features
    call = NoiseEncoder.call

    def basis(self, eps):
        """eps [..., K * E] -> the basis vectors v_k(eps_k) [..., K, D]."""
        if not self.built:
            self.build()
        v = tf.reshape(eps, tf.concat([tf.shape(eps)[:-1],
                                       [self.num_basis, self.noise_dim]], 0))
        last = len(self.basis_kernels) - 1
        for i, (w, b) in enumerate(zip(self.basis_kernels, self.basis_biases)):
            v = tf.einsum("...ki,kio->...ko", v, tf.cast(w, v.dtype)) + tf.cast(b, v.dtype)
            if i < last:
                v = self.act(v)
        return v

    def coefficients(self, h):
        """(z_0(x) [B, D], a(x) [B, K, D]) from the trunk's features h [B, F]."""
        a = self.coef(h)
        a = tf.reshape(a, tf.concat([tf.shape(a)[:-1], [self.num_basis, self.latent_dim]], 0))
        # elu(u) + 1 written as exp(u) below 0: elu(u) + 1 rounds to 0 for u < -17.
        u = a - self.COEF_OFFSET
        return self.loc(h), tf.where(u > 0, u + 1.0, tf.exp(tf.minimum(u, 0.0)))

    def head(self, h, eps, training=None):
        """h [B, F], eps [..., B, K * E] -> z [..., B, D]."""
        z0, a = self.coefficients(h)
        v = self.basis(tf.cast(eps, h.dtype))
        return z0 + tf.reduce_sum(a * v, axis=-2)

    def moments(self, h, eps, covariance="diagonal"):
        """(E[z|x] [B, D], Var[z|x] [B, D] or Cov[z|x] [B, D, D]) with the basis
        vectors' moments estimated from the noise draws ``eps`` [S, K * E] (the same
        draws for every example)."""
        z0, a = (tf.cast(t, tf.float32) for t in self.coefficients(h))
        v = tf.cast(self.basis(tf.cast(eps, h.dtype)), tf.float32)
        mean_v, second_v = sample_moments(v, covariance)
        mean = z0 + tf.einsum("bkd,kd->bd", a, mean_v)
        if covariance == "diagonal":
            return mean, tf.einsum("bkd,kd->bd", tf.square(a), second_v)
        return mean, tf.einsum("bkd,kde,bke->bde", a, second_v, a)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "noise_dim": self.noise_dim, "num_basis": self.num_basis,
                "conv": self.conv, "mlp": self.mlp, "basis_units": self.basis_units,
                "batch_norm": self.batch_norm, "dropout": self.dropout,
                "activation": self.activation}
