"""The (x, z) critic of AS-VAE Figs. 5-8, also AVB's T(x, z)."""

from __future__ import annotations

import keras
from keras import ops

from tf_asvae.networks.blocks import (INIT, ConvTrunk, apply, as_sizes, as_triples,
                                      check_activation, mlp_layers)


@keras.saving.register_keras_serializable(package="tf_asvae")
class JointDiscriminator(keras.layers.Layer):
    """(x [B, H, W, C], z [B, D]) -> logit [B].

    x-branch: strided convolutions + global average pooling (or, with ``x_conv=()``,
    flatten + ``x_mlp``); z-branch: MLP; the two are concatenated and an MLP head with
    dropout gives one logit.  By Lemma 1 the logit trained with the logistic loss
    estimates log p(x, z) - log q(x, z) for positives ~ p and negatives ~ q.
    """

    def __init__(self, x_conv=(), x_mlp=(), z_mlp=(512,), joint_mlp=(512, 512),
                 batch_norm=True, dropout=0.2, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.x_conv = as_triples(x_conv)
        self.x_mlp = as_sizes(x_mlp)
        self.z_mlp = as_sizes(z_mlp)
        self.joint_mlp = as_sizes(joint_mlp)
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.activation = check_activation(activation)
        self.x_branch = ConvTrunk(self.x_conv, self.x_mlp, "average", self.batch_norm, 0.0,
                                  activation)
        self.z_layers = mlp_layers(self.z_mlp, 0.0, activation=activation)
        self.joint_layers = mlp_layers(self.joint_mlp, self.dropout, activation=activation)
        self.logit = keras.layers.Dense(1, kernel_initializer=INIT)

    def call(self, x, z, training=None, seed=None, groups=1):
        """``seed``/``groups``: the dropout masks' stateless seed and the number of
        batches stacked in the rows (2 for ``concat([positives, negatives])``)."""
        hx = self.x_branch(x, training=training)
        hz = apply(self.z_layers, z, training)
        h = apply(self.joint_layers, ops.concatenate([hx, hz], axis=-1), training, seed,
                  groups)
        return ops.squeeze(self.logit(h), axis=-1)

    def get_config(self):
        return {**super().get_config(), "x_conv": self.x_conv, "x_mlp": self.x_mlp,
                "z_mlp": self.z_mlp, "joint_mlp": self.joint_mlp,
                "batch_norm": self.batch_norm, "dropout": self.dropout,
                "activation": self.activation}
