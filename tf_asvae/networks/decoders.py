"""Decoder: z -> raw parameters of p(x|z) as an image-shaped tensor."""

from __future__ import annotations

import math

import keras
from keras import ops

from tf_asvae.networks.blocks import (INIT, SyncBatchNormalization, apply, as_sizes, as_triples,
                                      check_activation, conv_block, mlp_layers)

_PARAMS = {"bernoulli": 1, "gaussian": 2}


@keras.saving.register_keras_serializable(package="tf_asvae")
class Decoder(keras.layers.Layer):
    """z [B, D] -> raw observation parameters [B, H, W, C * P].

    P = 1 (Bernoulli logits) or 2 (Gaussian location, then pre-softplus scale);
    ``tf_asvae.distributions.observation_distribution`` turns them into p(x|z).
    Convolutional form (AS-VAE Figs. 5-7): MLP -> dense to ``start`` -> batch norm,
    activation -> transposed convolutions -> 3x3 convolution to C * P channels.
    With ``deconv=()`` it is an MLP ending in a dense layer of H * W * C * P units.
    """

    def __init__(self, image_shape, likelihood="bernoulli", mlp=(), start=(7, 7, 64),
                 deconv=(), batch_norm=True, dropout=0.0, activation="relu", **kwargs):
        super().__init__(**kwargs)
        if likelihood not in _PARAMS:
            raise ValueError(f"Unknown likelihood: Received: likelihood={likelihood!r}. "
                             f"Expected one of {tuple(_PARAMS)}.")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.likelihood = likelihood
        self.mlp = as_sizes(mlp)
        self.start = as_sizes(start)
        self.deconv = as_triples(deconv)
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.activation = check_activation(activation)
        h, w, c = self.image_shape
        out_channels = c * _PARAMS[likelihood]
        self.blocks = mlp_layers(self.mlp, self.dropout, activation=activation)
        if self.deconv:
            sh, sw = self.start[0], self.start[1]
            for _, _, s in self.deconv:
                sh, sw = sh * s, sw * s
            if (sh, sw) != (h, w):
                raise ValueError(
                    f"Decoder start {self.start} upsampled by strides "
                    f"{[s for _, _, s in self.deconv]} gives {(sh, sw)}, not the image size "
                    f"{(h, w)}. Received: image_shape={self.image_shape}."
                )
            self.blocks.append(keras.layers.Dense(math.prod(self.start), use_bias=not batch_norm,
                                                   kernel_initializer=INIT))
            if batch_norm:
                self.blocks.append(SyncBatchNormalization())
            self.blocks += [keras.layers.Activation(activation), keras.layers.Reshape(self.start)]
            for f, k, s in self.deconv:
                self.blocks += conv_block(f, k, s, self.batch_norm, transpose=True,
                                          activation=activation)
            self.blocks.append(keras.layers.Conv2D(out_channels, 3, padding="same",
                                                    kernel_initializer=INIT))
        else:
            self.blocks += [keras.layers.Dense(h * w * out_channels, kernel_initializer=INIT),
                             keras.layers.Reshape((h, w, out_channels))]

    def call(self, z, training=None, seed=None, update_stats=True):
        """``seed``: stateless seed of the dropout masks (see ``SeededDropout``);
        ``update_stats``: whether training mode updates batch norm's moving statistics."""
        return apply(self.blocks, z, training, seed, update_stats=update_stats)

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape,
                "likelihood": self.likelihood, "mlp": self.mlp, "start": self.start,
                "deconv": self.deconv, "batch_norm": self.batch_norm,
                "dropout": self.dropout, "activation": self.activation}
