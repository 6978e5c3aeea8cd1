"""Shared test set-up: quiet TensorFlow, deterministic seeds, tiny configurations."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny_overrides(preset, kind="vae"):
    """Smaller-than-paper settings that keep a preset's image shape and layer types
    (the MNIST presets' 80 planar flows shortened to 2; flows are tested on their own)."""
    if preset in ("mnist", "binarized_mnist", "fashion_mnist") and not kind.startswith("avb"):
        return dict(posterior_flow_length=2)
    return {}


def images(shape, n=4, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(shape)).astype("float32")
