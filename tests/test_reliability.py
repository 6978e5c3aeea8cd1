"""Reliability (issue 13): bad inputs fail where they enter, with a message naming the
value, before any work or write; no fault loses the last good state.

* Bad inputs, table-driven: the training, evaluation and classifier programs (their
  ``main(argv)`` in-process), the Python API and a loaded export.  Each case checks
  that the message names the bad value and that the run and export directories are
  unchanged.
* Faults: a write that fails half-way (disk full) leaves the previous checkpoint whole
  and the same command resumes; a damaged best checkpoint or newest backup is named
  and recovered from; a training killed inside a checkpoint write resumes; stale
  export temporaries are removed by the next export; the run-directory lock refuses a
  second trainer and dies with its holder.

Everything runs on the synthetic ``four_points`` data (2x2 images, no files) with tiny
budgets.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_asvae
from tf_asvae import callbacks as cbs
from tf_asvae import config as C
from tf_asvae import export as X
from tf_asvae import io as tio
from trainers import evaluate as E
from trainers import train as T
from trainers import train_classifier as TC

from conftest import REPO

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _snapshot(root):
    """Every path under ``root`` with its size and mtime (what "unchanged" means)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _train_argv(tmp_path, *extra, model="vae", epochs=2, export=False):
    argv = ["--dataset", "four_points", "--model", model, "--batch-size", "8",
            "--epochs", str(epochs), "--steps-per-epoch", "2", "--validation-steps", "1",
            "--num-images", "0", "--verbose", "0", "--seed", "1",
            "--run-dir", str(tmp_path / "run")]
    argv += ["--export-dir", str(tmp_path / "export")] if export else ["--no-export"]
    return argv + [str(a) for a in extra]


def _exit_message(main, argv, capsys, code=2):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == code, err
    return err


# --------------------------------------------------------------------------------------
# Shared artefacts: one tiny trained run and one export


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-epoch VAE run on four_points: ``(run_dir, argv)``."""
    base = tmp_path_factory.mktemp("trained")
    argv = _train_argv(base)
    T.main(argv)
    return base / "run", argv


@pytest.fixture(scope="module")
def small_model():
    model = tf_asvae.build_model("vae", "synthetic", seed=0)
    model.build_all()
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_model):
    path = X.export_saved_model(small_model, tmp_path_factory.mktemp("export") / "m")
    return tf_asvae.load_exported(path)


@pytest.fixture
def user_file(tmp_path):
    """A regular file, to put output locations "under" it."""
    path = tmp_path / "a_file"
    path.write_text("not a directory\n")
    return path


# --------------------------------------------------------------------------------------
# The training program: bad arguments

TRAIN_CASES = [
    # (id, extra argv (PLACEHOLDER "{file}" is a regular file), fragments of the message)
    ("lr-inf", ["--learning-rate", "inf"], ["learning_rate=inf"]),
    ("lr-nan", ["--learning-rate", "nan"], ["learning_rate=nan"]),
    ("lr-negative-with-space", ["--learning-rate", "-1e-3"], ["learning_rate=-0.001"]),
    ("lr-zero", ["--learning-rate", "0"], ["learning_rate=0"]),
    ("min-delta-inf", ["--min-delta", "inf"], ["min_delta=inf"]),
    ("run-dir-empty", ["--run-dir", ""], ["run_dir=''"]),
    ("export-dir-empty", ["--export-dir", ""], ["export_dir=''"]),
    ("run-name-empty", ["--run-name", ""], ["run_name=''"]),
    ("batch-1-asvae", ["--model", "asvae", "--batch-size", "1"], ["batch_size=1", "partner"]),
    ("batch-1-asvae_g", ["--model", "asvae_g", "--batch-size", "1"], ["batch_size=1"]),
    ("data-seed-negative", ["--data-seed", "-1"], ["data_seed=-1"]),
    ("seed-negative", ["--seed", "-1"], ["seed=-1"]),
    ("run-dir-under-file", ["--run-dir", "{file}/run"], ["{file}", "run_dir"]),
    ("export-dir-under-file", ["--export-dir", "{file}/exp"], ["{file}", "export_dir"]),
    ("run-dir-is-file", ["--run-dir", "{file}"], ["run_dir", "{file}"]),
    ("export-equals-run", ["--export-dir", "{tmp}/run"], ["export_dir", "run_dir"]),
    ("num-images-huge", ["--num-images", "1000000"], ["num_images=1000000"]),
    ("relaxed-temperature-inf", ["--objective", "relaxed_temperature=inf"],
     ["relaxed_temperature=inf"]),
    ("instance-noise-negative", ["--objective", "instance_noise=-1"], ["instance_noise=-1"]),
    ("gradient-penalty-nan", ["--objective", "gradient_penalty=nan"], ["gradient_penalty=nan"]),
    ("epochs-zero", ["--epochs", "0"], ["epochs=0"]),
    ("latent-dim-zero", ["--latent-dim", "0"], ["latent_dim=0"]),
    ("flow-length-negative", ["--flow-length", "-1"], ["flow_length=-1"]),
    ("backup-freq-zero", ["--backup-freq", "0"], ["backup_freq=0"]),
]


@pytest.mark.parametrize("extra, fragments", [c[1:] for c in TRAIN_CASES],
                         ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_bad_arguments_before_any_write(tmp_path, capsys, user_file, extra,
                                                      fragments):
    fill = lambda t: t.replace("{file}", str(user_file)).replace("{tmp}", str(tmp_path))  # noqa: E731
    argv = _train_argv(tmp_path, export=True)
    argv += [fill(a) for a in extra]
    before = _snapshot(tmp_path)
    err = _exit_message(T.main, argv, capsys)
    for fragment in fragments:
        assert fill(fragment) in err, err
    assert _snapshot(tmp_path) == before  # no run or export directory, no lock file
    assert "Traceback" not in err


def test_train_refuses_a_run_dir_below_an_unwritable_directory(tmp_path, capsys):
    if IS_ROOT:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        err = _exit_message(T.main, _train_argv(tmp_path) [:-3] + [
            "--run-dir", str(locked / "run"), "--no-export"], capsys)
        assert str(locked) in err and "not writable" in err
    finally:
        locked.chmod(0o700)


def test_a_model_too_large_for_memory_is_refused_before_the_run_directory(tmp_path, capsys,
                                                                          monkeypatch):
    # As if this machine had 1 MiB: the VAE's weights x 4 copies do not fit.
    monkeypatch.setattr(T.os, "sysconf",
                        lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 256}[name])
    err = _exit_message(T.main, _train_argv(tmp_path, "--latent-dim", "7"), capsys)
    assert "Lower --latent-dim or --flow-length" in err and "latent_dim=7" in err
    assert not (tmp_path / "run").exists()


def test_the_minimum_batch_is_known_per_model():
    assert tf_asvae.ASVAE.minimum_batch_size() == 2
    assert tf_asvae.ASVAE_G.minimum_batch_size() == 2
    assert tf_asvae.ASVAE_R.minimum_batch_size() == 1
    assert tf_asvae.VAE.minimum_batch_size() == 1
    assert tf_asvae.AVB.minimum_batch_size() == 1


# --------------------------------------------------------------------------------------
# The evaluation and classifier programs: bad arguments


def _other_kind_checkpoint(tmp_path):
    path = tmp_path / "other.keras"
    other = tf_asvae.build_model("avb", "synthetic", seed=0)
    other.build_all()
    other.save(path)
    return path


EVAL_CASES = [
    ("checkpoint-other-kind", ["--checkpoint", "{other}"], ["{other}", "'avb'", "'vae'"]),
    ("checkpoint-truncated", ["--checkpoint", "{truncated}"],
     ["{truncated}", "not a .keras (zip) archive"]),
    ("checkpoint-random-bytes", ["--checkpoint", "{random}"], ["{random}", "cannot be loaded"]),
    ("out-under-file", ["--out", "{file}/report.json"], ["{file}", "--out"]),
    ("out-empty", ["--out", ""], ["--out ''"]),
    ("num-samples-zero", ["--num-samples", "0"], ["--num-samples", "Received: 0"]),
    ("num-samples-negative", ["--num-samples", "-5"], ["Received: -5"]),
    ("batch-size-zero", ["--batch-size", "0"], ["--batch-size", "Received: 0"]),
    ("seed-negative", ["--seed", "-1"], ["--seed", "Received: -1"]),
    ("metric-unknown", ["--metrics", "nll,bogus"], ["bogus"]),
    ("ais-step-size-inf", ["--ais-step-size", "inf"], ["--ais-step-size", "inf"]),
    ("ais-step-size-negative-with-space", ["--ais-step-size", "-1e-2"], ["-0.01"]),
    ("chunk-size-huge", ["--chunk-size", "200000000"], ["chunk_size=200000000",
                                                        "--chunk-size"]),
    ("checkpoint-missing", ["--checkpoint", "nothing.keras"], ["'nothing.keras'"]),
]


@pytest.mark.parametrize("extra, fragments", [c[1:] for c in EVAL_CASES],
                         ids=[c[0] for c in EVAL_CASES])
def test_evaluate_refuses_bad_arguments_before_any_write(trained_run, tmp_path, capsys,
                                                         user_file, extra, fragments):
    run, _ = trained_run
    best = run / T.BEST_FILE
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(best.read_bytes()[: best.stat().st_size // 3])
    random = tmp_path / "random.keras"
    random.write_bytes(np.random.default_rng(0).bytes(4096))
    names = {"{file}": str(user_file), "{truncated}": str(truncated),
             "{random}": str(random)}
    if any("{other}" in a for a in extra):
        names["{other}"] = str(_other_kind_checkpoint(tmp_path))

    def fill(text):
        for key, value in names.items():
            text = text.replace(key, value)
        return text

    argv = ["--run-dir", str(run), "--metrics", "nll", "--max-examples", "4",
            "--num-samples", "2", "--num-images", "0", "--verbose", "0",
            "--out", str(tmp_path / "eval" / "report.json")]
    argv += [fill(a) for a in extra]
    before_run, before_tmp = _snapshot(run), _snapshot(tmp_path)
    err = _exit_message(E.main, argv, capsys)
    for fragment in fragments:
        assert fill(fragment) in err, err
    assert _snapshot(run) == before_run and _snapshot(tmp_path) == before_tmp


CLASSIFIER_CASES = [
    ("out-under-file", ["--out", "{file}/c.keras"], ["{file}", "--out"]),
    ("out-not-keras", ["--out", "{tmp}/c.h5"], ["c.h5"]),
    ("out-bare-suffix", ["--out", "{tmp}/.keras"], [".keras"]),
    ("lr-inf", ["--learning-rate", "inf"], ["inf"]),
    ("lr-negative-with-space", ["--learning-rate", "-1e-3"], ["-0.001"]),
    ("epochs-zero", ["--epochs", "0"], ["--epochs", "Received: 0"]),
    ("seed-negative", ["--seed", "-2"], ["--seed", "Received: -2"]),
]


@pytest.mark.parametrize("extra, fragments", [c[1:] for c in CLASSIFIER_CASES],
                         ids=[c[0] for c in CLASSIFIER_CASES])
def test_train_classifier_refuses_bad_arguments_before_any_write(tmp_path, capsys, user_file,
                                                                 extra, fragments):
    fill = lambda t: t.replace("{file}", str(user_file)).replace("{tmp}", str(tmp_path))  # noqa: E731
    argv = ["--dataset", "mnist", "--out", str(tmp_path / "clf" / "c.keras"),
            "--manual-dir", str(tmp_path / "no-data")] + [fill(a) for a in extra]
    before = _snapshot(tmp_path)
    err = _exit_message(TC.main, argv, capsys)
    for fragment in fragments:
        assert fill(fragment) in err, err
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------
# The Python API


def _x(n=4, value=None):
    x = np.random.default_rng(0).random((n, 2, 2, 1)).astype("float32")
    if value is not None:
        x[0, 0, 0, 0] = value
    return x


API_CASES = [
    # (id, call(model), exception type, fragments)
    ("build-seed-negative", lambda m: tf_asvae.build_model("vae", "synthetic", seed=-1),
     ValueError, ["seed=-1"]),
    ("build-seed-float", lambda m: tf_asvae.build_model("vae", "synthetic", seed=1.5),
     ValueError, ["seed=1.5"]),
    ("build-seed-bool", lambda m: tf_asvae.build_model("vae", "synthetic", seed=True),
     ValueError, ["seed=True"]),
    ("relaxed-temperature-inf",
     lambda m: tf_asvae.build_model("asvae", "synthetic", relaxed_temperature=math.inf),
     ValueError, ["relaxed_temperature=inf"]),
    ("min-scale-nan", lambda m: tf_asvae.build_model("vae", "synthetic", min_scale=math.nan),
     ValueError, ["min_scale=nan"]),
    ("train-config-lr-inf", lambda m: C.TrainConfig(learning_rate=math.inf),
     ValueError, ["learning_rate=inf"]),
    ("encode-seed-float", lambda m: m.encode(_x(), seed=1.5), ValueError, ["seed=1.5"]),
    ("encode-seed-bool", lambda m: m.encode(_x(), seed=True), ValueError, ["seed=True"]),
    ("encode-nan", lambda m: m.encode(_x(value=np.nan)), ValueError, ["non-finite"]),
    ("encode-inf", lambda m: m.encode(_x(value=np.inf)), ValueError, ["non-finite"]),
    ("reconstruct-nan", lambda m: m.reconstruct(_x(value=np.nan)), ValueError,
     ["non-finite"]),
    ("encode-above-one", lambda m: m.encode(_x(value=3.0)), ValueError, ["[0, 1]", "3"]),
    ("encode-uint8", lambda m: m.encode((_x() * 255).astype("uint8")), ValueError,
     ["dtype=uint8"]),
    ("encode-empty", lambda m: m.encode(np.zeros((0, 2, 2, 1), "float32")), ValueError,
     ["shape=(0, 2, 2, 1)"]),
    ("encode-wrong-shape", lambda m: m.encode(np.zeros((2, 28, 28, 1), "float32")),
     ValueError, ["shape=(2, 28, 28, 1)"]),
    ("decode-nan", lambda m: m.decode(np.full((2, m.model_config.latent_dim), np.nan)),
     ValueError, ["non-finite"]),
    ("decode-inf", lambda m: m.decode(np.full((2, m.model_config.latent_dim), np.inf)),
     ValueError, ["non-finite"]),
    ("sample-bool", lambda m: m.sample(True), ValueError, ["n=True"]),
    ("sample-wraps-int32", lambda m: m.sample(2 ** 32 + 3), ValueError, ["n=4294967299"]),
    ("sample-2-31", lambda m: m.sample(2 ** 31), ValueError, ["n=2147483648"]),
    ("sample-zero", lambda m: m.sample(0), ValueError, ["n=0"]),
    ("sample-float", lambda m: m.sample(2.0), ValueError, ["n=2.0"]),
    ("sample-seed-float", lambda m: m.sample(2, seed=2.5), ValueError, ["seed=2.5"]),
    ("fit-empty-dataset",
     lambda m: m.fit(tf.data.Dataset.from_tensor_slices(np.zeros((0, 2, 2, 1), "float32"))
                     .batch(4), epochs=1, verbose=0),
     ValueError, ["empty dataset"]),
    ("fit-uint8",
     lambda m: m.fit(tf.data.Dataset.from_tensor_slices((_x(8) * 255).astype("uint8"))
                     .batch(4), epochs=1, verbose=0),
     ValueError, ["dtype=uint8"]),
    ("fit-wrong-shape",
     lambda m: m.fit(tf.data.Dataset.from_tensor_slices(np.zeros((8, 3, 3, 1), "float32"))
                     .batch(4), epochs=1, verbose=0),
     ValueError, ["3, 3, 1)"]),
    ("fit-0-255-floats",
     lambda m: m.fit(tf.data.Dataset.from_tensor_slices(_x(8) * 255).batch(4), epochs=1,
                     verbose=0),
     tf.errors.InvalidArgumentError, ["finite floats in [0, 1]", "Received values"]),
    ("fit-minus-one-to-one",
     lambda m: m.fit(tf.data.Dataset.from_tensor_slices(_x(8) * 2 - 1).batch(4), epochs=1,
                     verbose=0),
     tf.errors.InvalidArgumentError, ["[0, 1]"]),
    ("fit-one-nan-pixel",
     lambda m: m.fit(tf.data.Dataset.from_tensor_slices(_x(8, value=np.nan)).batch(4),
                     epochs=1, verbose=0),
     tf.errors.InvalidArgumentError, ["finite", "nan"]),
    ("evaluate-nan",
     lambda m: m.evaluate(tf.data.Dataset.from_tensor_slices(_x(8, value=np.nan)).batch(4),
                          verbose=0),
     tf.errors.InvalidArgumentError, ["test_step", "finite"]),
    ("load-exported-none", lambda m: tf_asvae.load_exported(None), ValueError,
     ["path=None"]),
    ("load-exported-empty", lambda m: tf_asvae.load_exported(""), ValueError, ["path=''"]),
]


@pytest.fixture
def compiled_model():
    model = tf_asvae.build_model("vae", "synthetic", seed=0)
    model.compile(learning_rate=1e-3)
    return model


@pytest.mark.parametrize("call, error, fragments", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_inputs(compiled_model, tmp_path, call, error, fragments):
    weights = [w.copy() for w in compiled_model.get_weights()]
    before = _snapshot(tmp_path)
    with pytest.raises(error) as info:
        call(compiled_model)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    # Nothing was learnt from the bad input and nothing was written.
    for a, b in zip(weights, compiled_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _snapshot(tmp_path) == before


def test_fit_with_an_asvae_batch_of_one_fails_before_any_update():
    model = tf_asvae.build_model("asvae_g", "synthetic", seed=0)
    model.compile()
    data = tf.data.Dataset.from_tensor_slices(_x(4)).batch(1, drop_remainder=True)
    with pytest.raises(ValueError, match="batch of 1"):
        model.fit(data, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_load_exported_names_what_is_missing(tmp_path, exported):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tf_asvae.load_exported(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(exported.path, broken)
    shutil.rmtree(broken / "variables")
    with pytest.raises(FileNotFoundError, match="incomplete") as info:
        tf_asvae.load_exported(broken)
    assert "variables.index" in str(info.value)


def test_export_under_a_file_fails_before_any_work(small_model, user_file):
    with pytest.raises(ValueError, match="is a file") as info:
        X.export_saved_model(small_model, user_file / "exp")
    assert str(user_file) in str(info.value)


# --------------------------------------------------------------------------------------
# A loaded export


EXPORT_CASES = [
    ("sample-wraps-int32", lambda e: e.sample(2 ** 32 + 3), ValueError, ["n=4294967299"]),
    ("sample-bool", lambda e: e.sample(True), ValueError, ["n=True"]),
    ("sample-zero", lambda e: e.sample(0), ValueError, ["n=0"]),
    ("encode-nan", lambda e: e.encode(_x(value=np.nan)), ValueError, ["non-finite"]),
    ("decode-nan", lambda e: e.decode(np.full((1, e.latent_dim), np.nan, "float32")),
     ValueError, ["non-finite"]),
    ("encode-seed-float", lambda e: e.encode(_x(), seed=1.5), ValueError, ["seed=1.5"]),
    ("log-likelihood-samples-int32",
     lambda e: e.log_likelihood(_x(), num_samples=2 ** 31), ValueError,
     ["num_samples=2147483648"]),
    ("signature-sample-above-max",
     lambda e: e.signatures["sample"](num_images=tf.constant(2 ** 31 - 1),
                                      seed=tf.constant(0, tf.int64)),
     tf.errors.InvalidArgumentError, ["num_images", "at most"]),
    ("signature-encode-nan",
     lambda e: e.signatures["encode"](images=tf.constant(_x(value=np.nan)),
                                      seed=tf.constant(0, tf.int64)),
     tf.errors.InvalidArgumentError, ["[0, 1]"]),
    ("signature-decode-inf",
     lambda e: e.signatures["decode"](z=tf.fill([1, e.latent_dim], np.inf)),
     tf.errors.InvalidArgumentError, ["finite"]),
]


@pytest.mark.parametrize("call, error, fragments", [c[1:] for c in EXPORT_CASES],
                         ids=[c[0] for c in EXPORT_CASES])
def test_exported_model_refuses_bad_inputs(exported, call, error, fragments):
    before = _snapshot(os.path.dirname(exported.path))
    with pytest.raises(error) as info:
        call(exported)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert _snapshot(os.path.dirname(exported.path)) == before


def test_keras_and_exported_models_agree_on_nan(small_model, exported):
    bad = _x(value=np.nan)
    for model in (small_model, exported):
        with pytest.raises(ValueError, match="non-finite"):
            model.encode(bad)
        with pytest.raises(ValueError, match="non-finite"):
            model.reconstruct(bad)


# --------------------------------------------------------------------------------------
# Atomic writes


class _DiskFull(OSError):
    pass


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "history.json"
    tio.write_json_atomic(path, {"epoch": [0]})

    class HalfWriter:
        def save(self, target):
            with open(target, "w") as f:
                f.write('{"epoch": [0, 1')  # cut short
            raise _DiskFull(28, "No space left on device")

    with pytest.raises(_DiskFull):
        tio.save_model_atomic(HalfWriter(), tmp_path / "best.keras")
    with pytest.raises(TypeError):
        tio.write_json_atomic(path, {"epoch": object()})  # refused before any write
    assert json.loads(path.read_text()) == {"epoch": [0]}
    assert sorted(os.listdir(tmp_path)) == ["history.json"]  # no temporary left
    # The user's usual permissions (not tempfile's 0600).
    assert path.stat().st_mode & 0o777 == tio.file_mode()


def test_a_failed_checkpoint_write_keeps_the_last_good_state_and_resumes(tmp_path,
                                                                         monkeypatch):
    argv = _train_argv(tmp_path, epochs=3)
    real_save = keras.Model.save
    calls = {"n": 0}

    def failing_save(self, filepath, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1's best.keras: half a file, then a full disk
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half")
            raise _DiskFull(28, "No space left on device")
        return real_save(self, filepath, *args, **kwargs)

    # Every epoch counts as the best, so that epoch 1 rewrites best.keras.
    monkeypatch.setattr(cbs.BestCheckpoint, "_should_save_model", lambda self, *a: True)
    monkeypatch.setattr(keras.Model, "save", failing_save)
    with pytest.raises(_DiskFull):
        T.train(T.parse(argv))
    run = tmp_path / "run"
    assert tio.keras_file_problem(run / T.BEST_FILE) is None  # epoch 0's, whole
    assert not [n for n in os.listdir(run) if n.startswith(tio.TMP_PREFIX)]
    assert cbs.backup_epoch(run / "backup") == 1
    monkeypatch.setattr(keras.Model, "save", real_save)
    resumed = T.train(T.parse(argv))
    assert resumed.status == "resumed" and resumed.initial_epoch == 1
    assert json.loads((run / T.HISTORY_FILE).read_text())["epoch"] == [0, 1, 2]
    assert keras.saving.load_model(run / T.FINAL_FILE) is not None
    # Usual permissions on what the run created.
    assert (run.stat().st_mode & 0o777) == tio.dir_mode()
    assert ((run / T.CONFIG_FILE).stat().st_mode & 0o777) == tio.file_mode()


def test_a_damaged_best_checkpoint_is_named_and_the_run_resumes(tmp_path, capsys):
    argv = _train_argv(tmp_path, epochs=2)

    class StopAtSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt  # an interruption after epoch 0's backup

    with pytest.raises(KeyboardInterrupt):
        T.train(T.parse(argv), callbacks=[StopAtSecondEpoch()])
    run = tmp_path / "run"
    best = run / T.BEST_FILE
    best.write_bytes(best.read_bytes()[:1000])  # damaged from outside (e.g. a bad copy)
    # Keras alone would call it "File not found"; the resume names it and goes on.
    capsys.readouterr()
    result = T.train(T.parse(argv))
    err = capsys.readouterr().err
    assert result.status == "resumed" and result.initial_epoch == 1
    assert str(best) in err and "not a .keras (zip) archive" in err
    assert (run / (T.BEST_FILE + ".damaged")).exists()
    assert tio.keras_file_problem(best) is None  # epoch 1 wrote a new best checkpoint
    assert json.loads((run / T.HISTORY_FILE).read_text())["epoch"] == [0, 1]


def test_a_damaged_newest_backup_resumes_from_the_one_before(tmp_path, small_model, capsys):
    folder = tmp_path / "backup"
    backup = cbs.RunBackup(str(folder))
    small_model.compile()
    backup.set_model(small_model)
    for epoch in (1, 2):
        backup._current_epoch = epoch
        backup._save_model()
    meta = json.loads((folder / cbs.BACKUP_METADATA).read_text())
    assert meta["epoch"] == 2 and meta["previous"]["epoch"] == 1
    assert sorted(n for n in os.listdir(folder) if n.endswith(".h5")) == [
        meta["previous"]["weights"], meta["weights"]]
    newest = folder / meta["weights"]
    newest.write_bytes(newest.read_bytes()[:500])
    state = cbs.restorable_backup(folder)
    assert state["epoch"] == 1 and meta["weights"] in state["notes"][0]
    assert cbs.backup_epoch(folder) == 1
    backup.on_train_begin()
    assert small_model._initial_epoch == 1
    assert meta["weights"] in capsys.readouterr().err
    older = folder / meta["previous"]["weights"]
    older.write_bytes(b"garbage")
    with pytest.raises(cbs.BackupDamagedError) as info:
        cbs.backup_epoch(folder)
    assert meta["weights"] in str(info.value) and meta["previous"]["weights"] in str(info.value)


_KILL_INSIDE_SAVE = textwrap.dedent("""
    import os, signal, sys
    import keras
    from trainers import train as T

    real = keras.Model.save

    def save(self, filepath, *args, **kwargs):
        real(self, filepath, *args, **kwargs)
        if os.path.basename(str(filepath)).startswith(".tmp-best.keras") and \\
                int(self.optimizer.iterations) >= 4:
            os.kill(os.getpid(), signal.SIGKILL)  # written, not yet renamed

    keras.Model.save = save
    # Every epoch counts as the best, so that epoch 1 rewrites best.keras.
    T.cbs.BestCheckpoint._should_save_model = lambda self, *a: True
    T.train(T.parse(sys.argv[1:]))
""")


def test_a_kill_inside_the_best_checkpoint_write_loses_nothing(tmp_path):
    argv = _train_argv(tmp_path, epochs=3)
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _KILL_INSIDE_SAVE, *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = tmp_path / "run"
    stale = [n for n in os.listdir(run) if n.startswith(tio.TMP_PREFIX + "best.keras")]
    assert stale  # the killed write's temporary, hidden
    assert tio.keras_file_problem(run / T.BEST_FILE) is None  # the previous best, whole
    resumed = T.train(T.parse(argv))
    assert resumed.status == "resumed" and resumed.initial_epoch == 1
    assert not [n for n in os.listdir(run) if n.startswith(tio.TMP_PREFIX)]
    assert json.loads((run / T.HISTORY_FILE).read_text())["epoch"] == [0, 1, 2]


# --------------------------------------------------------------------------------------
# Export temporaries


def test_the_next_export_removes_stale_temporaries_of_killed_exports(tmp_path, small_model):
    export_dir = tmp_path / "exp"
    first = X.export_saved_model(small_model, export_dir)  # version 1
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = export_dir / f".tmp-{dead.pid}-0123456789ab-{host}"
    stale.mkdir()
    (stale / "saved_model.pb").write_bytes(b"x" * 1000)
    live = export_dir / f".tmp-{os.getpid()}-0123456789ab-{host}"  # an export running here
    live.mkdir()
    old_format = export_dir / (".tmp-" + "f" * 32)
    old_format.mkdir()
    os.utime(old_format, (0, 0))
    # A kill between the two renames of an overwrite left version 7 only as .old-7-...
    lost = export_dir / f".old-7-{dead.pid}-0123456789ab-{host}"
    os.rename(first, lost)
    second = X.export_saved_model(small_model, export_dir)
    names = sorted(os.listdir(export_dir))
    assert names == sorted(["7", os.path.basename(second), live.name]), names
    assert tf.saved_model.contains_saved_model(str(export_dir / "7"))


# --------------------------------------------------------------------------------------
# The run-directory lock


def test_a_second_trainer_is_refused_while_the_run_directory_is_locked(tmp_path, capsys):
    argv = _train_argv(tmp_path)
    with tio.RunDirLock(tmp_path / "run") as lock:
        err = _exit_message(T.main, argv, capsys)
        assert "in use by another training" in err and f"pid {os.getpid()}" in err
        assert str(tmp_path / "run") in err and lock.held
        assert not (tmp_path / "run").exists()
    assert not os.path.exists(lock.path)  # released and removed


def test_the_lock_dies_with_its_holder(tmp_path):
    # Load io.py alone (no TensorFlow) in a child that takes the lock and is killed.
    code = textwrap.dedent(f"""
        import importlib.util, os, signal, sys
        spec = importlib.util.spec_from_file_location("tio", {str(REPO / "tf_asvae" / "io.py")!r})
        tio = importlib.util.module_from_spec(spec); spec.loader.exec_module(tio)
        tio.RunDirLock({str(tmp_path / "run")!r}).acquire()
        print("locked", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(tio.RunDirInUseError, match=f"pid {child.pid}"):
            tio.RunDirLock(tmp_path / "run").acquire()
    finally:
        child.kill()
        child.wait()
    with tio.RunDirLock(tmp_path / "run") as lock:  # the kill released it
        assert lock.held


class _SlowBuilder:
    """Stands in for a TFDS builder: preparing takes a while and counts itself."""

    name = "slow"

    def __init__(self, root):
        self.data_dir_root = root
        self.calls = 0
        self.overlap = False
        self._busy = False

    def is_prepared(self):
        return os.path.exists(os.path.join(self.data_dir_root, "done"))

    def download_and_prepare(self, download_config=None):
        import time

        self.overlap |= self._busy
        self._busy = True
        self.calls += 1
        time.sleep(0.3)
        open(os.path.join(self.data_dir_root, "done"), "w").close()
        self._busy = False


def test_a_data_set_is_prepared_once_when_two_loaders_start_together(tmp_path, monkeypatch):
    # Two loaders at once: the second waits on the lock, then finds the data prepared and
    # reads through a builder loaded again from the prepared directory (its own builder
    # was made before the data existed).  TFDS alone lets both prepare, and the slower
    # one fails renaming its copy into place.
    import threading

    import tensorflow_datasets as tfds

    from tf_asvae import data as D

    builder = _SlowBuilder(str(tmp_path / "tfds"))
    builder.data_path = str(tmp_path / "tfds" / "slow" / "1.0.0")
    monkeypatch.setattr(tfds, "builder_from_directory", lambda path: ("reloaded", path))
    results, errors = [], []

    def load():
        try:
            results.append(D.download_and_prepare_once(builder, None))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and builder.calls == 1 and not builder.overlap
    assert len(results) == 2 and builder in results  # in either order
    assert ("reloaded", builder.data_path) in results
    assert (tmp_path / "tfds" / ".slow.prepare.lock").exists()


def test_waiting_lock_waits_for_its_holder(tmp_path):
    import threading
    import time

    order = []
    path = tmp_path / "x.lock"
    held = threading.Event()

    def first():
        with tio.waiting_lock(path):
            held.set()
            time.sleep(0.3)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    held.wait()
    with tio.waiting_lock(path):
        order.append("second in")
    t.join()
    assert order == ["first out", "second in"]


def test_the_lock_is_not_taken_by_non_chief_workers(tmp_path, monkeypatch):
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    spec = T.parse(_train_argv(tmp_path, "--strategy", "multiworker"))
    for index, writes in ((0, True), (1, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert T._writes_run_dir(spec) is writes


# --------------------------------------------------------------------------------------
# Multi-worker: TF_CONFIG and a task that never starts

TF_CONFIG_CASES = [
    ("not-json", '{"cluster": {"worker": ["a:1"]}', ["TF_CONFIG is not valid JSON",
                                                       "Received: TF_CONFIG="]),
    ("not-an-object", "[1, 2]", ["'cluster'", "[1, 2]"]),
    ("no-cluster", '{"task": {"type": "worker", "index": 0}}', ["'cluster'"]),
    ("index-outside", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     ["'task'", '"index": 3']),
    ("unknown-type", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
     ["'task'", '"ps"']),
]


@pytest.mark.parametrize("value, fragments", [c[1:] for c in TF_CONFIG_CASES],
                         ids=[c[0] for c in TF_CONFIG_CASES])
def test_a_malformed_tf_config_is_named(tmp_path, capsys, monkeypatch, value, fragments):
    monkeypatch.setenv("TF_CONFIG", value)
    before = _snapshot(tmp_path)
    err = _exit_message(T.main, _train_argv(tmp_path, "--strategy", "multiworker"), capsys)
    for fragment in fragments:
        assert fragment in err, err
    assert _snapshot(tmp_path) == before


def test_a_worker_that_never_starts_is_named_after_the_cluster_timeout(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                  "index": 0}}))
    argv = _train_argv(tmp_path, "--strategy", "multiworker", "--cluster-timeout", "3")
    proc = subprocess.run([sys.executable, "-m", "trainers.train", *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert f"worker 1 (localhost:{ports[1]})" in proc.stderr
    assert "--cluster-timeout" in proc.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------
# Helpers


def test_join_negative_numbers_only_touches_numeric_flags():
    from trainers import _cli

    parser = T.build_parser()
    assert _cli.join_negative_numbers(parser, ["--learning-rate", "-1e-3", "--run-name", "-x"]) \
        == ["--learning-rate=-1e-3", "--run-name", "-x"]


def test_check_writable_dir():
    with pytest.raises(ValueError, match="Received: out=''"):
        tio.check_writable_dir("", "out")
    tio.check_writable_dir(os.path.join(os.getcwd(), "not", "yet"), "out")  # creatable


def test_importlib_can_load_io_alone():
    spec = importlib.util.spec_from_file_location("tio_alone", REPO / "tf_asvae" / "io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TMP_PREFIX == tio.TMP_PREFIX
