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
    if preset == "imagenet64":
        # The paper's 2048-d latent makes the dense layers ~100M weights; 64 keeps the
        # convolution stacks and image shape while fitting a CPU test budget.
        return dict(latent_dim=64)
    return {}


def images(shape, n=4, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(shape)).astype("float32")


# --------------------------------------------------------------------------------------
# Real data sets, prepared once per test session (shared by test_data.py, test_train.py)

import pathlib  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(
    os.environ.get("TF_ASVAE_TEST_MANUAL_DIR") or REPO.parent / "shared" / "data"
)
REAL_SETS = {"mnist": "mnist", "binarized_mnist": "binarized_mnist", "fashion_mnist": "fashion-mnist"}

needs_real_files = pytest.mark.skipif(
    not all((SHARED_DATA / sub).is_dir() for sub in REAL_SETS.values()),
    reason=f"real data files not found under {SHARED_DATA}",
)


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
    """The TFDS data_dir of the session (``$TF_ASVAE_TEST_DATA_DIR`` keeps it between
    sessions).  Under pytest-xdist the workers share one directory beside their own
    temporary ones, so each data set is prepared once per run (see ``prepared``)."""
    keep = os.environ.get("TF_ASVAE_TEST_DATA_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        return keep
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "tfds_data"
        shared.mkdir(exist_ok=True)
        return str(shared)
    return str(tmp_path_factory.mktemp("tfds_data"))


@pytest.fixture(scope="session")
def prepared(tfds_data_dir):
    """Prepares a real data set once per session; returns a DataConfig factory
    ``prepared(name, batch_size=100, **kwargs)`` reading from the shared files."""
    from tf_asvae import data as D

    done = set()

    def make(name, batch_size=100, **kwargs):
        config = D.DataConfig(
            name, batch_size, data_dir=tfds_data_dir, manual_dir=str(SHARED_DATA), **kwargs
        )
        if name not in done:
            # pytest-xdist workers share tfds_data_dir: the first prepares, the others
            # wait on the library's preparation lock and find the data prepared.
            D.prepare(config)
            done.add(name)
        return config

    return make
