"""Your own images as data sets: image folders, any TFDS image data set, NPZ arrays.

A data source is named by a string with a prefix (the command line's ``--dataset``, the
``name`` of :class:`tf_asvae.data.DataConfig`):

``folder:PATH``
    Every PNG, JPEG, BMP or GIF file under ``PATH`` (sub-folders included; a file's
    first sub-folder is its class, kept as a label and ignored by the models). The
    files are streamed by ``tf.data`` (read and decoded per batch, never held in memory
    together). Each file's split is fixed by a seeded hash of its path relative to
    ``PATH`` (:func:`split_of`): adding files never moves the old ones between
    train, validation and test. Hidden files and other extensions are ignored.
``tfds:NAME[/CONFIG]``
    Any TFDS data set with an image feature (``tfds:svhn_cropped``,
    ``tfds:cifar100``, ``tfds:celeb_a``); splits in TFDS's syntax (``train[:90%]``).
``npz:PATH``
    A NumPy ``.npz`` file: uint8 images ``[N, H, W(, C)]`` or floats in ``[0, 1]``.
    One array split by a seeded hash of each index, or one array per split
    (``train_split="x_train"`` ...). Labels, for a classifier (:func:`label_classes`),
    are an integer array beside each image array: ``labels`` for ``images``,
    ``y_train`` for ``x_train``, ``K_labels`` for any ``K``.

Before any work the source is *described* (:func:`describe`): files are listed and
their headers read, TFDS builders prepared, arrays checked. Every problem raises
:class:`tf_asvae.data.DataError` naming the file or value and what was expected.

Target shape. ``image_size=(H, W)`` and ``channels`` (1 or 3) default to the data's
own (every image of one size; every image grey gives 1 channel, any colour image 3).
Images of another size are brought to ``(H, W)`` by the policy:

* ``resize=True, crop="center"``: scaled (bilinear with antialiasing) so that the
  image covers ``(H, W)`` with its aspect ratio kept, then the centre is cut out;
* ``resize=True, crop="none"``: scaled to exactly ``(H, W)`` (the aspect ratio
  changes);
* ``resize=False, crop="center"``: the centre ``(H, W)`` is cut out (an image smaller
  than that is an error, named before any work);
* ``resize=False, crop="none"``: every image must already be ``(H, W)``.

Channels: grey images are repeated to RGB, RGB becomes grey by ITU-R 601 luma, alpha
channels are dropped; the description's ``notes`` say how many images were converted
(the training program prints them and writes them to ``RUN/data.json``).

Pixels. 8-bit images are ``"natural"`` (uniform dequantisation in training, bin centres
in evaluation, the discretised likelihood: as CIFAR-10) unless every pixel of the
first images is 0 or 255 (folders: 1-bit images, or the first
:data:`BINARY_PROBE_FILES` grey files), which makes them ``"binary"``; float arrays
are ``"intensity"`` (the value is the probability of a binary pixel, as MNIST).
``pixels=...`` declares the kind instead.

Corrupt files (folders). A file whose header cannot be read, which fails PIL's
integrity check (PNG CRCs and truncation), or a JPEG/GIF without its end marker
(truncated), is **skipped**: the description lists it in
``skipped`` with the reason, the training program prints the count and the names and
records them in ``RUN/data.json`` and as ``skipped_files`` in ``history.json``. A
folder in which every image is corrupt is an error. A file that passes the check but
that TensorFlow cannot decode stops training with TensorFlow's error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Any, Mapping

import numpy as np

__all__ = ["SOURCE_KINDS", "IMAGE_EXTENSIONS", "BINARY_PROBE_FILES", "SourceInfo",
           "parse_source", "is_source", "run_name_part", "split_of", "describe", "raw_dataset",
           "labelled_dataset", "label_classes", "clear_cache"]

SOURCE_KINDS = ("folder", "tfds", "npz")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
BINARY_PROBE_FILES = 16
SPLITS = ("train", "validation", "test")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _error(message):
    from tf_asvae.data import DataError

    return DataError(message)


def parse_source(name: str):
    """``"folder:PATH"`` -> ``("folder", "PATH")``; ``None`` for a registered name.

    Raises ValueError for a prefix-like name with an unknown kind or no argument."""
    if not isinstance(name, str) or ":" not in name:
        return None
    kind, _, arg = name.partition(":")
    if kind not in SOURCE_KINDS:
        if len(kind) == 1:  # a Windows drive letter would be a folder without prefix
            return None
        raise ValueError(f"Unknown data source kind {kind!r}. Expected a registered data "
                         f"set name or one of {[k + ':...' for k in SOURCE_KINDS]}. "
                         f"Received: {name!r}")
    if not arg.strip():
        raise ValueError(f"The data source {name!r} names no "
                         f"{'path' if kind != 'tfds' else 'TFDS data set'} after "
                         f"'{kind}:'. Expected e.g. {kind}:"
                         f"{'my_images/' if kind == 'folder' else 'svhn_cropped' if kind == 'tfds' else 'images.npz'}")
    return kind, arg


def is_source(name: str) -> bool:
    try:
        return parse_source(name) is not None
    except ValueError:
        return True


def run_name_part(name: str) -> str:
    """A file-name-safe short form of a data set name (``folder:/a/b/pets`` ->
    ``folder-pets``), for default run names."""
    source = parse_source(name)
    if source is None:
        return name
    kind, arg = source
    tail = arg.replace("/", "-") if kind == "tfds" else \
        (os.path.basename(os.path.normpath(arg)) or "data")
    if kind == "npz":
        tail = os.path.splitext(tail)[0]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tail)
    return f"{kind}-{safe}"


def split_of(relative_path: str, seed: int, fractions) -> str:
    """The split of one example: ``u = sha256(seed, path)`` read as a number in [0, 1),
    train if ``u < f_train``, validation if ``u < f_train + f_validation``, else test.
    Depends on nothing but the path, the seed and the fractions."""
    digest = hashlib.sha256(f"{int(seed)}\0{relative_path}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What :func:`describe` found.

    kind: ``"folder"``, ``"tfds"`` or ``"npz"``; location: the folder, file or TFDS
    name; image_shape: the pipeline's ``(H, W, C)``; pixels: the pixel kind;
    num_examples: per split; items: per split, what the raw pipeline reads (folder:
    absolute file paths; tfds: the split string; npz: ``(array key, indices)``);
    labels: per split, class indices (folders with class sub-folders, else None);
    class_names; stored_shape: the data's own (H, W, C) when uniform, else None;
    notes: conversions done; skipped: ``(relative path, reason)`` of corrupt files;
    image_key: the TFDS feature or NPZ array read; transform: whether images are
    converted (size, channels) in the pipeline.
    """

    kind: str
    location: str
    image_shape: tuple
    pixels: str
    num_examples: Mapping[str, int]
    items: Mapping[str, Any]
    labels: Mapping[str, Any] | None = None
    class_names: tuple = ()
    stored_shape: tuple | None = None
    notes: tuple = ()
    skipped: tuple = ()
    image_key: str | None = None
    transform: bool = False

    def summary(self) -> dict:
        """JSON-ready summary (``RUN/data.json``)."""
        return {"kind": self.kind, "location": self.location,
                "image_shape": list(self.image_shape), "pixels": self.pixels,
                "num_examples": dict(self.num_examples),
                "class_names": list(self.class_names), "image_key": self.image_key,
                "notes": list(self.notes), "skipped_files": len(self.skipped),
                "skipped": [{"file": f, "reason": r} for f, r in self.skipped]}


_CACHE: dict = {}


def clear_cache() -> None:
    """Forget every description (a folder's files changed within this process)."""
    _CACHE.clear()


def _key(config) -> tuple:
    return (config.name, config.image_size, config.channels, config.resize, config.crop,
            config.pixels, config.split_fractions, config.split_seed, config.train_split,
            config.validation_split, config.test_split, config.image_key,
            config.data_dir, config.manual_dir)


def describe(config) -> SourceInfo:
    """Reads what is needed to know the source of ``config`` (cached per config)."""
    key = _key(config)
    if key not in _CACHE:
        kind, arg = parse_source(config.name)
        _CACHE[key] = {"folder": _describe_folder, "tfds": _describe_tfds,
                       "npz": _describe_npz}[kind](config, arg)
    return _CACHE[key]


def _target_shape(config, stored_hw, stored_c, where):
    """(H, W, C) from the config and the data's own size/channels."""
    if config.image_size is not None:
        h, w = config.image_size
    elif stored_hw is None:
        raise _error(f"The images of {where} have different sizes (or a size TFDS does "
                     "not fix). Pass --image-size H W (DataConfig.image_size) to bring "
                     "them to one size.")
    else:
        h, w = stored_hw
    c = config.channels or stored_c or 3
    return int(h), int(w), int(c)


def _check_fit(config, name, hw, target_hw):
    """Raises if an image of size ``hw`` cannot be brought to ``target_hw``."""
    if config.resize or tuple(hw) == tuple(target_hw):
        return
    h, w = hw
    if config.crop == "none":
        raise _error(f"{name} is {h}x{w} but the target size is {target_hw[0]}x"
                     f"{target_hw[1]} with resizing off and crop='none' (every image must "
                     "already have the target size). Allow resizing (drop --no-resize) or "
                     "use --crop center.")
    if h < target_hw[0] or w < target_hw[1]:
        raise _error(f"{name} is {h}x{w}, smaller than the target {target_hw[0]}x"
                     f"{target_hw[1]}: --crop center without resizing cannot cut it out. "
                     "Allow resizing (drop --no-resize) or choose a smaller --image-size.")


def _pixels(config, detected_binary: bool, default: str) -> str:
    if config.pixels is not None:
        return config.pixels
    return "binary" if detected_binary else default


# --------------------------------------------------------------------------------------
# Folders


def _check_end(path, image_format) -> None:
    """Raises OSError for a JPEG without its end-of-image marker or a GIF without its
    trailer (a truncated download; PIL's verify() does not look at the end)."""
    ends = {"JPEG": b"\xff\xd9", "GIF": b"\x3b"}.get(image_format)
    if ends is None:
        return
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\x00\r\n ")
    if not tail.endswith(ends):
        raise OSError(f"truncated {image_format} file (no end marker)")


def _describe_folder(config, arg) -> SourceInfo:
    from PIL import Image

    root = pathlib.Path(arg).expanduser()
    if not root.exists():
        raise _error(f"The image folder {str(root)!r} does not exist. Expected a folder "
                     f"of {'/'.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} files "
                     "(class sub-folders allowed).")
    if not root.is_dir():
        raise _error(f"{str(root)!r} is not a folder. Expected folder:PATH to name a "
                     "folder of images (use npz:PATH for an .npz file).")
    files, others, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symbolic link back up the tree
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            path = pathlib.Path(dirpath) / f
            (files if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    if not files and not others:
        raise _error(f"The image folder {str(root)!r} is empty. Expected "
                     f"{'/'.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} files.")
    if not files:
        examples = [str(p.relative_to(root)) for p in others[:3]]
        raise _error(f"The folder {str(root)!r} holds no images: {len(others)} files, "
                     f"none with an extension among {list(IMAGE_EXTENSIONS)} (e.g. "
                     f"{examples}).")

    records, skipped = [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            with Image.open(path) as im:
                size, mode = im.size, im.mode
                im.verify()  # PNG CRCs and truncation; JPEG/BMP/GIF: the structure
            _check_end(path, im.format)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped
            skipped.append((rel, f"{type(e).__name__}: {e}"))
            continue
        records.append((rel, str(path.resolve()), (size[1], size[0]), mode))
    if not records:
        raise _error(f"Every image in {str(root)!r} is unreadable ({len(skipped)} files, "
                     f"e.g. {skipped[0][0]}: {skipped[0][1]}).")

    sizes = {r[2] for r in records}
    grey = all(r[3] in _GREY_MODES for r in records)
    stored_hw = next(iter(sizes)) if len(sizes) == 1 else None
    h, w, c = _target_shape(config, stored_hw, 1 if grey else 3, f"folder {str(root)!r}")
    for rel, _, hw, _ in records:
        _check_fit(config, f"Image {rel!r} in {str(root)!r}", hw, (h, w))

    # Classes: the first sub-folder of each file (none when every file is at the top).
    nested = any("/" in r[0] for r in records)
    class_names = tuple(sorted({r[0].split("/")[0] for r in records if "/" in r[0]}))
    index = {n: i for i, n in enumerate(class_names)}

    fractions = config.split_fractions
    items = {s: [] for s in SPLITS}
    labels = {s: [] for s in SPLITS}
    for rel, path, _, _ in records:
        split = split_of(rel, config.split_seed, fractions)
        items[split].append(path)
        labels[split].append(index.get(rel.split("/")[0], -1) if nested else -1)
    counts = {s: len(items[s]) for s in SPLITS}
    for split in SPLITS:
        fraction = fractions[SPLITS.index(split)]
        if fraction > 0 and counts[split] == 0:
            raise _error(f"The {split} split of folder {str(root)!r} is empty ({len(records)} "
                         f"images, split_fractions={list(fractions)}); add images or change "
                         "--split-fractions.")

    notes = []
    modes: dict = {}
    for r in records:
        modes[r[3]] = modes.get(r[3], 0) + 1
    rgba = sum(n for m, n in modes.items() if m in ("RGBA", "LA", "PA"))
    if rgba:
        notes.append(f"{rgba} images with an alpha channel: alpha dropped")
    if c == 3:
        g = sum(n for m, n in modes.items() if m in _GREY_MODES)
        if g:
            notes.append(f"{g} grey images converted to RGB")
    else:
        col = sum(n for m, n in modes.items() if m not in _GREY_MODES)
        if col:
            notes.append(f"{col} colour images converted to grey")
    other = sum(1 for r in records if tuple(r[2]) != (h, w))
    if other:
        policy = ("resized and centre-cropped" if config.resize and config.crop == "center"
                  else "resized" if config.resize else "centre-cropped")
        notes.append(f"{other} images of another size than {h}x{w} {policy}")

    binary = False
    if config.pixels is None and c == 1:
        if all(r[3] == "1" for r in records):
            binary = True
        else:
            binary = True
            for _, path, _, _ in records[:BINARY_PROBE_FILES]:
                with Image.open(path) as im:
                    values = np.unique(np.asarray(im.convert("L")))
                if not set(values.tolist()) <= {0, 255}:
                    binary = False
                    break
    pixels = _pixels(config, binary, "natural")
    if binary:
        notes.append("binary images detected (every pixel 0 or 255): pixels='binary'")
    return SourceInfo(kind="folder", location=str(root.resolve()), image_shape=(h, w, c),
                      pixels=pixels, num_examples=counts,
                      items={s: tuple(v) for s, v in items.items()},
                      labels={s: tuple(v) for s, v in labels.items()},
                      class_names=class_names,
                      stored_shape=None if stored_hw is None else (*stored_hw, 1 if grey else 3),
                      notes=tuple(notes), skipped=tuple(skipped), transform=True)


# --------------------------------------------------------------------------------------
# TFDS


def _describe_tfds(config, arg) -> SourceInfo:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(arg, data_dir=config.data_dir)
    except Exception as e:  # noqa: BLE001
        raise _error(f"Unknown TFDS data set {arg!r} (tfds:{arg}): "
                     f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    key = config.image_key
    if key is not None:
        if key not in images:
            raise _error(f"TFDS data set {arg!r} has no image feature {key!r}. Its image "
                         f"features: {images}; all features: {sorted(features)}.")
    elif not images:
        raise _error(f"TFDS data set {arg!r} has no image feature. Features: "
                     f"{sorted(features)}. Expected a data set with a tfds.features.Image.")
    elif len(images) > 1:
        raise _error(f"TFDS data set {arg!r} has several image features {images}; choose "
                     "one with --image-key (DataConfig.image_key).")
    else:
        key = images[0]
    shape = tuple(features[key].shape)
    known = dict(builder.info.splits)
    splits = {"train": config.train_split, "validation": config.validation_split,
              "test": config.test_split}
    if splits["train"] is None:
        splits["train"] = "train" if "validation" in known else "train[:90%]"
    if splits["validation"] is None:
        splits["validation"] = "validation" if "validation" in known else "train[90%:]"
    if splits["test"] is None:
        splits["test"] = ("test" if "test" in known or not known
                          else "validation" if "validation" in known else "train[90%:]")
    for split, text in splits.items():
        try:
            tfds.core.ReadInstruction.from_spec(text)
        except Exception as e:  # noqa: BLE001
            raise _error(f"TFDS cannot parse the {split} split {text!r} of {arg!r}: "
                         f"{str(e).splitlines()[0]}. Expected TFDS split syntax such as "
                         "'train', 'train[:90%]' or 'train[1000:]+test'.") from e
        base = {p.split("[")[0].strip() for p in text.split("+")}
        missing = sorted(base - set(known)) if known else []
        if missing:
            raise _error(f"TFDS data set {arg!r} has no split {missing[0]!r} (in the {split} "
                         f"split {text!r}). Its splits: {sorted(known)}.")

    builder = _prepare_tfds(builder, config, arg)
    counts = {}
    for split, text in splits.items():
        try:
            counts[split] = int(builder.info.splits[text].num_examples)
        except Exception:  # noqa: BLE001 - e.g. mocked data: count the dataset
            n = int(builder.as_dataset(split=text).cardinality())
            if n < 0:
                raise _error(f"Cannot count the examples of split {text!r} of {arg!r}.")
            counts[split] = n
    stored_hw = shape[:2] if None not in shape[:2] else None
    h, w, c = _target_shape(config, stored_hw, shape[2] if len(shape) > 2 else 1,
                            f"TFDS data set {arg!r}")
    if stored_hw is not None:
        _check_fit(config, f"TFDS data set {arg!r} (image {key!r})", stored_hw, (h, w))
    notes = []
    transform = (stored_hw is None or tuple(stored_hw) != (h, w) or shape[2] != c)
    if stored_hw is not None and tuple(stored_hw) != (h, w):
        notes.append(f"images of {stored_hw[0]}x{stored_hw[1]} brought to {h}x{w}")
    if len(shape) > 2 and shape[2] is not None and shape[2] != c:
        notes.append(f"{shape[2]}-channel images converted to {c} channels")
    return SourceInfo(kind="tfds", location=arg, image_shape=(h, w, c),
                      pixels=_pixels(config, False, "natural"), num_examples=counts,
                      items=splits, stored_shape=shape, notes=tuple(notes), image_key=key,
                      transform=transform)


def _prepare_tfds(builder, config, arg):
    """Prepares ``builder``'s data if needed; returns the builder to read from."""
    import tensorflow_datasets as tfds

    if builder.is_prepared():
        return builder
    if config.manual_dir is not None:
        download = tfds.download.DownloadConfig(manual_dir=os.fspath(config.manual_dir),
                                                try_download_gcs=False)
    else:
        download = tfds.download.DownloadConfig()
    from tf_asvae.data import download_and_prepare_once

    try:
        return download_and_prepare_once(builder, download)
    except Exception as e:  # noqa: BLE001
        raise _error(f"TFDS could not prepare {arg!r} in data_dir "
                     f"{str(builder.data_dir_root)!r} (manual_dir={config.manual_dir!r}): "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


# --------------------------------------------------------------------------------------
# NPZ


def _describe_npz(config, arg) -> SourceInfo:
    path = pathlib.Path(arg).expanduser()
    if not path.is_file():
        raise _error(f"The array file {str(path)!r} does not exist. Expected an .npz file "
                     "of images [N, H, W(, C)].")
    try:
        archive = np.load(path, allow_pickle=False)
        keys = list(archive.files)
    except Exception as e:  # noqa: BLE001
        raise _error(f"{str(path)!r} is not a readable .npz file: {type(e).__name__}: {e}") \
            from e
    shapes = {k: archive[k].shape for k in keys}
    named = {"train": config.train_split, "validation": config.validation_split,
             "test": config.test_split}
    per_split = any(v is not None for v in named.values())
    if per_split:
        missing = [s for s, v in named.items() if v is None]
        if missing:
            raise _error(f"NPZ splits by array need all three of --train-split, "
                         f"--validation-split, --test-split (keys of {str(path)!r}); "
                         f"missing {missing}. Keys: {shapes}.")
        wanted = list(dict.fromkeys(named.values()))
    else:
        key = config.image_key
        if key is None:
            candidates = [k for k in keys if len(shapes[k]) in (3, 4)]
            preferred = [k for k in ("images", "image", "x", "arr_0") if k in candidates]
            if preferred:
                key = preferred[0]
            elif len(candidates) == 1:
                key = candidates[0]
            elif not candidates:
                raise _error(f"{str(path)!r} holds no image array (expected [N, H, W] or "
                             f"[N, H, W, C]). Arrays: {shapes}.")
            else:
                raise _error(f"{str(path)!r} holds several image-like arrays {candidates}; "
                             "choose one with --image-key.")
        wanted = [key]
    arrays = {}
    for key in wanted:
        if key not in keys:
            raise _error(f"{str(path)!r} has no array {key!r}. Arrays: {shapes}.")
        arrays[key] = _check_array(archive[key], f"array {key!r} of {str(path)!r}")
    first = arrays[wanted[0]]
    stored = first.shape[1:]
    for key, a in arrays.items():
        if a.shape[1:] != stored:
            raise _error(f"The arrays of {str(path)!r} differ in image shape: "
                         f"{ {k: v.shape for k, v in arrays.items()} }.")
    h, w, c = _target_shape(config, stored[:2], stored[2], f"{str(path)!r}")
    _check_fit(config, f"The images of {str(path)!r}", stored[:2], (h, w))
    floats = first.dtype.kind == "f"
    if per_split:
        items = {s: (named[s], None) for s in SPLITS}
        counts = {s: int(arrays[named[s]].shape[0]) for s in SPLITS}
    else:
        n = first.shape[0]
        assign = np.array([SPLITS.index(split_of(str(i), config.split_seed,
                                                 config.split_fractions)) for i in range(n)])
        items = {s: (wanted[0], np.flatnonzero(assign == i)) for i, s in enumerate(SPLITS)}
        counts = {s: int(len(items[s][1])) for s in SPLITS}
    values = np.unique(first[: min(len(first), 64)])
    binary = set(values.tolist()) <= ({0.0, 1.0} if floats else {0, 1, 255})
    notes = ["float images quantised to 8 bits: round(255 x)"] if floats else []
    return SourceInfo(kind="npz", location=str(path.resolve()), image_shape=(h, w, c),
                      pixels=_pixels(config, binary, "intensity" if floats else "natural"),
                      num_examples=counts, items=items, stored_shape=tuple(stored),
                      notes=tuple(notes), image_key=",".join(wanted),
                      transform=(tuple(stored) != (h, w, c)))


def _check_array(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] == 0:
        raise _error(f"The {name} has shape {a.shape}; expected images [N, H, W] or "
                     "[N, H, W, C] with N > 0.")
    if a.shape[-1] not in (1, 3, 4):
        hint = (" (channels first? expected channels last, HWC)"
                if a.shape[1] in (1, 3, 4) else "")
        raise _error(f"The {name} has {a.shape[-1]} channels in its last axis, shape "
                     f"{a.shape}; expected 1, 3 or 4{hint}.")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        sample = a[: min(len(a), 256)]
        if not np.all(np.isfinite(sample)) or sample.min() < 0 or sample.max() > 1:
            raise _error(f"The {name} holds floats outside [0, 1] (min {sample.min()}, max "
                         f"{sample.max()}); expected uint8 values or floats in [0, 1].")
        return a
    raise _error(f"The {name} has dtype {a.dtype}; expected uint8 or floats in [0, 1].")


# --------------------------------------------------------------------------------------
# tf.data


def _to_channels(img, channels: int):
    import tensorflow as tf

    n = tf.shape(img)[-1]
    img = tf.cond(tf.equal(n % 2, 0), lambda: img[..., : n - 1], lambda: img)  # alpha
    if channels == 3:
        img = tf.cond(tf.equal(tf.shape(img)[-1], 1),
                      lambda: tf.tile(img, [1, 1, 3]), lambda: img)
    else:
        def grey():
            y = tf.tensordot(tf.cast(img, tf.float32), [0.299, 0.587, 0.114], axes=[[2], [0]])
            return tf.cast(tf.clip_by_value(tf.round(y), 0, 255), tf.uint8)[..., None]

        img = tf.cond(tf.equal(tf.shape(img)[-1], 3), grey, lambda: img)
    return img


def _fit(img, h: int, w: int, resize: bool, crop: str):
    import tensorflow as tf

    size = tf.shape(img)[:2]
    if resize:
        if crop == "center":
            scale = tf.maximum(h / tf.cast(size[0], tf.float64), w / tf.cast(size[1], tf.float64))
            new = tf.cast(tf.math.ceil(tf.cast(size, tf.float64) * scale - 1e-6), tf.int32)
            new = tf.maximum(new, [h, w])
        else:
            new = tf.constant([h, w], tf.int32)

        def scaled():
            y = tf.image.resize(img, new, method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(y), 0, 255), tf.uint8)

        img = tf.cond(tf.reduce_all(tf.equal(size, new)), lambda: img, scaled)
        size = new
    if crop == "center":
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        img = img[top: top + h, left: left + w]
    return img


def _convert(img, info: SourceInfo, config):
    """uint8 image of any size/channels -> the pipeline's (H, W, C) uint8 image."""
    import tensorflow as tf

    h, w, c = info.image_shape
    if info.transform:
        img = _to_channels(img, c)
        img = _fit(img, h, w, config.resize, config.crop)
    if info.pixels == "binary":
        # Stored as {0, 1} (kept) or as 8-bit values (thresholded at the middle).
        img = tf.cond(tf.reduce_max(img) <= 1, lambda: img,
                      lambda: tf.cast(img >= 128, tf.uint8))
    return tf.ensure_shape(img, (h, w, c))


def raw_dataset(config, split: str, *, shuffle_files: bool, seed: int,
                limit: int | None = None, shard=(1, 0)):
    """uint8 ``(H, W, C)`` images of one split, unbatched: the first ``limit`` examples,
    the ``shard[1]``-th of ``shard[0]`` input pipelines' share (folders: file names
    shuffled whole when ``shuffle_files``, in a seeded order reshuffled on every pass,
    then decoded)."""
    import tensorflow as tf

    info = describe(config)
    autotune = tf.data.AUTOTUNE

    def cut(ds):
        ds = ds if limit is None else ds.take(limit)
        return ds if shard[0] <= 1 else ds.shard(shard[0], shard[1])

    if info.kind == "folder":
        paths = list(info.items[split])
        ds = cut(tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)))
        if shuffle_files and len(paths) > 1:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

        def load(path):
            img = tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.uint8,
                                     expand_animations=False)
            return _convert(img, info, config)

        return ds.map(load, num_parallel_calls=autotune, deterministic=True)
    if info.kind == "tfds":
        import tensorflow_datasets as tfds

        builder = tfds.builder(info.location, data_dir=config.data_dir)
        read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
        ds = builder.as_dataset(split=info.items[split], shuffle_files=shuffle_files,
                                read_config=read_config)
        key = info.image_key
        return cut(ds).map(lambda ex: _convert(ex[key], info, config),
                           num_parallel_calls=autotune)
    key, index = info.items[split]
    with np.load(pathlib.Path(config.name.partition(":")[2]).expanduser()) as archive:
        a = _check_array(archive[key], f"array {key!r}")
    if index is not None:
        a = a[index]
    if a.dtype.kind == "f":
        a = np.round(a * 255.0).astype(np.uint8)
        if info.pixels == "binary":
            a = (a >= 128).astype(np.uint8)
    elif info.pixels == "binary":
        a = (a > 0).astype(np.uint8)
    if limit is not None:
        a = a[:limit]
    ds = cut(tf.data.Dataset.from_tensor_slices(a))
    return ds.map(lambda x: _convert(x, info, config), num_parallel_calls=autotune)


LABEL_KEYS_DOC = ("an NPZ image array K has labels in the array K_labels, or with "
                  "'images'/'image'/'x' at the start of K read as 'labels'/'label'/'y' "
                  "(images -> labels, x_train -> y_train)")


def _npz_label_key(image_key: str, keys) -> str | None:
    """The label array beside NPZ image array ``image_key`` (see :data:`LABEL_KEYS_DOC`)."""
    candidates = [f"{image_key}_labels", f"{image_key}_label"]
    for images, labels in (("images", "labels"), ("image", "label"), ("x", "y")):
        if image_key.startswith(images):
            candidates.append(labels + image_key[len(images):])
    return next((c for c in candidates if c in keys), None)


def _npz_labels(config, info: SourceInfo) -> dict:
    """Per split, the int64 labels of an NPZ source (ValueError when there are none)."""
    path = pathlib.Path(info.location)
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        out = {}
        for split in SPLITS:
            image_key, index = info.items[split]
            label_key = _npz_label_key(image_key, keys)
            if label_key is None:
                raise ValueError(
                    f"{str(path)!r} has no label array for its image array {image_key!r}, so "
                    f"its images have no labels ({LABEL_KEYS_DOC}). Arrays: {keys}.")
            labels = archive[label_key]
            n = archive[image_key].shape[0]
            if labels.ndim != 1 or labels.dtype.kind not in "iub" or len(labels) != n:
                raise ValueError(
                    f"The label array {label_key!r} of {str(path)!r} must hold one integer "
                    f"per image of {image_key!r} ({n}). Received: shape {labels.shape}, "
                    f"dtype {labels.dtype}.")
            if len(labels) and labels.min() < 0:
                raise ValueError(f"The label array {label_key!r} of {str(path)!r} holds "
                                 f"negative labels (min {labels.min()}); expected class "
                                 "indices >= 0.")
            labels = labels.astype(np.int64)
            out[split] = labels if index is None else labels[index]
    return out


def label_classes(config) -> tuple:
    """The class names of a source's labels (folders: the class sub-folders; TFDS: the
    ``label`` feature's names; NPZ: ``"0" ... str(max label)``). Raises ValueError for
    a source without labels (a flat folder, images at the top of a folder of class
    sub-folders, a TFDS set without a ``label`` class feature, an NPZ file without a
    label array) and :class:`tf_asvae.data.DataError` for unreadable data."""
    info = describe(config)
    if info.kind == "folder":
        if not info.class_names:
            raise ValueError(f"The folder {info.location!r} has no class sub-folders, so its "
                             "images have no labels. Expected one sub-folder per class "
                             "(PATH/cats/*.png, PATH/dogs/*.png).")
        loose = [p for s in SPLITS for p, label in zip(info.items[s], info.labels[s])
                 if label < 0]
        if loose:
            raise ValueError(
                f"{len(loose)} images of {info.location!r} lie at its top level, outside the "
                f"class sub-folders {list(info.class_names)}, and have no label (e.g. "
                f"{os.path.relpath(loose[0], info.location)!r}). Move them into a class "
                "sub-folder or out of the folder.")
        return tuple(info.class_names)
    if info.kind == "tfds":
        import tensorflow_datasets as tfds

        features = tfds.builder(info.location, data_dir=config.data_dir).info.features
        label = features["label"] if "label" in features else None
        if not isinstance(label, tfds.features.ClassLabel):
            raise ValueError(f"TFDS data set {info.location!r} has no 'label' class feature, "
                             f"so its images have no labels. Features: {sorted(features)}.")
        return tuple(label.names)
    labels = _npz_labels(config, info)
    top = max((int(v.max()) for v in labels.values() if len(v)), default=0)
    return tuple(str(i) for i in range(top + 1))


def labelled_dataset(config, split: str):
    """``(uint8 image, int64 label)`` pairs of one split, in order, unbatched: the class
    sub-folder's index in ``class_names`` (folders), the TFDS ``label`` feature, or the
    NPZ label array (see :data:`LABEL_KEYS_DOC`). For a classifier (the models ignore
    labels). ValueError for a source without labels (:func:`label_classes`)."""
    import tensorflow as tf

    info = describe(config)
    label_classes(config)
    if info.kind == "folder":
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(list(info.items[split]), tf.string),
             tf.constant(info.labels[split], tf.int64)))

        def load(path, label):
            img = tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.uint8,
                                     expand_animations=False)
            return _convert(img, info, config), label

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if info.kind == "tfds":
        import tensorflow_datasets as tfds

        builder = tfds.builder(info.location, data_dir=config.data_dir)
        ds = builder.as_dataset(split=info.items[split], shuffle_files=False)
        key = info.image_key
        return ds.map(lambda ex: (_convert(ex[key], info, config),
                                  tf.cast(ex["label"], tf.int64)))
    labels = tf.data.Dataset.from_tensor_slices(_npz_labels(config, info)[split])
    images = raw_dataset(config, split, shuffle_files=False, seed=0)
    return tf.data.Dataset.zip((images, labels))
