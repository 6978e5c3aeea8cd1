"""Observation models, posteriors and the discretised 8-bit likelihood."""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_asvae import distributions as dists
from tf_asvae import flows

tfd = tfp.distributions


def test_bernoulli_soft_targets_are_the_cross_entropy():
    logits = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 3, 1)), tf.float32)
    x = tf.constant(np.random.default_rng(1).random((2, 3, 3, 1)), tf.float32)
    p = tf.sigmoid(logits)
    expected = tf.reduce_sum(x * tf.math.log(p) + (1 - x) * tf.math.log(1 - p), [1, 2, 3])
    got = dists.observation(logits, "bernoulli").log_prob(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gaussian_observation_sums_over_pixels():
    raw = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 4, 6)), tf.float32)
    x = tf.constant(np.random.default_rng(1).random((2, 4, 4, 3)), tf.float32)
    loc, scale = raw[..., :3], 1e-3 + tf.nn.softplus(raw[..., 3:])
    expected = tf.reduce_sum(tfd.Normal(loc, scale).log_prob(x), [1, 2, 3])
    np.testing.assert_allclose(dists.observation(raw, "gaussian").log_prob(x), expected,
                               rtol=1e-5)


def test_discretized_gaussian_bins_sum_to_one_and_match_the_cdf():
    loc = tf.constant([[0.3, 0.001, 0.999, 0.5]])
    scale = tf.constant([[0.05, 0.2, 0.01, 1e-3]])
    raw = tf.reshape(tf.concat([loc, tfp.math.softplus_inverse(scale - 1e-3)], -1), [1, 1, 1, 8])
    d = dists.discretized_gaussian(raw)
    values = tf.reshape(tf.range(256, dtype=tf.float32), [256, 1, 1, 1])
    values = tf.tile(values, [1, 1, 1, 4])
    # Per-pixel probabilities: evaluate one pixel at a time through the Independent's base.
    per_pixel = d.distribution.prob(values)  # [256, 1, 1, 4]
    np.testing.assert_allclose(tf.reduce_sum(per_pixel, 0), np.ones((1, 1, 4)), atol=1e-5)
    # An interior bin is P(x in [i/256, (i+1)/256]).
    normal = tfd.Normal(loc[0, 0], scale[0, 0])
    i = 77.0
    expected = normal.cdf((i + 1) / 256) - normal.cdf(i / 256)
    np.testing.assert_allclose(per_pixel[77, 0, 0, 0], expected, rtol=1e-4)
    # Edge bins take the tails.
    np.testing.assert_allclose(per_pixel[0, 0, 0, 0], normal.cdf(1 / 256), rtol=1e-4)


def test_posterior_with_flow_is_the_change_of_variables():
    loc = tf.constant([[0.1, -0.2, 0.3]])
    scale = tf.constant([[0.5, 1.2, 0.8]])
    params = flows.PlanarFlowParameters(3, 3)
    u, w, b = params(None)
    chain = flows.planar_flow_chain(u, w, b)
    q = dists.posterior(loc, scale, chain)
    z0 = tf.constant([[0.4, 0.1, -0.7]])
    z = chain.forward(z0)
    expected = dists.posterior(loc, scale).log_prob(z0) - chain.forward_log_det_jacobian(z0, 1)
    np.testing.assert_allclose(q.log_prob(z), expected, rtol=1e-5, atol=1e-5)


def test_flow_on_the_observation_model():
    """p(x|z) with a planar flow on flattened pixels: log-density by change of variables."""
    raw = tf.constant(np.random.default_rng(0).normal(size=(2, 2, 2, 2)) * 0.1, tf.float32)
    params = flows.PlanarFlowParameters(2, 4)
    u, w, b = params(None)
    chain = flows.planar_flow_chain(u, w, b)
    p = dists.observation(raw, "gaussian", flow=chain)
    x = tf.constant(np.random.default_rng(1).random((2, 2, 2, 1)), tf.float32)
    loc, scale = raw[..., :1], 1e-3 + tf.nn.softplus(raw[..., 1:])
    x0 = chain.inverse(tf.reshape(x, [2, 4]))
    base = tfd.MultivariateNormalDiag(tf.reshape(loc, [2, 4]), tf.reshape(scale, [2, 4]))
    expected = base.log_prob(x0) - chain.forward_log_det_jacobian(x0, 1)
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-4, atol=1e-4)
    assert p.sample(seed=[1, 2]).shape == (2, 2, 2, 1)


def test_relaxed_bernoulli_is_differentiable_and_in_unit_interval():
    logits = tf.Variable(tf.zeros([5, 4]))
    with tf.GradientTape() as tape:
        s = dists.relaxed_bernoulli_sample(logits, 0.5, seed=[3, 4])
        loss = tf.reduce_sum(s)
    g = tape.gradient(loss, logits)
    assert float(tf.reduce_min(s)) > 0 and float(tf.reduce_max(s)) < 1
    assert float(tf.reduce_sum(tf.abs(g))) > 0


def test_prior_is_standard_normal():
    p = dists.prior(4)
    np.testing.assert_allclose(p.log_prob(tf.zeros([4])), -2 * math.log(2 * math.pi), rtol=1e-6)
