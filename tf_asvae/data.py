"""Input pipelines: TFDS data sets (online or offline), dequantisation, synthetic data.

Every data set is read through TensorFlow Datasets (TFDS) except AVB's synthetic
four-point set, which is generated in code. The pipelines yield float32 images of
shape ``[B, H, W, C]`` in ``[0, 1]``; how an 8-bit value becomes a float depends on
the kind of pixels the data set has (``DatasetSpec.pixels``):

``"intensity"`` (MNIST, Fashion-MNIST)
    ``x / 255``: the grey level read as the probability that a binary pixel is on,
    the AS-VAE paper's choice for MNIST ("continuous input as the probability of a
    binary pixel"). ``DataConfig(binarize="dynamic")`` instead samples a fresh
    binary image ``1[u < x / 255]``, ``u ~ U[0, 1)``, every time an example is seen
    in training (dynamic binarisation). Evaluation with ``binarize="dynamic"``
    uses one *fixed* binarisation drawn from ``DataConfig.seed`` and the example's
    position, so the evaluation set is the same binary set on every pass and does
    not depend on the batch size.

``"binary"`` (Larochelle's binarized MNIST, the four-point set)
    The values are already exactly ``{0, 1}`` and are passed through.

``"natural"`` (CIFAR-10, ImageNet 64x64)
    Uniform dequantisation [1]: training images are ``(x + u) / 256`` with
    ``u ~ U[0, 1)`` drawn anew each time, so they lie in ``[0, 1)`` and
    ``floor(256 * image) == x`` recovers the 8-bit value exactly (see
    :func:`to_uint8`). Evaluation images (and training with ``dequantize=False``)
    are the bin centres ``(x + 0.5) / 256``. The discretised likelihood of the
    paper, ``p(x = i | z) = P(x in [i/256, (i+1)/256] | z)``, needs the raw 8-bit
    values: ``load_split(..., with_raw=True)`` yields ``(images, raw_uint8)``
    pairs in the same order.

Training pipelines (``training=True``): files and examples shuffled with seeds
derived from ``DataConfig.seed`` (and the input-pipeline id under a distribution
strategy), reshuffled on every pass, batched with ``drop_remainder=True`` so every
step has the same static batch (and every replica the same share). They are *not*
repeated unless ``repeat=True``: one pass over the iterator is one epoch, which is
what ``keras.Model.fit`` expects without ``steps_per_epoch``. Two pipelines built
from equal configs produce the same batches, noise included.

Evaluation pipelines (``training=False``): deterministic order, no noise (apart
from the fixed binarisation above), ``drop_remainder=False`` so every example is
counted.

Offline operation: ``DataConfig.manual_dir`` (default: the environment variable
``TF_ASVAE_MANUAL_DIR``) names a directory holding the files TFDS would otherwise
download. It may be the data set's own folder or a parent holding the subfolders
named in ``DatasetSpec.manual_subdir`` (``mnist/``, ``binarized_mnist/``,
``fashion-mnist/``, ...). Before TFDS is asked to prepare anything,
:func:`check_manual_dir` verifies that every expected file exists and has the
expected size and (when the folder holds a ``SHA256SUMS`` file) the expected
SHA-256; a problem raises :class:`DataError` naming the file and where the
expected checksum comes from, instead of TFDS silently falling back to a download.
``DataConfig.data_dir`` is where TFDS keeps prepared data (TFDS default:
``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).

References:
  [1] Theis, van den Oord, Bethge. A note on the evaluation of generative
      models. ICLR 2016 (uniform dequantisation of 8-bit data).
  [2] Mescheder, Nowozin, Geiger. Adversarial Variational Bayes. ICML 2017
      (the synthetic four-point data set, Sec. 5.1).
  [3] Larochelle, Murray. The neural autoregressive distribution estimator.
      AISTATS 2011 (the fixed binarisation of MNIST and its validation split).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import socket
import urllib.parse
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from tf_asvae import io as tf_io
from tf_asvae import sources

__all__ = [
    "AUTOTUNE",
    "ENV_MANUAL_DIR",
    "SPLITS",
    "BINARIZE_MODES",
    "PIXEL_KINDS",
    "DATASETS",
    "DatasetSpec",
    "DataConfig",
    "DataError",
    "MissingDataFileError",
    "ChecksumMismatchError",
    "check_manual_dir",
    "resolve_manual_dir",
    "prepare",
    "download_and_prepare_once",
    "load_split",
    "distributed_dataset",
    "per_replica_batch_size",
    "num_examples",
    "steps_per_epoch",
    "synthetic_four_points",
    "to_uint8",
    "add_data_flags",
    "add_source_flags",
    "data_config_from_flags",
    "image_folder",
    "tfds_images",
    "npz_images",
]

AUTOTUNE = tf.data.AUTOTUNE
ENV_MANUAL_DIR = "TF_ASVAE_MANUAL_DIR"
SPLITS = ("train", "validation", "test")
BINARIZE_MODES = ("none", "dynamic")
PIXEL_KINDS = ("intensity", "binary", "natural")
CROP_MODES = ("center", "none")
# DataConfig fields that only folder:/tfds:/npz: sources use.
_SOURCE_FIELDS = ("image_size", "channels", "resize", "crop", "pixels", "split_fractions",
                  "split_seed", "train_split", "validation_split", "test_split", "image_key")
SHA256SUMS = "SHA256SUMS"


# --------------------------------------------------------------------------------------
# Errors


class DataError(ValueError):
    """A data set cannot be loaded; the message says which file and why."""


class MissingDataFileError(DataError, FileNotFoundError):
    """An expected data file (or the manual directory itself) does not exist."""


class ChecksumMismatchError(DataError):
    """A data file exists but its size or SHA-256 differs from the expected one."""


# --------------------------------------------------------------------------------------
# The table of data sets (plain data)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one data set is read.

    Attributes:
      tfds_name: TFDS name (with config, e.g. ``imagenet_resized/64x64``);
        ``None`` for data generated in code.
      image_shape: ``(H, W, C)``.
      splits: TFDS split expression for each of ``train``/``validation``/``test``
        (for synthetic data: the generator seed of that split).
      num_examples: examples in each split.
      pixels: ``"intensity"`` | ``"binary"`` | ``"natural"`` (see module doc).
      manual_subdir: name of the subfolder of a parent manual directory.
      files: the files TFDS reads from a manual directory.
      source_url: where the files come from (for error messages).
    """

    tfds_name: str | None
    image_shape: tuple[int, int, int]
    splits: Mapping[str, Any]
    num_examples: Mapping[str, int]
    pixels: str
    manual_subdir: str | None = None
    files: tuple[str, ...] = ()
    source_url: str | None = None
    source: Any = None  # a tf_asvae.sources.SourceInfo for folder:/tfds:/npz: sources

    @property
    def natural(self) -> bool:
        """Whether pixels are natural 8-bit images (dequantised, discretised NLL)."""
        return self.pixels == "natural"

    @property
    def num_pixels(self) -> int:
        h, w, c = self.image_shape
        return h * w * c


_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

DATASETS: dict[str, DatasetSpec] = {
    # MNIST: the last 5000 training images are the validation set.
    "mnist": DatasetSpec(
        tfds_name="mnist",
        image_shape=(28, 28, 1),
        splits={"train": "train[:55000]", "validation": "train[55000:]", "test": "test"},
        num_examples={"train": 55000, "validation": 5000, "test": 10000},
        pixels="intensity",
        manual_subdir="mnist",
        files=_MNIST_FILES,
        source_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    # Larochelle's fixed binarisation with its own 10000-image validation split [3].
    "binarized_mnist": DatasetSpec(
        tfds_name="binarized_mnist",
        image_shape=(28, 28, 1),
        splits={"train": "train", "validation": "validation", "test": "test"},
        num_examples={"train": 50000, "validation": 10000, "test": 10000},
        pixels="binary",
        manual_subdir="binarized_mnist",
        files=(
            "binarized_mnist_train.amat",
            "binarized_mnist_valid.amat",
            "binarized_mnist_test.amat",
        ),
        source_url="http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
    ),
    "fashion_mnist": DatasetSpec(
        tfds_name="fashion_mnist",
        image_shape=(28, 28, 1),
        splits={"train": "train[:55000]", "validation": "train[55000:]", "test": "test"},
        num_examples={"train": 55000, "validation": 5000, "test": 10000},
        pixels="intensity",
        manual_subdir="fashion-mnist",
        files=_MNIST_FILES,
        source_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    "cifar10": DatasetSpec(
        tfds_name="cifar10",
        image_shape=(32, 32, 3),
        splits={"train": "train[:45000]", "validation": "train[45000:]", "test": "test"},
        num_examples={"train": 45000, "validation": 5000, "test": 10000},
        pixels="natural",
        manual_subdir="cifar10",
        files=("cifar-10-binary.tar.gz",),
        source_url="https://www.cs.toronto.edu/~kriz/",
    ),
    # ImageNet 64x64: the last 10000 training images validate; the official
    # 50000-image validation set is the test set (as in the papers).
    "imagenet64": DatasetSpec(
        tfds_name="imagenet_resized/64x64",
        image_shape=(64, 64, 3),
        splits={"train": "train[:-10000]", "validation": "train[-10000:]", "test": "validation"},
        num_examples={"train": 1271167, "validation": 10000, "test": 50000},
        pixels="natural",
        manual_subdir="imagenet_resized",
        files=(
            "Imagenet64_train_part1_npz.zip",
            "Imagenet64_train_part2_npz.zip",
            "Imagenet64_val_npz.zip",
        ),
        source_url="http://www.image-net.org/data/downsample/",
    ),
    # AVB's synthetic data [2]: four 2x2 binary images, one lit pixel each,
    # drawn uniformly. Generated in code; `splits` holds each split's seed.
    "four_points": DatasetSpec(
        tfds_name=None,
        image_shape=(2, 2, 1),
        splits={"train": 0, "validation": 1, "test": 2},
        num_examples={"train": 10000, "validation": 1000, "test": 1000},
        pixels="binary",
    ),
}


# --------------------------------------------------------------------------------------
# Configuration


def _env_manual_dir() -> str | None:
    return os.environ.get(ENV_MANUAL_DIR) or None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is fed.

    Attributes:
      name: a key of :data:`DATASETS`, or a source of your own images:
        ``folder:PATH``, ``tfds:NAME[/CONFIG]`` or ``npz:PATH`` (see
        :mod:`tf_asvae.sources`; the fields below from ``image_size`` on apply to
        sources only).
      batch_size: global batch size (split evenly across replicas).
      data_dir: TFDS directory of prepared data (``None``: TFDS default).
      manual_dir: directory of manually downloaded files, or a parent of
        per-data-set subfolders. Defaults to ``$TF_ASVAE_MANUAL_DIR``.
      seed: seed of every shuffle and noise draw of the pipelines.
      binarize: ``"none"`` or ``"dynamic"`` (intensity data only).
      dequantize: uniform dequantisation of natural images in training; ignored
        for other pixel kinds.
      max_examples: keep only the first ``max_examples`` of each split (smoke
        runs, tests).
      shuffle_buffer: examples in the shuffle buffer.
      cache: ``True`` caches decoded uint8 examples in memory, a string is a
        directory for file caches, ``False`` disables caching (ImageNet 64x64
        does not fit in memory on most machines). Folder sources are streamed:
        ``True`` does not cache them (a directory does).
      image_size: ``(H, W)`` of the pipeline's images (None: the data's own size).
      channels: 1 or 3 (None: 1 when every image is grey, else 3).
      resize, crop: how images of another size reach ``image_size``: scaled
        (``resize``) and/or centre-cropped (``crop="center"``) or not (``"none"``).
      pixels: declares the pixel kind (None: detected; see :mod:`tf_asvae.sources`).
      split_fractions: train/validation/test fractions of a folder (or of one NPZ
        array), assigned by a hash of each path (index) seeded with ``split_seed``.
      train_split, validation_split, test_split: TFDS split strings
        (``"train[:90%]"``), or the NPZ arrays of each split.
      image_key: the TFDS image feature or NPZ array (None: the only one).
    """

    name: str
    batch_size: int
    data_dir: str | None = None
    manual_dir: str | None = dataclasses.field(default_factory=_env_manual_dir)
    seed: int = 0
    binarize: str = "none"
    dequantize: bool = True
    max_examples: int | None = None
    shuffle_buffer: int = 10_000
    cache: bool | str = True
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    resize: bool = True
    crop: str = "center"
    pixels: str | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    train_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None
    image_key: str | None = None

    def __post_init__(self):
        from tf_asvae import sources

        source = sources.parse_source(self.name)  # ValueError for a bad prefix
        if source is None and self.name not in DATASETS:
            raise ValueError(
                f"Unknown data set name. Accepted: {sorted(DATASETS)}, or a source "
                "folder:PATH, tfds:NAME[/CONFIG], npz:PATH. "
                f"Received: name={self.name!r}"
            )
        self._check_source_fields(source)
        if not _is_int(self.batch_size) or self.batch_size <= 0:
            raise ValueError(
                f"batch_size must be a positive integer. Received: batch_size={self.batch_size!r}"
            )
        for key in ("data_dir", "manual_dir"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, os.PathLike):
                object.__setattr__(self, key, os.fspath(value))
            elif not isinstance(value, str) or not value:
                raise ValueError(
                    f"{key} must be None or a non-empty path. Received: {key}={value!r}"
                )
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0. Received: seed={self.seed!r}")
        if self.binarize not in BINARIZE_MODES:
            raise ValueError(
                f"binarize must be one of {list(BINARIZE_MODES)}. "
                f"Received: binarize={self.binarize!r}"
            )
        if source is not None:
            if self.binarize == "dynamic" and self.pixels != "intensity":
                raise ValueError(
                    "binarize='dynamic' applies to grey-level pixels: declare them with "
                    f"pixels='intensity' (--pixels intensity) for {self.name!r}. "
                    f"Received: binarize={self.binarize!r}, pixels={self.pixels!r}"
                )
            spec = None
        else:
            spec = DATASETS[self.name]
        if spec is not None and self.binarize == "dynamic" and spec.pixels != "intensity":
            accepted = sorted(n for n, s in DATASETS.items() if s.pixels == "intensity")
            raise ValueError(
                f"binarize='dynamic' applies to grey-level data sets only ({accepted}); "
                f"{self.name!r} has {spec.pixels} pixels. "
                f"Received: binarize={self.binarize!r} with name={self.name!r}"
            )
        if not isinstance(self.dequantize, bool):
            raise ValueError(
                f"dequantize must be a bool. Received: dequantize={self.dequantize!r}"
            )
        if self.max_examples is not None and (
            not _is_int(self.max_examples) or self.max_examples <= 0
        ):
            raise ValueError(
                "max_examples must be None or a positive integer. "
                f"Received: max_examples={self.max_examples!r}"
            )
        if not _is_int(self.shuffle_buffer) or self.shuffle_buffer <= 0:
            raise ValueError(
                "shuffle_buffer must be a positive integer. "
                f"Received: shuffle_buffer={self.shuffle_buffer!r}"
            )
        if isinstance(self.cache, os.PathLike):
            object.__setattr__(self, "cache", os.fspath(self.cache))
        if not isinstance(self.cache, (bool, str)) or self.cache == "":
            raise ValueError(
                "cache must be True, False or a non-empty directory path. "
                f"Received: cache={self.cache!r}"
            )

    def _check_source_fields(self, source) -> None:
        """Validates (and normalises) the fields of folder/tfds/npz sources."""
        if self.image_size is not None:
            size = self.image_size
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or not all(_is_int(v) and v > 0 for v in size)):
                raise ValueError("image_size must be None or (height, width) of positive "
                                 f"integers. Received: image_size={size!r}")
            object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if self.channels is not None and self.channels not in (1, 3):
            raise ValueError(f"channels must be None, 1 or 3. Received: channels={self.channels!r}")
        if not isinstance(self.resize, bool):
            raise ValueError(f"resize must be a bool. Received: resize={self.resize!r}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {list(CROP_MODES)}. "
                             f"Received: crop={self.crop!r}")
        if self.pixels is not None and self.pixels not in PIXEL_KINDS:
            raise ValueError(f"pixels must be None or one of {list(PIXEL_KINDS)}. "
                             f"Received: pixels={self.pixels!r}")
        fractions = self.split_fractions
        ok = (isinstance(fractions, (tuple, list)) and len(fractions) == 3
              and all(isinstance(f, (int, float)) and not isinstance(f, bool) and f >= 0
                      for f in fractions))
        if not ok or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError("split_fractions must be three numbers >= 0 (train > 0) for "
                             "train, validation and test that sum to 1. "
                             f"Received: split_fractions={fractions!r}")
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in fractions))
        if not _is_int(self.split_seed) or self.split_seed < 0:
            raise ValueError(f"split_seed must be an integer >= 0. "
                             f"Received: split_seed={self.split_seed!r}")
        for key in ("train_split", "validation_split", "test_split", "image_key"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{key} must be None or a non-empty string. "
                                 f"Received: {key}={value!r}")
        if source is None:
            changed = [f.name for f in dataclasses.fields(self)
                       if f.name in _SOURCE_FIELDS and getattr(self, f.name) != f.default]
            if changed:
                raise ValueError(
                    f"{changed} apply to folder:, tfds: and npz: sources; the registered "
                    f"data set {self.name!r} has a fixed shape and splits (for "
                    f"another size use e.g. name='tfds:{self.spec.tfds_name or self.name}'). "
                    f"Received: { {k: getattr(self, k) for k in changed} }")
        elif source[0] == "folder" and any(getattr(self, k) is not None for k in
                                           ("train_split", "validation_split", "test_split",
                                            "image_key")):
            raise ValueError(
                "train_split, validation_split, test_split and image_key apply to tfds: and "
                f"npz: sources; folders are split by split_fractions. Received: name="
                f"{self.name!r}")

    @property
    def source(self):
        """``(kind, argument)`` of a folder/tfds/npz source, None for a registered name."""
        from tf_asvae import sources

        return sources.parse_source(self.name)

    @property
    def spec(self) -> DatasetSpec:
        """The data set's description; for a source this reads it (headers of files,
        TFDS metadata; cached) and raises :class:`DataError` on bad data."""
        if self.name in DATASETS:
            return DATASETS[self.name]
        from tf_asvae import sources

        info = sources.describe(self)
        return DatasetSpec(tfds_name=None, image_shape=tuple(info.image_shape),
                           splits=dict(info.items), num_examples=dict(info.num_examples),
                           pixels=info.pixels, source=info)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``from_dict(to_dict())`` round-trips).

        A registered data set's dict leaves out the source-only fields (always at their
        defaults), so it is the same as before sources existed and older runs'
        ``config.json`` files still match (resume, relaunch)."""
        out = dataclasses.asdict(self)
        if self.name in DATASETS:
            for key in _SOURCE_FIELDS:
                out.pop(key)
            return out
        for key in ("image_size", "split_fractions"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "DataConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown DataConfig keys {unknown}. Accepted: {sorted(known)}. "
                f"Received: {dict(config)!r}"
            )
        return cls(**dict(config))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DataConfig":
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------------------
# Manual directories and checksums


def _spec_for_files(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(
            f"Unknown data set name. Accepted: {sorted(DATASETS)}. Received: name={name!r}"
        )
    spec = DATASETS[name]
    if spec.tfds_name is None:
        raise ValueError(
            f"Data set {name!r} is generated in code and has no data files. "
            f"Received: name={name!r}"
        )
    return spec


def resolve_manual_dir(name: str, manual_dir: str | os.PathLike) -> pathlib.Path:
    """The folder holding ``name``'s files: ``manual_dir/<subdir>`` if it exists,
    else ``manual_dir`` itself."""
    spec = _spec_for_files(name)
    root = pathlib.Path(manual_dir).expanduser()
    if spec.manual_subdir and (root / spec.manual_subdir).is_dir():
        return root / spec.manual_subdir
    return root


def _registered_checksums(spec: DatasetSpec) -> tuple[dict[str, Any], str]:
    """TFDS's registered ``{filename: UrlInfo}`` and where they are recorded."""
    import tensorflow_datasets as tfds

    builder_cls = tfds.builder_cls(spec.tfds_name.split("/")[0])
    infos = builder_cls.url_infos or {}
    where = getattr(builder_cls, "_checksums_path", None) or f"builder {builder_cls.__name__}"
    source = f"TFDS {tfds.__version__} registered checksums ({where})"
    return {info.filename: info for info in infos.values() if info.filename}, source


def _read_sha256sums(path: pathlib.Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split()
        if len(parts) >= 2:
            sums[parts[-1].lstrip("*")] = parts[0].lower()
    return sums


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_manual_dir(name: str, manual_dir: str | os.PathLike) -> pathlib.Path:
    """Verifies the manually downloaded files of data set ``name``.

    Every file in ``DATASETS[name].files`` must exist in the resolved folder (see
    :func:`resolve_manual_dir`). If the folder holds a ``SHA256SUMS`` file
    (``sha256sum`` format), each file's SHA-256 must match its line there, and
    that line must agree with the checksum TFDS registered for the file. Without
    ``SHA256SUMS`` only the size registered by TFDS is checked here; TFDS checks
    the SHA-256 while preparing and :func:`prepare` wraps its error.

    Returns:
      The resolved folder.

    Raises:
      MissingDataFileError: the folder or a file is missing.
      ChecksumMismatchError: a file has the wrong size or SHA-256.
    """
    spec = _spec_for_files(name)
    folder = resolve_manual_dir(name, manual_dir)
    registered, registry_source = _registered_checksums(spec)
    if not folder.is_dir():
        raise MissingDataFileError(
            f"Manual data directory {str(folder)!r} for data set {name!r} does not exist. "
            f"Put {list(spec.files)} (from {spec.source_url}) there, or in a "
            f"'{spec.manual_subdir}/' subfolder of the directory given by --manual-dir "
            f"or ${ENV_MANUAL_DIR}."
        )
    sums_path = folder / SHA256SUMS
    sums = _read_sha256sums(sums_path) if sums_path.is_file() else None
    for filename in spec.files:
        path = folder / filename
        info = registered.get(filename)
        if sums is not None and filename in sums:
            expected, source = sums[filename], str(sums_path)
        elif info is not None:
            expected, source = info.checksum, registry_source
        else:
            expected, source = None, "nowhere (no registered checksum)"
        if not path.is_file():
            raise MissingDataFileError(
                f"Missing data file {str(path)!r} for data set {name!r}. "
                f"Expected SHA-256 {expected} (from {source}). "
                f"Download it from {spec.source_url}{filename}."
            )
        if sums is None:
            # No local list: the size is checked here, the SHA-256 by TFDS.
            if info is not None and int(info.size) != path.stat().st_size:
                raise ChecksumMismatchError(
                    f"Corrupt data file {str(path)!r} for data set {name!r}: "
                    f"size {path.stat().st_size} bytes, expected {int(info.size)} bytes "
                    f"and SHA-256 {info.checksum} (from {registry_source}). "
                    f"Download it again from {spec.source_url}{filename}."
                )
            continue
        if filename not in sums:
            raise ChecksumMismatchError(
                f"{str(sums_path)!r} has no line for data file {str(path)!r} "
                f"(data set {name!r}); the expected SHA-256 is {expected} (from {source})."
            )
        actual = _sha256(path)
        if actual != sums[filename]:
            raise ChecksumMismatchError(
                f"Corrupt data file {str(path)!r} for data set {name!r}: SHA-256 {actual}, "
                f"expected {sums[filename]} (from {sums_path}). "
                f"Download it again from {spec.source_url}{filename}."
            )
        if info is not None and info.checksum != actual:
            raise ChecksumMismatchError(
                f"Data file {str(path)!r} for data set {name!r} matches {str(sums_path)!r} "
                f"but not the SHA-256 {info.checksum} that TFDS expects "
                f"(from {registry_source}); TFDS would refuse it."
            )
    return folder


# --------------------------------------------------------------------------------------
# TFDS


def _source_reachable(url: str | None, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds
    (assumed True behind a configured proxy, which a direct probe cannot judge)."""
    if not url or any(
        os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
    ):
        return True
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def prepare(config: DataConfig):
    """Returns the TFDS builder of ``config.name``, prepared in ``config.data_dir``.

    If the data are not prepared yet and a manual directory is configured, the
    files there are checked first (:func:`check_manual_dir`), then TFDS prepares
    from them without any network access (no GCS, no download). Without a manual
    directory TFDS downloads as usual, after a quick check that the source host
    can be reached at all (TFDS itself retries for minutes). Any TFDS failure is
    re-raised as a :class:`DataError` naming the data set, directories and files.
    """
    import tensorflow_datasets as tfds

    spec = config.spec
    if spec.tfds_name is None:
        raise ValueError(
            f"Data set {config.name!r} is generated in code; it has no TFDS builder."
        )
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=config.data_dir)
    except Exception as e:  # pragma: no cover - TFDS registry problems
        raise DataError(
            f"TFDS could not create the builder {spec.tfds_name!r} for data set "
            f"{config.name!r} (data_dir={config.data_dir!r}): {type(e).__name__}: {e}"
        ) from e
    if builder.is_prepared():
        return builder

    folder = None
    if config.manual_dir is not None:
        folder = check_manual_dir(config.name, config.manual_dir)
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.fspath(folder), try_download_gcs=False
        )
    else:
        # Without a network TFDS retries each file for minutes before failing;
        # fail fast instead, with the offline instructions.
        if not _source_reachable(spec.source_url):
            raise DataError(
                f"Data set {config.name!r} is not prepared in data_dir "
                f"{str(builder.data_dir_root)!r} and {spec.source_url} cannot be reached. "
                f"For offline use pass --manual-dir DIR (or set ${ENV_MANUAL_DIR}) to a "
                f"folder holding {list(spec.files)}, or --data-dir DIR to prepared data."
            )
        download_config = tfds.download.DownloadConfig()
    try:
        builder = download_and_prepare_once(builder, download_config)
    except Exception as e:
        if folder is not None:
            where = (
                f"from manual_dir {str(folder)!r} (files {list(spec.files)}; expected "
                f"checksums from {_registered_checksums(spec)[1]})"
            )
        else:
            where = (
                f"by downloading from {spec.source_url} (for offline use pass "
                f"--manual-dir DIR or set ${ENV_MANUAL_DIR} to a folder holding "
                f"{list(spec.files)})"
            )
        raise DataError(
            f"TFDS could not prepare data set {config.name!r} ({spec.tfds_name}) in "
            f"data_dir {str(builder.data_dir_root)!r} {where}: {type(e).__name__}: {e}"
        ) from e
    return builder


def download_and_prepare_once(builder, download_config):
    """``builder.download_and_prepare`` under a lock in the builder's ``data_dir``;
    returns the builder to read from.

    Of two processes that prepare the same data set at once (two experiments started
    together on a fresh machine), the second waits for the first and then finds the
    data prepared; TFDS alone lets both prepare and the slower one fails renaming its
    copy into place.  A builder made before the data existed holds an empty
    ``info`` (no splits), so when another process prepared the data meanwhile the
    builder returned is loaded again from the prepared directory.  The lock is a hidden
    file ``.<name>.prepare.lock`` in the ``data_dir`` root; remote roots (``gs://...``)
    are prepared without it.
    """
    import tensorflow_datasets as tfds

    root = os.fspath(builder.data_dir_root)
    if "://" in root:
        builder.download_and_prepare(download_config=download_config)
        return builder
    os.makedirs(root, exist_ok=True)
    with tf_io.waiting_lock(os.path.join(root, f".{builder.name}.prepare.lock")):
        if builder.is_prepared():
            return tfds.builder_from_directory(os.fspath(builder.data_path))
        builder.download_and_prepare(download_config=download_config)
        return builder


def _tfds_images(config: DataConfig, split: str, *, shuffle_files: bool, seed: int):
    """uint8 images of one split, unbatched, in TFDS order (or file-shuffled)."""
    import tensorflow_datasets as tfds

    builder = prepare(config)
    read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
    try:
        ds = builder.as_dataset(
            split=config.spec.splits[split],
            shuffle_files=shuffle_files,
            read_config=read_config,
        )
    except Exception as e:
        raise DataError(
            f"TFDS could not read split {config.spec.splits[split]!r} of "
            f"{config.spec.tfds_name!r} (data set {config.name!r}, data_dir "
            f"{str(builder.data_dir_root)!r}): {type(e).__name__}: {e}"
        ) from e
    return ds.map(lambda example: example["image"], num_parallel_calls=AUTOTUNE)


# --------------------------------------------------------------------------------------
# Synthetic data


def _four_points_array(num_examples: int, seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, 4, size=num_examples)
    return np.eye(4, dtype=np.uint8)[labels].reshape(num_examples, 2, 2, 1)


def synthetic_four_points(num_examples: int, seed: int = 0) -> tf.data.Dataset:
    """AVB's synthetic data set [2]: ``num_examples`` 2x2 binary images.

    Each example is one of the four images with exactly one lit pixel, chosen
    uniformly at random (``numpy`` generator seeded with ``seed``). The true
    log-likelihood of any example is ``-log 4``. Yields unbatched float32
    ``[2, 2, 1]`` tensors with values in ``{0, 1}``.
    """
    if not _is_int(num_examples) or num_examples <= 0:
        raise ValueError(
            f"num_examples must be a positive integer. Received: num_examples={num_examples!r}"
        )
    images = _four_points_array(int(num_examples), seed).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices(images)


# --------------------------------------------------------------------------------------
# Pipelines


def to_uint8(images) -> tf.Tensor:
    """The 8-bit values of natural images produced by these pipelines.

    ``floor(256 * x)`` inverts both the dequantisation ``(x + u) / 256`` and the
    bin centres ``(x + 0.5) / 256``.
    """
    x = tf.floor(tf.convert_to_tensor(images, tf.float32) * 256.0)
    return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def _derive_seed(*entropy: int) -> int:
    """A 31-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint32)[0] >> 1)


_U_MAX = 1.0 - 2.0**-15


def _to_float(raw: tf.Tensor, spec: DatasetSpec, config: DataConfig, noise_seed, *, training):
    """uint8 -> float32 in [0, 1] as described in the module docstring.

    ``noise_seed`` is a stateless seed (shape [2]) or None.
    """
    x = tf.cast(raw, tf.float32)
    if spec.pixels == "binary":
        return x
    if spec.pixels == "natural":
        if training and config.dequantize:
            # u < 1 - 2**-15 keeps x + u below x + 1 after float32 rounding, so
            # floor(256 * image) is exactly the 8-bit value.
            u = tf.random.stateless_uniform(tf.shape(x), seed=noise_seed, maxval=_U_MAX)
        else:
            u = 0.5
        return (x + u) / 256.0
    p = x / 255.0
    if config.binarize == "dynamic":
        u = tf.random.stateless_uniform(tf.shape(x), seed=noise_seed)
        return tf.cast(u < p, tf.float32)
    return p


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
    """``global_batch_size // num_replicas``; ValueError unless it divides evenly."""
    if num_replicas <= 0 or global_batch_size % num_replicas:
        raise ValueError(
            f"The global batch size must be divisible by the number of replicas. "
            f"Received: batch_size={global_batch_size}, num_replicas={num_replicas}"
        )
    return global_batch_size // num_replicas


def num_examples(config: DataConfig, split: str) -> int:
    """Examples in ``split`` after ``max_examples``."""
    _check_split(split)
    n = config.spec.num_examples[split]  # a source is described here (DataError)
    return n if config.max_examples is None else min(n, config.max_examples)


def steps_per_epoch(config: DataConfig, split: str = "train", *, training: bool = True) -> int:
    """Global batches per pass (training drops the remainder, evaluation keeps it)."""
    n = num_examples(config, split)
    return n // config.batch_size if training else -(-n // config.batch_size)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}. Received: split={split!r}")


def load_split(
    config: DataConfig,
    split: str,
    *,
    training: bool,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool = False,
    with_raw: bool = False,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """The batched input pipeline of one split.

    Args:
      config: a :class:`DataConfig`.
      split: ``"train"``, ``"validation"`` or ``"test"``.
      training: shuffle (seeded), add noise (dequantisation / dynamic
        binarisation) and drop the last partial batch; otherwise deterministic
        order, no noise, keep the last batch.
      input_context: given by ``strategy.distribute_datasets_from_function``; the
        examples are sharded by input pipeline and batched per replica.
      repeat: repeat forever (each pass reshuffled); default one pass per epoch.
      with_raw: yield ``(images, raw)`` where ``raw`` holds the stored uint8
        values of the same examples (for discretised evaluation).
      skip_batches: (training only) start after this many batches of the stream, so
        that a run resumed after ``k`` steps reads the batches the uninterrupted run
        would have read (shuffling and noise are seeded, so the stream is the same).

    The training stream is a function of ``config.seed`` and of TensorFlow's global
    seed at the time this is called (tf.data combines the two for its seeded shuffles
    and random streams): call ``keras.utils.set_random_seed`` first, as the training
    program does, to make it the same in every process.

    Returns:
      A dataset of float32 ``[B, H, W, C]`` images in ``[0, 1]`` (or pairs).
    """
    if not isinstance(config, DataConfig):
        raise TypeError(f"config must be a DataConfig. Received: config={config!r}")
    _check_split(split)
    spec = config.spec
    if not _is_int(skip_batches) or skip_batches < 0 or (skip_batches and not training):
        raise ValueError("skip_batches must be an integer >= 0, and 0 unless training. "
                         f"Received: skip_batches={skip_batches!r}, training={training}.")

    batch_size, pipeline_id, num_pipelines = config.batch_size, 0, 1
    if input_context is not None:
        batch_size = per_replica_batch_size(
            config.batch_size, input_context.num_replicas_in_sync
        )
        pipeline_id = input_context.input_pipeline_id
        num_pipelines = input_context.num_input_pipelines
    split_index = SPLITS.index(split)
    file_seed = _derive_seed(config.seed, pipeline_id, split_index, 1)
    shuffle_seed = _derive_seed(config.seed, pipeline_id, split_index, 2)
    noise_seed = _derive_seed(config.seed, pipeline_id, split_index, 3)
    eval_noise_seed = _derive_seed(config.seed, split_index, 4)

    if spec.source is not None:
        from tf_asvae import sources

        raw = sources.raw_dataset(config, split, shuffle_files=training, seed=file_seed,
                                  limit=config.max_examples, shard=(num_pipelines, pipeline_id))
    elif spec.tfds_name is None:
        raw = tf.data.Dataset.from_tensor_slices(
            _four_points_array(spec.num_examples[split], spec.splits[split])
        )
    else:
        raw = _tfds_images(config, split, shuffle_files=training, seed=file_seed)
    raw = raw.map(lambda x: tf.ensure_shape(x, spec.image_shape))
    if config.max_examples is not None and spec.source is None:
        raw = raw.take(config.max_examples)
    if num_pipelines > 1 and spec.source is None:
        raw = raw.shard(num_pipelines, pipeline_id)
    streamed = spec.source is not None and spec.source.kind == "folder"
    if config.cache is True and not streamed:
        raw = raw.cache()
    elif isinstance(config.cache, str):
        os.makedirs(config.cache, exist_ok=True)
        tag = config.name if spec.source is None else (
            f"{spec.source.kind}-{hashlib.sha256(config.to_json().encode()).hexdigest()[:12]}")
        raw = raw.cache(
            os.path.join(config.cache, f"{tag}-{split}-{pipeline_id}of{num_pipelines}")
        )

    def pack(images, raw_images):
        return (images, raw_images) if with_raw else images

    if training:
        # A folder's file names were shuffled whole before decoding (raw_dataset).
        ds = raw if streamed else raw.shuffle(config.shuffle_buffer, seed=shuffle_seed,
                                              reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=True)
        # One stateless seed per batch from a seeded stream that is redrawn on every
        # pass: the same config gives the same noise, and each epoch new noise.
        seeds = tf.data.Dataset.random(seed=noise_seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds.batch(2))
        if skip_batches:
            ds = ds.skip(skip_batches)

        def transform(raw_batch, seed):
            return pack(_to_float(raw_batch, spec, config, seed, training=True), raw_batch)

        ds = ds.map(transform, num_parallel_calls=AUTOTUNE)
    else:
        # Per-example seeds from the position: a fixed, batch-size independent
        # binarisation (only used by binarize="dynamic").
        def transform(index, raw_image):
            seed = tf.stack([tf.constant(eval_noise_seed, tf.int64), index])
            return pack(_to_float(raw_image, spec, config, seed, training=False), raw_image)

        ds = raw.enumerate().map(transform, num_parallel_calls=AUTOTUNE)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(AUTOTUNE)


def _source_pipeline(name, split, batch_size, training, options) -> tf.data.Dataset:
    config = DataConfig(name, batch_size, **options)
    return load_split(config, split, training=split == "train" if training is None
                      else training)


def image_folder(path, split: str = "train", batch_size: int = 64, *,
                 training: bool | None = None, **options) -> tf.data.Dataset:
    """The ``split`` of a folder of images as a batched pipeline for ``model.fit``:
    ``load_split(DataConfig("folder:" + path, batch_size, **options), split, ...)``.
    ``training`` defaults to ``split == "train"`` (shuffled, dequantised, whole
    batches); ``options`` are :class:`DataConfig` fields (``image_size=(48, 48)``,
    ``channels=3``, ``crop="none"``, ``split_fractions=...``, ``seed=...``)."""
    return _source_pipeline(f"folder:{os.fspath(path)}", split, batch_size, training, options)


def tfds_images(name: str, split: str = "train", batch_size: int = 64, *,
                training: bool | None = None, **options) -> tf.data.Dataset:
    """Like :func:`image_folder` for any TFDS image data set (``"svhn_cropped"``,
    ``"celeb_a"``); ``options`` include ``train_split="train[:90%]"``,
    ``image_key``, ``data_dir``, ``manual_dir``."""
    return _source_pipeline(f"tfds:{name}", split, batch_size, training, options)


def npz_images(path, split: str = "train", batch_size: int = 64, *,
               training: bool | None = None, **options) -> tf.data.Dataset:
    """Like :func:`image_folder` for the images of an ``.npz`` file."""
    return _source_pipeline(f"npz:{os.fspath(path)}", split, batch_size, training, options)


def distributed_dataset(
    strategy: tf.distribute.Strategy,
    config: DataConfig,
    split: str,
    training: bool,
    *,
    repeat: bool = False,
    with_raw: bool = False,
    skip_batches: int = 0,
):
    """``load_split`` under a distribution strategy.

    Each input pipeline reads its own shard of the examples and batches
    ``config.batch_size // strategy.num_replicas_in_sync`` examples per replica
    (ValueError if that does not divide evenly); ``skip_batches`` global steps are
    skipped in every pipeline.
    """
    per_replica_batch_size(config.batch_size, strategy.num_replicas_in_sync)

    def dataset_fn(input_context):
        return load_split(
            config,
            split,
            training=training,
            input_context=input_context,
            repeat=repeat,
            with_raw=with_raw,
            skip_batches=skip_batches,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


# --------------------------------------------------------------------------------------
# Command line


def _dataset_name(text: str) -> str:
    """argparse type of ``--dataset``: a registered name or a source."""
    from tf_asvae import sources

    try:
        source = sources.parse_source(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if source is None and text not in DATASETS:
        raise argparse.ArgumentTypeError(
            f"unknown data set {text!r}. Expected one of {sorted(DATASETS)}, or "
            "folder:PATH (a folder of images), tfds:NAME[/CONFIG] (any TFDS image data "
            "set) or npz:PATH (an array file)")
    return text


def add_data_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``--dataset --batch-size --data-dir --manual-dir --data-seed --binarize
    --no-dequantize --max-examples --shuffle-buffer --no-cache`` and the options of
    folder/tfds/npz sources (``--image-size --channels --no-resize --crop --pixels
    --split-fractions --split-seed --train-split --validation-split --test-split
    --image-key``) to ``parser``."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="mnist", type=_dataset_name,
                       help=f"one of {sorted(DATASETS)}, or your own images: folder:PATH "
                            "(PNG/JPEG/BMP/GIF, class sub-folders allowed), "
                            "tfds:NAME[/CONFIG] (any TFDS image data set), npz:PATH")
    group.add_argument("--batch-size", type=int, default=100, help="global batch size")
    group.add_argument("--data-dir", default=None, help="TFDS directory of prepared data")
    group.add_argument(
        "--manual-dir",
        default=None,
        help=f"directory of downloaded data files (default: ${ENV_MANUAL_DIR})",
    )
    group.add_argument("--data-seed", type=int, default=0)
    group.add_argument("--binarize", default="none", choices=list(BINARIZE_MODES))
    group.add_argument("--no-dequantize", dest="dequantize", action="store_false")
    group.add_argument("--max-examples", type=int, default=None)
    group.add_argument("--shuffle-buffer", type=int, default=10_000)
    group.add_argument("--no-cache", dest="cache", action="store_false")
    group.add_argument("--cache-dir", default=None,
                       help="cache decoded images in files in this folder")
    return add_source_flags(parser)


def add_source_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the options of folder/tfds/npz sources alone (``--image-size --channels
    --resize/--no-resize --crop --pixels --split-fractions --split-seed --train-split
    --validation-split --test-split --image-key``): for programs that read a source
    the way the trainer does without its pipeline flags (``trainers.train_classifier``).
    """
    group = parser.add_argument_group("your own images (folder:, tfds:, npz: sources)")
    group.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help="size of the images fed to the model (default: the data's own)")
    group.add_argument("--channels", type=int, default=None, choices=(1, 3),
                       help="1 (grey) or 3 (RGB); default: 1 if every image is grey")
    group.add_argument("--resize", dest="resize", action="store_true", default=True,
                       help="scale images of another size (the default)")
    group.add_argument("--no-resize", dest="resize", action="store_false",
                       help="never scale images (only --crop center may change their size)")
    group.add_argument("--crop", default="center", choices=list(CROP_MODES),
                       help="center: keep the aspect ratio and cut out the centre; "
                            "none: scale to exactly --image-size")
    group.add_argument("--pixels", default=None, choices=list(PIXEL_KINDS),
                       help="declare the pixel kind (default: natural 8-bit, or binary "
                            "when detected; float arrays: intensity)")
    group.add_argument("--split-fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1],
                       metavar=("TRAIN", "VAL", "TEST"),
                       help="folder/NPZ split by a seeded hash of each path (index)")
    group.add_argument("--split-seed", type=int, default=0,
                       help="seed of the split hash (not the training seed)")
    group.add_argument("--train-split", default=None,
                       help="TFDS split (e.g. 'train[:90%%]') or NPZ array of training")
    group.add_argument("--validation-split", default=None,
                       help="TFDS split or NPZ array of validation")
    group.add_argument("--test-split", default=None, help="TFDS split or NPZ array of test")
    group.add_argument("--image-key", default=None,
                       help="TFDS image feature or NPZ array (default: the only one)")
    return parser


def _absolute_source(name: str) -> str:
    """``folder:``/``npz:`` paths made absolute (a run relaunched from elsewhere finds
    them)."""
    from tf_asvae import sources

    source = sources.parse_source(name)
    if source is None or source[0] == "tfds":
        return name
    return f"{source[0]}:{os.path.abspath(os.path.expanduser(source[1]))}"


def data_config_from_flags(args: argparse.Namespace) -> DataConfig:
    """The :class:`DataConfig` of flags added by :func:`add_data_flags` (or of
    ``--dataset --batch-size --data-dir --manual-dir`` and :func:`add_source_flags`;
    missing pipeline flags take DataConfig's defaults)."""
    get = lambda key, default=None: getattr(args, key, default)  # noqa: E731
    fractions = get("split_fractions")
    return DataConfig(
        name=_absolute_source(args.dataset),
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir if args.manual_dir is not None else _env_manual_dir(),
        seed=get("data_seed", 0),
        binarize=get("binarize", "none"),
        dequantize=get("dequantize", True),
        max_examples=get("max_examples"),
        shuffle_buffer=get("shuffle_buffer", 10_000),
        cache=get("cache_dir") or get("cache", True),
        image_size=None if get("image_size") is None else tuple(get("image_size")),
        channels=get("channels"),
        resize=get("resize", True),
        crop=get("crop", "center"),
        pixels=get("pixels"),
        split_fractions=(0.8, 0.1, 0.1) if fractions is None else tuple(fractions),
        split_seed=get("split_seed", 0),
        train_split=get("train_split"),
        validation_split=get("validation_split"),
        test_split=get("test_split"),
        image_key=get("image_key"),
    )
