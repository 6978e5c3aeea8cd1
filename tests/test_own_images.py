"""Training on your own images (issue 14): image folders, any TFDS image data set, NPZ
arrays, the conv preset family, run files, IS/FID classifiers on labelled sources, and
the errors on bad input.

The folders are written during the test from the shared MNIST and Fashion-MNIST files
(PNG and JPEG, nested class folders, a corrupt file, 40x40 images brought to 32x32
RGB); TFDS goes through ``tfds.testing.mock_data``; nothing touches the network.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tf_asvae import data as D
from tf_asvae import presets, runfile, sources
from trainers import train as T

from conftest import SHARED_DATA, needs_real_files

pytestmark = needs_real_files


def _idx(path):
    """An IDX file (MNIST's format) as a NumPy array."""
    with gzip.open(path) as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(D.ENV_MANUAL_DIR, raising=False)
    sources.clear_cache()


@pytest.fixture(scope="module")
def fashion():
    images = _idx(SHARED_DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz")[:160]
    labels = _idx(SHARED_DATA / "fashion-mnist" / "train-labels-idx1-ubyte.gz")[:160]
    return images, labels


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory, fashion):
    """160 Fashion-MNIST images in class folders: PNG, and every fifth as JPEG; one
    corrupt PNG and one truncated JPEG."""
    root = tmp_path_factory.mktemp("fashion")
    images, labels = fashion
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label}"
        folder.mkdir(exist_ok=True)
        if i % 5 == 4:
            Image.fromarray(image).save(folder / f"{i:04d}.jpg", quality=95)
        else:
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    (root / "class_0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    jpeg = next(root.rglob("*.jpg")).read_bytes()
    (root / "class_1" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # a cut download
    (root / "README.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """40x40 MNIST digits as grey, RGB and RGBA PNGs (nested two levels deep)."""
    root = tmp_path_factory.mktemp("odd")
    digits = _idx(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz")[:30]
    for i, digit in enumerate(digits):
        image = Image.fromarray(digit).resize((40, 40), Image.BILINEAR)
        mode = ("L", "RGB", "RGBA")[i % 3]
        folder = root / ("a" if i % 2 else "b") / "deeper"
        folder.mkdir(parents=True, exist_ok=True)
        image.convert(mode).save(folder / f"{i}.png")
    return root


# --------------------------------------------------------------------------------------
# Folders


def test_folder_of_png_and_jpeg_with_a_corrupt_file(fashion_folder, fashion):
    config = D.DataConfig(f"folder:{fashion_folder}", 16, seed=3)
    spec = config.spec
    info = spec.source
    assert spec.image_shape == (28, 28, 1) and spec.pixels == "natural"
    assert sum(spec.num_examples.values()) == 160
    assert info.class_names == tuple(f"class_{k}" for k in range(10))
    # The corrupt and the truncated files are skipped, named, counted; the text file is
    # not an image.
    assert [f for f, _ in info.skipped] == ["class_0/corrupt.png", "class_1/truncated.jpg"]
    assert "truncated JPEG" in info.skipped[1][1]
    assert info.summary()["skipped_files"] == 2

    # Evaluation: bin centres of the stored 8-bit values, in the split's file order.
    x, raw = next(iter(D.load_split(config, "test", training=False, with_raw=True)))
    first = pathlib.Path(info.items["test"][0])
    np.testing.assert_array_equal(raw[0, ..., 0], np.asarray(Image.open(first)))
    np.testing.assert_allclose(x, (raw.numpy() + 0.5) / 256.0, atol=1e-7)
    # Training: uniform dequantisation inside each pixel's bin; seeded.
    train = [(x.numpy(), r.numpy()) for x, r in D.load_split(config, "train", training=True,
                                                             with_raw=True)]
    assert len(train) == spec.num_examples["train"] // 16
    again = next(iter(D.load_split(config, "train", training=True))).numpy()
    np.testing.assert_array_equal(train[0][0], again)
    x0, r0 = train[0]
    assert np.all(x0 >= r0 / 256.0) and np.all(x0 < (r0 + 1.0) / 256.0)
    # The JPEG files decode (close to the PNG originals).
    whole = D.DataConfig(f"folder:{fashion_folder}", 1, split_fractions=(1.0, 0.0, 0.0))
    paths = whole.spec.source.items["train"]
    position = next(i for i, p in enumerate(paths) if p.endswith(".jpg"))
    decoded = sources.raw_dataset(whole, "train", shuffle_files=False, seed=0)
    image = next(iter(decoded.skip(position).take(1))).numpy()[..., 0]
    original = fashion[0][int(pathlib.Path(paths[position]).stem)]
    assert np.abs(image.astype(int) - original.astype(int)).mean() < 6


def test_png_jpeg_bmp_gif_decode_to_the_stored_pixels(tmp_path, fashion):
    image = fashion[0][7]
    for ext in ("png", "jpeg", "bmp", "gif"):
        Image.fromarray(image).save(tmp_path / f"item.{ext}")
    config = D.DataConfig(f"folder:{tmp_path}", 1, split_fractions=(1.0, 0.0, 0.0))
    paths = config.spec.source.items["train"]
    decoded = [x.numpy()[..., 0] for x in sources.raw_dataset(config, "train",
                                                             shuffle_files=False, seed=0)]
    for path, pixels in zip(paths, decoded):
        if path.endswith(".jpeg"):
            assert np.abs(pixels.astype(int) - image).mean() < 6, path
        else:
            np.testing.assert_array_equal(pixels, image, err_msg=path)


def test_folder_labels_come_from_class_folders(fashion_folder, fashion):
    config = D.DataConfig(f"folder:{fashion_folder}", 8)
    names = config.spec.source.class_names
    pairs = list(sources.labelled_dataset(config, "validation"))
    assert len(pairs) == config.spec.num_examples["validation"]
    for (image, label), path in zip(pairs, config.spec.source.items["validation"]):
        index = int(pathlib.Path(path).stem)
        assert names[int(label)] == f"class_{fashion[1][index]}"
        assert image.shape == (28, 28, 1)


def test_pipeline_functions_for_model_fit(fashion_folder, tmp_path, fashion):
    train = D.image_folder(fashion_folder, "train", 16, image_size=(32, 32))
    x = next(iter(train))
    assert x.shape == (16, 32, 32, 1) and x.dtype == tf.float32
    test = D.image_folder(fashion_folder, "test", 16)
    first = next(iter(test)).numpy()
    np.testing.assert_array_equal(first, next(iter(D.image_folder(fashion_folder, "test",
                                                                  16))).numpy())
    np.savez(tmp_path / "a.npz", images=fashion[0][:40])
    assert next(iter(D.npz_images(tmp_path / "a.npz", "train", 4))).shape == (4, 28, 28, 1)
    with tfds.testing.mock_data(num_examples=8):
        assert next(iter(D.tfds_images("cifar100", "test", 4))).shape == (4, 32, 32, 3)


def test_split_by_path_hash_is_stable_when_files_are_added(tmp_path, fashion):
    images = fashion[0]
    for i in range(40):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
    config = D.DataConfig(f"folder:{tmp_path}", 4, split_fractions=(0.6, 0.2, 0.2))
    before = {s: set(config.spec.source.items[s]) for s in D.SPLITS}
    for i in range(40, 80):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
    sources.clear_cache()
    after = {s: set(config.spec.source.items[s]) for s in D.SPLITS}
    for s in D.SPLITS:
        assert before[s] <= after[s]
    assert sum(len(v) for v in after.values()) == 80
    # Another split seed gives another (equally sized on average) split.
    other = D.DataConfig(f"folder:{tmp_path}", 4, split_fractions=(0.6, 0.2, 0.2),
                         split_seed=1)
    assert set(other.spec.source.items["train"]) != after["train"]
    assert sources.split_of("a/b.png", 0, (0.6, 0.2, 0.2)) == \
        sources.split_of("a/b.png", 0, (0.6, 0.2, 0.2))


def test_odd_sizes_and_mixed_channels_become_32x32_rgb(odd_folder):
    config = D.DataConfig(f"folder:{odd_folder}", 5, image_size=(32, 32), channels=3,
                          split_fractions=(0.5, 0.25, 0.25))
    spec = config.spec
    assert spec.image_shape == (32, 32, 3)
    notes = " ".join(spec.source.notes)
    assert "grey images converted to RGB" in notes and "alpha dropped" in notes
    assert "resized and centre-cropped" in notes
    x = next(iter(D.load_split(config, "train", training=False)))
    assert x.shape == (5, 32, 32, 3)
    # Grey and colour versions of a digit give equal channels; the digit survives.
    np.testing.assert_allclose(x[..., 0], x[..., 2], atol=1e-6)
    assert float(tf.reduce_max(x)) > 0.9
    # Grey target: RGB/RGBA images converted to grey.
    grey = D.DataConfig(f"folder:{odd_folder}", 5, image_size=(32, 32), channels=1,
                        crop="none", split_fractions=(0.5, 0.25, 0.25))
    assert "colour images converted to grey" in " ".join(grey.spec.source.notes)
    assert next(iter(D.load_split(grey, "test", training=False))).shape[1:] == (32, 32, 1)
    # Centre crop without resizing: 40x40 -> the middle 32x32.
    crop = D.DataConfig(f"folder:{odd_folder}", 5, image_size=(32, 32), resize=False,
                        channels=1, split_fractions=(0.5, 0.25, 0.25))
    c = next(iter(D.load_split(crop, "test", training=False, with_raw=True)))[1].numpy()
    path = crop.spec.source.items["test"][0]
    full = np.asarray(Image.open(path).convert("RGB"))[4:36, 4:36]
    expect = np.round(full.astype(np.float64) @ [0.299, 0.587, 0.114])
    np.testing.assert_allclose(c[0, ..., 0], expect, atol=1)


def test_binary_folder_is_detected(tmp_path, fashion):
    for i in range(20):
        Image.fromarray(np.where(fashion[0][i] > 127, 255, 0).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
    config = D.DataConfig(f"folder:{tmp_path}", 4, split_fractions=(0.5, 0.25, 0.25))
    assert config.spec.pixels == "binary"
    x = next(iter(D.load_split(config, "train", training=True))).numpy()
    assert set(np.unique(x)) <= {0.0, 1.0}
    declared = D.DataConfig(f"folder:{tmp_path}", 4, pixels="natural",
                            split_fractions=(0.5, 0.25, 0.25))
    assert declared.spec.pixels == "natural"


@pytest.mark.parametrize("make, fragments", [
    (lambda root: root / "absent", ["does not exist"]),
    (lambda root: root, ["is empty"]),
    (lambda root: (root / "notes.txt").write_text("x") and root, ["holds no images", ".png"]),
    (lambda root: (root / "bad.png").write_bytes(b"nope") and root, ["unreadable", "bad.png"]),
])
def test_bad_folders_fail_naming_the_folder(tmp_path, make, fragments):
    folder = make(tmp_path)
    with pytest.raises(D.DataError) as info:
        D.num_examples(D.DataConfig(f"folder:{folder}", 4), "train")
    for fragment in fragments + [str(tmp_path)]:
        assert fragment in str(info.value)


def test_sizes_that_cannot_be_reached_fail_before_any_work(odd_folder, fashion_folder):
    with pytest.raises(D.DataError, match=r"is 40x40, smaller than the target 48x48"):
        D.DataConfig(f"folder:{odd_folder}", 4, image_size=(48, 48), resize=False).spec
    with pytest.raises(D.DataError, match=r"crop='none'"):
        D.DataConfig(f"folder:{odd_folder}", 4, image_size=(32, 32), resize=False,
                     crop="none").spec
    with pytest.raises(D.DataError, match="--image-size"):
        mixed = pathlib.Path(odd_folder).parent / "mixed_sizes"
        mixed.mkdir(exist_ok=True)
        Image.new("L", (10, 12)).save(mixed / "a.png")
        Image.new("L", (12, 12)).save(mixed / "b.png")
        D.DataConfig(f"folder:{mixed}", 1).spec


# --------------------------------------------------------------------------------------
# TFDS by name


def test_any_tfds_image_data_set_through_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        config = D.DataConfig("tfds:svhn_cropped", 4)
        spec = config.spec
        assert spec.image_shape == (32, 32, 3) and spec.pixels == "natural"
        assert spec.source.image_key == "image"
        x, raw = next(iter(D.load_split(config, "test", training=False, with_raw=True)))
        assert x.shape == (4, 32, 32, 3) and raw.dtype == tf.uint8
        np.testing.assert_allclose(x, (raw.numpy() + 0.5) / 256.0, atol=1e-7)
        assert next(iter(D.load_split(config, "train", training=True))).shape == (4, 32, 32, 3)
        # Resized and grey, split strings of TFDS's syntax.
        small = D.DataConfig("tfds:svhn_cropped", 4, image_size=(16, 16), channels=1,
                             train_split="train[:50%]", validation_split="train[50%:]")
        assert small.spec.image_shape == (16, 16, 1)
        assert next(iter(D.load_split(small, "validation", training=False))).shape == \
            (4, 16, 16, 1)
        # Bad inputs, named.
        with pytest.raises(D.DataError, match="cannot parse the train split 'train\\[:90'"):
            D.DataConfig("tfds:svhn_cropped", 4, train_split="train[:90").spec
        with pytest.raises(D.DataError, match="Unknown TFDS data set 'no_such_images'"):
            D.DataConfig("tfds:no_such_images", 4).spec
        with pytest.raises(D.DataError, match="has no image feature"):
            D.DataConfig("tfds:imdb_reviews", 4).spec
        with pytest.raises(D.DataError, match="several image features.*--image-key"):
            D.DataConfig("tfds:div2k", 4).spec
        with pytest.raises(D.DataError, match="no image feature 'photo'"):
            D.DataConfig("tfds:svhn_cropped", 4, image_key="photo").spec


# --------------------------------------------------------------------------------------
# NPZ


def test_npz_round_trip(tmp_path, fashion):
    images = fashion[0][:50]
    path = tmp_path / "images.npz"
    np.savez(path, images=images, labels=fashion[1][:50])
    config = D.DataConfig(f"npz:{path}", 8, split_fractions=(0.6, 0.2, 0.2))
    spec = config.spec
    assert spec.image_shape == (28, 28, 1) and spec.pixels == "natural"
    index = spec.source.items["test"][1]
    raw = np.concatenate([r.numpy() for _, r in D.load_split(config, "test", training=False,
                                                               with_raw=True)])
    np.testing.assert_array_equal(raw[..., 0], images[index])
    # Floats in [0, 1] (intensity), one array per split.
    floats = images.astype(np.float32) / 255.0
    split_path = tmp_path / "splits.npz"
    np.savez(split_path, tr=floats[:30], va=floats[30:40], te=floats[40:])
    per = D.DataConfig(f"npz:{split_path}", 5, train_split="tr", validation_split="va",
                       test_split="te")
    assert per.spec.pixels == "intensity" and per.spec.num_examples == \
        {"train": 30, "validation": 10, "test": 10}
    x = np.concatenate([b.numpy() for b in D.load_split(per, "test", training=False)])
    np.testing.assert_allclose(x[..., 0], floats[40:], atol=0.5 / 255 + 1e-6)
    # Bad arrays, named.
    np.savez(tmp_path / "labels.npz", labels=fashion[1][:50])
    with pytest.raises(D.DataError, match="holds no image array"):
        D.DataConfig(f"npz:{tmp_path / 'labels.npz'}", 4).spec
    np.savez(tmp_path / "chw.npz", images=np.zeros((4, 3, 28, 28), np.uint8))
    with pytest.raises(D.DataError, match="channels first"):
        D.DataConfig(f"npz:{tmp_path / 'chw.npz'}", 4).spec
    np.savez(tmp_path / "big.npz", images=np.full((4, 8, 8), 3.0, np.float32))
    with pytest.raises(D.DataError, match=r"outside \[0, 1\]"):
        D.DataConfig(f"npz:{tmp_path / 'big.npz'}", 4).spec


# --------------------------------------------------------------------------------------
# Configs


def test_source_data_config_round_trips_and_validates(tmp_path):
    config = D.DataConfig("folder:/data/pets", 32, image_size=(48, 40), channels=3,
                          crop="none", pixels="natural", split_fractions=(0.7, 0.2, 0.1),
                          split_seed=5)
    text = config.to_json()
    assert D.DataConfig.from_json(text) == config
    assert D.DataConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    tf_config = D.DataConfig("tfds:celeb_a", 8, image_size=(64, 64), train_split="train",
                             image_key="image")
    assert D.DataConfig.from_json(tf_config.to_json()) == tf_config
    # A registered data set's dict is unchanged (older runs' config.json still match).
    assert set(D.DataConfig("mnist", 8).to_dict()) == {
        "name", "batch_size", "data_dir", "manual_dir", "seed", "binarize", "dequantize",
        "max_examples", "shuffle_buffer", "cache"}
    for kwargs, match in [
        (dict(name="folder:x", image_size=(0, 4)), "image_size"),
        (dict(name="folder:x", channels=2), "channels"),
        (dict(name="folder:x", crop="left"), "crop"),
        (dict(name="folder:x", split_fractions=(0.5, 0.2, 0.2)), "sum to 1"),
        (dict(name="folder:x", train_split="train"), "apply to tfds: and npz:"),
        (dict(name="mnist", image_size=(32, 32)), "tfds:mnist"),
        (dict(name="webdataset:x"), "Unknown data source kind 'webdataset'"),
        (dict(name="folder:"), "names no path"),
        (dict(name="folder:x", binarize="dynamic"), "pixels='intensity'"),
    ]:
        with pytest.raises(ValueError, match=match):
            D.DataConfig(batch_size=4, **kwargs)


def test_conv_preset_family():
    mnist = presets.conv_config((28, 28, 1))
    assert mnist.network.encoder_conv == presets.PRESETS["mnist"].network.encoder_conv
    assert mnist.network.decoder_start == (7, 7, 64)
    assert mnist.network.decoder_deconv == presets.PRESETS["mnist"].network.decoder_deconv
    big = presets.conv_config((48, 48, 3))
    assert big.likelihood == "gaussian" and big.network.decoder_start == (6, 6, 128)
    assert presets.conv_config((64, 32, 1)).network.decoder_start == (8, 4, 128)
    with pytest.raises(ValueError, match=r"30x30.*\['28x28', '28x32', '32x28', '32x32'\]"):
        presets.conv_config((30, 30, 1))
    config = presets.preset_config("vae", "conv", image_shape=(16, 16, 3), latent_dim=4)
    assert type(config).from_json(config.to_json()) == config
    from tf_asvae import build_model

    model = build_model("vae", "conv", image_shape=(16, 16, 3), latent_dim=4)
    out = model.reconstruct(np.zeros((2, 16, 16, 3), np.float32))
    assert tuple(out.shape) == (2, 16, 16, 3)


# --------------------------------------------------------------------------------------
# Run files and the command line


def test_run_files_yaml_and_json_with_overrides(tmp_path, fashion_folder):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        f"dataset: folder:{fashion_folder}\nmodel: vae\nbatch-size: 16\n"
        "image_size: [32, 32]\nepochs: 2\nobjective: {disc_steps: 2}\n"
        "export: false\nsteps-per-epoch: all\n")
    spec = T.parse(["--config", str(yaml_file), "--epochs", "3",
                    "--run-dir", str(tmp_path / "run")])
    assert spec.model.kind == "vae" and spec.model.preset == "conv"
    assert spec.model.image_shape == (32, 32, 1) and spec.model.likelihood == "gaussian"
    assert spec.training.epochs == 3  # the flag overrides the file
    assert spec.training.steps_per_epoch is None and spec.export_dir is None
    assert spec.model.objective.disc_steps == 2 and spec.data.batch_size == 16
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"dataset": f"folder:{fashion_folder}",
                                     "no_export": True, "latent_dim": 6}))
    assert T.parse(["--config", str(json_file)]).model.latent_dim == 6
    for content, match in [
        ({"batch_sise": 16}, "unknown option 'batch_sise'"),
        ({"batch_size": "16"}, "option 'batch_size': expected an integer"),
        ({"epochs": 2.5}, "option 'epochs': expected an integer"),
        ({"image_size": [32]}, "a list of 2 values"),
        ({"model": "gan"}, "one of"),
        ({"jit_compile": "yes"}, "true or false"),
        ({"dataset": "svhn"}, "unknown data set 'svhn'"),
    ]:
        json_file.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=match) as info:
            T.parse(["--config", str(json_file)])
        assert str(json_file) in str(info.value)
    bad = tmp_path / "run.toml"
    bad.write_text("epochs = 2")
    with pytest.raises(ValueError, match="expected a .yaml, .yml or .json"):
        T.parse(["--config", str(bad)])


@pytest.mark.parametrize("extra, fragments", [
    (["--dataset", "folder:{tmp}/absent"], ["absent", "does not exist"]),
    (["--dataset", "tfds:"], ["names no TFDS data set"]),
    (["--dataset", "folder:{odd}", "--image-size", "30", "30", "--channels", "3"],
     ["30x30", "28x28", "32x32"]),
    (["--dataset", "folder:{odd}", "--image-size", "48", "48", "--no-resize"],
     ["40x40", "smaller than the target 48x48"]),
    (["--config", "{tmp}/none.yaml"], ["none.yaml", "does not exist"]),
])
def test_bad_inputs_exit_2_before_writing(tmp_path, capsys, odd_folder, extra, fragments):
    argv = ["--model", "vae", "--run-dir", str(tmp_path / "run"), "--no-export"]
    argv += [a.format(tmp=tmp_path, odd=odd_folder) for a in extra]
    with pytest.raises(SystemExit) as info:
        T.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------
# End to end: train -> evaluate -> export on a folder, relaunch from config.json


def test_train_evaluate_export_on_a_folder_and_relaunch(tmp_path, fashion_folder, capsys):
    from trainers import evaluate as E

    run, export = tmp_path / "run", tmp_path / "export"
    argv = ["--dataset", f"folder:{fashion_folder}", "--model", "vae", "--image-size", "16",
            "16", "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "2",
            "--validation-steps", "1", "--latent-dim", "4", "--num-images", "4",
            "--verbose", "0", "--run-dir", str(run), "--export-dir", str(export)]
    assert T.main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["preset"] == "conv" and config["data"]["image_size"] == [16, 16]
    history = json.loads((run / "history.json").read_text())
    assert history["skipped_files"] == [2.0]
    data = json.loads((run / "data.json").read_text())
    assert data["skipped"][0]["file"] == "class_0/corrupt.png"
    assert data["image_shape"] == [16, 16, 1] and data["pixels"] == "natural"
    assert "corrupt.png" in capsys.readouterr().err
    assert any((export / "1").iterdir())

    # Evaluate takes the data source from the run.
    out = tmp_path / "report.json"
    assert E.main(["--run-dir", str(run), "--metrics", "nll,bpd", "--num-samples", "4",
                   "--max-examples", "8", "--batch-size", "8", "--num-images", "0",
                   "--verbose", "0", "--out", str(out)]) in (0, None)
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "bits per dimension" in text and "discretised" in text

    # The run's own config.json relaunches it: found complete, nothing trained.
    before = (run / "history.json").read_text()
    spec = T.parse(["--config", str(run / "config.json"), "--no-export"])
    assert spec.run_dir == str(run) and spec.data == D.DataConfig.from_dict(config["data"])
    assert T.check_run_dir(spec) == "complete"
    result = T.train(spec)
    assert result.status == "complete" and (run / "history.json").read_text() == before
    # With another budget it is a different run: refused, naming the difference.
    with pytest.raises(ValueError, match="training.epochs: 1 in the directory, 2 requested"):
        T.check_run_dir(T.parse(["--config", str(run / "config.json"), "--epochs", "2"]))


def test_interrupted_folder_run_resumes_from_its_config_json(tmp_path, fashion_folder):
    import keras

    class Interrupt(keras.callbacks.Callback):
        """Stops the run at the first step of epoch 1 (epoch 0 is backed up)."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("interrupted")

    run = tmp_path / "run"
    argv = ["--dataset", f"folder:{fashion_folder}", "--model", "vae", "--image-size", "12",
            "12", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "1",
            "--validation-steps", "1", "--latent-dim", "2", "--num-images", "0",
            "--verbose", "0", "--run-dir", str(run), "--no-export"]
    with pytest.raises(KeyboardInterrupt):
        T.train(T.parse(argv), callbacks=[Interrupt()])
    assert json.loads((run / "history.json").read_text())["epoch"] == [0]
    spec = T.parse(["--config", str(run / "config.json"), "--no-export"])
    assert T.check_run_dir(spec) == "resume"
    result = T.train(spec)
    assert result.status == "resumed" and result.initial_epoch == 1
    assert json.loads((run / "history.json").read_text())["epoch"] == [0, 1]


# --------------------------------------------------------------------------------------
# A classifier for the sample-quality formulas, on a labelled source


def test_classifier_trains_on_a_labelled_folder_and_npz(tmp_path, fashion_folder, fashion,
                                                        capsys):
    from tf_asvae.evaluation import classifiers as C
    from trainers import train_classifier as TC

    out = tmp_path / "clf" / "fashion.keras"
    assert TC.main(["--dataset", f"folder:{fashion_folder}", "--out", str(out),
                    "--epochs", "1", "--batch-size", "32", "--verbose", "0"]) == 0
    meta = json.loads(capsys.readouterr().out)
    spec = D.DataConfig(f"folder:{fashion_folder}", 8).spec
    assert meta["class_names"] == [f"class_{k}" for k in sorted(set(fashion[1].tolist()))]
    assert meta["num_classes"] == len(meta["class_names"])
    assert meta["num_train_examples"] == spec.num_examples["train"]
    assert meta["num_test_examples"] == spec.num_examples["test"]
    assert meta["image_shape"] == [28, 28, 1] and meta["pixels"] == "natural"
    classifier = C.load_classifier(str(out))
    assert classifier.image_shape == (28, 28, 1)
    assert C.read_metadata(str(out))["dataset"] == f"folder:{fashion_folder}"
    # The images are the evaluation pipeline's (bin centres), the labels the folders'.
    config = D.DataConfig(f"folder:{fashion_folder}", 8)
    x, y = TC.load_labelled(config, "test")
    x_eval = np.concatenate([b.numpy() for b in D.load_split(config, "test", training=False)])
    np.testing.assert_array_equal(x, x_eval)
    names = spec.source.class_names
    for label, path in zip(y, spec.source.items["test"]):
        assert names[label] == f"class_{fashion[1][int(pathlib.Path(path).stem)]}"
    # NPZ: a label array beside the image array (labels for images, y_train for x_train).
    images, labels = fashion[0][:60], fashion[1][:60]
    np.savez(tmp_path / "one.npz", images=images, labels=labels)
    one = D.DataConfig(f"npz:{tmp_path / 'one.npz'}", 8, split_fractions=(0.6, 0.2, 0.2))
    assert sources.label_classes(one) == tuple(str(i) for i in range(labels.max() + 1))
    x, y = TC.load_labelled(one, "test")
    np.testing.assert_array_equal(y, labels[one.spec.source.items["test"][1]])
    np.savez(tmp_path / "per.npz", x_train=images[:40], y_train=labels[:40],
             x_val=images[40:50], y_val=labels[40:50], x_test=images[50:], y_test=labels[50:])
    per = D.DataConfig(f"npz:{tmp_path / 'per.npz'}", 8, train_split="x_train",
                       validation_split="x_val", test_split="x_test")
    x, y = TC.load_labelled(per, "test")
    assert x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(y, labels[50:])


def test_classifier_data_from_tfds_labels_through_mock_data():
    from trainers import train_classifier as TC

    with tfds.testing.mock_data(num_examples=12):
        config = D.DataConfig("tfds:svhn_cropped", 4)
        assert TC.check_labelled(config) == tuple(str(i) for i in range(10))
        x, y = TC.load_labelled(config, "test")
        assert x.shape == (12, 32, 32, 3) and y.dtype == np.int64
        assert 0 <= y.min() and y.max() < 10
        with pytest.raises(ValueError, match="no 'label' class feature.*'image'"):
            TC.check_labelled(D.DataConfig("tfds:binarized_mnist", 4))


def _write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")


CLASSIFIER_SOURCE_CASES = [
    ("flat-folder", lambda root, im, lab: _write_pngs(root, im[:20]) or f"folder:{root}", [],
     ["no class sub-folders", "no labels"]),
    ("images-outside-class-folders",
     lambda root, im, lab: (_write_pngs(root / "a", im[:10]), _write_pngs(root / "b", im[10:20]),
                            _write_pngs(root, im[20:23])) and f"folder:{root}", [],
     ["3 images", "top level", "no label", "['a', 'b']"]),
    ("one-class", lambda root, im, lab: _write_pngs(root / "only", im[:20]) or f"folder:{root}",
     [], ["at least 2 classes", "['only']"]),
    ("npz-without-labels",
     lambda root, im, lab: np.savez(root.with_suffix(".npz"), images=im[:20])
     or f"npz:{root.with_suffix('.npz')}", [], ["no label array", "'images'", "labels"]),
    ("npz-labels-of-another-length",
     lambda root, im, lab: np.savez(root.with_suffix(".npz"), images=im[:20], labels=lab[:19])
     or f"npz:{root.with_suffix('.npz')}", [], ["'labels'", "one integer per image", "(19,)"]),
    ("size-the-classifier-does-not-take",
     lambda root, im, lab: (_write_pngs(root / "a", im[:10]), _write_pngs(root / "b", im[10:20]))
     and f"folder:{root}", ["--image-size", "40", "40"], ["28x28x1 or 32x32x3", "40x40x1"]),
    ("registered-set-without-labels", lambda root, im, lab: "binarized_mnist", [],
     ["binarized_mnist", "folder:PATH of class sub-folders"]),
]


@pytest.mark.parametrize("make, extra, fragments", [c[1:] for c in CLASSIFIER_SOURCE_CASES],
                         ids=[c[0] for c in CLASSIFIER_SOURCE_CASES])
def test_classifier_refuses_sources_without_labels_before_any_write(tmp_path, capsys, fashion,
                                                                    make, extra, fragments):
    from trainers import train_classifier as TC

    dataset = make(tmp_path / "data", *fashion)
    if ":" in dataset:  # 20 images: every split gets some
        extra = ["--split-fractions", "0.5", "0.25", "0.25", *extra]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        TC.main(["--dataset", dataset, "--out", str(tmp_path / "clf" / "c.keras"), *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
