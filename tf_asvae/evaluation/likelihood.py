"""Marginal-likelihood estimators: importance sampling, AIS, bits/dim.

Everything here is model-agnostic. The estimators see a latent-variable model
only through three objects (the *protocol*):

``prior``
    A ``tfd.Distribution`` over the latent code with ``batch_shape == []`` and
    event shape ``E`` (usually ``[D]``), e.g.
    ``tfd.MultivariateNormalDiag(tf.zeros(D))``. ``prior.log_prob(z)`` for
    ``z`` of shape ``[S, B, *E]`` must return ``[S, B]``; ``prior.sample([S, B],
    seed=...)`` must accept a stateless seed (every TFP distribution does).

``log_likelihood_fn(x, z) -> Tensor[S, B]``
    ``log p(x_b | z_{s,b})`` summed over the event (pixel) dimensions of x, for
    ``x`` of shape ``[B, *X]`` and ``z`` of shape ``[S, B, *E]`` with ``S >= 1``
    (``S`` is a chunk of importance samples, or the AIS chains). The function
    owns the broadcasting over the leading sample axis; wrap a decoder that
    expects flat batches with :func:`log_likelihood_from_flat`. For AIS it must
    be differentiable with respect to ``z`` (HMC uses its gradient).

``proposal_fn(x) -> tfd.Distribution`` (importance sampling only)
    The proposal ``q(z|x)`` with ``batch_shape == [B]`` and event shape ``E``;
    ``sample(seed=s)`` returns ``[B, *E]`` for a stateless seed ``s`` and
    ``log_prob(z)`` maps ``[S, B, *E] -> [S, B]``. Samples need not be
    reparameterised (no gradients flow). For AVB use the adaptive-contrast
    Gaussian ``r(z|x)``; for an encoder whose density is implicit use AIS.

``x`` is a batch with the batch axis first. Log-densities are in nats.

Seeds: ``seed`` is an ``int``, a shape ``[2]`` integer tensor (stateless seed) or
``None``. With a seed the estimators are deterministic (stateless RNG only); with
``None`` they draw fresh randomness each call.

References:
  [1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
  [2] Neal. Annealed Importance Sampling. Statistics and Computing 11, 2001.
  [3] Wu, Burda, Salakhutdinov, Grosse. On the Quantitative Analysis of
      Decoder-Based Generative Models. ICLR 2017 (arXiv:1611.04273).
  [4] Kong. A note on importance sampling using standardized weights. 1992
      (effective sample size).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = [
    "LogLikelihoodEstimate",
    "AISEstimate",
    "DatasetEstimate",
    "importance_sampled_log_likelihood",
    "ais_log_likelihood",
    "estimate_over_dataset",
    "importance_sampled_log_likelihood_over_dataset",
    "log_likelihood_from_flat",
    "nats_to_bits",
    "bits_per_dim",
    "dequantized_to_discrete_nll",
]

_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------
# Result containers
# ----------------------------------------------------------------------------
class LogLikelihoodEstimate(NamedTuple):
    """Per-example importance-sampling estimate (all fields shape ``[B]``).

    log_likelihood: ``log (1/K) sum_k w_k``, the IWAE estimate of ``log p(x)``.
    standard_error: delta-method Monte-Carlo standard error of ``log_likelihood``
      (see :func:`importance_sampled_log_likelihood`); NaN when ``K == 1``.
    effective_sample_size: ``(sum_k w_k)^2 / sum_k w_k^2`` in ``[1, K]``.
    """

    log_likelihood: tf.Tensor
    standard_error: tf.Tensor
    effective_sample_size: tf.Tensor


class AISEstimate(NamedTuple):
    """Per-example AIS estimate.

    log_likelihood: ``[B]`` logmeanexp over chains of the AIS log weights.
    standard_error: ``[B]`` delta-method standard error over the chains.
    effective_sample_size: ``[B]`` ESS of the chains' weights (1..num_chains).
    log_weights: ``[num_chains, B]`` AIS log weights of the final run.
    step_size_schedule: ``[num_step_size_buckets, B]`` HMC step size used in
      each stretch of the annealing path (constant rows without adaptation).
    acceptance_rate: ``[B]`` mean HMC acceptance probability in the final run.
    """

    log_likelihood: tf.Tensor
    standard_error: tf.Tensor
    effective_sample_size: tf.Tensor
    log_weights: tf.Tensor
    step_size_schedule: tf.Tensor
    acceptance_rate: tf.Tensor


class DatasetEstimate(NamedTuple):
    """Mean of per-example values over a data set (Python floats / int).

    mean: average over examples.
    standard_error: ``std(values, ddof=1) / sqrt(count)``, the sampling error
      over examples (NaN when ``count < 2``). It does not include the Monte-Carlo
      error of each per-example estimate.
    count: number of examples.
    """

    mean: float
    standard_error: float
    count: int


# ----------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------
def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _check_positive_float(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a positive number. Received: {name}={value!r}"
        ) from None
    if not (v > 0.0) or not math.isfinite(v):
        raise ValueError(
            f"`{name}` must be a positive number. Received: {name}={value!r}"
        )
    return v


def _sanitize_seed(seed):
    """int / scalar int tensor / [2]-tensor / None -> stateless seed ``[2] int32``.

    ``tfp.random.sanitize_seed(int)`` goes through a stateful op and is not
    reproducible across calls, so Python ints are mapped deterministically here;
    a scalar integer tensor (e.g. a SavedModel signature input) is mapped the same
    way, so ``seed=5`` and ``seed=tf.constant(5)`` give the same draws.
    """
    if seed is None:
        return tfp.random.sanitize_seed(None)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seed = int(seed)
        return tf.constant([seed % 2**31, (seed // 2**31) % 2**31], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype.is_integer and seed.shape.rank == 0:
        seed = tf.cast(seed, tf.int64)
        return tf.cast(tf.stack([seed % 2**31, (seed // 2**31) % 2**31]), tf.int32)
    if not seed.dtype.is_integer or (seed.shape.rank is not None and seed.shape != [2]):
        raise ValueError(
            "`seed` must be None, a Python int or a scalar or shape [2] integer tensor. "
            f"Received: seed={seed!r}"
        )
    return tf.cast(seed, tf.int32)


def _fold_in(seed, k):
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(k, tf.int32))


def _check_sample_log_prob_shape(name: str, value: tf.Tensor, sample_size, batch_size):
    """Static check that ``value`` has shape ``[sample_size, batch_size]``."""
    shape = value.shape
    if shape.rank is not None and shape.rank != 2:
        raise ValueError(
            f"`{name}` must return a tensor of shape [num_samples, batch_size]. "
            f"Received: shape={shape}"
        )
    expected = [sample_size, batch_size]
    if shape.rank == 2:
        for got, want in zip(shape.as_list(), expected):
            if got is not None and want is not None and got != want:
                raise ValueError(
                    f"`{name}` must return a tensor of shape "
                    f"[num_samples, batch_size]={expected}. Received: shape={shape}"
                )


# ----------------------------------------------------------------------------
# Protocol adapter
# ----------------------------------------------------------------------------
def log_likelihood_from_flat(
    flat_log_likelihood_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Adapts a flat-batch ``log p(x|z)`` to the ``[S, B]`` protocol.

    ``flat_log_likelihood_fn(x_flat, z_flat)`` takes ``x_flat`` of shape
    ``[N, *X]`` and ``z_flat`` of shape ``[N, *E]`` and returns ``[N]`` (one
    log-likelihood per row, summed over pixels), e.g. a Keras decoder followed by
    a distribution's ``log_prob``. The returned callable tiles ``x`` over the
    ``S`` samples, calls it once on ``N = S * B`` rows and reshapes to ``[S, B]``.
    """

    def log_likelihood_fn(x, z):
        x = tf.convert_to_tensor(x)
        z = tf.convert_to_tensor(z)
        s = tf.shape(z)[0]
        b = tf.shape(z)[1]
        z_flat = tf.reshape(z, tf.concat([[s * b], tf.shape(z)[2:]], axis=0))
        x_rep = tf.tile(x[tf.newaxis], tf.concat([[s], tf.ones_like(tf.shape(x))], 0))
        x_flat = tf.reshape(x_rep, tf.concat([[s * b], tf.shape(x)[1:]], axis=0))
        out = flat_log_likelihood_fn(x_flat, z_flat)
        return tf.reshape(out, tf.stack([s, b]))

    return log_likelihood_fn


# ----------------------------------------------------------------------------
# Streaming log-mean-exp
# ----------------------------------------------------------------------------
def _streaming_init(batch_size, dtype):
    neg_inf = tf.fill([batch_size], tf.constant(-np.inf, dtype))
    zero = tf.zeros([batch_size], dtype)
    return neg_inf, zero, zero


def _streaming_update(state, log_w):
    """Folds a chunk ``log_w [S, B]`` into ``(max, sum1, sum2)``.

    Keeps ``m = max_k log w_k``, ``s1 = sum_k exp(log w_k - m)`` and
    ``s2 = sum_k exp(2 (log w_k - m))``; rescales both sums when ``m`` grows.
    """
    m, s1, s2 = state
    m_new = tf.maximum(m, tf.reduce_max(log_w, axis=0))
    # All weights -inf so far: keep sums at zero instead of exp(-inf + inf).
    m_safe = tf.where(tf.math.is_finite(m_new), m_new, tf.zeros_like(m_new))
    scale = tf.exp(m - m_safe)  # exp(-inf) = 0 on the first chunk
    d = tf.exp(log_w - m_safe)
    s1 = s1 * scale + tf.reduce_sum(d, axis=0)
    s2 = s2 * tf.square(scale) + tf.reduce_sum(tf.square(d), axis=0)
    return m_new, s1, s2


def _streaming_finalize(state, num_samples):
    """``num_samples``: a Python int, or a scalar integer tensor (dynamic K)."""
    m, s1, s2 = state
    dtype = s1.dtype
    k = tf.cast(num_samples, dtype)
    m_safe = tf.where(tf.math.is_finite(m), m, tf.zeros_like(m))
    log_mean = m_safe + tf.math.log(s1) - tf.math.log(k)
    log_mean = tf.where(tf.math.is_finite(m), log_mean, m)
    ess = tf.math.divide_no_nan(tf.square(s1), s2)
    # Var[log mean w] ~ Var[w] / (K mean(w)^2) = (K / ESS - 1) / (K - 1); NaN for K = 1.
    rel_var = (k * s2 / tf.square(s1) - 1.0) / tf.maximum(k - 1.0, tf.ones_like(k))
    se = tf.where(k > 1.0, tf.sqrt(tf.maximum(rel_var, tf.zeros_like(rel_var))),
                  tf.constant(np.nan, dtype))
    return log_mean, se, ess


def _log_mean_exp_with_error(log_w: tf.Tensor, axis_size: int):
    """Non-streaming version over axis 0 of ``log_w [K, B]``."""
    batch_size = tf.shape(log_w)[1]
    state = _streaming_init(batch_size, log_w.dtype)
    state = _streaming_update(state, log_w)
    return _streaming_finalize(state, axis_size)


# ----------------------------------------------------------------------------
# Importance sampling
# ----------------------------------------------------------------------------
def _chunk_log_weights_fn(x, seed, proposal, log_likelihood_fn, prior):
    """``(indices [n], n) -> log w [n, B]`` for the samples with those indices
    (``n`` static, or None for a chunk whose length is only known at run time)."""
    dtype = proposal.dtype
    static_batch = x.shape[0]

    def draw(indices):
        # One stateless seed per *sample index*: the draws do not depend on how
        # the K samples are split into chunks.
        return tf.map_fn(
            lambda k: proposal.sample(seed=_fold_in(seed, k)),
            indices,
            fn_output_signature=dtype,
            parallel_iterations=min(int(indices.shape[0] or 32), 32),
        )

    def chunk_log_weights(indices, n):
        z = draw(indices)
        log_lik = log_likelihood_fn(x, z)
        _check_sample_log_prob_shape("log_likelihood_fn", log_lik, n, static_batch)
        log_w = (
            tf.cast(log_lik, dtype)
            + tf.cast(prior.log_prob(z), dtype)
            - tf.cast(proposal.log_prob(z), dtype)
        )
        return tf.ensure_shape(log_w, [n, static_batch])

    return chunk_log_weights


def _is_core(x, seed, proposal_fn, log_likelihood_fn, prior, num_samples, chunk_size):
    x = tf.convert_to_tensor(x)
    proposal = proposal_fn(x)
    chunk_log_weights = _chunk_log_weights_fn(x, seed, proposal, log_likelihood_fn, prior)
    state = _streaming_init(tf.shape(x)[0], proposal.dtype)
    num_full, rest = divmod(num_samples, chunk_size)
    if num_full > 0:
        offsets = tf.range(chunk_size, dtype=tf.int32)

        def body(i, m, s1, s2):
            log_w = chunk_log_weights(i * chunk_size + offsets, chunk_size)
            return (i + 1,) + tuple(_streaming_update((m, s1, s2), log_w))

        _, m, s1, s2 = tf.while_loop(
            lambda i, *_: i < num_full,
            body,
            (tf.constant(0, tf.int32),) + tuple(state),
            maximum_iterations=num_full,
        )
        state = (m, s1, s2)
    if rest > 0:
        indices = num_full * chunk_size + tf.range(rest, dtype=tf.int32)
        state = _streaming_update(state, chunk_log_weights(indices, rest))
    return _streaming_finalize(state, num_samples)


_is_core_compiled = tf.function(_is_core, autograph=False)


def _is_core_dynamic(x, seed, proposal_fn, log_likelihood_fn, prior, num_samples, chunk_size):
    """``_is_core`` for a number of samples known only at run time (a scalar int32
    tensor, e.g. a SavedModel signature input): ceil(K / chunk_size) chunks, the last
    one shorter.  Sample k uses the same seed as in ``_is_core``, so both give the
    same estimate up to float rounding."""
    x = tf.convert_to_tensor(x)
    proposal = proposal_fn(x)
    chunk_log_weights = _chunk_log_weights_fn(x, seed, proposal, log_likelihood_fn, prior)
    num_chunks = (num_samples + chunk_size - 1) // chunk_size

    def body(i, m, s1, s2):
        start = i * chunk_size
        indices = tf.range(start, tf.minimum(start + chunk_size, num_samples))
        return (i + 1,) + tuple(_streaming_update((m, s1, s2), chunk_log_weights(indices, None)))

    _, m, s1, s2 = tf.while_loop(
        lambda i, *_: i < num_chunks,
        body,
        (tf.constant(0, tf.int32),) + tuple(_streaming_init(tf.shape(x)[0], proposal.dtype)),
    )
    return _streaming_finalize((m, s1, s2), num_samples)


_is_core_dynamic_compiled = tf.function(_is_core_dynamic, autograph=False)


def importance_sampled_log_likelihood(
    x,
    proposal_fn: Callable[[tf.Tensor], tfd.Distribution],
    log_likelihood_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    prior: tfd.Distribution,
    num_samples: int,
    chunk_size: int = 100,
    *,
    seed=None,
    use_tf_function: bool = True,
) -> LogLikelihoodEstimate:
    """Importance-weighted (IWAE) estimate of ``log p(x)`` per example.

    With ``z_k ~ q(z|x)`` i.i.d., ``k = 1..K`` ([1], MATH.md Sec. 4)::

        log w_k   = log p(x|z_k) + log p(z_k) - log q(z_k|x)
        log p^(x) = log (1/K) sum_k w_k

    ``p^(x)`` is unbiased for ``p(x)``, so ``E[log p^(x)] <= log p(x)`` (a
    stochastic lower bound, increasing in K and tight as K -> inf [1]).

    Memory: samples are processed ``chunk_size`` at a time; a streaming
    log-sum-exp keeps per example the running maximum ``m`` of the log weights,
    ``sum exp(log w - m)`` and ``sum exp(2 (log w - m))``, rescaling both sums
    when ``m`` grows. At most ``chunk_size * B`` latent samples exist at once.

    Randomness: sample ``k`` is drawn with the stateless seed
    ``fold_in(seed, k)``, so the estimate for a given seed does not depend on
    ``chunk_size`` (chunked == unchunked up to float rounding).

    Standard error (delta method): with ``w-bar`` the mean weight and ``s^2``
    their unbiased sample variance, ``Var[log w-bar] ~ s^2 / (K w-bar^2)``, i.e.
    ``se = sqrt((K / ESS - 1) / (K - 1))`` with ``ESS = (sum w)^2 / sum w^2``.
    It measures the Monte-Carlo spread only, not the (negative) Jensen bias of
    the log, and is itself unreliable when the weights are heavy-tailed (small
    ESS). Zero when all weights are equal (exact posterior as proposal).

    Args:
      x: ``[B, *X]`` batch of data.
      proposal_fn: ``x -> q(z|x)``, see the module docstring.
      log_likelihood_fn: ``(x, z[S, B, *E]) -> [S, B]``, see the module docstring.
      prior: ``p(z)``, batch shape ``[]``.
      num_samples: K >= 1: a Python int, or a scalar integer tensor when K is only
        known at run time (e.g. a SavedModel signature input); K < 1 then fails
        at run time with an InvalidArgumentError.
      chunk_size: samples per chunk, >= 1 (clipped to ``num_samples``).
      seed: int, ``[2]`` stateless seed, or None.
      use_tf_function: trace the computation once into a graph (recommended;
        retraced per new input shape or new callables). False runs eagerly.

    Returns:
      :class:`LogLikelihoodEstimate` with per-example tensors of shape ``[B]``
      in the proposal's dtype.

    Raises:
      ValueError: non-positive ``num_samples``/``chunk_size``, or callables that
        return log-densities of the wrong shape.
    """
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    if tf.is_tensor(num_samples):
        if not num_samples.dtype.is_integer or num_samples.shape.rank != 0:
            raise ValueError(
                "`num_samples` must be a positive integer or a scalar integer tensor. "
                f"Received: num_samples={num_samples!r}"
            )
        num_samples = tf.cast(num_samples, tf.int32)
        check = tf.debugging.assert_positive(
            num_samples, message="`num_samples` must be a positive integer")
        with tf.control_dependencies([check]):
            num_samples = tf.identity(num_samples)
        core = _is_core_dynamic_compiled if use_tf_function else _is_core_dynamic
    else:
        num_samples = _check_positive_int("num_samples", num_samples)
        chunk_size = min(chunk_size, num_samples)
        core = _is_core_compiled if use_tf_function else _is_core
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank < 1:
        raise ValueError(f"`x` must have a leading batch axis. Received: x.shape={x.shape}")
    seed = _sanitize_seed(seed)
    log_p, se, ess = core(
        x, seed, proposal_fn, log_likelihood_fn, prior, num_samples, chunk_size
    )
    return LogLikelihoodEstimate(log_p, se, ess)


# ----------------------------------------------------------------------------
# Annealed importance sampling
# ----------------------------------------------------------------------------
class _AnnealedHMCResults(NamedTuple):
    inner_results: Any  # MetropolisHastingsKernelResults of the HMC step
    step: tf.Tensor  # int32 scalar, index of the next transition
    log_step_size: tf.Tensor  # [B, 1..] current (adapted) log step size
    bucket_log_step_sum: tf.Tensor  # [num_buckets, B, 1..]
    bucket_count: tf.Tensor  # [num_buckets]
    accept_sum: tf.Tensor  # [B] summed mean-over-chains acceptance prob


class _AnnealedHMC(tfp.mcmc.TransitionKernel):
    """HMC transition for one AIS stage, with a per-example step size.

    Two departures from handing ``tfp.mcmc.HamiltonianMonteCarlo`` directly to
    ``sample_annealed_importance_chain``:

    * The target's log-density and gradient at the current state are recomputed
      for the current inverse temperature before every transition. The AIS loop
      creates a new kernel per stage but passes on the previous stage's kernel
      results, whose cached ``target_log_prob`` belongs to the previous
      temperature; HMC would use it in its acceptance test and first leapfrog
      half-step, so the transition would not leave the intermediate distribution
      invariant (a bias in the AIS weights). Costs one extra gradient per stage.
    * The step size is per example (shape ``[B, 1, ...]``, shared by that
      example's chains) and depends on the stage through ``schedule`` (fixed
      mode), or is adapted from the acceptance rate (``adapt=True``, used only
      in the preliminary run whose weights are discarded).
    """

    def __init__(
        self,
        target_log_prob_fn,
        num_leapfrog_steps,
        num_steps,
        log_step_size_schedule,
        adapt,
        target_accept_prob,
        adaptation_rate,
    ):
        self._target_log_prob_fn = target_log_prob_fn
        self._num_leapfrog_steps = num_leapfrog_steps
        self._num_steps = num_steps
        self._schedule = log_step_size_schedule  # [nb, B, 1..]
        self._num_buckets = int(log_step_size_schedule.shape[0])
        self._adapt = adapt
        self._target_accept_prob = target_accept_prob
        self._adaptation_rate = adaptation_rate
        self._parameters = dict(
            target_log_prob_fn=target_log_prob_fn,
            num_leapfrog_steps=num_leapfrog_steps,
        )

    @property
    def is_calibrated(self):
        return True

    @property
    def parameters(self):
        return self._parameters

    def _hmc(self, log_step_size):
        return tfp.mcmc.HamiltonianMonteCarlo(
            target_log_prob_fn=self._target_log_prob_fn,
            step_size=tf.exp(log_step_size),
            num_leapfrog_steps=self._num_leapfrog_steps,
        )

    def _bucket(self, step):
        b = (step * self._num_buckets) // self._num_steps
        return tf.minimum(b, self._num_buckets - 1)

    def bootstrap_results(self, init_state):
        log_eps = self._schedule[0]
        inner = self._hmc(log_eps).bootstrap_results(init_state)
        batch_size = tf.shape(log_eps)[0]
        return _AnnealedHMCResults(
            inner_results=inner,
            step=tf.constant(0, tf.int32),
            log_step_size=log_eps,
            bucket_log_step_sum=tf.zeros_like(self._schedule),
            bucket_count=tf.zeros([self._num_buckets], log_eps.dtype),
            accept_sum=tf.zeros([batch_size], log_eps.dtype),
        )

    def one_step(self, current_state, previous_kernel_results, seed=None):
        prev = previous_kernel_results
        bucket = self._bucket(prev.step)
        if self._adapt:
            log_eps = prev.log_step_size
        else:
            log_eps = tf.gather(self._schedule, bucket)
        hmc = self._hmc(log_eps)
        fresh = hmc.bootstrap_results(current_state)  # this stage's target
        next_state, mh = hmc.one_step(current_state, fresh, seed=seed)
        log_ratio = mh.log_accept_ratio  # [C, B]
        accept = tf.exp(tf.minimum(log_ratio, tf.zeros_like(log_ratio)))
        accept = tf.where(tf.math.is_nan(accept), tf.zeros_like(accept), accept)
        accept = tf.cast(tf.reduce_mean(accept, axis=0), log_eps.dtype)  # [B]
        onehot = tf.one_hot(bucket, self._num_buckets, dtype=log_eps.dtype)
        bshape = tf.concat([[self._num_buckets], tf.ones_like(tf.shape(log_eps))], 0)
        bucket_sum = prev.bucket_log_step_sum + tf.reshape(onehot, bshape) * log_eps
        bucket_count = prev.bucket_count + onehot
        if self._adapt:
            delta = self._adaptation_rate * (accept - self._target_accept_prob)
            new_log_eps = log_eps + tf.reshape(delta, tf.shape(log_eps))
        else:
            new_log_eps = log_eps
        return next_state, _AnnealedHMCResults(
            inner_results=mh,
            step=prev.step + 1,
            log_step_size=new_log_eps,
            bucket_log_step_sum=bucket_sum,
            bucket_count=bucket_count,
            accept_sum=prev.accept_sum + accept,
        )


def _ais_core(
    x,
    seed,
    log_likelihood_fn,
    prior,
    log_step_size_schedule,
    num_steps,
    num_chains,
    num_leapfrog_steps,
    adapt,
    target_accept_prob,
    adaptation_rate,
):
    x = tf.convert_to_tensor(x)
    batch_size = tf.shape(x)[0]
    init_seed, chain_seed = tfp.random.split_seed(seed, n=2)
    z0 = prior.sample(tf.stack([num_chains, batch_size]), seed=init_seed)

    def proposal_log_prob_fn(z):
        return prior.log_prob(z)

    def target_log_prob_fn(z):
        log_lik = log_likelihood_fn(x, z)
        _check_sample_log_prob_shape(
            "log_likelihood_fn", log_lik, num_chains, x.shape[0]
        )
        return prior.log_prob(z) + tf.cast(log_lik, z.dtype)

    def make_kernel_fn(tlp_fn):
        return _AnnealedHMC(
            tlp_fn,
            num_leapfrog_steps=num_leapfrog_steps,
            num_steps=num_steps,
            log_step_size_schedule=log_step_size_schedule,
            adapt=adapt,
            target_accept_prob=target_accept_prob,
            adaptation_rate=adaptation_rate,
        )

    _, log_weights, results = tfp.mcmc.sample_annealed_importance_chain(
        num_steps=num_steps,
        proposal_log_prob_fn=proposal_log_prob_fn,
        target_log_prob_fn=target_log_prob_fn,
        current_state=z0,
        make_kernel_fn=make_kernel_fn,
        seed=chain_seed,
    )
    inner = results.inner_results
    bucket_mean = inner.bucket_log_step_sum / tf.reshape(
        tf.maximum(inner.bucket_count, 1.0),
        tf.concat([[-1], tf.ones_like(tf.shape(inner.log_step_size))], 0),
    )
    acceptance = inner.accept_sum / tf.cast(num_steps, inner.accept_sum.dtype)
    return log_weights, bucket_mean, acceptance


_ais_core_compiled = tf.function(_ais_core, autograph=False)


def ais_log_likelihood(
    x,
    log_likelihood_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    prior: tfd.Distribution,
    num_steps: int = 1000,
    num_chains: int = 16,
    num_leapfrog_steps: int = 10,
    step_size: float = 0.05,
    adapt_step_size: bool = True,
    seed=None,
    *,
    num_adaptation_steps: Optional[int] = None,
    num_step_size_buckets: int = 20,
    target_accept_prob: float = 0.65,
    adaptation_rate: float = 0.1,
    use_tf_function: bool = True,
) -> AISEstimate:
    """Annealed-importance-sampling estimate of ``log p(x)`` per example.

    Geometric path [2, 3] from the prior to the unnormalised posterior::

        pi_t(z) ∝ p(z) p(x|z)^beta_t,   beta_t = t / T,  t = 0..T  (T = num_steps)

    run by ``tfp.mcmc.sample_annealed_importance_chain`` (linear schedule, its
    only one) with ``num_chains`` independent chains per example, each started
    from ``p(z)``. A chain's log weight is
    ``sum_{t=0}^{T-1} (beta_{t+1} - beta_t) log p(x|z_t)`` where ``z_t`` has
    been moved by an HMC transition leaving ``pi_t`` invariant; ``exp`` of it is
    an unbiased estimate of ``p(x)``. The per-example estimate is the log of the
    chains' average weight (``logmeanexp`` over chains), so it is, like IS, a
    stochastic lower bound in expectation.

    Standard error: the same delta-method formula as
    :func:`importance_sampled_log_likelihood` applied to the ``C`` chain
    weights, ``se = sqrt((C / ESS - 1) / (C - 1))``. It needs ``C >= 2`` (NaN
    otherwise) and under-reports when the weights are heavy-tailed (few chains,
    too few steps); the gap between AIS and IS, or a run with more steps, is the
    better check of convergence.

    Step-size adaptation (``adapt_step_size=True``) keeps the estimate unbiased
    by separating tuning from estimation:

    1. A *preliminary* AIS run over the same path with
       ``num_adaptation_steps`` transitions adapts a per-example log step size
       (shared by that example's chains) after every transition:
       ``log eps <- log eps + adaptation_rate * (a - target_accept_prob)``, with
       ``a`` the chains' mean HMC acceptance probability. The path is cut into
       ``num_step_size_buckets`` equal stretches of beta and the log step sizes
       used within each stretch are averaged. Its weights are discarded.
    2. The *final* run, with fresh random numbers, uses that schedule as fixed
       numbers: the step size of transition ``t`` depends only on ``t`` and the
       example, never on the final run's own states, so every transition leaves
       its ``pi_t`` invariant and the weights keep their expectation ``p(x)``
       (conditionally on the schedule, hence also unconditionally).

    With ``adapt_step_size=False`` the constant ``step_size`` is used throughout.

    Args:
      x: ``[B, *X]`` batch.
      log_likelihood_fn: ``(x, z[C, B, *E]) -> [C, B]``, differentiable in z.
      prior: ``p(z)`` with batch shape ``[]``.
      num_steps: number of intermediate distributions / HMC transitions T >= 1.
      num_chains: independent AIS chains per example, C >= 1 (>= 2 for an SE).
      num_leapfrog_steps: leapfrog steps per HMC transition.
      step_size: initial (or, without adaptation, fixed) leapfrog step size.
      adapt_step_size: run the preliminary tuning phase described above.
      seed: int, ``[2]`` stateless seed, or None.
      num_adaptation_steps: transitions of the preliminary run
        (default ``max(num_steps // 2, num_step_size_buckets)``).
      num_step_size_buckets: stretches of the path with their own step size.
      target_accept_prob: acceptance probability targeted by the tuning.
      adaptation_rate: gain of the log-step-size update.
      use_tf_function: trace into a graph (strongly recommended for speed).

    Returns:
      :class:`AISEstimate`.

    Raises:
      ValueError: non-positive sizes or step size, bad ``target_accept_prob``,
        or a ``log_likelihood_fn`` of the wrong output shape.
    """
    num_steps = _check_positive_int("num_steps", num_steps)
    num_chains = _check_positive_int("num_chains", num_chains)
    num_leapfrog_steps = _check_positive_int("num_leapfrog_steps", num_leapfrog_steps)
    step_size = _check_positive_float("step_size", step_size)
    num_step_size_buckets = _check_positive_int(
        "num_step_size_buckets", num_step_size_buckets
    )
    if not 0.0 < float(target_accept_prob) < 1.0:
        raise ValueError(
            "`target_accept_prob` must lie in (0, 1). "
            f"Received: target_accept_prob={target_accept_prob!r}"
        )
    adaptation_rate = _check_positive_float("adaptation_rate", adaptation_rate)
    if num_adaptation_steps is None:
        num_adaptation_steps = max(num_steps // 2, num_step_size_buckets)
    num_adaptation_steps = _check_positive_int(
        "num_adaptation_steps", num_adaptation_steps
    )
    num_buckets = min(num_step_size_buckets, num_steps)
    if adapt_step_size:
        num_buckets = min(num_buckets, num_adaptation_steps)

    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank < 1:
        raise ValueError(f"`x` must have a leading batch axis. Received: x.shape={x.shape}")
    dtype = prior.dtype
    event_rank = tf.get_static_value(tf.size(prior.event_shape_tensor()))
    if event_rank is None:
        event_rank = len(prior.event_shape)
    batch_size = tf.shape(x)[0]
    eps_shape = tf.concat([[batch_size], tf.ones([event_rank], tf.int32)], 0)
    init_log_eps = tf.fill(eps_shape, tf.constant(math.log(step_size), dtype))
    schedule = tf.tile(
        init_log_eps[tf.newaxis],
        tf.concat([[num_buckets], tf.ones([event_rank + 1], tf.int32)], 0),
    )

    seed = _sanitize_seed(seed)
    adapt_seed, final_seed = tfp.random.split_seed(seed, n=2)
    core = _ais_core_compiled if use_tf_function else _ais_core
    common = dict(
        log_likelihood_fn=log_likelihood_fn,
        prior=prior,
        num_chains=num_chains,
        num_leapfrog_steps=num_leapfrog_steps,
        target_accept_prob=float(target_accept_prob),
        adaptation_rate=adaptation_rate,
    )
    if adapt_step_size:
        _, schedule, _ = core(
            x,
            adapt_seed,
            log_step_size_schedule=schedule,
            num_steps=num_adaptation_steps,
            adapt=True,
            **common,
        )
    log_weights, _, acceptance = core(
        x,
        final_seed,
        log_step_size_schedule=schedule,
        num_steps=num_steps,
        adapt=False,
        **common,
    )
    log_p, se, ess = _log_mean_exp_with_error(log_weights, num_chains)
    step_sizes = tf.exp(tf.reshape(schedule, tf.stack([num_buckets, batch_size])))
    return AISEstimate(log_p, se, ess, log_weights, step_sizes, acceptance)


# ----------------------------------------------------------------------------
# Data-set level helper
# ----------------------------------------------------------------------------
def _default_element_fn(element):
    if isinstance(element, dict):
        for key in ("image", "x"):
            if key in element:
                return element[key]
        raise ValueError(
            "Cannot find the data in a dict element; pass `element_fn`. "
            f"Received: keys={sorted(element)}"
        )
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def estimate_over_dataset(
    dataset: tf.data.Dataset,
    estimate_fn: Callable[[tf.Tensor, Any], Any],
    *,
    seed=None,
    element_fn: Optional[Callable[[Any], tf.Tensor]] = None,
    max_batches: Optional[int] = None,
) -> DatasetEstimate:
    """Averages a per-example estimator over a batched ``tf.data.Dataset``.

    ``estimate_fn(x, seed)`` gets each batch ``x`` and a per-batch stateless seed
    ``fold_in(seed, batch_index)`` (None when ``seed`` is None) and returns the
    ``[B]`` per-example values, or a result with a ``log_likelihood`` field
    (:class:`LogLikelihoodEstimate`, :class:`AISEstimate`). Values are
    accumulated in float64 (Chan et al.'s pairwise mean/variance update).

    ``element_fn`` extracts ``x`` from a dataset element (default: the element
    itself, the first item of a tuple, or ``element['image']``/``['x']``).
    """
    if max_batches is not None:
        max_batches = _check_positive_int("max_batches", max_batches)
    element_fn = element_fn or _default_element_fn
    base_seed = None if seed is None else _sanitize_seed(seed)
    count, mean, m2 = 0, 0.0, 0.0
    for i, element in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        x = element_fn(element)
        batch_seed = None if base_seed is None else _fold_in(base_seed, i)
        out = estimate_fn(x, batch_seed)
        values = getattr(out, "log_likelihood", out)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        n_b = values.size
        if n_b == 0:
            continue
        mean_b = float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        total = count + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * count * n_b / total
        count = total
    if count == 0:
        return DatasetEstimate(float("nan"), float("nan"), 0)
    se = math.sqrt(m2 / (count - 1) / count) if count > 1 else float("nan")
    return DatasetEstimate(mean, se, count)


def importance_sampled_log_likelihood_over_dataset(
    dataset: tf.data.Dataset,
    proposal_fn: Callable[[tf.Tensor], tfd.Distribution],
    log_likelihood_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    prior: tfd.Distribution,
    num_samples: int,
    chunk_size: int = 100,
    *,
    seed=None,
    element_fn: Optional[Callable[[Any], tf.Tensor]] = None,
    max_batches: Optional[int] = None,
) -> DatasetEstimate:
    """Mean IWAE ``log p(x)`` (nats) over a batched data set, with its standard
    error over examples and the example count. See
    :func:`importance_sampled_log_likelihood` and :func:`estimate_over_dataset`.
    The NLL is ``-mean``; bits/dim is ``bits_per_dim(-mean, D)``.
    """
    num_samples = _check_positive_int("num_samples", num_samples)
    chunk_size = _check_positive_int("chunk_size", chunk_size)

    def estimate_fn(x, batch_seed):
        return importance_sampled_log_likelihood(
            x,
            proposal_fn,
            log_likelihood_fn,
            prior,
            num_samples,
            chunk_size,
            seed=batch_seed,
        )

    return estimate_over_dataset(
        dataset, estimate_fn, seed=seed, element_fn=element_fn, max_batches=max_batches
    )


# ----------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------
def nats_to_bits(nats):
    """``nats / ln 2``; works on Python numbers, NumPy arrays and tensors."""
    if tf.is_tensor(nats):
        return nats / tf.constant(_LN2, nats.dtype)
    return np.asarray(nats, dtype=np.float64) / _LN2 if np.ndim(nats) else float(nats) / _LN2


def bits_per_dim(nll_nats, num_dims: int):
    """Bits per dimension ``nll_nats / (num_dims * ln 2)`` (MATH.md Sec. 4).

    ``nll_nats`` is the per-example (or mean) negative log-likelihood in nats of
    the *discrete* data, e.g. under the 8-bit discretised likelihood
    ``P(x in [i/256, (i+1)/256] | z)``; ``num_dims = H * W * C``. For a density
    fitted to dequantised data scaled to [0, 1], first convert with
    :func:`dequantized_to_discrete_nll`.
    """
    num_dims = _check_positive_int("num_dims", num_dims)
    return nats_to_bits(nll_nats) / num_dims


def dequantized_to_discrete_nll(nll_nats, num_dims: int, num_bins: int = 256):
    """NLL of a continuous density on [0, 1]-scaled dequantised data -> NLL of
    the discrete data: adds ``num_dims * log(num_bins)`` (the Jacobian of the
    scaling by ``1 / num_bins``). By Jensen's inequality the result is an upper
    bound on the discrete NLL when the continuous density is evaluated on
    uniformly dequantised data (Theis, van den Oord, Bethge 2016)."""
    num_dims = _check_positive_int("num_dims", num_dims)
    num_bins = _check_positive_int("num_bins", num_bins)
    return nll_nats + num_dims * math.log(num_bins)
