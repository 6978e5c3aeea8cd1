"""Distributed and fault-tolerant training (issue 6), on CPU.

* SeededDropout: masks from an explicit seed (rate, scaling, groups, fallback).
* Two deterministic runs in one process are bit-identical.
* A run killed with SIGKILL right after its epoch-0 backup and re-run ends with exactly
  the weights of the uninterrupted run (the backup holds weights and both optimizers;
  the noise is a function of the step; the data stream skips the batches already read).
* A diverging run stops with NonFiniteLossError, keeps its last good checkpoint and
  backup, and writes nothing from the broken weights.
* Two MultiWorkerMirroredStrategy workers on localhost (subprocesses with their own
  TF_CONFIG) train in lockstep: identical weights; only the chief writes.

(MirroredStrategy against one device, per model kind: test_distributed_step.py.)
"""

from __future__ import annotations

import json
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

from tf_asvae import callbacks as cbs
from tf_asvae.networks.blocks import SeededDropout
from trainers import train as T

from conftest import REPO, SHARED_DATA, needs_real_files


@pytest.fixture
def mnist(prepared):
    config = prepared("mnist")
    return ["--data-dir", config.data_dir, "--manual-dir", str(SHARED_DATA)]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL="2")


def _argv(run_dir, data_flags, *extra):
    # AS-VAE with both critics (dropout 0.2), batch norm, a 2-layer planar flow: every
    # source of randomness and state is exercised.  6 steps over 64 examples in
    # batches of 16 cross a reshuffled pass.
    return ["--dataset", "mnist", "--model", "asvae", "--latent-dim", "8",
            "--flow-length", "2", "--batch-size", "16", "--max-train-examples", "64",
            "--steps-per-epoch", "2", "--epochs", "3", "--validation-steps", "1",
            "--patience", "5", "--num-images", "0", "--verbose", "0", "--no-export",
            "--seed", "5", "--run-dir", str(run_dir), *data_flags, *map(str, extra)]


def _final_weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, T.FINAL_FILE)).get_weights()


def _assert_identical(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------------------
# Seeded dropout


def test_seeded_dropout_masks_come_from_the_seed():
    layer = SeededDropout(0.25)
    x = tf.ones((4000, 8))
    seed = tf.constant([1, 2], tf.int64)
    a = layer(x, training=True, seed=seed).numpy()
    b = layer(x, training=True, seed=seed).numpy()
    c = layer(x, training=True, seed=tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)  # a function of the seed
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert abs(np.mean(a == 0) - 0.25) < 0.01  # 32,000 units: s.e. 0.0024
    np.testing.assert_array_equal(layer(x, training=False, seed=seed), x)
    # groups=2: rows [B; B] take the masks of two stacked global batches.
    two = layer(tf.ones((6, 8)), training=True, seed=seed, groups=2).numpy()
    u = tf.random.stateless_uniform((2, 3, 8), seed, minval=1e-6, maxval=1 - 1e-6).numpy()
    np.testing.assert_array_equal(two > 0, u.reshape(6, 8) >= 0.25)
    # Without a seed: Keras' stateful RNG (a layer used on its own).
    assert np.mean(layer(x, training=True).numpy() == 0) == pytest.approx(0.25, abs=0.01)
    clone = SeededDropout.from_config(layer.get_config())
    assert clone.rate == 0.25
    with pytest.raises(ValueError, match="rate must be in"):
        SeededDropout(1.0)


# --------------------------------------------------------------------------------------
# Determinism and exact resume

_KILL_AFTER_BACKUP = textwrap.dedent("""
    import os, signal, sys
    import keras
    from trainers import train as T

    class KillAt(keras.callbacks.Callback):
        # Step 3 is the first of epoch 1: the last backup is the one after epoch 0.
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    T.train(T.parse(sys.argv[1:]), callbacks=[KillAt()])
""")


@needs_real_files
def test_deterministic_runs_and_an_interrupted_run_end_identical(tmp_path, mnist):
    first = T.train(T.parse(_argv(tmp_path / "a", mnist, "--deterministic")))
    second = T.train(T.parse(_argv(tmp_path / "b", mnist, "--deterministic")))
    assert first.status == second.status == "trained"
    assert int(first.model.optimizer.iterations) == 6
    reference = _final_weights(tmp_path / "a")
    _assert_identical(reference, _final_weights(tmp_path / "b"))
    assert not T._op_determinism()  # restored for the rest of this process

    # Killed in another process right after the epoch-0 backup, resumed here.
    argv = _argv(tmp_path / "c", mnist, "--deterministic")
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_BACKUP, *argv], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    backup = json.loads((tmp_path / "c" / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 1
    resumed = T.train(T.parse(argv))
    assert resumed.status == "resumed" and resumed.initial_epoch == 1
    assert int(resumed.model.optimizer.iterations) == 6
    _assert_identical(reference, _final_weights(tmp_path / "c"))
    history = json.loads((tmp_path / "c" / "history.json").read_text())
    assert history["epoch"] == [0, 1, 2]
    reference_history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert history["val_reconstruction"] == reference_history["val_reconstruction"]


def test_resumed_data_stream_skips_what_was_read():
    from tf_asvae import data as D

    config = D.DataConfig(name="four_points", batch_size=4, seed=3)
    full = [b.numpy() for b in D.load_split(config, "train", training=True,
                                            repeat=True).take(7)]
    rest = [b.numpy() for b in D.load_split(config, "train", training=True, repeat=True,
                                            skip_batches=4).take(3)]
    _assert_identical(full[4:], rest)
    with pytest.raises(ValueError, match="skip_batches"):
        D.load_split(config, "validation", training=False, skip_batches=2)


# --------------------------------------------------------------------------------------
# Divergence


class _PoisonAt(keras.callbacks.Callback):
    """Writes NaN into the first decoder kernel after optimizer step ``step``."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            kernel = self.model.decoder.trainable_weights[0]
            kernel.assign(tf.fill(kernel.shape, np.nan))


@needs_real_files
@pytest.mark.parametrize("backup_freq, what", [("epoch", "non-finite values"),
                                                (1, "Non-finite weights before the backup (epoch 1, batch 0)")])
def test_divergence_stops_and_keeps_the_last_good_state(tmp_path, mnist, backup_freq, what):
    run = tmp_path / "run"
    argv = _argv(run, mnist, "--model", "vae", "--backup-freq", backup_freq)
    with pytest.raises(cbs.NonFiniteLossError) as info:
        T.train(T.parse(argv), callbacks=[_PoisonAt(3)])
    message = str(info.value)
    assert what in message and str(run) in message and "best.keras" in message
    assert "epoch 1" in message
    assert not (run / T.FINAL_FILE).exists()
    assert json.loads((run / "history.json").read_text())["epoch"] == [0]
    model = keras.saving.load_model(run / T.BEST_FILE)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    model.load_weights(cbs.backup_weights_path(run / "backup"))
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    # Re-running resumes from the last good backup (and without the poison finishes).
    resumed = T.train(T.parse(argv))
    assert resumed.status == "resumed" and (run / T.FINAL_FILE).exists()


def test_the_cli_exits_3_on_divergence(monkeypatch, capsys):
    def diverge(spec):
        raise cbs.NonFiniteLossError("Training diverged: non-finite values {'loss': nan}")

    monkeypatch.setattr(T, "train", diverge)
    with pytest.raises(SystemExit) as info:
        T.main(["--no-export"])
    assert info.value.code == 3
    assert "training diverged" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Multi-worker


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@needs_real_files
def test_two_workers_on_localhost_train_in_lockstep(tmp_path, mnist):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    run = tmp_path / "run"
    argv = _argv(run, mnist, "--epochs", "2", "--no-restore-best-weights",
                 "--export-dir", tmp_path / "export")
    argv.remove("--no-export")
    procs = []
    for index in range(2):
        tmp = tmp_path / f"tmp{index}"  # where a non-chief writes (and must clean up)
        tmp.mkdir()
        env = dict(_env(), TMPDIR=str(tmp), TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tests", "scripts", "multiworker_run.py"),
             str(tmp_path / f"worker{index}.npz"), *argv],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=600))
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-4000:]
    results = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    infos = [json.loads(str(r["info"])) for r in results]
    assert [i["replicas"] for i in infos] == [2, 2]
    assert [i["steps"] for i in infos] == [4, 4]
    weights = [[r[f"w{k}"] for k in range(len(r.files) - 1)] for r in results]
    _assert_identical(weights[0], weights[1])
    # Only the chief (worker 0) wrote the run directory and the export.
    assert infos[0]["export_path"] == str(tmp_path / "export" / "1")
    assert infos[1]["export_path"] is None
    assert sorted(os.listdir(tmp_path / "export")) == ["1"]
    assert not [p for p in os.listdir(tmp_path / "tmp1") if p.startswith("asvae-worker-")]
    assert (run / T.FINAL_FILE).exists() and not (run / "backup").exists()
    assert json.loads((run / "history.json").read_text())["epoch"] == [0, 1]
    _assert_identical(weights[0], _final_weights(run))
