"""Shared building blocks: convolution stacks and MLPs with the paper's habits.

AS-VAE Sec. 5: Xavier (Glorot uniform) initialisation, batch norm after each
convolution, ReLU, and dropout as the only regulariser.  Batch norm is
:class:`SyncBatchNormalization`: under ``tf.distribute`` its statistics are those of
the global batch, computed in two passes, so one step on N replicas equals one step on
one device up to float rounding.  Dropout is
:class:`SeededDropout`, whose masks come from a seed passed by the model (see
:mod:`tf_asvae.noise`) so that they are the same on one device and on N replicas,
independent across replicas, and reproduced by a resumed run.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tf_asvae import noise
from tf_asvae.config import ACTIVATIONS

INIT = "glorot_uniform"


def as_triples(specs):
    return tuple(tuple(int(v) for v in s) for s in specs)


def as_sizes(sizes):
    return tuple(int(v) for v in sizes)


def check_activation(activation):
    """``activation`` if it is one of ``ACTIVATIONS``, else a ValueError naming it."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation: Received: activation={activation!r}. "
                         f"Expected one of {ACTIVATIONS}.")
    return activation


@keras.saving.register_keras_serializable(package="tf_asvae")
class SpectralNorm(keras.layers.Wrapper):
    """A ``Dense`` or ``Conv2D`` layer computed with its kernel divided by the kernel's
    largest singular value (spectral normalisation, Miyato et al. 2018), so that the
    layer is 1-Lipschitz.

    The singular value is estimated by ``power_iterations`` steps of the power method on
    the kernel reshaped to [fan_in, units], started from the same unit vector at every
    call and held constant in the gradient (as in the paper).  Stateless: nothing is
    carried between steps, so the layer behaves the same on one device, on N replicas
    and after a resume.
    """

    def __init__(self, layer, power_iterations=5, **kwargs):
        super().__init__(layer, **kwargs)
        if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            raise ValueError("SpectralNorm wraps Dense or Conv2D layers. Received: "
                             f"layer={type(layer).__name__}.")
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError("power_iterations must be a positive integer. Received: "
                             f"power_iterations={power_iterations!r}.")
        self.power_iterations = power_iterations

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def normalized_kernel(self):
        kernel = self.layer.kernel
        matrix = ops.reshape(kernel, (-1, kernel.shape[-1]))
        u = ops.ones((1, matrix.shape[-1]), dtype=matrix.dtype)
        for _ in range(self.power_iterations):
            v = _unit(ops.matmul(u, ops.transpose(matrix)))
            u = _unit(ops.matmul(v, matrix))
        u, v = ops.stop_gradient(u), ops.stop_gradient(v)
        sigma = ops.sum(ops.matmul(v, matrix) * u)
        return kernel / sigma

    def call(self, inputs):
        layer = self.layer
        kernel = ops.cast(self.normalized_kernel(), layer.compute_dtype)
        if isinstance(layer, keras.layers.Conv2D):
            out = ops.conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                           data_format=layer.data_format, dilation_rate=layer.dilation_rate)
        else:
            out = ops.matmul(inputs, kernel)
        if layer.use_bias:
            out = out + ops.cast(layer.bias, layer.compute_dtype)
        return layer.activation(out) if layer.activation is not None else out

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "power_iterations": self.power_iterations}


def _unit(x):
    return x / (ops.sqrt(ops.sum(ops.square(x))) + 1e-12)


def _maybe_spectral(layer, spectral_norm):
    return SpectralNorm(layer) if spectral_norm else layer


def conv_block(filters, kernel, stride, batch_norm, transpose=False, name=None,
               activation="relu", spectral_norm=False):
    """[de]conv -> (batch norm) -> activation (ReLU in the papers) as a list of layers
    (the convolution spectrally normalised with ``spectral_norm``)."""
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    layers = [_maybe_spectral(
        cls(filters, kernel, strides=stride, padding="same", use_bias=not batch_norm,
            kernel_initializer=INIT, name=None if name is None else name + "_conv"),
        spectral_norm)]
    if batch_norm:
        layers.append(SyncBatchNormalization(name=None if name is None else name + "_bn"))
    layers.append(keras.layers.Activation(check_activation(activation)))
    return layers


def global_moments(x, axes):
    """Mean and (biased) variance of ``x`` over ``axes`` and over every replica's rows.

    Two passes: the global mean first (one all-reduce of the sums and the count), then
    the global sum of squared deviations from it (a second all-reduce).  Outside a
    strategy, or with one replica, the same two passes run without the all-reduces.
    Gradients flow through both all-reduces (``ReplicaContext.all_reduce`` all-reduces
    the incoming gradients), so they are those of the global-batch statistics.
    """
    ctx = tf.distribute.get_replica_context()
    local_sum = tf.reduce_sum(x, axes, keepdims=True)
    local_count = tf.cast(tf.size(x) // tf.size(local_sum), x.dtype)
    several = ctx is not None and ctx.num_replicas_in_sync > 1
    if several:
        packed = tf.concat([tf.reshape(local_sum, [-1]), tf.reshape(local_count, [1])], 0)
        packed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, packed)
        total, count = tf.reshape(packed[:-1], tf.shape(local_sum)), packed[-1]
    else:
        total, count = local_sum, local_count
    mean = total / count
    squares = tf.reduce_sum(tf.square(x - mean), axes, keepdims=True)
    if several:
        squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, squares)
    return tf.squeeze(mean, axes), tf.squeeze(squares / count, axes)


@keras.saving.register_keras_serializable(package="tf_asvae")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation with global-batch statistics computed stably.

    Keras' ``BatchNormalization(synchronized=True)`` (TensorFlow backend, Keras 3.15)
    takes the variance as ``E[x^2] - E[x]^2`` of all-reduced sums.  In float32 that
    cancels when a channel's mean is large against its spread: on channel means of 1e3
    and spread 1 its normalised output is off by 0.72 (float64 reference), and on 2
    replicas it differs from one device's by 27% (outputs) and 21% (input gradients),
    because the rounding depends on how the batch is split.  This layer: 1.8e-4 off,
    and 4e-5 / 1e-5 between the two (tests/test_networks.py,
    tests/test_distributed_step.py).  Here the statistics are :func:`global_moments`'
    two passes, under every strategy and on one device alike.  Everything else (moving averages,
    inference mode, mixed precision, config) is Keras' layer, which still calls
    ``_moments`` for the training-mode statistics.
    """

    def __init__(self, **kwargs):
        kwargs["synchronized"] = True
        super().__init__(**kwargs)

    def _moments(self, inputs, mask):
        if mask is not None:
            raise ValueError("SyncBatchNormalization does not take a mask.")
        return global_moments(inputs, self._reduction_axes)

    def call(self, inputs, training=None, mask=None, update_stats=True):
        """As Keras' layer; with ``training`` and ``update_stats=False`` the batch is
        normalised by its own statistics but the moving statistics are left alone.

        The models pass ``update_stats=False`` on the networks' *generated* paths (the
        encoder on x_theta(z), the decoder on prior codes), so that inference mode
        (validation, likelihoods, export) normalises with statistics of the data path
        only: the encoder on real images, the decoder on posterior codes.  This path
        uses the batch statistics even in a frozen layer (``trainable=False``), so that a
        frozen model can still be measured in training mode (``BaseModel.diagnose``).
        """
        if not training or update_stats:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(x, mask)
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        out = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=beta,
                                      scale=gamma, epsilon=self.epsilon)
        return ops.cast(out, self.compute_dtype)


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


def mlp_layers(sizes, dropout, name=None, activation="relu", spectral_norm=False):
    """Dense -> activation (ReLU in the papers) -> (dropout) for each size (the dense
    layers spectrally normalised with ``spectral_norm``)."""
    layers = []
    check_activation(activation)
    for i, size in enumerate(sizes):
        layers.append(_maybe_spectral(
            keras.layers.Dense(size, activation=activation, kernel_initializer=INIT,
                               name=None if name is None else f"{name}_dense{i}"),
            spectral_norm))
        if dropout > 0:
            layers.append(SeededDropout(dropout))
    return layers


def apply(layers, x, training, seed=None, groups=1, update_stats=True):
    """Runs ``layers`` in order; dropout layer i gets ``fold_in(seed, i)``; batch norm
    gets ``update_stats`` (see :meth:`SyncBatchNormalization.call`)."""
    for i, layer in enumerate(layers):
        if isinstance(layer, SeededDropout):
            s = None if seed is None else tf.random.experimental.stateless_fold_in(
                tf.cast(seed, tf.int64), i)
            x = layer(x, training=training, seed=s, groups=groups)
        elif isinstance(layer, SyncBatchNormalization):
            x = layer(x, training=training, update_stats=update_stats)
        elif isinstance(layer, keras.layers.BatchNormalization):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


@keras.saving.register_keras_serializable(package="tf_asvae")
class ConvTrunk(keras.layers.Layer):
    """Images [B, H, W, C] -> features [B, F].

    Convolutions ``conv`` ((filters, kernel, stride) triples, each followed by batch
    norm and ``activation``), then ``pooling`` ("flatten", or "average" for global average
    pooling as the discriminators' x-branch of AS-VAE Figs. 5-8), then an MLP.
    With ``conv=()`` the images are flattened (AVB's synthetic MLPs).
    """

    def __init__(self, conv=(), mlp=(), pooling="flatten", batch_norm=True, dropout=0.0,
                 activation="relu", spectral_norm=False, **kwargs):
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
        self.activation = check_activation(activation)
        self.spectral_norm = bool(spectral_norm)
        self.blocks = []
        for f, k, s in self.conv:
            self.blocks += conv_block(f, k, s, self.batch_norm, activation=activation,
                                      spectral_norm=self.spectral_norm)
        if self.conv and pooling == "average":
            self.blocks.append(keras.layers.GlobalAveragePooling2D())
        else:
            self.blocks.append(keras.layers.Flatten())
        self.blocks += mlp_layers(self.mlp, self.dropout, activation=activation,
                                  spectral_norm=self.spectral_norm)

    def call(self, x, training=None, seed=None, groups=1, update_stats=True):
        return apply(self.blocks, x, training, seed, groups, update_stats)

    def get_config(self):
        return {**super().get_config(), "conv": self.conv, "mlp": self.mlp,
                "pooling": self.pooling, "batch_norm": self.batch_norm,
                "dropout": self.dropout, "activation": self.activation,
                "spectral_norm": self.spectral_norm}
