"""Sample-quality and reconstruction metrics.

The classifier-based formulas reproduce TF-GAN's definitions
(``tensorflow_gan/python/eval/classifier_metrics.py``), which cannot be
imported on TensorFlow >= 2.16:

* ``classifier_score_from_logits``: logits cast to float64,
  ``p(y|x) = softmax(logits)``, ``p(y) = mean_x p(y|x)`` over the *given* set,
  ``KL_x = sum_y p(y|x) (log_softmax(logits) - log p(y))`` (log-softmax of the
  logits, not ``log`` of the probabilities), score ``exp(mean_x KL_x)`` cast back
  to the logits' dtype. One number for the whole set (no splits) [1].
* ``frechet_classifier_distance_from_activations``: float64; means; covariances
  with the unbiased ``1 / (N - 1)`` normalisation; distance
  ``|m1 - m2|^2 + tr(C1) + tr(C2) - 2 tr(sqrt(C1 C2))`` where
  ``tr(sqrt(C1 C2)) = tr(sqrt(A C2 A))``, ``A = sqrt(C1)``, both square roots of
  *symmetric* matrices taken by SVD with singular values below ``1e-10`` left
  unrooted; result cast back to the first input's dtype [2].

Streaming accumulators give the same numbers for sets too large to hold at
once (exactly, for any batch sizes, up to float rounding).

References:
  [1] Salimans et al. Improved Techniques for Training GANs. NIPS 2016.
  [2] Heusel et al. GANs Trained by a Two Time-Scale Update Rule Converge to a
      Local Nash Equilibrium. NIPS 2017.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

__all__ = [
    "classifier_score_from_logits",
    "classifier_score_from_logits_splits",
    "ClassifierScoreAccumulator",
    "trace_sqrt_product",
    "frechet_distance_gaussians",
    "frechet_distance_from_activations",
    "frechet_distance_from_statistics",
    "ActivationStatistics",
    "reconstruction_rmse_255",
    "latent_reconstruction_error",
]


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------
def _as_float_matrix(name: str, value) -> tf.Tensor:
    t = tf.convert_to_tensor(value)
    if not t.dtype.is_floating:
        raise ValueError(f"`{name}` must be floating point. Received: {name}.dtype={t.dtype.name}")
    if t.shape.rank != 2:
        raise ValueError(
            f"`{name}` must be a 2-D tensor [num_examples, num_features]. "
            f"Received: {name}.shape={t.shape}"
        )
    return t


# ----------------------------------------------------------------------------
# Classifier (Inception) score
# ----------------------------------------------------------------------------
def _plogp_terms(logits64: tf.Tensor):
    """Per-row ``p`` and ``sum_y p log_softmax`` in float64."""
    p = tf.nn.softmax(logits64)
    log_p = tf.nn.log_softmax(logits64)
    # multiply_no_nan: 0 * (-inf) -> 0 where a probability underflowed to 0.
    plogp = tf.reduce_sum(tf.math.multiply_no_nan(log_p, p), axis=1)
    return p, log_p, plogp


def classifier_score_from_logits(logits) -> tf.Tensor:
    """``exp(E_x KL(p(y|x) || p(y)))`` exactly as TF-GAN defines it.

    Args:
      logits: ``[N, num_classes]`` classifier logits for the generated set.

    Returns:
      Scalar score in the logits' dtype; ``1`` for identical predictions,
      ``num_classes`` for confident predictions spread evenly over the classes.
      Terms ``0 * log 0`` (probabilities that underflow to zero in float64),
      which make TF-GAN return NaN, count as zero here; all finite values agree.
    """
    logits = _as_float_matrix("logits", logits)
    dtype = logits.dtype
    logits64 = tf.cast(logits, tf.float64)
    p, log_p, _ = _plogp_terms(logits64)
    q = tf.reduce_mean(p, axis=0)
    kl = tf.reduce_sum(tf.math.multiply_no_nan(log_p - tf.math.log(q), p), axis=1)
    score = tf.exp(tf.reduce_mean(kl))
    return tf.cast(score, dtype)


def classifier_score_from_logits_splits(logits, num_splits: int = 10) -> Tuple[float, float]:
    """Mean and standard deviation (``ddof=0``) of the classifier score over
    ``num_splits`` contiguous equal splits, the protocol of Salimans et al.'s
    Inception-score code (the score most GAN/VAE tables report). Each split is
    scored with :func:`classifier_score_from_logits`; trailing rows that do not
    fill a split are dropped.
    """
    logits = _as_float_matrix("logits", logits)
    if isinstance(num_splits, bool) or not isinstance(num_splits, (int, np.integer)) or num_splits <= 0:
        raise ValueError(
            f"`num_splits` must be a positive integer. Received: num_splits={num_splits!r}"
        )
    n = int(logits.shape[0])
    size = n // num_splits
    if size < 1:
        raise ValueError(
            f"`num_splits` must not exceed the number of examples ({n}). "
            f"Received: num_splits={num_splits}"
        )
    scores = [
        float(classifier_score_from_logits(logits[i * size:(i + 1) * size]))
        for i in range(num_splits)
    ]
    return float(np.mean(scores)), float(np.std(scores))


class ClassifierScoreAccumulator:
    """Streaming :func:`classifier_score_from_logits` over batches of logits.

    Keeps, in float64, the example count, ``sum_x sum_y p log p`` and
    ``sum_x p(y|x)``; then ``log score = mean_x sum_y p log p - sum_y q log q``
    with ``q = p(y)`` the marginal, algebraically the same quantity as the
    one-shot formula (and unlike TF-GAN's streaming version, correct for unequal
    batch sizes).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._plogp_sum = 0.0
        self._p_sum: Optional[np.ndarray] = None
        self._dtype = None

    def update(self, logits) -> None:
        logits = _as_float_matrix("logits", logits)
        if self._p_sum is not None and logits.shape[1] != self._p_sum.shape[0]:
            raise ValueError(
                "All logits must have the same number of classes "
                f"({self._p_sum.shape[0]}). Received: logits.shape={logits.shape}"
            )
        self._dtype = self._dtype or logits.dtype
        p, _, plogp = _plogp_terms(tf.cast(logits, tf.float64))
        p_sum = tf.reduce_sum(p, axis=0).numpy()
        self._p_sum = p_sum if self._p_sum is None else self._p_sum + p_sum
        self._plogp_sum += float(tf.reduce_sum(plogp))
        self.count += int(logits.shape[0])

    def result(self) -> tf.Tensor:
        if self.count == 0:
            raise ValueError("No logits accumulated yet. Received: count=0")
        q = tf.constant(self._p_sum / self.count, tf.float64)
        log_score = self._plogp_sum / self.count - tf.reduce_sum(tf.math.xlogy(q, q))
        return tf.cast(tf.exp(log_score), self._dtype)


# ----------------------------------------------------------------------------
# Frechet distance
# ----------------------------------------------------------------------------
def _symmetric_matrix_square_root(mat: tf.Tensor, eps: float = 1e-10) -> tf.Tensor:
    """Square root of a symmetric PSD matrix by SVD (TF-GAN's choice).

    Singular values below ``eps`` are kept as they are rather than rooted (the
    derivative of sqrt blows up at 0). The input is symmetrised first, which
    removes only rounding-level asymmetry.
    """
    mat = 0.5 * (mat + tf.linalg.matrix_transpose(mat))
    s, u, v = tf.linalg.svd(mat)
    si = tf.where(s < eps, s, tf.sqrt(s))
    return tf.matmul(u * si[..., tf.newaxis, :], v, transpose_b=True)


def trace_sqrt_product(sigma, sigma_v) -> tf.Tensor:
    """``tr(sqrt(sigma sigma_v))`` for symmetric PSD ``sigma``, ``sigma_v``.

    ``sigma sigma_v`` is not symmetric, but with ``A = sqrt(sigma)`` it is
    similar to ``A sigma_v A`` (same eigenvalues), which is symmetric PSD, so
    ``tr(sqrt(sigma sigma_v)) = tr(sqrt(A sigma_v A))`` and both roots are of
    symmetric matrices.
    """
    sigma = tf.convert_to_tensor(sigma)
    sigma_v = tf.convert_to_tensor(sigma_v, dtype=sigma.dtype)
    sqrt_sigma = _symmetric_matrix_square_root(sigma)
    inner = tf.matmul(sqrt_sigma, tf.matmul(sigma_v, sqrt_sigma))
    return tf.linalg.trace(_symmetric_matrix_square_root(inner))


def _check_gaussian(name_mu, mu, name_cov, cov):
    if mu.shape.rank != 1:
        raise ValueError(f"`{name_mu}` must be a vector. Received: {name_mu}.shape={mu.shape}")
    if cov.shape.rank != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] != mu.shape[0]:
        raise ValueError(
            f"`{name_cov}` must be a square matrix matching `{name_mu}` "
            f"(dimension {mu.shape[0]}). Received: {name_cov}.shape={cov.shape}"
        )


def frechet_distance_gaussians(mu1, cov1, mu2, cov2) -> tf.Tensor:
    """Closed-form squared Frechet (2-Wasserstein) distance of two Gaussians,
    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 sqrt(cov1 cov2))``, in float64."""
    mu1, cov1, mu2, cov2 = (
        tf.cast(tf.convert_to_tensor(a), tf.float64) for a in (mu1, cov1, mu2, cov2)
    )
    _check_gaussian("mu1", mu1, "cov1", cov1)
    _check_gaussian("mu2", mu2, "cov2", cov2)
    if mu1.shape[0] != mu2.shape[0]:
        raise ValueError(
            "Both Gaussians must have the same dimension. "
            f"Received: mu1.shape={mu1.shape}, mu2.shape={mu2.shape}"
        )
    trace = tf.linalg.trace(cov1) + tf.linalg.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
    mean = tf.reduce_sum(tf.math.squared_difference(mu1, mu2))
    return trace + mean


def _unbiased_covariance(act: tf.Tensor) -> tf.Tensor:
    n = tf.cast(tf.shape(act)[0], act.dtype)
    centred = act - tf.reduce_mean(act, axis=0, keepdims=True)
    return tf.matmul(centred, centred, transpose_a=True) / (n - 1.0)


def frechet_distance_from_activations(activations1, activations2) -> tf.Tensor:
    """Frechet distance between Gaussian fits of two sets of activations, as
    TF-GAN's ``frechet_classifier_distance_from_activations`` (float64 inside,
    unbiased covariances, SVD square roots; returned in ``activations1``'s dtype).

    Biased upwards for finite sets: compare models only at equal set sizes.

    Args:
      activations1: ``[N1, F]`` (e.g. real data), ``N1 >= 2``.
      activations2: ``[N2, F]`` (e.g. samples), ``N2 >= 2``.
    """
    a1 = _as_float_matrix("activations1", activations1)
    a2 = _as_float_matrix("activations2", activations2)
    if a1.shape[1] != a2.shape[1]:
        raise ValueError(
            "`activations1` and `activations2` must have the same number of features. "
            f"Received: activations1.shape={a1.shape}, activations2.shape={a2.shape}"
        )
    for name, a in (("activations1", a1), ("activations2", a2)):
        if a.shape[0] is not None and a.shape[0] < 2:
            raise ValueError(
                f"`{name}` needs at least 2 rows for a covariance. Received: {name}.shape={a.shape}"
            )
    dtype = a1.dtype
    a1 = tf.cast(a1, tf.float64)
    a2 = tf.cast(a2, tf.float64)
    fid = frechet_distance_gaussians(
        tf.reduce_mean(a1, axis=0), _unbiased_covariance(a1),
        tf.reduce_mean(a2, axis=0), _unbiased_covariance(a2),
    )
    return tf.cast(fid, dtype)


class ActivationStatistics:
    """Streaming mean and unbiased covariance of activations, in float64.

    Batches are merged with the pairwise update of Chan, Golub and LeVeque
    (numerically stable; any batch sizes)::

        delta = mean_b - mean;  n' = n + n_b
        mean' = mean + delta n_b / n'
        M2'   = M2 + M2_b + delta delta^T n n_b / n'
        covariance = M2 / (n - 1)
    """

    def __init__(self, num_features: Optional[int] = None):
        self.num_features = num_features
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._mean = None
        self._m2 = None

    def update(self, activations) -> None:
        a = _as_float_matrix("activations", activations)
        a = np.asarray(tf.cast(a, tf.float64))
        if self.num_features is None:
            self.num_features = a.shape[1]
        if a.shape[1] != self.num_features:
            raise ValueError(
                f"Expected {self.num_features} features. Received: activations.shape={a.shape}"
            )
        n_b = a.shape[0]
        if n_b == 0:
            return
        mean_b = a.mean(axis=0)
        c = a - mean_b
        m2_b = c.T @ c
        if self.count == 0:
            self._mean, self._m2, self.count = mean_b, m2_b, n_b
            return
        n = self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.count * n_b / n)
        self.count = n

    @property
    def mean(self) -> tf.Tensor:
        if self.count == 0:
            raise ValueError("No activations accumulated yet. Received: count=0")
        return tf.constant(self._mean, tf.float64)

    @property
    def covariance(self) -> tf.Tensor:
        if self.count < 2:
            raise ValueError(
                f"A covariance needs at least 2 examples. Received: count={self.count}"
            )
        return tf.constant(self._m2 / (self.count - 1), tf.float64)


def frechet_distance_from_statistics(
    stats1: ActivationStatistics, stats2: ActivationStatistics
) -> tf.Tensor:
    """Frechet distance (float64) from two :class:`ActivationStatistics`; equals
    :func:`frechet_distance_from_activations` on the concatenated batches."""
    return frechet_distance_gaussians(stats1.mean, stats1.covariance, stats2.mean, stats2.covariance)


# ----------------------------------------------------------------------------
# Reconstruction errors
# ----------------------------------------------------------------------------
def _check_same_shape(name_a, a, name_b, b):
    if a.shape.rank is not None and b.shape.rank is not None and not a.shape.is_compatible_with(b.shape):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape. "
            f"Received: {name_a}.shape={a.shape}, {name_b}.shape={b.shape}"
        )
    if a.shape.rank is not None and a.shape.rank < 2:
        raise ValueError(
            f"`{name_a}` must have a batch axis and at least one feature axis. "
            f"Received: {name_a}.shape={a.shape}"
        )


def reconstruction_rmse_255(x, x_hat, *, data_range: float = 1.0, per_example: bool = False):
    """Root-mean-square reconstruction error on the 0-255 pixel scale (the
    RMSE of AS-VAE Table 2).

    Both inputs are rescaled by ``255 / data_range`` (``data_range = 1`` for
    data in [0, 1], ``255`` for raw pixels, ``2`` for [-1, 1]).

    Returns ``sqrt(mean over all pixels of all images of the squared error)``,
    or with ``per_example=True`` the ``[B]`` per-image RMSEs (whose mean is not
    the pooled RMSE).
    """
    x = tf.convert_to_tensor(x)
    x_hat = tf.convert_to_tensor(x_hat)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    x_hat = tf.cast(x_hat, x.dtype)
    _check_same_shape("x", x, "x_hat", x_hat)
    try:
        data_range = float(data_range)
    except (TypeError, ValueError):
        data_range = float("nan")
    if not data_range > 0:
        raise ValueError(f"`data_range` must be positive. Received: data_range={data_range!r}")
    err = tf.square((x - x_hat) * (255.0 / data_range))
    if per_example:
        axes = list(range(1, x.shape.rank))
        return tf.sqrt(tf.reduce_mean(err, axis=axes))
    return tf.sqrt(tf.reduce_mean(err))


def latent_reconstruction_error(z, z_hat, *, per_example: bool = False):
    """Latent reconstruction error ``|z - z_hat|^2 / D`` (mean squared error per
    latent unit), e.g. ``z ~ p(z)``, ``x ~ p(x|z)``, ``z_hat = mean of q(z|x)``.

    Returns the batch mean, or the ``[B]`` per-example values with
    ``per_example=True``.
    """
    z = tf.convert_to_tensor(z)
    z_hat = tf.cast(tf.convert_to_tensor(z_hat), z.dtype)
    _check_same_shape("z", z, "z_hat", z_hat)
    axes = list(range(1, z.shape.rank))
    per = tf.reduce_mean(tf.square(z - z_hat), axis=axes)
    return per if per_example else tf.reduce_mean(per)
