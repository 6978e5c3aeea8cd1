"""Encoders: a Gaussian head for q(z|x) and AVB's noise-input black box."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

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

    def call(self, x, eps, training=None, seed=None):
        return self.head(self.features(x, training=training, seed=seed), eps,
                         training=training)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "noise_dim": self.noise_dim, "conv": self.conv, "mlp": self.mlp,
                "head": self.head_units, "batch_norm": self.batch_norm,
                "dropout": self.dropout, "activation": self.activation}
