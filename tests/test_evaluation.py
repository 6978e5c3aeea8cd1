"""Tests of tf_asvae.evaluation: IS / AIS likelihood estimators, bits/dim,
TF-GAN classifier score and Frechet distance, reconstruction errors.

The likelihood estimators are checked on a linear-Gaussian latent model,
``z ~ N(0, I_d)``, ``x | z ~ N(W z + b, s^2 I)``, whose marginal is exact:
``log p(x) = log N(x; b, W W^T + s^2 I)`` and whose posterior is Gaussian with
``Sigma = (I + W^T W / s^2)^-1``, ``mu = Sigma W^T (x - b) / s^2``.
CPU only, float64, fixed seeds.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
import tensorflow_probability as tfp

from tf_asvae.evaluation import (
    ActivationStatistics,
    ClassifierScoreAccumulator,
    ais_log_likelihood,
    bits_per_dim,
    classifier_score_from_logits,
    classifier_score_from_logits_splits,
    dequantized_to_discrete_nll,
    estimate_over_dataset,
    frechet_distance_from_activations,
    frechet_distance_from_statistics,
    frechet_distance_gaussians,
    importance_sampled_log_likelihood,
    importance_sampled_log_likelihood_over_dataset,
    latent_reconstruction_error,
    log_likelihood_from_flat,
    nats_to_bits,
    reconstruction_rmse_255,
    trace_sqrt_product,
)

tfd = tfp.distributions
F64 = tf.float64


# ----------------------------------------------------------------------------
# Linear-Gaussian model with an exact marginal likelihood
# ----------------------------------------------------------------------------
class LinearGaussian:
    def __init__(self, latent_dim=3, data_dim=5, noise=0.7, batch=16, seed=0):
        rng = np.random.default_rng(seed)
        self.d, self.s = latent_dim, noise
        self.W = rng.normal(size=(data_dim, latent_dim))
        self.b = rng.normal(size=data_dim)
        z = rng.normal(size=(batch, latent_dim))
        self.x = tf.constant(z @ self.W.T + self.b + noise * rng.normal(size=(batch, data_dim)))
        self.prior = tfd.MultivariateNormalDiag(tf.zeros(latent_dim, F64))
        cov = self.W @ self.W.T + noise**2 * np.eye(data_dim)
        self.truth = tfd.MultivariateNormalTriL(
            tf.constant(self.b), tf.constant(np.linalg.cholesky(cov))
        ).log_prob(self.x).numpy()
        self.post_cov = np.linalg.inv(np.eye(latent_dim) + self.W.T @ self.W / noise**2)
        self.post_chol = tf.constant(np.linalg.cholesky(self.post_cov))

    def log_likelihood_fn(self, x, z):
        mean = tf.einsum("sbd,xd->sbx", z, self.W) + self.b
        return tfd.Independent(tfd.Normal(mean, self.s), 1).log_prob(x[tf.newaxis])

    def posterior_mean(self, x):
        return tf.matmul((x - self.b) @ self.W / self.s**2, self.post_cov)

    def posterior_fn(self, x):
        return tfd.MultivariateNormalTriL(self.posterior_mean(x), self.post_chol)

    def poor_proposal_fn(self, x):
        # Shifted and twice as wide as the posterior: finite-variance weights.
        return tfd.MultivariateNormalTriL(self.posterior_mean(x) + 0.5, 2.0 * self.post_chol)

    def prior_proposal_fn(self, x):
        return tfd.MultivariateNormalDiag(tf.zeros([tf.shape(x)[0], self.d], F64))


@pytest.fixture(scope="module")
def model():
    return LinearGaussian()


def _pooled_se(se):
    se = np.asarray(se)
    return float(np.sqrt(np.sum(se**2)) / se.size)


# ----------------------------------------------------------------------------
# Importance sampling
# ----------------------------------------------------------------------------
def test_is_exact_posterior_has_zero_variance(model):
    est = importance_sampled_log_likelihood(
        model.x, model.posterior_fn, model.log_likelihood_fn, model.prior,
        num_samples=10, chunk_size=3, seed=1,
    )
    assert est.log_likelihood.shape == (16,)
    np.testing.assert_allclose(est.log_likelihood.numpy(), model.truth, atol=1e-5)
    assert np.max(est.standard_error.numpy()) < 1e-6
    np.testing.assert_allclose(est.effective_sample_size.numpy(), 10.0, rtol=1e-6)


def test_is_prior_proposal_within_standard_errors(model):
    est = importance_sampled_log_likelihood(
        model.x, model.prior_proposal_fn, model.log_likelihood_fn, model.prior,
        num_samples=2000, chunk_size=500, seed=2,
    )
    err = est.log_likelihood.numpy() - model.truth
    se = est.standard_error.numpy()
    assert abs(err.mean()) < 3.0 * _pooled_se(se)
    assert np.all(np.abs(err) < 5.0 * se)


def test_is_poor_proposal_approaches_truth_as_k_grows(model):
    # Each example 8 times (independent draws per row): 128 rows average out
    # the Monte-Carlo noise so the trend of the expectation shows.
    x = tf.tile(model.x, [8, 1])
    truth = np.tile(model.truth, 8)
    mean_errors, pooled = [], []
    for k in (1, 10, 100, 1000):
        est = importance_sampled_log_likelihood(
            x, model.poor_proposal_fn, model.log_likelihood_fn, model.prior,
            num_samples=k, chunk_size=100, seed=3,
        )
        mean_errors.append(float(np.mean(est.log_likelihood.numpy() - truth)))
        pooled.append(_pooled_se(est.standard_error.numpy()))
    # A stochastic lower bound whose expectation increases with K.
    assert all(a < b for a, b in zip(mean_errors, mean_errors[1:])), mean_errors
    assert mean_errors[0] < -1.0
    assert abs(mean_errors[-1]) < 3.0 * pooled[-1], (mean_errors, pooled)
    assert math.isnan(pooled[0])  # no standard error from a single sample


def test_is_chunked_equals_unchunked(model):
    kwargs = dict(
        x=model.x, proposal_fn=model.poor_proposal_fn,
        log_likelihood_fn=model.log_likelihood_fn, prior=model.prior,
        num_samples=37, seed=4,
    )
    ref = importance_sampled_log_likelihood(chunk_size=37, **kwargs)
    for chunk in (1, 5, 36, 1000):
        other = importance_sampled_log_likelihood(chunk_size=chunk, **kwargs)
        np.testing.assert_allclose(other.log_likelihood, ref.log_likelihood, rtol=0, atol=1e-10)
        np.testing.assert_allclose(other.standard_error, ref.standard_error, rtol=1e-8, atol=1e-12)
    eager = importance_sampled_log_likelihood(chunk_size=8, use_tf_function=False, **kwargs)
    np.testing.assert_allclose(eager.log_likelihood, ref.log_likelihood, rtol=0, atol=1e-10)


def test_is_seed_determinism(model):
    kwargs = dict(
        x=model.x, proposal_fn=model.poor_proposal_fn,
        log_likelihood_fn=model.log_likelihood_fn, prior=model.prior,
        num_samples=20, chunk_size=7,
    )
    a = importance_sampled_log_likelihood(seed=5, **kwargs).log_likelihood.numpy()
    b = importance_sampled_log_likelihood(seed=5, **kwargs).log_likelihood.numpy()
    c = importance_sampled_log_likelihood(seed=6, **kwargs).log_likelihood.numpy()
    t = importance_sampled_log_likelihood(
        seed=tf.constant([5, 0]), **kwargs).log_likelihood.numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, t)  # int seed n == stateless seed [n, 0]
    assert np.max(np.abs(a - c)) > 1e-3


def test_log_likelihood_from_flat_matches_protocol(model):
    def flat(x_flat, z_flat):  # [N, X], [N, D] -> [N]
        mean = z_flat @ model.W.T + model.b
        return tfd.Independent(tfd.Normal(mean, model.s), 1).log_prob(x_flat)

    z = tf.random.stateless_normal([4, 16, model.d], seed=[1, 2], dtype=F64)
    wrapped = log_likelihood_from_flat(flat)(model.x, z)
    assert wrapped.shape == (4, 16)
    np.testing.assert_allclose(wrapped, model.log_likelihood_fn(model.x, z), rtol=1e-12)


def test_dataset_helper_mean_standard_error_count(model):
    ds = tf.data.Dataset.from_tensor_slices((model.x, tf.range(16))).batch(5)
    out = importance_sampled_log_likelihood_over_dataset(
        ds, model.posterior_fn, model.log_likelihood_fn, model.prior,
        num_samples=4, chunk_size=2, seed=7,
    )
    assert out.count == 16
    np.testing.assert_allclose(out.mean, model.truth.mean(), atol=1e-6)
    np.testing.assert_allclose(out.standard_error, model.truth.std(ddof=1) / 4.0, rtol=1e-6)

    # Generic helper, dict elements, max_batches.
    ds_dict = tf.data.Dataset.from_tensor_slices({"image": model.x}).batch(5)
    seen_seeds = []

    def fn(x, seed):
        seen_seeds.append(seed.numpy().tolist())
        return tf.reduce_sum(x, axis=1)

    part = estimate_over_dataset(ds_dict, fn, seed=3, max_batches=2)
    assert part.count == 10
    np.testing.assert_allclose(part.mean, np.sum(model.x.numpy()[:10], axis=1).mean())
    assert seen_seeds[0] != seen_seeds[1]


# ----------------------------------------------------------------------------
# Annealed importance sampling
# ----------------------------------------------------------------------------
def test_ais_matches_truth_within_standard_error(model):
    est = ais_log_likelihood(
        model.x, model.log_likelihood_fn, model.prior,
        num_steps=300, num_chains=32, num_leapfrog_steps=5, step_size=0.1,
        adapt_step_size=True, seed=0,
    )
    err = est.log_likelihood.numpy() - model.truth
    se = est.standard_error.numpy()
    assert np.all(se > 0) and np.all(np.isfinite(se))
    assert abs(err.mean()) < 3.0 * _pooled_se(se), (err.mean(), _pooled_se(se))
    assert np.all(np.abs(err) < 5.0 * se), np.abs(err) / se
    assert est.log_weights.shape == (32, 16)
    assert est.step_size_schedule.shape == (20, 16)
    # Adaptation moved the step size away from its initial value and towards
    # the targeted acceptance probability.
    assert np.all(np.abs(est.step_size_schedule.numpy()[-1] - 0.1) > 0.02)
    acc = est.acceptance_rate.numpy()
    assert np.all((acc > 0.5) & (acc < 0.95)), acc


def test_ais_fixed_step_size_and_determinism(model):
    kwargs = dict(
        x=model.x[:4], log_likelihood_fn=model.log_likelihood_fn, prior=model.prior,
        num_steps=100, num_chains=8, num_leapfrog_steps=3, step_size=0.2,
        adapt_step_size=False, seed=3,
    )
    a = ais_log_likelihood(**kwargs)
    b = ais_log_likelihood(**kwargs)
    np.testing.assert_array_equal(a.log_weights, b.log_weights)
    np.testing.assert_allclose(a.step_size_schedule, 0.2, rtol=1e-12)
    # Loose: 100 steps, 8 chains.
    assert np.all(np.abs(a.log_likelihood.numpy() - model.truth[:4]) < 1.0)


# ----------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------
def test_bits_per_dim_uniform_8bit_model_is_8():
    for num_dims in (1, 784, 32 * 32 * 3):
        nll = num_dims * math.log(256.0)  # -log p of the uniform 8-bit model
        assert bits_per_dim(nll, num_dims) == 8.0
    nll = tf.fill([5], tf.constant(3072 * math.log(256.0), F64))
    np.testing.assert_allclose(bits_per_dim(nll, 3072), 8.0, rtol=0, atol=1e-12)
    assert nats_to_bits(math.log(2.0)) == 1.0
    # Uniform density on [0, 1]: NLL 0 continuous -> 8 bits/dim discrete.
    assert bits_per_dim(dequantized_to_discrete_nll(0.0, 10), 10) == pytest.approx(8.0)


# ----------------------------------------------------------------------------
# Classifier score (TF-GAN definition)
# ----------------------------------------------------------------------------
def _tfgan_classifier_score_numpy(logits):
    logits = np.asarray(logits, np.float64)
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    p = np.exp(log_p)
    q = p.mean(axis=0)
    return float(np.exp(np.mean(np.sum(p * (log_p - np.log(q)), axis=1))))


def test_classifier_score_constant_predictions_is_one():
    row = np.random.default_rng(0).normal(size=10)
    logits = np.tile(row, (50, 1))
    np.testing.assert_allclose(classifier_score_from_logits(logits), 1.0, atol=1e-12)


def test_classifier_score_confident_even_predictions_equals_num_classes():
    for k in (2, 10):
        logits = 40.0 * np.eye(k)[np.arange(5 * k) % k]
        np.testing.assert_allclose(classifier_score_from_logits(logits), k, rtol=1e-9)
    # Overflowing confidence (p underflows to 0) stays finite here.
    logits = 1e4 * np.eye(4)[np.arange(8) % 4]
    np.testing.assert_allclose(classifier_score_from_logits(logits), 4.0, rtol=1e-12)


def test_classifier_score_matches_reference_dtype_and_streaming():
    logits = np.random.default_rng(1).normal(size=(103, 7)) * 3.0
    ref = _tfgan_classifier_score_numpy(logits)
    np.testing.assert_allclose(classifier_score_from_logits(logits), ref, rtol=1e-12)
    out32 = classifier_score_from_logits(logits.astype(np.float32))
    assert out32.dtype == tf.float32
    np.testing.assert_allclose(out32, ref, rtol=1e-5)
    acc = ClassifierScoreAccumulator()
    for start, stop in ((0, 10), (10, 11), (11, 64), (64, 103)):  # unequal batches
        acc.update(logits[start:stop])
    assert acc.count == 103
    np.testing.assert_allclose(acc.result(), ref, rtol=1e-12)
    mean, std = classifier_score_from_logits_splits(logits, num_splits=4)
    per = [_tfgan_classifier_score_numpy(logits[i * 25:(i + 1) * 25]) for i in range(4)]
    np.testing.assert_allclose([mean, std], [np.mean(per), np.std(per)], rtol=1e-10)


# ----------------------------------------------------------------------------
# Frechet distance (TF-GAN definition)
# ----------------------------------------------------------------------------
def _random_spd(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T + 0.1 * np.eye(n)


def test_frechet_closed_form_matches_scipy_sqrtm():
    rng = np.random.default_rng(2)
    for n in (1, 4, 12):
        c1, c2 = _random_spd(rng, n), _random_spd(rng, n)
        m1, m2 = rng.normal(size=n), rng.normal(size=n)
        ref = (np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2)
               - 2.0 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real)
        np.testing.assert_allclose(frechet_distance_gaussians(m1, c1, m2, c2), ref, rtol=1e-8)
        np.testing.assert_allclose(
            trace_sqrt_product(c1, c2), np.trace(scipy.linalg.sqrtm(c1 @ c2)).real, rtol=1e-9)
    # Identical Gaussians: zero.
    np.testing.assert_allclose(frechet_distance_gaussians(m1, c1, m1, c1), 0.0, atol=1e-8)


def test_frechet_from_activations_matches_reference_and_self_is_zero():
    rng = np.random.default_rng(3)
    a1 = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    a2 = rng.normal(size=(300, 6)) + 1.0
    m1, m2 = a1.mean(0), a2.mean(0)
    c1, c2 = np.cov(a1, rowvar=False, ddof=1), np.cov(a2, rowvar=False, ddof=1)
    ref = (np.sum((m1 - m2) ** 2) + np.trace(c1 + c2)
           - 2.0 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real)
    np.testing.assert_allclose(frechet_distance_from_activations(a1, a2), ref, rtol=1e-8)
    np.testing.assert_allclose(frechet_distance_from_activations(a1, a1), 0.0, atol=1e-8)
    out32 = frechet_distance_from_activations(a1.astype(np.float32), a2.astype(np.float32))
    assert out32.dtype == tf.float32
    # Streaming statistics over unequal batches equal the one-shot value.
    s1, s2 = ActivationStatistics(), ActivationStatistics()
    for lo, hi in ((0, 3), (3, 250), (250, 500)):
        s1.update(a1[lo:hi])
    for lo, hi in ((0, 100), (100, 101), (101, 300)):
        s2.update(a2[lo:hi])
    np.testing.assert_allclose(s1.covariance, c1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(frechet_distance_from_statistics(s1, s2), ref, rtol=1e-8)


def test_frechet_of_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(4)
    c1, c2 = _random_spd(rng, 3), _random_spd(rng, 3)
    m1, m2 = np.zeros(3), np.array([1.0, -0.5, 0.25])
    exact = float(frechet_distance_gaussians(m1, c1, m2, c2))
    errors = []
    for n in (200, 20000):
        a1 = rng.multivariate_normal(m1, c1, size=n)
        a2 = rng.multivariate_normal(m2, c2, size=n)
        errors.append(abs(float(frechet_distance_from_activations(a1, a2)) - exact))
    assert errors[1] < errors[0]
    assert errors[1] < 0.03 * exact, (errors, exact)


# ----------------------------------------------------------------------------
# Reconstruction errors
# ----------------------------------------------------------------------------
def test_reconstruction_rmse_255():
    x = np.zeros((2, 4, 4, 3))
    x_hat = np.full((2, 4, 4, 3), 1.0 / 255.0)
    x_hat[1] *= 3.0
    np.testing.assert_allclose(reconstruction_rmse_255(x, x_hat, per_example=True), [1.0, 3.0])
    np.testing.assert_allclose(reconstruction_rmse_255(x, x_hat), math.sqrt(5.0))
    np.testing.assert_allclose(
        reconstruction_rmse_255(x * 255.0, x_hat * 255.0, data_range=255.0), math.sqrt(5.0))


def test_latent_reconstruction_error():
    z = np.zeros((3, 4))
    z_hat = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0], [0.0] * 4])
    np.testing.assert_allclose(latent_reconstruction_error(z, z_hat, per_example=True), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(latent_reconstruction_error(z, z_hat), 2.0 / 3.0)


# ----------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------
def test_bad_arguments_raise_value_error_naming_the_value(model):
    is_args = (model.x, model.posterior_fn, model.log_likelihood_fn, model.prior)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"num_samples={bad}"):
            importance_sampled_log_likelihood(*is_args, num_samples=bad)
    with pytest.raises(ValueError, match="num_samples=2.5"):
        importance_sampled_log_likelihood(*is_args, num_samples=2.5)
    with pytest.raises(ValueError, match="chunk_size=0"):
        importance_sampled_log_likelihood(*is_args, num_samples=4, chunk_size=0)
    with pytest.raises(ValueError, match="shape"):
        importance_sampled_log_likelihood(
            model.x, model.posterior_fn, lambda x, z: tf.zeros([3]), model.prior,
            num_samples=4, use_tf_function=False)
    ais_args = (model.x, model.log_likelihood_fn, model.prior)
    with pytest.raises(ValueError, match="num_steps=0"):
        ais_log_likelihood(*ais_args, num_steps=0)
    with pytest.raises(ValueError, match="num_chains=-1"):
        ais_log_likelihood(*ais_args, num_chains=-1)
    with pytest.raises(ValueError, match="step_size=-0.1"):
        ais_log_likelihood(*ais_args, step_size=-0.1)
    with pytest.raises(ValueError, match="target_accept_prob=1.5"):
        ais_log_likelihood(*ais_args, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="seed="):
        importance_sampled_log_likelihood(*is_args, num_samples=2, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="num_dims=0"):
        bits_per_dim(10.0, 0)
    with pytest.raises(ValueError, match=r"x_hat.shape=\(2, 5\)"):
        reconstruction_rmse_255(np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"z_hat.shape=\(3, 2\)"):
        latent_reconstruction_error(np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"activations2.shape=\(10, 4\)"):
        frechet_distance_from_activations(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"activations1.shape=\(1, 3\)"):
        frechet_distance_from_activations(np.zeros((1, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"logits.shape=\(5,\)"):
        classifier_score_from_logits(np.zeros(5))
    with pytest.raises(ValueError, match=r"cov2.shape=\(3, 3\)"):
        frechet_distance_gaussians(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
