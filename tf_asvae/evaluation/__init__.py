"""Model-agnostic evaluation: likelihood estimators and sample-quality metrics.

See :mod:`tf_asvae.evaluation.likelihood` for the callable protocol
(``proposal_fn``, ``log_likelihood_fn``, ``prior``). The same estimators applied to a
tf_asvae model live in :mod:`tf_asvae.evaluation.model_metrics`; the classifiers of the
sample-quality metrics in :mod:`tf_asvae.evaluation.classifiers`.
"""

from tf_asvae.evaluation.likelihood import (
    AISEstimate,
    DatasetEstimate,
    LogLikelihoodEstimate,
    ais_log_likelihood,
    bits_per_dim,
    dequantized_to_discrete_nll,
    estimate_over_dataset,
    importance_sampled_log_likelihood,
    importance_sampled_log_likelihood_over_dataset,
    log_likelihood_from_flat,
    nats_to_bits,
)
from tf_asvae.evaluation.sample_quality import (
    ActivationStatistics,
    ClassifierScoreAccumulator,
    classifier_score_from_logits,
    classifier_score_from_logits_splits,
    frechet_distance_from_activations,
    frechet_distance_from_statistics,
    frechet_distance_gaussians,
    latent_reconstruction_error,
    reconstruction_rmse_255,
    trace_sqrt_product,
)
from tf_asvae.evaluation import classifiers, model_metrics  # noqa: E402  (modules)

__all__ = [
    "AISEstimate",
    "ActivationStatistics",
    "ClassifierScoreAccumulator",
    "DatasetEstimate",
    "LogLikelihoodEstimate",
    "ais_log_likelihood",
    "bits_per_dim",
    "classifier_score_from_logits",
    "classifiers",
    "classifier_score_from_logits_splits",
    "dequantized_to_discrete_nll",
    "estimate_over_dataset",
    "frechet_distance_from_activations",
    "frechet_distance_from_statistics",
    "frechet_distance_gaussians",
    "importance_sampled_log_likelihood",
    "importance_sampled_log_likelihood_over_dataset",
    "latent_reconstruction_error",
    "log_likelihood_from_flat",
    "model_metrics",
    "nats_to_bits",
    "reconstruction_rmse_255",
    "trace_sqrt_product",
]
