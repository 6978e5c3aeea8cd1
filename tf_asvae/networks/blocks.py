"""Shared building blocks: convolution stacks and MLPs with the paper's habits.

AS-VAE Sec. 5: Xavier (Glorot uniform) initialisation, batch norm after each
convolution, ReLU, and dropout as the only regulariser.  Batch norm is
``synchronized`` so that under ``tf.distribute`` the statistics are those of the
global batch: one step on N replicas then equals one step on one device.
"""

from __future__ import annotations

import keras

INIT = "glorot_uniform"


def as_triples(specs):
    return tuple(tuple(int(v) for v in s) for s in specs)


def as_sizes(sizes):
    return tuple(int(v) for v in sizes)


def conv_block(filters, kernel, stride, batch_norm, transpose=False, name=None):
    """[de]conv -> (batch norm) -> ReLU as a list of layers."""
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    layers = [cls(filters, kernel, strides=stride, padding="same", use_bias=not batch_norm,
                  kernel_initializer=INIT, name=None if name is None else name + "_conv")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(
            synchronized=True, name=None if name is None else name + "_bn"))
    layers.append(keras.layers.ReLU())
    return layers


def mlp_layers(sizes, dropout, name=None):
    """Dense -> ReLU -> (dropout) for each size."""
    layers = []
    for i, size in enumerate(sizes):
        layers.append(keras.layers.Dense(size, activation="relu", kernel_initializer=INIT,
                                         name=None if name is None else f"{name}_dense{i}"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout))
    return layers


def apply(layers, x, training):
    for layer in layers:
        if isinstance(layer, (keras.layers.Dropout, keras.layers.BatchNormalization)):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


@keras.saving.register_keras_serializable(package="tf_asvae")
class ConvTrunk(keras.layers.Layer):
    """Images [B, H, W, C] -> features [B, F].

    Convolutions ``conv`` ((filters, kernel, stride) triples, each followed by batch
    norm and ReLU), then ``pooling`` ("flatten", or "average" for global average
    pooling as the discriminators' x-branch of AS-VAE Figs. 5-8), then an MLP.
    With ``conv=()`` the images are flattened (AVB's synthetic MLPs).
    """

    def __init__(self, conv=(), mlp=(), pooling="flatten", batch_norm=True, dropout=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("flatten", "average"):
            raise ValueError(
                f"Unknown pooling: Received: pooling={pooling!r}. Expected 'flatten' or 'average'."
            )
        self.conv = as_triples(conv)
        self.mlp = as_sizes(mlp)
        self.pooling = pooling
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.blocks = []
        for i, (f, k, s) in enumerate(self.conv):
            self.blocks += conv_block(f, k, s, self.batch_norm)
        if self.conv and pooling == "average":
            self.blocks.append(keras.layers.GlobalAveragePooling2D())
        else:
            self.blocks.append(keras.layers.Flatten())
        self.blocks += mlp_layers(self.mlp, self.dropout)

    def call(self, x, training=None):
        return apply(self.blocks, x, training)

    def get_config(self):
        return {**super().get_config(), "conv": self.conv, "mlp": self.mlp,
                "pooling": self.pooling, "batch_norm": self.batch_norm,
                "dropout": self.dropout}
