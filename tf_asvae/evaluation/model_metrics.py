"""Model-facing evaluation: the estimators of :mod:`.likelihood` and
:mod:`.sample_quality` applied to a :class:`tf_asvae.models.BaseModel`.

Everything runs in inference mode (``training=False``: no dropout, batch-norm moving
statistics, no variable changes) and is deterministic for a given integer ``seed``
(stateless random numbers only).

Likelihood of a batch ``x`` (``log p(x)`` in nats, per example):

* :func:`log_likelihood`: importance sampling, the IWAE bound with ``K`` samples
  ([1], MATH.md Sec. 4),
  ``log p(x) ~ logmeanexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)]``.
  The proposal is the encoder's ``q(z|x)`` for every model with an explicit posterior
  density (VAE, AS-VAE and its halves). AVB's encoder is a black box without a density;
  its proposal is the adaptive-contrast Gaussian ``r(z|x)`` (mean and standard
  deviation of ``q(z|x)`` estimated from ``proposal_samples`` encoder draws), which
  keeps the estimate a valid stochastic lower bound (``r`` has full support) but can
  be loose; the result's ``proposal`` field says which proposal was used.
  With a flow on ``q(z|x)`` the samples are drawn in the flow's base space,
  ``z = f(z0)``, ``z0 ~ q0(z0|x)``, and ``log q(z|x) = log q0(z0|x) - log|det df/dz0|``
  is evaluated there, so no numerical inverse of the flow is needed (exact, cheaper).
* :func:`ais`: annealed importance sampling [2, 3] from ``p(z)`` to
  ``p(z) p(x|z)``; needs only the decoder, so it works for every model (AVB included).
* :func:`discretized_log_likelihood`: for 8-bit natural images and a Gaussian
  decoder, ``log P(x_uint8)`` with the discretised likelihood of AS-VAE Sec. 5.1,
  ``p(x = i | z) = P(x in [i/256, (i+1)/256] | z)``
  (:func:`tf_asvae.distributions.discretized_gaussian`); the proposal sees the
  continuous image (the bin centres ``(i + 0.5) / 256`` of the evaluation pipeline).
  :func:`bits_per_dim` turns it into bits per dimension ``-log P / (D ln 2)``.

Reconstruction:

* :func:`reconstruction_rmse`: RMSE on the 0-255 scale (AS-VAE Table 2) between ``x``
  and ``model.reconstruct(x)`` (decoder mean at the posterior mean code).
* :func:`latent_reconstruction_error`: ``|z - E_q[z | x_theta(z)]|^2 / D`` for
  ``z ~ p(z)``, with ``x_theta(z)`` the decoder's mean image (clipped to ``[0, 1]``)
  and the posterior mean from ``model.encode``.

Sample quality: :func:`generate` draws ``model``'s samples batch by batch;
:func:`sample_quality` computes the Inception-score formula and the Frechet distance
from the outputs of a :class:`~tf_asvae.evaluation.classifiers.Classifier`.

References:
  [1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
  [2] Neal. Annealed Importance Sampling. Statistics and Computing 11, 2001.
  [3] Wu, Burda, Salakhutdinov, Grosse. On the Quantitative Analysis of
      Decoder-Based Generative Models. ICLR 2017.
  [4] Salimans et al. Improved Techniques for Training GANs. NIPS 2016 (the score).
  [5] Heusel et al. GANs Trained by a Two Time-Scale Update Rule Converge to a Local
      Nash Equilibrium. NIPS 2017 (FID).
"""

from __future__ import annotations

import math
import weakref
from typing import Iterable, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_asvae.evaluation import likelihood as L
from tf_asvae.evaluation import sample_quality as Q

tfd = tfp.distributions

__all__ = [
    "BitsPerDim",
    "ModelLogLikelihood",
    "ais",
    "bits_per_dim",
    "classifier_outputs",
    "default_chunk_size",
    "discretized_available",
    "discretized_log_likelihood",
    "generate",
    "latent_reconstruction_error",
    "log_likelihood",
    "proposal_description",
    "reconstruction_rmse",
    "sample_quality",
]

#: Decoder evaluations (samples x examples) held at once by the default chunking.
MAX_DECODES_PER_CHUNK = 4096

_LN2 = math.log(2.0)


class ModelLogLikelihood(NamedTuple):
    """Per-example importance-sampling estimate of ``log p(x)`` (nats, shape ``[B]``).

    ``standard_error`` is the delta-method Monte-Carlo error, ``effective_sample_size``
    the weights' ESS (see :func:`tf_asvae.evaluation.importance_sampled_log_likelihood`);
    ``proposal`` names the proposal distribution.
    """

    log_likelihood: tf.Tensor
    standard_error: tf.Tensor
    effective_sample_size: tf.Tensor
    proposal: str


class BitsPerDim(NamedTuple):
    """Per-example bits per dimension ``-log P(x) / (D ln 2)`` and its Monte-Carlo
    standard error (same scaling), with the proposal used."""

    bits_per_dim: tf.Tensor
    standard_error: tf.Tensor
    proposal: str


# --------------------------------------------------------------------------------------
# Proposals and likelihood callables (cached per model so tf.function traces once)


def _has_posterior_flow(model) -> bool:
    return bool(model.explicit_posterior) and model.model_config.flows.posterior_flow != "none"


def proposal_description(model, proposal_samples: int = 64) -> str:
    """Which proposal :func:`log_likelihood` uses for ``model`` (for reports)."""
    if model.explicit_posterior:
        flow = model.model_config.flows
        if flow.posterior_flow != "none":
            return (f"q(z|x): the encoder's posterior (Gaussian + {flow.posterior_flow} flow "
                    f"of length {flow.posterior_flow_length}, sampled in the flow's base space)")
        return "q(z|x): the encoder's Gaussian posterior"
    return ("r(z|x): AVB's adaptive-contrast Gaussian, moment-matched to the implicit "
            f"q(z|x) from {proposal_samples} encoder draws (q(z|x) itself has no density; "
            "a valid but possibly loose proposal)")


def discretized_available(model) -> Optional[str]:
    """``None`` when the 8-bit discretised likelihood is defined for ``model``, else the
    reason it is not."""
    cfg = model.model_config
    if cfg.likelihood != "gaussian":
        return (f"the discretised 8-bit likelihood needs a Gaussian decoder; this model's "
                f"likelihood is {cfg.likelihood!r}")
    if cfg.flows.decoder_flow_length:
        return ("the discretised 8-bit likelihood is defined for the factorised Gaussian "
                "p(x|z); this model has a flow on p(x|z)")
    return None


def _discretized_observation(model, z):
    """P(x_uint8 | z) for codes ``z [..., B, D]`` (batch shape ``[..., B]``)."""
    return model.discretized_observation(z)


class _Terms:
    """The three protocol objects of :mod:`.likelihood` for one model and likelihood.

    ``kind``: ``"model"`` (the model's own p(x|z)) or ``"discretized"`` (8-bit bins;
    ``x`` is then the bin-centre image and the pixel values are ``floor(256 x)``).
    """

    def __init__(self, model, kind: str, proposal_samples: int, proposal_seed: int):
        self.prior = model._prior()
        ref = weakref.ref(model)
        flow_posterior = _has_posterior_flow(model)
        prior = self.prior

        def data_log_likelihood(x, z):
            m = ref()
            if kind == "discretized":
                pixels = tf.floor(tf.cast(x, tf.float32) * 256.0)
                return _discretized_observation(m, z).log_prob(pixels)
            return m.observation(z, training=False).log_prob(x)

        def posterior(x):
            m = ref()
            if m.explicit_posterior:
                return m.posterior(x, training=False)
            return m.posterior(x, training=False, num_samples=proposal_samples,
                               seed=proposal_seed)

        def proposal_fn(x):
            q = posterior(x)
            return q.distribution if flow_posterior else q

        def is_log_likelihood(x, z):
            if not flow_posterior:
                return data_log_likelihood(x, z)
            # Sampling in the base space: z0 ~ q0(z0|x), z = f(z0). The estimator adds
            # log p(z0) - log q0(z0|x); adding log p(f(z0)) + log|det df/dz0| - log p(z0)
            # here makes the weight p(x|z) p(z) / q(z|x) exactly.
            z0 = z
            flow = posterior(x).bijector
            z = flow.forward(z0)
            ldj = flow.forward_log_det_jacobian(z0, event_ndims=1)
            return (data_log_likelihood(x, z) + prior.log_prob(z) + ldj
                    - prior.log_prob(z0))

        self.proposal_fn = proposal_fn
        self.is_log_likelihood_fn = is_log_likelihood
        self.ais_log_likelihood_fn = data_log_likelihood


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _terms(model, kind="model", proposal_samples=64, proposal_seed=0) -> _Terms:
    per_model = _CACHE.setdefault(model, {})
    key = (kind, int(proposal_samples), int(proposal_seed))
    if key not in per_model:
        per_model[key] = _Terms(model, kind, int(proposal_samples), int(proposal_seed))
    return per_model[key]


def default_chunk_size(num_samples: int, batch_size: int) -> int:
    """Samples per chunk so that at most :data:`MAX_DECODES_PER_CHUNK` decoder
    evaluations exist at once (at least one sample)."""
    return max(1, min(int(num_samples), MAX_DECODES_PER_CHUNK // max(1, int(batch_size))))


def _check_model(model):
    for name in ("posterior", "observation", "_prior", "model_config"):
        if not hasattr(model, name):
            raise ValueError(f"Expected a tf_asvae model (missing {name!r}). "
                             f"Received: model={type(model).__name__}")
    if not model.built:
        model.build_all()


def _images(model, x):
    x = tf.convert_to_tensor(x)
    expected = tuple(model.model_config.image_shape)
    if x.shape.rank != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"Images must have shape [batch, {', '.join(map(str, expected))}]. "
                         f"Received: shape={tuple(x.shape)}.")
    if not x.dtype.is_floating:
        raise ValueError(f"Images must be float in [0, 1]. Received: dtype={x.dtype.name}.")
    return tf.cast(x, tf.float32)


def _check_bin_centres(x_float, x_uint8):
    x_uint8 = tf.convert_to_tensor(x_uint8)
    if x_uint8.shape != x_float.shape:
        raise ValueError("x_uint8 must have the shape of x_float. Received: "
                         f"x_float.shape={x_float.shape}, x_uint8.shape={x_uint8.shape}.")
    centres = (tf.cast(x_uint8, tf.float32) + 0.5) / 256.0
    err = float(tf.reduce_max(tf.abs(centres - x_float))) if x_float.shape[0] else 0.0
    if err > 1e-5:
        raise ValueError(
            "x_float must hold the bin centres (x_uint8 + 0.5) / 256 of the evaluation "
            f"pipeline (tf_asvae.data.load_split(training=False)). Received: max |x_float - "
            f"centre| = {err:.3g}.")


# --------------------------------------------------------------------------------------
# Likelihoods


def log_likelihood(model, x, num_samples: int, *, chunk_size: Optional[int] = None,
                   seed=0, proposal_samples: int = 64) -> ModelLogLikelihood:
    """Importance-sampled ``log p(x)`` (nats, per example) under the model's own
    ``p(x|z)``, with ``q(z|x)`` as proposal (``r(z|x)`` for AVB; see the module doc).

    Args:
      model: a tf_asvae model.
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      num_samples: K importance samples per example.
      chunk_size: samples decoded at once (default :func:`default_chunk_size`).
      seed: int or ``[2]`` stateless seed (deterministic; ``None`` draws fresh noise).
      proposal_samples: AVB only, encoder draws that fix ``r(z|x)``'s moments.
    """
    _check_model(model)
    x = _images(model, x)
    return _is(model, x, "model", num_samples, chunk_size, seed, proposal_samples)


def discretized_log_likelihood(model, x_float, x_uint8, num_samples: int, *,
                               chunk_size: Optional[int] = None, seed=0,
                               proposal_samples: int = 64) -> ModelLogLikelihood:
    """Importance-sampled ``log P(x_uint8)`` (nats, per example) under the 8-bit
    discretised Gaussian likelihood, the proposal fed with ``x_float``, the bin centres
    ``(x_uint8 + 0.5) / 256`` (as ``load_split(training=False, with_raw=True)`` gives)."""
    _check_model(model)
    reason = discretized_available(model)
    if reason:
        raise ValueError(f"Cannot compute the discretised likelihood: {reason}.")
    x_float = _images(model, x_float)
    _check_bin_centres(x_float, x_uint8)
    return _is(model, x_float, "discretized", num_samples, chunk_size, seed, proposal_samples)


def _is(model, x, kind, num_samples, chunk_size, seed, proposal_samples):
    terms = _terms(model, kind, proposal_samples)
    if chunk_size is None:
        chunk_size = default_chunk_size(num_samples, x.shape[0] or 1)
    est = L.importance_sampled_log_likelihood(
        x, terms.proposal_fn, terms.is_log_likelihood_fn, terms.prior, num_samples,
        chunk_size, seed=seed)
    return ModelLogLikelihood(est.log_likelihood, est.standard_error,
                              est.effective_sample_size,
                              proposal_description(model, proposal_samples))


def bits_per_dim(model, x_float, x_uint8, num_samples: int, **kwargs) -> BitsPerDim:
    """Per-example bits/dim of the 8-bit images ``x_uint8``:
    ``-log P(x_uint8) / (D ln 2)`` with :func:`discretized_log_likelihood` (keyword
    arguments are passed on to it)."""
    est = discretized_log_likelihood(model, x_float, x_uint8, num_samples, **kwargs)
    dims = int(np.prod(model.model_config.image_shape))
    return BitsPerDim(L.bits_per_dim(-est.log_likelihood, dims),
                      L.bits_per_dim(est.standard_error, dims), est.proposal)


def ais(model, x, *, x_uint8=None, num_steps: int = 1000, num_chains: int = 16,
        num_leapfrog_steps: int = 10, step_size: float = 0.05, seed=0,
        **kwargs) -> L.AISEstimate:
    """Annealed-importance-sampling ``log p(x)`` per example (any model: only the
    prior and the decoder are used). With ``x_uint8`` the target is the discretised
    8-bit likelihood ``log P(x_uint8)`` and ``x`` must be the bin centres.
    Other keyword arguments go to :func:`tf_asvae.evaluation.ais_log_likelihood`.
    """
    _check_model(model)
    x = _images(model, x)
    kind = "model"
    if x_uint8 is not None:
        reason = discretized_available(model)
        if reason:
            raise ValueError(f"Cannot compute the discretised likelihood: {reason}.")
        _check_bin_centres(x, x_uint8)
        kind = "discretized"
    terms = _terms(model, kind)
    return L.ais_log_likelihood(
        x, terms.ais_log_likelihood_fn, terms.prior, num_steps=num_steps,
        num_chains=num_chains, num_leapfrog_steps=num_leapfrog_steps, step_size=step_size,
        seed=seed, **kwargs)


# --------------------------------------------------------------------------------------
# Reconstruction


def reconstruction_rmse(model, x, *, seed: int = 0, per_example: bool = False):
    """RMSE on the 0-255 scale between ``x`` (in ``[0, 1]``) and
    ``model.reconstruct(x, seed)``: pooled over all pixels, or ``[B]`` per image."""
    _check_model(model)
    x = _images(model, x)
    x_hat = model.reconstruct(x, seed=seed)
    return Q.reconstruction_rmse_255(x, x_hat, data_range=1.0, per_example=per_example)


def latent_reconstruction_error(model, num_codes: int, *, seed: int = 0,
                                batch_size: int = 100, per_example: bool = True):
    """``|z - E_q[z | x_theta(z)]|^2 / D`` for ``num_codes`` codes ``z ~ p(z)``.

    ``x_theta(z)`` is the decoder's mean image clipped to ``[0, 1]``; the posterior
    mean comes from ``model.encode`` (exact for Gaussian posteriors, the flow applied to
    the Gaussian's mean with a flow, a 64-draw Monte-Carlo mean for AVB). Returns the
    ``[num_codes]`` per-code values (NumPy) or their mean.
    """
    _check_model(model)
    if not isinstance(num_codes, (int, np.integer)) or num_codes <= 0:
        raise ValueError(f"num_codes must be a positive integer. Received: num_codes={num_codes!r}")
    codes = _prior_codes(model, int(num_codes), seed)
    out = []
    for start in range(0, int(num_codes), batch_size):
        z = codes[start:start + batch_size]
        x = tf.clip_by_value(model.decode(z), 0.0, 1.0)
        z_hat, _ = model.encode(x, seed=seed)
        out.append(Q.latent_reconstruction_error(z, z_hat, per_example=True).numpy())
    values = np.concatenate(out)
    return values if per_example else float(values.mean())


# --------------------------------------------------------------------------------------
# Sample quality


def _prior_codes(model, n: int, seed: int) -> tf.Tensor:
    s = tf.constant([int(seed) % 2**31, 7], tf.int32)
    return model._prior().sample(n, seed=s)


def generate(model, num_images: int, *, seed: int = 0, batch_size: int = 100) -> np.ndarray:
    """``num_images`` samples (decoder mean images at ``z ~ p(z)``, clipped to ``[0, 1]``)
    as a NumPy array; the codes are drawn at once, so the images do not depend on
    ``batch_size``."""
    _check_model(model)
    if not isinstance(num_images, (int, np.integer)) or num_images <= 0:
        raise ValueError(f"num_images must be a positive integer. Received: {num_images!r}")
    codes = _prior_codes(model, int(num_images), seed)
    out = [np.clip(model.decode(codes[i:i + batch_size]).numpy(), 0.0, 1.0)
           for i in range(0, int(num_images), batch_size)]
    return np.concatenate(out)


def classifier_outputs(classifier, batches: Iterable) -> tuple:
    """Concatenated ``(logits, activations)`` NumPy arrays of ``classifier`` over an
    iterable of image batches in ``[0, 1]``."""
    logits, acts = [], []
    for images in batches:
        lo, ac = classifier(images)
        logits.append(np.asarray(lo))
        acts.append(np.asarray(ac))
    if not logits:
        raise ValueError("No images were given to the classifier.")
    return np.concatenate(logits), np.concatenate(acts)


def sample_quality(real_logits, real_activations, fake_logits, fake_activations, *,
                   num_splits: int = 10) -> dict:
    """The Inception-score formula and the Frechet distance from classifier outputs.

    Returns ``{"classifier_score": exp(E KL(p(y|x) || p(y))) on all samples,
    "classifier_score_splits": (mean, std) over ``num_splits`` splits (Salimans et al.'s
    protocol; ``None`` with fewer samples than splits), "classifier_score_real": the
    same score of the real images (a reference), "frechet_distance": between Gaussian
    fits of the real and generated activations}``.
    """
    score = float(Q.classifier_score_from_logits(tf.constant(fake_logits, tf.float64)))
    real_score = float(Q.classifier_score_from_logits(tf.constant(real_logits, tf.float64)))
    splits = None
    if len(fake_logits) >= num_splits > 0:
        splits = Q.classifier_score_from_logits_splits(tf.constant(fake_logits, tf.float64),
                                                       num_splits)
    fid = float(Q.frechet_distance_from_activations(
        tf.constant(real_activations, tf.float64), tf.constant(fake_activations, tf.float64)))
    return {"classifier_score": score, "classifier_score_splits": splits,
            "classifier_score_real": real_score, "frechet_distance": fid}
