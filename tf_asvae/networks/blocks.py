"""Shared building blocks: convolution stacks and MLPs with the paper's habits.

AS-VAE Sec. 5: Xavier (Glorot uniform) initialisation, batch norm after each
convolution, ReLU, and dropout as the only regulariser.  Batch norm is
``synchronized`` so that under ``tf.distribute`` the statistics are those of the
global batch: one step on N replicas then equals one step on one device.  Dropout is
:class:`SeededDropout`, whose masks come from a seed passed by the model (see
:mod:`tf_asvae.noise`) so that they are the same on one device and on N replicas,
independent across replicas, and reproduced by a resumed run.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_asvae import noise

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


@keras.saving.register_keras_serializable(package="tf_asvae")
class SeededDropout(keras.layers.Layer):
    """Inverted dropout whose mask is a function of an explicit seed.

    ``call(x, training, seed=None, groups=1)``: with ``training`` and ``rate > 0`` each
    unit is kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``.  The
    rows of ``x`` are ``groups`` consecutive blocks of one batch each (a critic called
    on ``concat([positives, negatives])`` has two); the mask is drawn for the global
    batch of every block with the stateless ``seed`` (a [2] int tensor) and sliced to
    this replica's rows (:func:`tf_asvae.noise.global_draw`).  Without a seed (a layer
    used on its own) it falls back to Keras' stateful dropout RNG.
    """

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1). Received: rate={rate!r}.")
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, x, training=False, seed=None, groups=1):
        if not training or self.rate == 0.0:
            return x
        if seed is None:
            return keras.random.dropout(x, self.rate, seed=self.seed_generator)
        shape = tf.shape(x)
        u = noise.global_draw(tf.cast(seed, tf.int64), shape[0] // groups, shape[1:],
                              kind="uniform", lead=(groups,))
        keep = tf.reshape(u, shape) >= self.rate
        return tf.where(keep, x / (1.0 - self.rate), tf.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def mlp_layers(sizes, dropout, name=None):
    """Dense -> ReLU -> (dropout) for each size."""
    layers = []
    for i, size in enumerate(sizes):
        layers.append(keras.layers.Dense(size, activation="relu", kernel_initializer=INIT,
                                         name=None if name is None else f"{name}_dense{i}"))
        if dropout > 0:
            layers.append(SeededDropout(dropout))
    return layers


def apply(layers, x, training, seed=None, groups=1):
    """Runs ``layers`` in order; dropout layer i gets ``fold_in(seed, i)``."""
    for i, layer in enumerate(layers):
        if isinstance(layer, SeededDropout):
            s = None if seed is None else tf.random.experimental.stateless_fold_in(
                tf.cast(seed, tf.int64), i)
            x = layer(x, training=training, seed=s, groups=groups)
        elif isinstance(layer, keras.layers.BatchNormalization):
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

    def call(self, x, training=None, seed=None, groups=1):
        return apply(self.blocks, x, training, seed, groups)

    def get_config(self):
        return {**super().get_config(), "conv": self.conv, "mlp": self.mlp,
                "pooling": self.pooling, "batch_norm": self.batch_norm,
                "dropout": self.dropout}
