"""Network building blocks: SyncBatchNormalization against float64, and every network
layer's config round trip (with a non-default activation).

(The split over replicas is checked in tests/test_distributed_step.py, which needs
logical devices configured before TensorFlow starts.)
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_asvae.networks.blocks import SyncBatchNormalization, global_moments


def _shifted(shape, mean, seed=0):
    """Channels with large means and unit spread: where E[x^2] - E[x]^2 cancels."""
    rng = np.random.default_rng(seed)
    return (mean * (1.0 + np.arange(shape[-1])) + rng.normal(size=shape)).astype("float32")


@pytest.mark.parametrize("shape, axes", [((16, 6), [0]), ((4, 5, 5, 3), [0, 1, 2])])
def test_global_moments_match_float64(shape, axes):
    x = _shifted(shape, 1e3)
    mean, var = global_moments(tf.constant(x), axes)
    x64 = x.astype("float64")
    np.testing.assert_allclose(mean, x64.mean(tuple(axes)), rtol=1e-6)
    # float32 carries ~1e-4 of absolute error at 1e3; the variance keeps it relative.
    np.testing.assert_allclose(var, x64.var(tuple(axes)), rtol=1e-3)


def test_sync_batch_norm_output_and_gradient_match_float64():
    x = _shifted((8, 5, 5, 3), 1e3, seed=1)
    w = np.random.default_rng(2).normal(size=x.shape).astype("float32")
    layer = SyncBatchNormalization(epsilon=1e-3)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = layer(xt, training=True)
        loss = tf.reduce_sum(out * w)
    grad = tape.gradient(loss, xt)
    # Reference: the same normalisation in float64 (gamma = 1, beta = 0 at init).
    x64 = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x64)
        m, v = tf.nn.moments(x64, [0, 1, 2])
        ref = (x64 - m) / tf.sqrt(v + 1e-3)
        ref_loss = tf.reduce_sum(ref * w.astype("float64"))
    ref_grad = tape.gradient(ref_loss, x64)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-3 * np.max(np.abs(ref_grad)))
    # Training mode moved the moving statistics toward the batch's (momentum 0.99).
    np.testing.assert_allclose(layer.moving_mean, 0.01 * x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance,
                               0.99 + 0.01 * x.astype("float64").var((0, 1, 2)), rtol=1e-4)
    # Inference mode normalises with the moving statistics.
    mm, mv = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    np.testing.assert_allclose(layer(xt, training=False), (x - mm) / np.sqrt(mv + 1e-3),
                               rtol=1e-5, atol=1e-5)


def test_sync_batch_norm_config_round_trip_and_mask_error():
    layer = SyncBatchNormalization(momentum=0.9, epsilon=1e-4, name="bn")
    x = tf.constant(_shifted((4, 3), 10.0))
    expected = layer(x, training=True)
    config = layer.get_config()
    clone = SyncBatchNormalization.from_config(config)
    clone.build(x.shape)
    assert clone.get_config() == config
    clone.set_weights([np.zeros(3, "float32") + 1.0, np.zeros(3, "float32"),
                       np.zeros(3, "float32"), np.ones(3, "float32")])
    np.testing.assert_allclose(clone(x, training=True), expected, atol=1e-6)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is SyncBatchNormalization and revived.get_config() == config
    with pytest.raises(ValueError, match="does not take a mask"):
        layer(x, training=True, mask=tf.ones((4,), tf.bool))


def _roundtrip(layer, *args):
    """Rebuild ``layer`` from its config (directly and through Keras' registry), copy
    its weights, and compare outputs."""
    expected = layer(*args, training=False)
    config = layer.get_config()
    for clone in (type(layer).from_config(config),
                  keras.saving.deserialize_keras_object(
                      keras.saving.serialize_keras_object(layer))):
        assert type(clone) is type(layer) and clone.get_config() == config
        clone(*args, training=False)
        clone.set_weights(layer.get_weights())
        for a, e in zip(tf.nest.flatten(clone(*args, training=False)),
                        tf.nest.flatten(expected)):
            np.testing.assert_array_equal(a, e)


def test_network_layers_round_trip_their_configs_with_an_activation():
    from tf_asvae.networks import (BasisNoiseEncoder, ConvTrunk, Decoder, GaussianEncoder,
                                   JointDiscriminator, NoiseEncoder)

    keras.utils.set_random_seed(3)
    x = tf.random.stateless_uniform([2, 8, 8, 1], seed=(1, 2))
    z = tf.random.stateless_normal([2, 4], seed=(3, 4))
    eps = tf.random.stateless_normal([2, 3], seed=(5, 6))
    conv = ((4, 3, 2),)
    _roundtrip(ConvTrunk(conv, (6,), "average", activation="elu", dropout=0.1), x)
    _roundtrip(Decoder((8, 8, 1), "gaussian", (6,), (2, 2, 4), ((4, 3, 2), (3, 3, 2)),
                       activation="gelu"), z)
    _roundtrip(GaussianEncoder(4, conv, (6,), activation="silu", min_scale=1e-2), x)
    _roundtrip(NoiseEncoder(4, 3, conv, (6,), (5,), activation="leaky_relu"), x, eps)
    _roundtrip(BasisNoiseEncoder(4, 1, 3, conv, (6,), (5,), activation="elu"), x, eps)
    _roundtrip(JointDiscriminator(conv, (), (6,), (6,), activation="elu"), x, z)
    # The activation is used: ELU and ReLU networks with the same weights differ.
    relu, elu = ConvTrunk(conv, (6,)), ConvTrunk(conv, (6,), activation="elu")
    relu(x), elu(x)
    elu.set_weights(relu.get_weights())
    assert not np.allclose(relu(x, training=False), elu(x, training=False))
    with pytest.raises(ValueError, match=r"activation='tanh'.*'relu'"):
        Decoder((8, 8, 1), activation="tanh")
