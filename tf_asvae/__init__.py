"""tf_asvae: Adversarial Symmetric VAE, Adversarial Variational Bayes and a VAE baseline
as Keras 3 models with TensorFlow Probability distributions and flows."""

from __future__ import annotations

__version__ = "0.1.0"

from tf_asvae.config import (FlowConfig, MODEL_KINDS, ModelConfig, NetworkConfig,
                             ObjectiveConfig, TrainConfig)
from tf_asvae.presets import PRESETS, preset_config
from tf_asvae.models import (ASVAE, ASVAE_G, ASVAE_R, AVB, AVB_AC, MODEL_CLASSES,
                             BaseModel, VAE)


def build_model(kind: str = "asvae", preset: str = "mnist", *, seed: int = 0, **overrides):
    """A model of ``kind`` (one of MODEL_KINDS) on the architecture ``preset``.

    ``overrides`` change the preset's ModelConfig: top-level fields (``latent_dim=8``),
    nested dicts (``flows=dict(...)``) or shorthand nested fields (``disc_steps=2``).
    The model is ready for ``compile()`` (paper defaults) and ``fit()``.
    """
    if kind not in MODEL_CLASSES:
        raise ValueError(f"Unknown kind: Received: kind={kind!r}. Expected one of {MODEL_KINDS}.")
    config = preset_config(kind, preset, **overrides)
    return MODEL_CLASSES[kind](config, seed=seed, name=f"{kind}_{preset}")


def model_from_config(config, seed: int = 0):
    """Rebuild a model from a ModelConfig or its dict (e.g. RUN/config.json)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return MODEL_CLASSES[config.kind](config, seed=seed, name=f"{config.kind}_{config.preset}")


__all__ = ["ASVAE", "ASVAE_G", "ASVAE_R", "AVB", "AVB_AC", "BaseModel", "FlowConfig",
           "MODEL_KINDS", "ModelConfig", "NetworkConfig", "ObjectiveConfig", "PRESETS",
           "TrainConfig", "VAE", "build_model", "model_from_config", "preset_config"]

from tf_asvae.export import ExportedModel, export_saved_model, load_exported  # noqa: E402

__all__ += ["ExportedModel", "export_saved_model", "load_exported"]
