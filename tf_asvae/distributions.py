"""Tensors -> TensorFlow Probability distributions.  Pure functions, no state.

Conventions: every distribution has its event over a whole example (all pixels, or all
latent units), so ``log_prob`` is summed over event dimensions and has the batch shape.

* Prior p(z) = N(0, I).
* Posterior q(z|x): diagonal Gaussian, optionally pushed through a flow (planar or IAF),
  ``q_K(z_K) = q_0(z_0) - sum_k log|det J_k|`` (Rezende & Mohamed 2015, eq. 7).
* Observation p(x|z): Bernoulli over pixels (for MNIST-type data, where the paper
  treats a [0, 1] pixel as the probability of a binary pixel, so ``log_prob`` is the
  cross-entropy with soft targets), or Gaussian, optionally with a planar flow on the
  flattened pixels.
* Discretised 8-bit likelihood (AS-VAE Sec. 5.1): for integer pixel i in 0..255,
  ``p(x = i | z) = P(x in [i/256, (i+1)/256] | z)`` under the continuous Gaussian; the
  two edge bins take the tails (bin 0 is (-inf, 1/256], bin 255 is [255/256, inf)) so
  that the 256 probabilities of a pixel sum to one.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors


def prior(latent_dim: int, dtype=tf.float32) -> tfd.Distribution:
    """p(z) = N(0, I_latent_dim)."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim], dtype=dtype),
                                      scale_diag=tf.ones([latent_dim], dtype=dtype))


def posterior(loc, scale, flow: tfb.Bijector | None = None) -> tfd.Distribution:
    """q(z|x): N(loc, diag(scale^2)), pushed through ``flow`` when given."""
    base = tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)
    if flow is None:
        return base
    return tfd.TransformedDistribution(base, flow)


def _check_covariance(covariance: str) -> None:
    if covariance not in ("diagonal", "full"):
        raise ValueError(f"Unknown covariance: Received: covariance={covariance!r}. "
                         "Expected 'diagonal' or 'full'.")


def sample_moments(samples, covariance: str = "diagonal"):
    """(mean [..., D], variance [..., D] or covariance [..., D, D]) of ``samples``
    [S, ..., D] over axis 0 (the biased estimator, divided by S)."""
    _check_covariance(covariance)
    mean = tf.reduce_mean(samples, 0)
    centred = samples - mean
    if covariance == "diagonal":
        return mean, tf.reduce_mean(tf.square(centred), 0)
    s = tf.cast(tf.shape(samples)[0], samples.dtype)
    return mean, tf.einsum("s...i,s...j->...ij", centred, centred) / s


def gaussian_from_moments(mean, second, covariance: str = "diagonal",
                          jitter: float = 1e-5, shrinkage: float = 1e-2
                          ) -> tfd.Distribution:
    """The Gaussian with ``mean`` [..., D] and ``second``: the variance [..., D]
    (``covariance="diagonal"``) or the covariance [..., D, D] (``"full"``).  The full
    covariance gets ``(shrinkage * mean variance + jitter) I`` added, which bounds its
    condition number: whitening a nearly degenerate covariance would amplify rounding.
    ``bijector.inverse`` of the result whitens codes: z~ = L^-1 (z - mean)."""
    _check_covariance(covariance)
    if covariance == "diagonal":
        return tfd.MultivariateNormalDiag(mean, tf.sqrt(second + jitter))
    ridge = shrinkage * tf.reduce_mean(tf.linalg.diag_part(second), -1) + jitter
    cov = second + ridge[..., tf.newaxis, tf.newaxis] * tf.eye(tf.shape(mean)[-1],
                                                               dtype=mean.dtype)
    return tfd.MultivariateNormalTriL(mean, tf.linalg.cholesky(cov))


def moment_matched_gaussian(samples, covariance: str = "diagonal",
                            jitter: float = 1e-5, shrinkage: float = 1e-2
                            ) -> tfd.Distribution:
    """The Gaussian with the mean and covariance of ``samples`` [S, ..., D] over axis 0:
    diagonal (AVB's adaptive contrast, Sec. 4) or full (``covariance="full"``), as
    :func:`gaussian_from_moments` builds it."""
    mean, second = sample_moments(samples, covariance)
    return gaussian_from_moments(mean, second, covariance, jitter, shrinkage)


def matched_normal_draws(num: int, num_blocks: int, block: int, seed) -> np.ndarray:
    """``num`` fixed noise vectors [num, num_blocks * block] whose sample moments are
    those of N(0, I) within each block of ``block`` units (float32, numpy).

    The draws come in antithetic pairs (eps, -eps), plus a zero vector when ``num`` is
    odd, so their sample mean is exactly 0.  Where the pairs span a block
    (``num // 2 >= block``), each block is then whitened with the symmetric inverse
    square root of its sample covariance (divided by ``num``), which makes that
    covariance exactly I; the symmetric root moves the draws as little as any
    whitening can.  With fewer pairs only the mean is exact.

    Why (AVB's adaptive contrast, ``ObjectiveConfig.ac_draws="matched"``): r(z|x) takes
    q(z|x)'s moments from a few fixed draws.  For a code linear in the noise,
    z = a + A eps, plain N(0, I) draws give r = N(a + A m, A S A^T) with m, S the
    draws' sample mean and covariance, and a fresh code whitened by r is distributed as
    N(-S^-1/2 m, S^-1) rather than N(0, I): from 64 draws of 32 units that mismatch is
    a KL of 12.6 nats, which the critic T must learn on top of q's own departure from a
    Gaussian.  Matched draws make it 0 for every code linear in the noise.
    """
    if num < 2 or num_blocks < 1 or block < 1:
        raise ValueError(f"matched_normal_draws needs num >= 2, num_blocks >= 1 and "
                         f"block >= 1. Received: num={num}, num_blocks={num_blocks}, "
                         f"block={block}.")
    half = num // 2
    rng = np.random.default_rng(np.asarray(seed, dtype=np.uint64))
    y = rng.standard_normal((half, num_blocks, block))
    if half >= block:
        cov = 2.0 * np.einsum("sbi,sbj->bij", y, y) / num
        values, vectors = np.linalg.eigh(cov)
        inv_root = np.einsum("bij,bj,bkj->bik", vectors, 1.0 / np.sqrt(values), vectors)
        y = np.einsum("sbi,bij->sbj", y, inv_root)
    draws = np.concatenate([y, -y] + ([np.zeros((1, num_blocks, block))] if num % 2 else []))
    return draws.reshape(num, num_blocks * block).astype(np.float32)


def split_gaussian_params(raw, channels: int, min_scale: float):
    """Raw decoder output [..., C * 2] -> (loc, scale) each [..., C]."""
    loc = raw[..., :channels]
    scale = min_scale + tf.nn.softplus(raw[..., channels:])
    return loc, scale


def observation(raw, likelihood: str, min_scale: float = 1e-3,
                flow: tfb.Bijector | None = None) -> tfd.Distribution:
    """p(x|z) from the decoder's raw output ``raw`` of shape [..., H, W, C * P].

    ``flow`` (Gaussian only) acts on the flattened image: x = reshape(flow(x0)),
    x0 ~ N(loc, diag(scale^2)).
    """
    if likelihood == "bernoulli":
        return tfd.Independent(tfd.Bernoulli(logits=raw, dtype=raw.dtype),
                               reinterpreted_batch_ndims=3)
    if likelihood != "gaussian":
        raise ValueError(f"Unknown likelihood: Received: likelihood={likelihood!r}. "
                         "Expected 'bernoulli' or 'gaussian'.")
    channels = raw.shape[-1] // 2
    loc, scale = split_gaussian_params(raw, channels, min_scale)
    if flow is None:
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=3)
    image_shape = loc.shape[-3:]
    flat = image_shape[0] * image_shape[1] * image_shape[2]
    batch = tf.shape(loc)[:-3]
    base = tfd.MultivariateNormalDiag(
        loc=tf.reshape(loc, tf.concat([batch, [flat]], 0)),
        scale_diag=tf.reshape(scale, tf.concat([batch, [flat]], 0)))
    reshape = tfb.Reshape(event_shape_out=image_shape, event_shape_in=[flat])
    return tfd.TransformedDistribution(base, tfb.Chain([reshape, flow]))


def observation_mean(raw, likelihood: str, min_scale: float = 1e-3,
                     flow: tfb.Bijector | None = None):
    """The image a decoder "means": pixel probabilities (Bernoulli), the location
    (Gaussian), or the flow applied to the location (flow on p(x|z), where the exact
    mean has no closed form)."""
    if likelihood == "bernoulli":
        return tf.sigmoid(raw)
    channels = raw.shape[-1] // 2
    loc, _ = split_gaussian_params(raw, channels, min_scale)
    if flow is None:
        return loc
    shape = tf.shape(loc)
    flat = tf.reshape(loc, tf.concat([shape[:-3], [-1]], 0))
    return tf.reshape(flow.forward(flat), shape)


def relaxed_bernoulli_sample(logits, temperature: float, seed):
    """A reparameterised Concrete / relaxed Bernoulli sample in (0, 1)
    (Maddison et al. 2017; Jang et al. 2017): sigmoid((logits + logistic noise) / t)."""
    u = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-6,
                                    maxval=1.0 - 1e-6, dtype=logits.dtype)
    noise = tf.math.log(u) - tf.math.log1p(-u)
    return tf.sigmoid((logits + noise) / temperature)


def straight_through_bernoulli(logits, uniform):
    """A binary sample of Bernoulli(sigmoid(logits)) whose gradient is that of the
    probabilities (the straight-through estimator, Bengio, Leonard & Courville 2013):
    value ``1[u < p]``, gradient ``dp``.  ``uniform``: U(0, 1) draws of logits' shape."""
    p = tf.sigmoid(logits)
    hard = tf.cast(uniform < p, p.dtype)
    return hard + (p - tf.stop_gradient(p))  # exactly 0 or 1 in value


def discretized_gaussian(raw, min_scale: float = 1e-3) -> tfd.Distribution:
    """The 8-bit discretisation of a Gaussian p(x|z), over integer pixels 0..255.

    With y = 256 x - 1, ``P(Y = i) = F_y(i) - F_y(i - 1) = P(x in [i/256, (i+1)/256])``,
    and TFP's QuantizedDistribution gives the edge bins the tails.
    ``log_prob`` takes integer-valued pixels (any float or int dtype) of shape
    [..., H, W, C] and sums over the image.
    """
    channels = raw.shape[-1] // 2
    loc, scale = split_gaussian_params(raw, channels, min_scale)
    base = tfd.Normal(loc=256.0 * loc - 1.0, scale=256.0 * scale)
    bins = tfd.QuantizedDistribution(base, low=0.0, high=255.0)
    return tfd.Independent(bins, reinterpreted_batch_ndims=3)
