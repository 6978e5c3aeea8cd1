"""The training program (trainers/train.py) and its callbacks (tf_asvae/callbacks.py).

End-to-end runs use the real MNIST files from the shared manual directory, prepared
once per session (conftest.prepared), with tiny budgets: 64 training examples, batches
of 16, 2 steps per epoch, no posterior flow.  The resume test kills a training
subprocess with SIGKILL mid-epoch and re-runs the same command.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_asvae
from tf_asvae import MODEL_KINDS, build_model
from tf_asvae import callbacks as cbs
from tf_asvae import data as D
from tf_asvae.config import ModelConfig, TrainConfig
from trainers import train as T

from conftest import REPO, SHARED_DATA, needs_real_files


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv(D.ENV_MANUAL_DIR, raising=False)

    def no_probe(url, timeout=5.0):
        pytest.fail(f"a test tried to reach {url}")

    monkeypatch.setattr(D, "_source_reachable", no_probe)


@pytest.fixture
def mnist(prepared):
    """--data-dir/--manual-dir flags of the session's prepared MNIST."""
    config = prepared("mnist")
    return ["--data-dir", config.data_dir, "--manual-dir", str(SHARED_DATA)]


def _argv(tmp_path, data_flags, *extra, export=False):
    argv = ["--dataset", "mnist", "--batch-size", "16", "--max-train-examples", "64",
            "--validation-steps", "2", "--steps-per-epoch", "2", "--epochs", "1",
            "--flow-length", "0", "--num-images", "4", "--verbose", "0",
            "--run-dir", str(tmp_path / "run")] + list(data_flags)
    argv += ["--export-dir", str(tmp_path / "export")] if export else ["--no-export"]
    return argv + [str(a) for a in extra]


def _export_available():
    try:
        from tf_asvae.export import export_saved_model  # noqa: F401
    except ImportError:
        return False
    return True


def _tags(folder):
    tags = set()
    for path in pathlib.Path(folder).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        T.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Arguments and configuration (no training)


def test_no_arguments_is_the_main_job():
    spec = T.parse([])
    assert spec.model.kind == "asvae" and spec.model.preset == "mnist"
    assert spec.data.name == "mnist"
    assert spec.model.flows.posterior_flow == "planar"
    assert spec.model.flows.posterior_flow_length == T.DEFAULT_FLOW_LENGTH
    assert spec.model.latent_dim == 64
    assert spec.training == TrainConfig()
    assert spec.training.learning_rate == 1e-4
    assert spec.run_dir == os.path.join("runs", "asvae_mnist")
    assert spec.export_dir == os.path.join("saved_models", "asvae_mnist")
    help_text = T.build_parser().format_help()
    assert "80" in help_text and str(T.DEFAULT_FLOW_LENGTH) in help_text


def test_flags_reach_the_configs(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_MANUAL_DIR, str(tmp_path / "manual"))
    spec = T.parse(["--model", "vae", "--dataset", "fashion_mnist", "--latent-dim", "8",
                    "--flow-length", "3", "--seed", "5", "--learning-rate", "3e-4",
                    "--steps-per-epoch", "all", "--backup-freq", "7", "--mixed-precision",
                    "--strategy", "mirrored", "--num-devices", "2", "--run-name", "x"])
    assert spec.model.preset == "fashion_mnist" and spec.model.latent_dim == 8
    assert spec.model.flows.posterior_flow_length == 3
    assert spec.seed == 5 and spec.data.seed == 5  # --data-seed defaults to --seed
    assert spec.data.manual_dir == str(tmp_path / "manual")  # from the environment
    t = spec.training
    assert (t.learning_rate, t.steps_per_epoch, t.backup_freq) == (3e-4, None, 7)
    assert (t.mixed_precision, t.strategy, t.num_devices) == ("auto", "mirrored", 2)
    assert spec.run_dir == os.path.join("runs", "x")
    objective = T.parse(["--stabilizer", "paper", "--objective", "critic_form=quadratic",
                         "--objective", "disc_steps=2", "--network", "batch_norm=false"]).model
    assert (objective.objective.stabilizer, objective.objective.critic_form,
            objective.objective.disc_steps, objective.objective.critic_offset,
            objective.network.batch_norm) == ("paper", "quadratic", 2, "none", False)
    assert T.parse([]).model.objective.stabilizer == "default"
    assert T.parse(["--model", "avb"]).model.flows.posterior_flow == "none"
    assert T.parse(["--flow-length", "0"]).model.flows.posterior_flow == "none"
    assert T.parse(["--dataset", "four_points"]).model.preset == "synthetic"


def test_train_config_round_trips_and_validates():
    config = TrainConfig(epochs=3, steps_per_epoch=None, backup_freq=4, mixed_precision="bfloat16",
                         lr_schedule="cosine", lr_final_fraction=0.1, adam_beta_1=0.5)
    assert TrainConfig.from_json(config.to_json()) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="colour"):
        TrainConfig.from_dict({"colour": 1})
    for kwargs, match in [(dict(epochs=0), "epochs=0"), (dict(patience=-1), "patience=-1"),
                          (dict(strategy="tpu"), "strategy='tpu'.*'mirrored'"),
                          (dict(backup_freq="batch"), "backup_freq='batch'"),
                          (dict(num_devices=2), "num_devices > 1 needs strategy='mirrored'"),
                          (dict(restore_best_weights=1), "restore_best_weights=1"),
                          (dict(lr_schedule="step"), "lr_schedule='step'.*'cosine'"),
                          (dict(lr_final_fraction=1.5), "lr_final_fraction=1.5"),
                          (dict(lr_final_fraction=-0.1), "lr_final_fraction=-0.1"),
                          (dict(adam_beta_1=1.0), "adam_beta_1=1.0")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kwargs)


@pytest.mark.parametrize("extra, fragments", [
    (["--model", "gan"], ["'gan'", "'asvae'", "'vae'"]),
    (["--dataset", "svhn"], ["'svhn'", "'mnist'"]),
    (["--strategy", "tpu"], ["'tpu'", "'mirrored'", "'multiworker'"]),
    (["--mixed-precision", "fp8"], ["'fp8'", "'bfloat16'"]),
    (["--epochs", "0"], ["epochs=0"]),
    (["--steps-per-epoch", "0"], ["steps_per_epoch=0"]),
    (["--steps-per-epoch", "few"], ["'few'"]),
    (["--validation-steps", "-2"], ["validation_steps=-2"]),
    (["--batch-size", "0"], ["batch_size=0"]),
    (["--batch-size", "-16"], ["batch_size=-16"]),
    (["--latent-dim", "0"], ["latent_dim=0"]),
    (["--flow-length", "-1"], ["flow_length=-1"]),
    (["--learning-rate", "0"], ["learning_rate=0.0"]),
    (["--lr-schedule", "step"], ["'step'", "'cosine'"]),
    (["--lr-final-fraction", "2"], ["lr_final_fraction=2.0"]),
    (["--adam-beta-1", "1"], ["adam_beta_1=1.0"]),
    (["--max-train-examples", "0"], ["max_train_examples=0"]),
    (["--max-train-examples", "8"], ["batch_size=16", "max_train_examples=8"]),
    (["--num-devices", "0", "--strategy", "mirrored"], ["num_devices=0"]),
    (["--num-devices", "2"], ["num_devices=2", "strategy='default'"]),
    (["--num-devices", "3", "--strategy", "mirrored"], ["batch_size=16", "num_devices=3"]),
    (["--backup-freq", "0"], ["backup_freq=0"]),
    (["--model", "avb", "--flow-length", "3"], ["flow_length=3", "'avb'"]),
    (["--preset", "cifar10"], ["preset='cifar10'", "'mnist'"]),
    (["--stabilizer", "heavy"], ["'heavy'", "'paper'", "'default'"]),
    (["--objective", "critic_form=cubic"], ["critic_form='cubic'", "'quadratic'"]),
    (["--objective", "gradient_penalty"], ["KEY=VALUE", "'gradient_penalty'"]),
    (["--network", "batch_norm=maybe"], ["batch_norm must be true or false", "'maybe'"]),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, extra, fragments):
    argv = _argv(tmp_path, ["--data-dir", str(tmp_path / "tfds")]) + extra
    err = _cli_error(argv, capsys)
    for fragment in fragments:
        assert fragment in err, err
    assert os.listdir(tmp_path) == []  # no run directory, no TFDS directory


def test_missing_data_fails_before_writing(tmp_path, capsys):
    argv = _argv(tmp_path, ["--data-dir", str(tmp_path / "tfds"),
                            "--manual-dir", str(tmp_path / "nowhere")])
    err = _cli_error(argv, capsys)
    assert "nowhere" in err and "train-images-idx3-ubyte.gz" in err
    assert not (tmp_path / "run").exists()


def test_run_dir_with_another_configuration_is_refused(tmp_path, capsys):
    argv = _argv(tmp_path, ["--data-dir", str(tmp_path / "tfds")])
    T._create_run_dir(T.parse(argv))
    run = tmp_path / "run"
    before = (run / "config.json").read_bytes()
    assert json.loads(before).keys() == {"model", "data", "training", "seed",
                                         "package_version", "tensorflow_version"}
    for extra, fragment in [
            (["--epochs", "2"], "training.epochs: 1 in the directory, 2 requested"),
            (["--model", "vae"], "model.kind: 'asvae' in the directory, 'vae'"),
            (["--seed", "3"], "seed: 0 in the directory, 3 requested")]:
        err = _cli_error(argv + extra, capsys)
        assert str(run) in err and fragment in err, err
    assert _listing(run) == ["config.json"] and (run / "config.json").read_bytes() == before
    # Where the data live is not part of the experiment.
    moved = T.parse(argv + ["--data-dir", str(tmp_path / "elsewhere")])
    assert T.check_run_dir(moved) == "restart"
    # A directory written before the learning-rate schedule existed ran at a constant rate.
    config = json.loads(before)
    for key in ("lr_schedule", "lr_final_fraction", "adam_beta_1"):
        del config["training"][key]
    (run / "config.json").write_text(json.dumps(config))
    assert T.check_run_dir(T.parse(argv)) == "restart"
    err = _cli_error(argv + ["--lr-schedule", "cosine"], capsys)
    assert "training.lr_schedule: 'constant' in the directory, 'cosine' requested" in err, err
    # Before generative_weight and recon_z_to_decoder, eq. 11 ran as published; before
    # the R1 default, the default stabilizer's gradient_penalty was 0 for every kind.
    config = json.loads(before)
    assert config["model"]["objective"]["gradient_penalty"] is None
    for key in ("generative_weight", "recon_z_to_decoder"):
        del config["model"]["objective"][key]
    config["model"]["objective"]["gradient_penalty"] = 0.0
    (run / "config.json").write_text(json.dumps(config))
    err = _cli_error(argv, capsys)          # AS-VAE's defaults changed both
    assert "model.objective.gradient_penalty: 0.0 in the directory, 1.0 requested" in err
    assert "model.objective.recon_z_to_decoder: True in the directory, False" in err
    assert T.check_run_dir(T.parse(argv + ["--objective", "gradient_penalty=0",
                                           "--objective", "recon_z_to_decoder=true"])) \
        == "restart"
    config["model"]["kind"] = "avb_ac"     # neither applies to AVB: it resumes
    (run / "config.json").write_text(json.dumps(config))
    assert T.check_run_dir(T.parse(argv + ["--model", "avb_ac"])) == "restart"
    (run / "config.json").write_bytes(before)

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    err = _cli_error(argv + ["--run-dir", str(other)], capsys)
    assert "not a tf_asvae run directory" in err and str(other) in err
    assert _listing(other) == ["notes.txt"]


# --------------------------------------------------------------------------------------
# Callbacks and helpers (no data)


def test_image_grid_tiles_images():
    images = np.stack([np.full((2, 3, 1), i / 10, np.float32) for i in range(5)])
    grid = cbs.image_grid(images)
    assert grid.shape == (4, 9, 1)  # 5 images -> 3 columns x 2 rows of 2x3 pixels
    np.testing.assert_allclose(grid[2:4, 3:6], 0.4)
    np.testing.assert_allclose(grid[2:4, 6:9], 0.0)  # the missing sixth cell is black
    with pytest.raises(ValueError, match="shape"):
        cbs.image_grid(np.zeros((2, 3)))


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


def test_only_the_chief_writes():
    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
    assert T.is_chief(tf.distribute.get_strategy())
    assert T.is_chief(_Strategy(None))
    assert T.is_chief(_Strategy(_Resolver("worker", 0, workers)))
    assert not T.is_chief(_Strategy(_Resolver("worker", 1, workers)))
    assert T.is_chief(_Strategy(_Resolver("chief", 0, with_chief)))
    assert not T.is_chief(_Strategy(_Resolver("worker", 0, with_chief)))


class _FakeModel:
    def __init__(self, initial_epoch):
        self._initial_epoch = initial_epoch


@pytest.mark.parametrize("values, patience, best, wait, stopped", [
    ([5.0, 4.0, 4.5], 3, 4.0, 1, False),
    ([5.0, 4.0, 4.5, 4.2], 2, 4.0, 2, True),
    ([5.0, 6.0, 3.0], 1, 3.0, 0, False),
])
def test_resume_restores_best_and_patience(tmp_path, values, patience, best, wait, stopped):
    # Epochs after the resumed one (here the last value) are ignored.
    history = {"epoch": list(range(len(values) + 1)), cbs.MONITOR: values + [0.0]}
    cbs.write_json_atomic(tmp_path / "history.json", history)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"),
                                                 monitor=cbs.MONITOR, mode="min",
                                                 save_best_only=True)
    es = cbs.reconstruction_early_stopping(patience, restore_best_weights=False)
    es.on_train_begin()
    resume = cbs.ResumeBestState(tmp_path / "history.json", checkpoint, es)
    model = _FakeModel(len(values))
    resume.set_model(model)
    resume.set_params({"epochs": 10})
    resume.on_train_begin()
    assert checkpoint.best == best and es.best == best and es.wait == wait
    assert es.best_epoch == values.index(best)
    assert resume.stopped_before == stopped
    assert model._initial_epoch == (10 if stopped else len(values))


def test_mixed_precision_keeps_densities_and_losses_float32():
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        for kind in ("asvae", "avb_ac"):
            model = build_model(kind, "mnist", **({} if kind.startswith("avb") else
                                                  dict(posterior_flow_length=2)))
            model.compile()
            x = tf.random.stateless_uniform((4, 28, 28, 1), (1, 2))
            out = model._forward(x, model._seeds(0), training=True)
            tensors = [out["gen_loss"], *out["disc_losses"].values(), *out["metrics"].values()]
            assert all(t.dtype == tf.float32 for t in tensors), kind
            assert all(np.isfinite(t.numpy()).all() for t in tensors), kind
            assert model.decoder.compute_dtype == "bfloat16"
            if model.posterior_flow_params is not None:
                assert model.posterior_flow_params.compute_dtype == "float32"
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = build_model("asvae", "synthetic")
        model.compile()
        # float16 gradients are scaled: both players' optimizers scale their losses.
        for opt in (model.optimizer, model.disc_optimizer):
            assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
        out = model._forward(tf.ones((4, 2, 2, 1)) * 0.5, model._seeds(0), training=True)
        gen, disc = model._reduced_losses(out)
        scale = float(model.optimizer.dynamic_scale)
        assert scale > 1
        np.testing.assert_allclose(float(gen), scale * float(tf.reduce_mean(out["gen_loss"])),
                                   rtol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --------------------------------------------------------------------------------------
# End-to-end on the real MNIST


# Each kind once; some runs also cover a feature: exporting and PNG grids; the command
# line in a fresh process with a mirrored strategy over two logical CPUs (which must be
# configured before TensorFlow starts) and mixed precision (bfloat16 on a CPU).
KIND_FLAGS = {
    "asvae": ["--epochs", "2", "--png"],
    "vae": [],
    "asvae_r": ["--epochs", "2", "--strategy", "mirrored", "--num-devices", "2",
                "--mixed-precision"],
    "asvae_g": ["--epochs", "2", "--lr-schedule", "cosine", "--lr-final-fraction", "0.25",
                "--adam-beta-1", "0.5"],
    "avb": [],
    "avb_ac": [],
}


def _subprocess_env():
    return dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL="2")


@needs_real_files
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_end_to_end(kind, tmp_path, mnist):
    export = kind == "asvae" and _export_available()
    argv = _argv(tmp_path, mnist, "--model", kind, *KIND_FLAGS[kind], export=export)
    run = tmp_path / "run"
    if "--num-devices" in argv:
        proc = subprocess.run([sys.executable, "-m", "trainers.train", *argv], cwd=tmp_path,
                              env=_subprocess_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = None
    else:
        result = T.train(T.parse(argv))
        assert result.status == "trained" and result.run_dir == str(run)
        assert keras.mixed_precision.global_policy().name == "float32"  # restored

    config = json.loads((run / "config.json").read_text())
    assert config["package_version"] == tf_asvae.__version__
    assert config["tensorflow_version"] == tf.__version__
    assert ModelConfig.from_dict(config["model"]).kind == kind
    assert D.DataConfig.from_dict(config["data"]).name == "mnist"
    training = TrainConfig.from_dict(config["training"])
    assert training.max_train_examples == 64
    if training.lr_schedule == "cosine":
        # 2 epochs of 2 steps: the curve ends at the last step, at a quarter of the rate.
        assert int(result.model.optimizer.iterations) == 4
        np.testing.assert_allclose(float(result.model.optimizer.learning_rate),
                                   0.25 * training.learning_rate, rtol=1e-5)
        np.testing.assert_allclose(float(result.model.disc_optimizer.learning_rate),
                                   0.25 * training.learning_rate, rtol=1e-5)
        assert result.model.optimizer.beta_1 == result.model.disc_optimizer.beta_1 == 0.5

    history = json.loads((run / "history.json").read_text())
    epochs = training.epochs
    assert history["epoch"] == list(range(epochs))
    for key in ("loss", "reconstruction", "val_reconstruction"):
        assert len(history[key]) == epochs and all(map(math.isfinite, history[key])), key
    if "val_recon_x" in history:
        # Validation covers whole batches of real digits on any number of replicas (a
        # mean diluted by empty steps would be far lower).
        assert all(v > 300 for v in history["val_recon_x"])
    # The game's diagnostics, on training data (GameDiagnostics) and in validation.
    for name in tf_asvae.model_from_config(config["model"]).diagnostic_names():
        for key in (name, "val_" + name):
            assert len(history[key]) == epochs and all(map(math.isfinite, history[key])), key
    if kind == "asvae":
        # The monitored quantity is the mean of the reconstructions of x and z.
        np.testing.assert_allclose(
            history["val_reconstruction"],
            (np.array(history["val_recon_x"]) + history["val_recon_z"]) / 2, rtol=1e-5)

    assert (run / "best.keras").is_file() and (run / "final.keras").is_file()
    assert not (run / "backup").exists()
    listing = _listing(run)
    assert {"epoch_loss", "epoch_reconstruction"} <= _tags(run / "logs" / "train")
    assert "epoch_reconstruction" in _tags(run / "logs" / "validation")
    assert {"samples", "reconstructions"} <= _tags(run / "logs" / "images")

    if kind == "asvae":
        assert sorted(os.listdir(run / "images")) == [
            f"epoch_{e:04d}_{n}.png" for e in (1, 2) for n in ("reconstructions", "samples")]
        best = keras.saving.load_model(run / "best.keras")
        assert isinstance(best, tf_asvae.ASVAE) and best.model_config == result.model.model_config
        # Restored best weights: the returned (and exported) model is the best one.
        for a, b in zip(best.get_weights(), result.model.get_weights()):
            np.testing.assert_array_equal(a, b)
        if export:
            assert pathlib.Path(result.export_path) == tmp_path / "export" / "1"
            assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
            meta = json.loads((tmp_path / "export" / "1" / "metadata.json").read_text())
            assert meta["run_config"]["training"] == config["training"]

    # Re-running a complete run does nothing.
    again = T.train(T.parse(argv))
    assert again.status == "complete" and again.history == history
    assert _listing(run) == listing


@needs_real_files
def test_early_stopping_fires_on_a_plateau(tmp_path, mnist):
    # No decrease of val_reconstruction by 1e6 nats ever counts as an improvement.
    argv = _argv(tmp_path, mnist, "--model", "vae", "--epochs", "6", "--patience", "1",
                 "--min-delta", "1e6", "--num-images", "0")
    result = T.train(T.parse(argv))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["epoch"] == [0, 1]  # epoch 0 is the best; epoch 1 used the patience
    best = keras.saving.load_model(tmp_path / "run" / "best.keras")
    final = keras.saving.load_model(tmp_path / "run" / "final.keras")
    for a, b in zip(best.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the best (first) epoch's weights restored
    assert any(not np.array_equal(a, b)
               for a, b in zip(final.get_weights(), best.get_weights()))
    assert int(final.optimizer.iterations) == 4


_KILLING_RUN = textwrap.dedent("""
    import os, signal, sys
    import keras
    from trainers import train as T

    class KillAt(keras.callbacks.Callback):
        # After step 5 (epoch 1, batch 1): the last backup is the one after step 4.
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 5:
                os.kill(os.getpid(), signal.SIGKILL)

    T.train(T.parse(sys.argv[1:]), callbacks=[KillAt()])
""")


@needs_real_files
def test_resume_after_interruption(tmp_path, mnist):
    argv = _argv(tmp_path, mnist, "--model", "vae", "--epochs", "3", "--steps-per-epoch", "3",
                 "--backup-freq", "1", "--num-images", "0")
    proc = subprocess.run([sys.executable, "-c", _KILLING_RUN, *argv], cwd=tmp_path,
                          env=_subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = tmp_path / "run"
    backup = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert (backup["epoch"], backup["batch"]) == (1, 0)  # mid-epoch 1
    assert json.loads((run / "history.json").read_text())["epoch"] == [0]
    assert (run / "best.keras").exists() and not (run / "final.keras").exists()

    result = T.train(T.parse(argv))  # the same command again
    assert result.status == "resumed" and result.initial_epoch == 1
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [0, 1, 2]
    assert all(map(math.isfinite, history["val_reconstruction"]))
    # Weights and optimizers came from the backup after step 4; epochs 1 and 2 added
    # 3 steps each (a fresh run would end at 9 steps, an unrestored one at 6).
    assert int(result.model.optimizer.iterations) == 4 + 2 * 3
    assert not (run / "backup").exists() and (run / "final.keras").exists()


@needs_real_files
def test_interrupted_while_exporting_finishes_without_training_again(tmp_path, mnist,
                                                                      monkeypatch):
    argv = _argv(tmp_path, mnist, "--model", "vae", "--num-images", "0", export=True)
    exported = []

    def export(model, export_dir, spec, history):
        exported.append(model.get_weights())
        if len(exported) == 1:
            raise KeyboardInterrupt  # stands for a kill while the SavedModel is written
        return os.path.join(export_dir, "1")

    monkeypatch.setattr(T, "_check_export_available", lambda: None)
    monkeypatch.setattr(T, "_export", export)
    with pytest.raises(KeyboardInterrupt):
        T.train(T.parse(argv))
    run = tmp_path / "run"
    assert (run / "backup" / T.FIT_DONE_FILE).exists() and (run / "final.keras").exists()

    fits = []
    monkeypatch.setattr(tf_asvae.BaseModel, "fit", lambda *a, **k: fits.append(1))
    result = T.train(T.parse(argv))
    assert result.status == "resumed" and fits == [] and len(exported) == 2
    assert result.export_path == str(tmp_path / "export" / "1")
    assert not (run / "backup").exists()
    for a, b in zip(exported[0], exported[1]):  # the same (best) weights exported
        np.testing.assert_array_equal(a, b)
