"""Tests of tf_asvae.data: configs, offline TFDS loading, pipelines, errors.

The real MNIST, binarized MNIST and Fashion-MNIST files are read from the shared
manual directory (``../shared/data`` beside the repository, or
``$TF_ASVAE_TEST_MANUAL_DIR``) and prepared once per test session into a temporary
TFDS data_dir (or ``$TF_ASVAE_TEST_DATA_DIR`` to keep it between sessions).
CIFAR-10 and ImageNet 64x64 go through ``tfds.testing.mock_data``. Nothing here
touches the network.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_asvae import data as D

REPO = pathlib.Path(__file__).resolve().parents[1]
# The shared data location and the session fixtures tfds_data_dir / prepared live in
# conftest.py (test_train.py uses them too).
from conftest import REAL_SETS, SHARED_DATA, needs_real_files  # noqa: E402


def _collect(ds):
    return [np.asarray(b) for b in ds]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The user's environment must not leak into configs built by the tests.
    monkeypatch.delenv(D.ENV_MANUAL_DIR, raising=False)

    # No test may probe the network; tests that need the probe replace it.
    def no_probe(url, timeout=5.0):
        pytest.fail(f"a test tried to reach {url}")

    monkeypatch.setattr(D, "_source_reachable", no_probe)


@pytest.fixture()
def mnist_copy(tmp_path):
    """A writable copy of the shared MNIST folder."""
    folder = tmp_path / "manual" / "mnist"
    shutil.copytree(SHARED_DATA / "mnist", folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


# --------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(name="svhn"), ["svhn", "mnist", "cifar10"]),
        (dict(batch_size=0), ["batch_size=0"]),
        (dict(batch_size=-3), ["batch_size=-3"]),
        (dict(batch_size=2.5), ["batch_size=2.5"]),
        (dict(batch_size=True), ["batch_size=True"]),
        (dict(seed=-1), ["seed=-1"]),
        (dict(binarize="static"), ["static", "none", "dynamic"]),
        (dict(name="cifar10", binarize="dynamic"), ["dynamic", "cifar10", "mnist"]),
        (dict(name="binarized_mnist", binarize="dynamic"), ["dynamic", "binarized_mnist"]),
        (dict(dequantize="yes"), ["dequantize='yes'"]),
        (dict(max_examples=0), ["max_examples=0"]),
        (dict(shuffle_buffer=0), ["shuffle_buffer=0"]),
        (dict(cache=""), ["cache=''"]),
        (dict(cache=3), ["cache=3"]),
        (dict(data_dir=""), ["data_dir=''"]),
        (dict(manual_dir=5), ["manual_dir=5"]),
    ],
)
def test_config_rejects_bad_values(kwargs, names):
    args = dict(name="mnist", batch_size=8, manual_dir=None)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        D.DataConfig(**args)
    for fragment in names:
        assert fragment in str(info.value)


def test_config_json_round_trip():
    config = D.DataConfig(
        "cifar10", 64, data_dir="/d", manual_dir="/m", seed=3, dequantize=False,
        max_examples=100, shuffle_buffer=50, cache="/c",
    )
    text = json.dumps(config.to_dict())
    assert D.DataConfig.from_dict(json.loads(text)) == config
    assert D.DataConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="colour"):
        D.DataConfig.from_dict({"name": "mnist", "batch_size": 2, "colour": 1})


def test_config_manual_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(D.ENV_MANUAL_DIR, str(tmp_path))
    assert D.DataConfig("mnist", 4).manual_dir == str(tmp_path)
    assert D.DataConfig("mnist", 4, manual_dir=None).manual_dir is None
    monkeypatch.delenv(D.ENV_MANUAL_DIR)
    assert D.DataConfig("mnist", 4).manual_dir is None
    assert D.DataConfig("mnist", 4, manual_dir=tmp_path).manual_dir == str(tmp_path)


def test_flags_build_a_config(monkeypatch):
    import argparse

    parser = D.add_data_flags(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--dataset", "binarized_mnist", "--batch-size", "32", "--manual-dir", "/m",
         "--data-dir", "/d", "--max-examples", "10", "--no-cache"]
    )
    config = D.data_config_from_flags(args)
    assert (config.name, config.batch_size, config.manual_dir, config.data_dir) == (
        "binarized_mnist", 32, "/m", "/d")
    assert config.max_examples == 10 and config.cache is False
    monkeypatch.setenv(D.ENV_MANUAL_DIR, "/env")
    assert D.data_config_from_flags(parser.parse_args([])).manual_dir == "/env"


def test_datasets_table_is_complete():
    assert {"mnist", "binarized_mnist", "fashion_mnist", "cifar10", "imagenet64",
            "four_points"} <= set(D.DATASETS)
    for name, spec in D.DATASETS.items():
        assert set(spec.splits) == set(D.SPLITS), name
        assert set(spec.num_examples) == set(D.SPLITS), name
        assert spec.pixels in D.PIXEL_KINDS
        assert len(spec.image_shape) == 3
        if spec.tfds_name is not None:
            assert spec.files and spec.manual_subdir
    assert D.DATASETS["imagenet64"].tfds_name == "imagenet_resized/64x64"
    assert D.DATASETS["imagenet64"].splits["test"] == "validation"
    assert D.DATASETS["binarized_mnist"].splits["validation"] == "validation"
    assert D.DATASETS["mnist"].splits["validation"] == "train[55000:]"
    assert D.DATASETS["cifar10"].splits["validation"] == "train[45000:]"
    assert D.DATASETS["cifar10"].natural and not D.DATASETS["mnist"].natural


def test_counts_and_steps():
    config = D.DataConfig("mnist", 100, manual_dir=None)
    assert D.num_examples(config, "validation") == 5000
    assert D.steps_per_epoch(config) == 550
    small = D.DataConfig("mnist", 64, manual_dir=None, max_examples=1000)
    assert D.steps_per_epoch(small, "test", training=False) == 16
    assert D.steps_per_epoch(small, "test", training=True) == 15
    with pytest.raises(ValueError, match="valid"):
        D.num_examples(config, "valid")
    with pytest.raises(ValueError, match="batch_size=10, num_replicas=4"):
        D.per_replica_batch_size(10, 4)


# --------------------------------------------------------------------------------------
# Synthetic data


def test_synthetic_four_points():
    images = np.concatenate(_collect(D.synthetic_four_points(4000, seed=1).batch(1000)))
    assert images.shape == (4000, 2, 2, 1) and images.dtype == np.float32
    assert set(np.unique(images)) == {0.0, 1.0}
    np.testing.assert_array_equal(images.sum(axis=(1, 2, 3)), 1.0)
    frequencies = images.reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(frequencies, 0.25, atol=0.03)
    again = np.concatenate(_collect(D.synthetic_four_points(4000, seed=1).batch(1000)))
    other = np.concatenate(_collect(D.synthetic_four_points(4000, seed=2).batch(1000)))
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)
    with pytest.raises(ValueError, match="num_examples=0"):
        D.synthetic_four_points(0, seed=0)


def test_four_points_pipeline():
    config = D.DataConfig("four_points", 50, manual_dir=None)
    train = _collect(D.load_split(config, "train", training=True))
    assert len(train) == 200 and train[0].shape == (50, 2, 2, 1)
    test = np.concatenate(_collect(D.load_split(config, "test", training=False)))
    assert test.shape == (1000, 2, 2, 1)
    np.testing.assert_array_equal(test.sum(axis=(1, 2, 3)), 1.0)
    with pytest.raises(ValueError, match="has no data files"):
        D.check_manual_dir("four_points", "/nowhere")


# --------------------------------------------------------------------------------------
# Manual directory checks (fast: no TFDS preparation)


@needs_real_files
@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_check_manual_dir_accepts_shared_files(name):
    sub = REAL_SETS[name]
    assert D.check_manual_dir(name, SHARED_DATA) == SHARED_DATA / sub  # parent folder
    assert D.check_manual_dir(name, SHARED_DATA / sub) == SHARED_DATA / sub


@needs_real_files
def test_missing_manual_dir(tmp_path):
    with pytest.raises(D.MissingDataFileError, match="does not exist") as info:
        D.check_manual_dir("mnist", tmp_path / "absent")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


@needs_real_files
def test_missing_file_names_file_and_checksum_source(mnist_copy, tmp_path):
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(D.MissingDataFileError) as info:
        D.check_manual_dir("mnist", mnist_copy.parent)
    message = str(info.value)
    assert str(mnist_copy / "t10k-labels-idx1-ubyte.gz") in message
    assert "SHA256SUMS" in message
    assert "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in message
    # load_split checks before TFDS ever runs (so no download is attempted).
    config = D.DataConfig("mnist", 10, data_dir=str(tmp_path / "tfds"), manual_dir=str(mnist_copy))
    with pytest.raises(D.MissingDataFileError, match="t10k-labels-idx1-ubyte.gz"):
        D.load_split(config, "test", training=False)


@needs_real_files
def test_missing_file_without_sha256sums_cites_tfds_registry(mnist_copy):
    (mnist_copy / D.SHA256SUMS).unlink()
    (mnist_copy / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(D.MissingDataFileError) as info:
        D.check_manual_dir("mnist", mnist_copy)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "registered checksums" in str(info.value)


@needs_real_files
def test_truncated_file_is_reported(mnist_copy, tmp_path):
    target = mnist_copy / "train-labels-idx1-ubyte.gz"
    with open(target, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(D.ChecksumMismatchError) as info:
        D.check_manual_dir("mnist", mnist_copy)
    assert str(target) in str(info.value)
    assert str(mnist_copy / "SHA256SUMS") in str(info.value)
    config = D.DataConfig("mnist", 10, data_dir=str(tmp_path / "tfds"), manual_dir=str(mnist_copy))
    with pytest.raises(D.DataError, match="train-labels-idx1-ubyte.gz"):
        D.load_split(config, "train", training=True)
    # Without SHA256SUMS the size registered by TFDS catches it.
    (mnist_copy / "SHA256SUMS").unlink()
    with pytest.raises(D.ChecksumMismatchError, match="size 1000 bytes") as info:
        D.check_manual_dir("mnist", mnist_copy)
    assert "registered checksums" in str(info.value)


@needs_real_files
def test_same_size_corruption_is_wrapped_from_tfds(mnist_copy, tmp_path):
    # No SHA256SUMS and the right size: only TFDS's own checksum sees the damage,
    # and its error comes back as a DataError naming the file.
    (mnist_copy / "SHA256SUMS").unlink()
    target = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(target.read_bytes())
    payload[100] ^= 0xFF
    target.write_bytes(bytes(payload))
    config = D.DataConfig("mnist", 10, data_dir=str(tmp_path / "tfds"), manual_dir=str(mnist_copy))
    with pytest.raises(D.DataError) as info:
        D.prepare(config)
    message = str(info.value)
    assert "NonMatchingChecksumError" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "registered checksums" in message


# --------------------------------------------------------------------------------------
# Real offline loading


@needs_real_files
def test_two_processes_prepare_the_real_files_together(tmp_path):
    # Two experiments started at once on a fresh machine: before the preparation lock
    # one of them failed (FileExistsError or NotFoundError from TFDS's own renames).
    code = textwrap.dedent(f"""
        from tf_asvae import data as D
        config = D.DataConfig("mnist", 10, data_dir={str(tmp_path / "tfds")!r},
                              manual_dir={str(SHARED_DATA / "mnist")!r})
        print(next(iter(D.load_split(config, "test", training=False))).shape)
        print(D.prepare(config).info.splits["test"].num_examples)
    """)
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [child.communicate(timeout=600) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err[-2000:]
        assert out.split("\n")[-3:] == ["(10, 28, 28, 1)", "10000", ""]


@needs_real_files
def test_mnist_offline(prepared):
    config = prepared("mnist", 500)
    for split, count in [("validation", 5000), ("test", 10000)]:
        batches = _collect(D.load_split(config, split, training=False))
        images = np.concatenate(batches)
        assert images.shape == (count, 28, 28, 1) and images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0
        assert len(np.unique(images)) > 2  # grey levels read as probabilities
    train = D.load_split(config, "train", training=False)
    assert int(train.cardinality()) == 110  # 55000 / 500
    x, raw = next(iter(D.load_split(config, "test", training=False, with_raw=True)))
    assert raw.dtype == tf.uint8
    np.testing.assert_allclose(x.numpy(), raw.numpy() / 255.0, atol=1e-7)


@needs_real_files
def test_binarized_mnist_offline(prepared):
    config = prepared("binarized_mnist", 1000)
    for split in ("validation", "test"):
        images = np.concatenate(_collect(D.load_split(config, split, training=False)))
        assert images.shape == (10000, 28, 28, 1)
        assert set(np.unique(images)) == {0.0, 1.0}
    first = next(iter(D.load_split(config, "train", training=True)))
    assert first.shape == (1000, 28, 28, 1)
    assert set(np.unique(first.numpy())) == {0.0, 1.0}
    assert int(D.load_split(config, "train", training=True).cardinality()) == 50


@needs_real_files
def test_fashion_mnist_offline(prepared):
    config = prepared("fashion_mnist", 1000)
    images = np.concatenate(_collect(D.load_split(config, "validation", training=False)))
    assert images.shape == (5000, 28, 28, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0
    test = D.load_split(config, "test", training=False)
    assert sum(b.shape[0] for b in test) == 10000


@needs_real_files
def test_training_shuffle_is_seeded(prepared):
    def epochs(seed, n=2):
        config = prepared("mnist", 100, seed=seed, max_examples=1000)
        ds = D.load_split(config, "train", training=True)
        return [np.stack(_collect(ds)) for _ in range(n)]

    a0, a1 = epochs(0)
    b0, b1 = epochs(0)
    (c0,) = epochs(1, n=1)
    assert a0.shape == (10, 100, 28, 28, 1)
    np.testing.assert_array_equal(a0, b0)  # same seed, same order
    np.testing.assert_array_equal(a1, b1)  # ... on every epoch
    assert not np.array_equal(a0, a1)  # reshuffled between epochs
    assert not np.array_equal(a0, c0)  # other seed, other order
    # Same examples, only the order differs.
    key = lambda e: np.sort(e.reshape(1000, -1).sum(axis=1))
    np.testing.assert_array_equal(key(a0), key(c0))
    # Evaluation order is fixed and independent of the seed.
    e0 = _collect(D.load_split(prepared("mnist", 100, seed=0, max_examples=300), "test", training=False))
    e1 = _collect(D.load_split(prepared("mnist", 100, seed=5, max_examples=300), "test", training=False))
    np.testing.assert_array_equal(np.concatenate(e0), np.concatenate(e1))


@needs_real_files
def test_dynamic_binarisation(prepared):
    config = prepared("mnist", 200, binarize="dynamic", max_examples=400)
    plain = prepared("mnist", 200, max_examples=400)
    x, raw = next(iter(D.load_split(config, "train", training=True, with_raw=True)))
    x = x.numpy()
    assert set(np.unique(x)) == {0.0, 1.0}
    assert np.all(x[raw.numpy() == 0] == 0.0) and np.all(x[raw.numpy() == 255] == 1.0)
    np.testing.assert_allclose(x.mean(), raw.numpy().mean() / 255.0, atol=0.01)
    # Training redraws each epoch; evaluation keeps one fixed binarisation.
    ds = D.load_split(config, "train", training=True)
    first, second = _collect(ds), _collect(ds)
    assert not np.array_equal(np.stack(first), np.stack(second))
    ev = D.load_split(config, "test", training=False)
    np.testing.assert_array_equal(np.concatenate(_collect(ev)), np.concatenate(_collect(ev)))
    ev_other_batch = D.load_split(prepared("mnist", 64, binarize="dynamic", max_examples=400),
                                  "test", training=False)
    np.testing.assert_array_equal(np.concatenate(_collect(ev)),
                                  np.concatenate(_collect(ev_other_batch)))
    assert set(np.unique(np.concatenate(_collect(ev)))) == {0.0, 1.0}
    probabilities = np.concatenate(_collect(D.load_split(plain, "test", training=False)))
    assert len(np.unique(probabilities)) > 2


@needs_real_files
def test_mirrored_strategy_per_replica_batches(prepared, tfds_data_dir):
    prepared("mnist")  # prepared once here; the subprocess only reads it.
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tf_asvae import data as D
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        config = D.DataConfig("mnist", 16, data_dir={tfds_data_dir!r}, manual_dir=None,
                              max_examples=64)
        for training, steps in [(True, 4), (False, 4)]:
            dist = D.distributed_dataset(strategy, config, "test", training)
            n = 0
            for batch in dist:
                parts = strategy.experimental_local_results(batch)
                assert len(parts) == 2, parts
                assert [tuple(p.shape) for p in parts] == [(8, 28, 28, 1)] * 2, parts
                n += 1
            assert n == steps, n

        @tf.function
        def step(x):
            return strategy.reduce("SUM", strategy.run(lambda t: tf.shape(t)[0], (x,)), None)

        total = sum(int(step(b)) for b in D.distributed_dataset(strategy, config, "test", True))
        assert total == 64, total
        pairs = D.distributed_dataset(strategy, config, "test", False, with_raw=True)
        x, raw = next(iter(pairs))
        assert strategy.experimental_local_results(raw)[0].dtype == tf.uint8
        try:
            D.distributed_dataset(strategy, D.DataConfig("mnist", 15, manual_dir=None), "test", True)
        except ValueError as e:
            assert "batch_size=15" in str(e) and "num_replicas=2" in str(e), e
        else:
            raise AssertionError("no ValueError for 15 over 2 replicas")
        print("MIRRORED_OK")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    env.pop(D.ENV_MANUAL_DIR, None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert "MIRRORED_OK" in result.stdout, result.stderr[-4000:]


# --------------------------------------------------------------------------------------
# Natural images through tfds.testing.mock_data


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("imagenet64", (64, 64, 3))])
def test_natural_images_with_mock_data(name, shape, monkeypatch):
    # mock_data turns download_and_prepare into a no-op; the probe must agree.
    monkeypatch.setattr(D, "_source_reachable", lambda url, timeout=5.0: True)
    with tfds.testing.mock_data(num_examples=24):
        config = D.DataConfig(name, 8, manual_dir=None, seed=4)
        for split in D.SPLITS:
            x, raw = next(iter(D.load_split(config, split, training=False, with_raw=True)))
            assert x.shape == (8,) + shape and x.dtype == tf.float32
            assert raw.dtype == tf.uint8
            # Evaluation: no noise, the bin centres (x + 0.5) / 256.
            np.testing.assert_allclose(x.numpy(), (raw.numpy() + 0.5) / 256.0, atol=1e-7)

        train = D.load_split(config, "train", training=True, with_raw=True)
        batches = _collect(train)
        assert len(batches) == 3
        for x, raw in batches:
            assert x.shape == (8,) + shape
            assert x.min() >= 0.0 and x.max() < 1.0
            # Dequantised: inside the pixel's bin, raw values recoverable exactly.
            assert np.all(x >= raw / 256.0) and np.all(x < (raw + 1.0) / 256.0)
            np.testing.assert_array_equal(D.to_uint8(x).numpy(), raw)
            assert not np.allclose(x, (raw + 0.5) / 256.0)
            u = x * 256.0 - raw
            assert 0.4 < u.mean() < 0.6 and u.std() > 0.25
        again = _collect(D.load_split(config, "train", training=True, with_raw=True))
        for (x1, _), (x2, _) in zip(batches, again):
            np.testing.assert_array_equal(x1, x2)  # noise is seeded too

        no_noise = D.DataConfig(name, 8, manual_dir=None, dequantize=False)
        x, raw = next(iter(D.load_split(no_noise, "train", training=True, with_raw=True)))
        np.testing.assert_allclose(x.numpy(), (raw.numpy() + 0.5) / 256.0, atol=1e-7)


def test_prepare_without_manual_dir_wraps_tfds_errors(monkeypatch):
    # A download failure (here simulated, never a real network access) comes back
    # as a DataError that says how to work offline.
    import tensorflow_datasets.core.dataset_builder as dataset_builder

    def fail(self, *args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(D, "_source_reachable", lambda url, timeout=5.0: True)
    monkeypatch.setattr(dataset_builder.DatasetBuilder, "download_and_prepare", fail)
    monkeypatch.setattr(dataset_builder.DatasetBuilder, "is_prepared", lambda self: False)
    config = D.DataConfig("cifar10", 8, data_dir="/nonexistent-tfds", manual_dir=None)
    with pytest.raises(D.DataError) as info:
        D.prepare(config)
    message = str(info.value)
    assert "cifar10" in message and "--manual-dir" in message and "unreachable" in message


def test_unreachable_source_fails_fast(monkeypatch):
    import tensorflow_datasets.core.dataset_builder as dataset_builder

    def never(self, *args, **kwargs):
        raise AssertionError("TFDS must not be asked to download")

    monkeypatch.setattr(D, "_source_reachable", lambda url, timeout=5.0: False)
    monkeypatch.setattr(dataset_builder.DatasetBuilder, "download_and_prepare", never)
    monkeypatch.setattr(dataset_builder.DatasetBuilder, "is_prepared", lambda self: False)
    config = D.DataConfig("mnist", 8, data_dir="/nonexistent-tfds", manual_dir=None)
    with pytest.raises(D.DataError, match="cannot be reached") as info:
        D.load_split(config, "train", training=True)
    assert "--manual-dir" in str(info.value) and "TF_ASVAE_MANUAL_DIR" in str(info.value)
