"""Keras callbacks of the training program: image grids, history, early stopping,
resumable best-model tracking and chief-aware backups.

``trainers/train.py`` puts them together; each also works on its own with
``model.fit(..., callbacks=[...])`` for any :class:`tf_asvae.models.BaseModel`.

* :class:`ImageGrid` writes ``tf.summary.image`` grids of ``model.sample(n, seed)``
  and of ``model.reconstruct(x_val)`` (originals and reconstructions in alternating
  rows) after every epoch, and optionally PNG files.
* :func:`reconstruction_early_stopping` is ``keras.callbacks.EarlyStopping`` on
  ``val_reconstruction``: the mean of the validation reconstruction losses of x and z
  (AS-VAE Sec. 5: "early stopping is employed based on the average reconstruction loss
  of x and z on validation sets").
* :class:`HistoryWriter` keeps ``history.json`` up to date after every epoch, across
  an interruption and resume.
* :class:`ResumeBestState` gives ``ModelCheckpoint(save_best_only=True)`` and
  ``EarlyStopping`` the best value, patience count and best weights of the epochs run
  before an interruption (``BackupAndRestore`` restores weights and the epoch only).
* :class:`RunBackup` is ``BackupAndRestore`` that restores before and saves after every
  other callback, and can read a shared backup directory while writing its own (only
  the chief of a multi-worker cluster writes the run directory).
* :class:`SaveModel` saves the last model at the end of training.
* :class:`TerminateOnNonFinite` is ``keras.callbacks.TerminateOnNaN`` for the
  adversarial game's known instability: at the first NaN or infinite logged value it
  raises :class:`NonFiniteLossError` (naming the epoch, step and values) from inside
  ``fit``, before any later callback can write a checkpoint, history entry or backup
  from the broken weights.  The backup saver of :class:`RunBackup` and
  :class:`SaveModel` also refuse to save non-finite weights.  What is on disk is
  therefore the last good state.
"""

from __future__ import annotations

import json
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from tf_asvae import io as tio

__all__ = ["MONITOR", "HistoryWriter", "ImageGrid", "NonFiniteLossError", "ResumeBestState",
           "RunBackup", "SaveModel", "TerminateOnNonFinite", "backup_epoch", "image_grid",
           "read_history", "reconstruction_early_stopping", "write_json_atomic"]

#: The quantity watched by early stopping and by the best checkpoint.
MONITOR = "val_reconstruction"


def write_json_atomic(path, data) -> None:
    """Writes ``data`` as JSON to ``path`` through a temporary file and a rename, so a
    reader (or an interruption) never sees a half-written file
    (:func:`tf_asvae.io.write_json_atomic`)."""
    tio.write_json_atomic(path, data)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss, metric or weight."""


def _non_finite(logs) -> dict:
    bad = {}
    for name, value in (logs or {}).items():
        try:
            v = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if v.size and not np.all(np.isfinite(v)):
            bad[name] = float(v.reshape(-1)[0]) if v.size == 1 else "non-finite entries"
    return bad


def check_finite_weights(model, when: str) -> None:
    """Raises :class:`NonFiniteLossError` if any weight of ``model`` is NaN or infinite
    (``when`` says what was about to happen, e.g. "before the backup")."""
    bad = [w.path for w in model.weights if not np.all(np.isfinite(w.numpy()))]
    if bad:
        raise NonFiniteLossError(
            f"Non-finite weights {when} at optimizer step "
            f"{int(model.optimizer.iterations.numpy())}: {bad[:5]}{' ...' if len(bad) > 5 else ''}. "
            "Nothing was saved from them.")


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Raises :class:`NonFiniteLossError` at the first NaN or infinite value among the
    logs of a training batch or of an epoch (training and validation).

    Put it *before* every callback that writes (checkpoints, history, backups): the
    exception leaves ``fit`` at once, so none of them sees the broken epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _fail(self, where, bad):
        raise NonFiniteLossError(
            f"Training diverged: non-finite values {bad} {where} (epoch {self.epoch}, "
            f"optimizer step {int(self.model.optimizer.iterations.numpy())}).")

    def on_train_batch_end(self, batch, logs=None):
        bad = _non_finite(logs)
        if bad:
            self._fail(f"after training batch {batch}", bad)

    def on_epoch_end(self, epoch, logs=None):
        bad = _non_finite(logs)
        if bad:
            self._fail("at the end of the epoch", bad)


#: Files of a :class:`RunBackup` directory: the metadata names the newest weights file
#: and the one before it (``"previous"``), each written whole before the metadata.
BACKUP_METADATA = "training_metadata.json"


class BackupDamagedError(ValueError):
    """A backup directory exists but none of its weights files can be loaded."""


def _backup_weights_name(generation: int) -> str:
    return f"weights-{generation:06d}.weights.h5"


def _read_backup_metadata(backup_dir):
    path = os.path.join(os.fspath(backup_dir), BACKUP_METADATA)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            meta = json.load(f)
        int(meta["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BackupDamagedError(
            f"The backup metadata {path!r} is damaged ({type(e).__name__}: {e}). Delete "
            f"{os.path.dirname(path)!r} to restart the run from its first epoch.") from None
    return meta


def restorable_backup(backup_dir):
    """The newest backup in ``backup_dir`` whose weights load: ``{"epoch", "batch",
    "weights" (path), "notes" (why newer ones were skipped)}``, or None without a
    backup.  Raises :class:`BackupDamagedError` naming every file when none loads."""
    backup_dir = os.fspath(backup_dir)
    meta = _read_backup_metadata(backup_dir)
    if meta is None:
        return None
    if "weights" in meta:
        candidates = [meta] + ([meta["previous"]] if meta.get("previous") else [])
    else:  # written by Keras' own BackupAndRestore
        candidates = [dict(meta, weights="latest.weights.h5")]
    notes = []
    for entry in candidates:
        path = os.path.join(backup_dir, entry["weights"])
        problem = tio.weights_file_problem(path)
        if problem is None:
            return {"epoch": int(entry["epoch"]), "batch": int(entry.get("batch", 0)),
                    "weights": path, "notes": notes}
        notes.append(f"{path} (the backup after epoch {int(entry['epoch']) - 1}) cannot be "
                     f"loaded: {problem}")
    raise BackupDamagedError(
        "No backup in " + repr(backup_dir) + " can be loaded: " + "; ".join(notes)
        + f". Delete {backup_dir!r} to restart the run from its first epoch.")


def backup_weights_path(backup_dir) -> str | None:
    """The weights file a :class:`RunBackup` in ``backup_dir`` restores (None without a
    backup)."""
    state = restorable_backup(backup_dir)
    return None if state is None else state["weights"]


def backup_epoch(backup_dir) -> int:
    """The epoch a :class:`RunBackup` in ``backup_dir`` resumes at (0 without one).
    Training restarts that epoch from its first batch.  A backup whose newest weights
    are damaged resumes from the one before (see :func:`restorable_backup`)."""
    state = restorable_backup(backup_dir)
    return 0 if state is None else state["epoch"]


def _initial_epoch(model) -> int:
    # BackupAndRestore.on_train_begin sets this private attribute, which fit() reads.
    return int(getattr(model, "_initial_epoch", None) or 0)


# --------------------------------------------------------------------------------------
# Image grids


def image_grid(images, columns: int | None = None) -> np.ndarray:
    """Tiles ``[N, H, W, C]`` images into one ``[rows * H, columns * W, C]`` image.

    ``columns`` defaults to ``ceil(sqrt(N))``; missing cells are black. Values are
    clipped to ``[0, 1]``.
    """
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [N, H, W, C] with N >= 1. "
                         f"Received: shape={images.shape}.")
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    if not isinstance(columns, int) or columns <= 0:
        raise ValueError(f"columns must be a positive integer. Received: columns={columns!r}.")
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, h, w, c), np.float32)
    padded[:n] = images
    grid = padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * h, columns * w, c)


class ImageGrid(keras.callbacks.Callback):
    """After each epoch, grids of samples and reconstructions to TensorBoard (and PNG).

    Args:
      images: validation images ``[N, H, W, C]`` in ``[0, 1]`` to reconstruct (the
        first ``num_images`` are used; the same ones every epoch).
      log_dir: TensorBoard directory of the image summaries (``None``: no summaries).
      num_images: images per grid.
      seed: seed of ``model.sample`` and ``model.reconstruct`` (fixed, so grids of
        successive epochs show the same codes).
      png_dir: if given, also writes ``epoch_0001_samples.png`` and
        ``epoch_0001_reconstructions.png`` there.
    """

    def __init__(self, images, log_dir=None, num_images=64, seed=0, png_dir=None):
        super().__init__()
        if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer. "
                             f"Received: num_images={num_images!r}.")
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError(f"images must have shape [N, H, W, C]. "
                             f"Received: shape={images.shape}.")
        self.images = images[:num_images]
        self.num_images = num_images
        self.seed = int(seed)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.png_dir = None if png_dir is None else os.fspath(png_dir)
        self._writer = None

    def grids(self):
        """``{"samples": [H', W', C], "reconstructions": [H', W', C]}`` float32 arrays."""
        samples = np.asarray(self.model.sample(self.num_images, seed=self.seed))
        out = {"samples": image_grid(samples)}
        if len(self.images):
            recon = np.asarray(self.model.reconstruct(self.images, seed=self.seed))
            # Alternating rows: originals, then their reconstructions.
            columns = int(math.ceil(math.sqrt(len(self.images))))
            rows = []
            for start in range(0, len(self.images), columns):
                for block in (self.images, recon):
                    row = np.zeros((columns,) + block.shape[1:], np.float32)
                    part = block[start:start + columns]
                    row[:len(part)] = part
                    rows.append(row)
            out["reconstructions"] = image_grid(np.concatenate(rows), columns)
        return out

    def on_epoch_end(self, epoch, logs=None):
        grids = self.grids()
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                for name, grid in grids.items():
                    tf.summary.image(name, grid[None], step=epoch, max_outputs=1)
            self._writer.flush()
        if self.png_dir is not None:
            os.makedirs(self.png_dir, exist_ok=True)
            for name, grid in grids.items():
                png = tf.io.encode_png(tf.cast(tf.round(grid * 255.0), tf.uint8))
                tio.write_bytes_atomic(
                    os.path.join(self.png_dir, f"epoch_{epoch + 1:04d}_{name}.png"),
                    png.numpy())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# --------------------------------------------------------------------------------------
# Early stopping, history and resuming


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Before each validation (and at the end of an epoch without one), replaces the
    batch norm layers' moving statistics by those of ``images`` at the current weights
    (``BaseModel.recalibrate_batch_norm``), so that inference mode (validation, early
    stopping, checkpoints, export) normalises as training did.  Place it first."""

    def __init__(self, images, seed=0):
        super().__init__()
        self.images = np.asarray(images, dtype="float32")
        if self.images.ndim != 4 or not len(self.images):
            raise ValueError("RecalibrateBatchNorm needs a non-empty batch of images "
                             f"[N, H, W, C]. Received: shape={self.images.shape}.")
        self.seed = seed
        self._done = False

    def _recalibrate(self):
        if not self._done:
            self.model.recalibrate_batch_norm(self.images, seed=self.seed)
            self._done = True

    def on_epoch_begin(self, epoch, logs=None):
        self._done = False

    def on_test_begin(self, logs=None):
        self._recalibrate()

    def on_epoch_end(self, epoch, logs=None):
        self._recalibrate()


class GameDiagnostics(keras.callbacks.Callback):
    """At each epoch's end, the model's health diagnostics on a fixed sample of training
    images (``BaseModel.diagnose``: inference mode, end-of-epoch weights) are added to
    the epoch's logs, so that ``history.json`` and TensorBoard hold them beside their
    ``val_`` counterparts from the validation steps.  Place it before the callbacks that
    write the logs.  Names already logged by the training steps (the running means of
    ``kl_exact``, ``posterior_scale``, ...) are left as the steps logged them."""

    def __init__(self, images, seed=0):
        super().__init__()
        self.images = np.asarray(images, dtype="float32")
        if self.images.ndim != 4 or not len(self.images):
            raise ValueError("GameDiagnostics needs a non-empty batch of images [N, H, W, C]. "
                             f"Received: shape={self.images.shape}.")
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        names = set(self.model.diagnostic_names())
        values = self.model.diagnose(self.images, seed=self.seed)
        for name, value in values.items():
            if name in names and name not in logs:
                logs[name] = value


def reconstruction_early_stopping(patience=3, min_delta=0.0, restore_best_weights=True,
                                  verbose=0):
    """``EarlyStopping`` on ``val_reconstruction`` (lower is better)."""
    return keras.callbacks.EarlyStopping(monitor=MONITOR, mode="min", patience=patience,
                                         min_delta=min_delta,
                                         restore_best_weights=restore_best_weights,
                                         verbose=verbose)


def read_history(path) -> dict:
    """``history.json`` as ``{"epoch": [...], metric: [...]}`` (empty if absent).
    Raises ValueError naming the file if it is not a history."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            history = json.load(f)
        if not isinstance(history, dict) or not isinstance(history.get("epoch", []), list):
            raise ValueError(f"expected a JSON object with an 'epoch' list, got "
                             f"{type(history).__name__}")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(
            f"The history file {os.fspath(path)!r} is damaged ({type(e).__name__}: {e}). "
            "It is written atomically by this package, so something else changed it; "
            "restore it or choose another --run-dir.") from None
    return history


class HistoryWriter(keras.callbacks.Callback):
    """Writes ``{"epoch": [0, 1, ...], "loss": [...], "val_loss": [...], ...}`` to
    ``path`` after every epoch.

    On a resumed run (``BackupAndRestore`` earlier in the callback list) the epochs
    already in the file before the resumed one are kept, so the file always covers
    the whole run.
    """

    def __init__(self, path, read_path=None):
        super().__init__()
        self.path = os.fspath(path)
        self.read_path = os.fspath(read_path) if read_path is not None else self.path
        self.history = {}

    def on_train_begin(self, logs=None):
        start = _initial_epoch(self.model)
        old = read_history(self.read_path)
        keep = sum(1 for e in old.get("epoch", []) if e < start)
        self.history = {k: list(v[:keep]) for k, v in old.items()} if start else {}

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        n = len(self.history.get("epoch", []))
        self.history.setdefault("epoch", []).append(int(epoch))
        for key, value in logs.items():
            # A metric that appears late is padded with None for the earlier epochs.
            self.history.setdefault(key, [None] * n).append(float(value))
        write_json_atomic(self.path, self.history)


class ResumeBestState(keras.callbacks.Callback):
    """Restores best-model tracking after ``BackupAndRestore`` resumed a run.

    Place it after ``BackupAndRestore``, ``ModelCheckpoint`` and ``EarlyStopping`` in
    the callback list (their ``on_train_begin`` runs first).  From the history of the
    epochs before the resumed one it sets ``checkpoint.best`` and the early stopping's
    ``best``, ``best_epoch`` and ``wait``; with ``restore_best_weights`` the best
    weights are read back from ``best_path`` (the best checkpoint).
    """

    def __init__(self, history_path, checkpoint=None, early_stopping=None, best_path=None,
                 monitor=MONITOR, repair=True):
        super().__init__()
        # Whether a damaged best checkpoint may be moved aside (only by the process that
        # writes the run directory: not by a non-chief worker reading the chief's).
        self.repair = repair
        self.history_path = os.fspath(history_path)
        self.checkpoint = checkpoint
        self.early_stopping = early_stopping
        self.best_path = None if best_path is None else os.fspath(best_path)
        self.monitor = monitor
        self.resumed_from = 0
        self.stopped_before = False
        self.damaged_best = None

    def on_train_begin(self, logs=None):
        start = self.resumed_from = _initial_epoch(self.model)
        if not start:
            return
        history = read_history(self.history_path)
        pairs = [(e, v) for e, v in zip(history.get("epoch", []),
                                        history.get(self.monitor, []))
                 if e < start and v is not None]
        if not pairs:
            return
        # Replay the monitors' bookkeeping over the earlier epochs (mode "min": an
        # improvement is lower than the best by more than |min_delta|).
        es, cp = self.early_stopping, self.checkpoint
        monitor = es if es is not None else cp
        delta = abs(monitor.min_delta) if monitor is not None else 0.0
        best, best_epoch, wait, stopped = None, 0, 0, False
        for epoch, value in pairs:
            wait += 1
            if best is None or value + delta < best:
                best, best_epoch, wait, stopped = value, epoch, 0, False
            elif es is not None:
                stopped = wait >= es.patience and epoch > 0
        if cp is not None:
            cp.best = best
        if es is None:
            return
        es.best, es.best_epoch, es.wait = best, best_epoch, wait
        if self.best_path and os.path.exists(self.best_path):
            problem = tio.keras_file_problem(self.best_path)
            if problem is not None:
                self._restart_best(problem, cp, es)
                return
        if es.restore_best_weights and self.best_path and os.path.exists(self.best_path):
            best_model = keras.saving.load_model(self.best_path, compile=False)
            es.best_weights = best_model.get_weights()
            del best_model
        if stopped:
            # Early stopping had fired before the interruption: train no further epoch
            # (fit() reads the initial epoch after on_train_begin).
            self.stopped_before = True
            self.model._initial_epoch = self.params["epochs"]


    def _restart_best(self, problem, checkpoint, early_stopping):
        """A damaged best checkpoint: moved aside, and best-model tracking restarts at
        the resumed epoch (whose end writes a new one)."""
        aside = self.best_path + ".damaged"
        if self.repair:
            os.replace(self.best_path, aside)
            self.damaged_best = aside
        print(f"Warning: the best checkpoint {self.best_path!r} cannot be loaded: {problem}. "
              + (f"Moved it to {aside!r}; " if self.repair else "")
              + f"the best checkpoint restarts from epoch {self.resumed_from} (the backup "
              "holds the weights to resume from).", file=sys.stderr)
        if checkpoint is not None:
            checkpoint.best = None
        if early_stopping is not None:
            early_stopping.best = None
            early_stopping.best_epoch = 0
            early_stopping.wait = 0
            early_stopping.best_weights = None


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint(save_best_only=True)`` whose file is written through a
    temporary name and a rename: a kill while the new best model is saved leaves the
    previous best checkpoint whole."""

    def __init__(self, filepath, monitor=MONITOR, mode="min", min_delta=0.0, verbose=0):
        super().__init__(filepath, monitor=monitor, mode=mode, save_best_only=True,
                         verbose=verbose)
        self.min_delta = abs(min_delta)

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            tio.save_model_atomic(self.model, filepath)


class RunBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose restoring and saving halves sit at the two ends of
    the callback list, and whose backups survive a kill at any moment.

    Put this callback *first* (its ``on_train_begin`` restores the weights, both
    optimizers and the epoch before any other callback looks at them) and
    ``self.saver`` *last* (a backup is written only after every other callback has
    finished the epoch or step, so the history and the best checkpoint on disk are
    never behind the backup).  The backup is kept at the end of training
    (``delete_checkpoint=False``): the training program deletes it once the run's
    outputs are complete.

    Each backup writes a new weights file ``weights-<n>.weights.h5`` (through a
    temporary name), then ``training_metadata.json`` naming it and the backup before it
    (also atomically: this rename is the commit), then removes older weights files.  A
    kill at any point leaves the last committed backup loadable; a restore that finds
    the newest weights damaged (a disk error, a copy cut short) says so and resumes
    from the one before.

    Args:
      backup_dir: where backups are written.
      save_freq: ``"epoch"`` or a number of training steps.
      restore_dir: where backups are read from (default ``backup_dir``); a non-chief
        worker of a multi-worker cluster reads the chief's backup and writes its own.
    """

    def __init__(self, backup_dir, save_freq="epoch", restore_dir=None):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.restore_dir = os.fspath(restore_dir) if restore_dir is not None else None
        self.saver = _BackupSaver(self)
        self.restored = None

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        if not self.model.built:
            raise ValueError("RunBackup needs a built model before fit(). "
                             f"Received: an unbuilt {type(self.model).__name__}.")
        state = restorable_backup(self.restore_dir or self.backup_dir)
        self.restored = state
        if state is None:
            return
        for note in state["notes"]:
            print(f"Warning: {note}; resuming from {state['weights']} (epoch "
                  f"{state['epoch']}).", file=sys.stderr)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(state["weights"])
        self.model._initial_epoch = self._current_epoch = state["epoch"]

    def _save_model(self):
        folder = self.backup_dir
        os.makedirs(folder, exist_ok=True)
        try:
            meta = _read_backup_metadata(folder) or {}
        except BackupDamagedError:
            meta = {}
        generation = int(meta.get("generation", 0)) + 1
        name = _backup_weights_name(generation)
        tio.save_weights_atomic(self.model, os.path.join(folder, name))
        previous = None
        if "weights" in meta and os.path.exists(os.path.join(folder, meta["weights"])):
            previous = {k: meta[k] for k in ("epoch", "batch", "generation", "weights")
                        if k in meta}
        tio.write_json_atomic(os.path.join(folder, BACKUP_METADATA), {
            "epoch": self._current_epoch, "batch": self._last_batch_seen,
            "generation": generation, "weights": name, "previous": previous})
        keep = {name, previous["weights"] if previous else None}
        for old in os.listdir(folder):
            if old.endswith(".weights.h5") and old not in keep \
                    and not old.startswith(tio.TMP_PREFIX):
                try:
                    os.remove(os.path.join(folder, old))
                except OSError:
                    pass

    # Saving happens in ``self.saver``.
    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class _BackupSaver(keras.callbacks.Callback):
    """The saving half of a :class:`RunBackup` (see there)."""

    def __init__(self, backup):
        super().__init__()
        self.backup = backup
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.backup.save_freq == "epoch":
            check_finite_weights(self.model, f"before the backup of epoch {epoch}")
        keras.callbacks.BackupAndRestore.on_epoch_end(self.backup, epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self.backup._should_save_on_batch(batch):
            check_finite_weights(self.model, f"before the backup (epoch {self.epoch}, "
                                             f"batch {batch})")
            # _should_save_on_batch advanced the step counter; save as the base would.
            self.backup._save_model()


class SaveModel(keras.callbacks.Callback):
    """Saves the whole model to ``path`` (``.keras``) at the end of training, through a
    temporary file and a rename.  Placed before ``EarlyStopping`` in the callback
    list it saves the weights of the last epoch, before the best ones are restored."""

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)

    def on_train_end(self, logs=None):
        check_finite_weights(self.model, f"before saving {self.path}")
        tio.save_model_atomic(self.model, self.path)
