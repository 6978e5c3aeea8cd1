"""The training program: ``python -m trainers.train`` (console script ``asvae-train``).

With no arguments beyond the data location it trains AS-VAE on MNIST (the paper's
architecture, a CPU-affordable budget) and exports a SavedModel::

    python -m trainers.train --manual-dir ../shared/data/mnist

A run directory ``RUN`` (``--run-dir``, default ``runs/<run-name>``) holds:

* ``config.json``: ``{"model": ModelConfig.to_dict(), "data": DataConfig.to_dict(),
  "training": TrainConfig.to_dict(), "seed": S, "package_version": ...,
  "tensorflow_version": ...}``: everything needed to rebuild the model
  (``tf_asvae.model_from_config(config["model"], seed=config["seed"])``);
* ``history.json``: ``{"epoch": [...], "loss": [...], "val_reconstruction": [...], ...}``
  over the whole run (kept across resumes);
* ``best.keras``: the whole model at the epoch with the lowest ``val_reconstruction``
  (``keras.callbacks.ModelCheckpoint(save_best_only=True)``; load it with
  ``keras.saving.load_model`` after ``import tf_asvae``);
* ``final.keras``: the model after the last epoch trained;
* ``logs/``: TensorBoard (``train/`` and ``validation/`` scalars per epoch, ``images/``
  grids of samples and reconstructions per epoch); ``images/`` PNG grids with ``--png``;
* ``backup/``: ``BackupAndRestore`` state while the run is incomplete. Re-running the
  same command after an interruption resumes from it; it is deleted when the run is
  complete (re-running a complete run does nothing).

At the end the model (best weights unless ``--no-restore-best-weights``) is exported as a
SavedModel to ``EXPORT/<version>/`` (``--export-dir``, default
``saved_models/<run-name>/``; integer versions as TF Serving expects).

Every argument is validated before any work: a bad value (unknown model, data set or
strategy, non-positive sizes, a run directory holding a different configuration) exits
with status 2 and a message naming it, and nothing is written.  From Python,
:func:`parse` raises ``ValueError`` and :func:`train` runs a :class:`RunSpec`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import tf_asvae
from tf_asvae import callbacks as cbs
from tf_asvae import data as D
from tf_asvae import io as tio
from trainers import _cli
from tf_asvae.config import (DEFAULT_GRADIENT_PENALTY, LR_SCHEDULES, MIXED_PRECISION,
                             MODEL_KINDS, STABILIZERS,
                             STRATEGIES, ModelConfig, parse_network_overrides,
                             parse_objective_overrides,
                             TrainConfig)
from tf_asvae import runfile
from tf_asvae.presets import PRESET_NAMES, PRESETS, preset_config

__all__ = ["DATASET_PRESETS", "DEFAULT_FLOW_LENGTH", "RunSpec", "TrainResult",
           "build_parser", "check_run_dir", "main", "parse", "spec_from_args", "train"]

#: Length of the planar flow on q(z|x) for presets that have one: the paper's 80.  The
#: flow is one stacked bijector, so its graph (and compile time, ~20 s on 2 CPU cores)
#: does not grow with the length.
DEFAULT_FLOW_LENGTH = 80
PAPER_FLOW_LENGTH = 80

#: The architecture preset used for each data set unless ``--preset`` is given.
DATASET_PRESETS = {
    "mnist": "mnist",
    "binarized_mnist": "binarized_mnist",
    "fashion_mnist": "fashion_mnist",
    "cifar10": "cifar10",
    "imagenet64": "imagenet64",
    "four_points": "synthetic",
}

#: The most images in one logged grid (``--num-images``).
MAX_GRID_IMAGES = 1024

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
BEST_FILE = "best.keras"
FINAL_FILE = "final.keras"
LOG_DIR = "logs"
BACKUP_DIR = "backup"
IMAGE_DIR = "images"
# Written into backup/ once fit() has returned: a re-run then only finishes the outputs.
FIT_DONE_FILE = "fit_done.json"

# Keys of config.json that may differ between the runs of one run directory: versions
# and where the data lives (moving the data does not change the experiment).
_LOCATION_KEYS = {"data": ("data_dir", "manual_dir", "cache")}
_VERSION_KEYS = ("package_version", "tensorflow_version")
# TrainConfig fields added after run directories were first written: a directory without
# them ran with their defaults (so it still resumes).
_ADDED_TRAINING_KEYS = ("lr_schedule", "lr_final_fraction", "adam_beta_1")
# Objective fields added after run directories existed, with the behaviour of the code
# before them (eq. 11 as published), so that those directories still resume.
_ADDED_OBJECTIVE_KEYS = {"generative_weight": 1.0, "recon_z_to_decoder": True}


# --------------------------------------------------------------------------------------
# Arguments


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A validated training job: the three configs, the seed and where outputs go."""

    model: ModelConfig
    data: D.DataConfig
    training: TrainConfig
    seed: int
    run_name: str
    run_dir: str
    export_dir: str | None  # None: no export (--no-export)
    verbose: int = 1
    # Seconds a multi-worker job waits for every task of TF_CONFIG (--cluster-timeout).
    cluster_timeout: float = 600.0

    def config_dict(self) -> dict:
        """The content of ``RUN/config.json``."""
        return {
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "training": self.training.to_dict(),
            "seed": self.seed,
            "package_version": tf_asvae.__version__,
            "tensorflow_version": tf.__version__,
        }


def _steps(text: str) -> int | None:
    if text.strip().lower() in ("all", "full", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all'. Received: {text!r}") from None


def _backup_freq(text: str) -> int | str:
    if text.strip().lower() == "epoch":
        return "epoch"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'epoch' or a positive number of steps. Received: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="asvae-train",
        epilog=("Run files: --config run.yaml (or .json) holds any of these options by "
                "their long names (batch-size: 32); flags on the command line override "
                "it. A run directory's config.json is a run file that relaunches (or "
                "resumes) that run."),
        description=(
            "Train AS-VAE, AVB or a VAE with fit(): progress bar, TensorBoard logs and "
            "image grids, best checkpoint and early stopping on the validation "
            "reconstruction of x and z, resume after an interruption, SavedModel export. "
            "Without arguments: AS-VAE on MNIST with the paper's architecture and Adam "
            f"(lr 1e-4) on a CPU budget of {defaults.epochs} epochs x "
            f"{defaults.steps_per_epoch} steps of 64 images with the paper's "
            f"{DEFAULT_FLOW_LENGTH}-layer planar flow on q(z|x) (the paper trains to "
            "convergence); a few minutes on 2 CPU cores."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="asvae", choices=MODEL_KINDS,
                       help="model kind")
    group.add_argument("--preset", default=None, choices=sorted(PRESET_NAMES),
                       help="architecture preset (default: the data set's, "
                            f"{DATASET_PRESETS}; 'conv' for folder:, tfds: and npz: "
                            "sources: scaled from the paper's networks to any size whose "
                            "sides are multiples of 4)")
    group.add_argument("--latent-dim", type=int, default=None,
                       help="latent size (default: the preset's, 64 for MNIST)")
    group.add_argument("--flow-length", type=int, default=None,
                       help=f"layers of the planar flow on q(z|x); 0: none (default: "
                            f"{DEFAULT_FLOW_LENGTH}, the paper's MNIST value, where the preset "
                            "has a flow; not for AVB, whose encoder is a black box)")
    group.add_argument("--stabilizer", default=None, choices=tuple(STABILIZERS),
                       help="the critics' remedies by name: 'default' (what learns, see "
                            "README) or 'paper' (the critics as published)")
    group.add_argument("--objective", action="append", default=[], metavar="KEY=VALUE",
                       help="an ObjectiveConfig field, e.g. critic_form=quadratic, "
                            "disc_steps=2, gradient_penalty=1 (repeatable)")
    group.add_argument("--network", action="append", default=[], metavar="KEY=VALUE",
                       help="a NetworkConfig field of a scalar type, e.g. batch_norm=false, "
                            "disc_dropout=0.1, activation=elu (repeatable)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the weights and of the model's noise (and of the "
                            "data pipeline unless --data-seed is given)")

    D.add_data_flags(parser)
    parser.set_defaults(batch_size=64, data_seed=None)

    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--steps-per-epoch", type=_steps, default=defaults.steps_per_epoch,
                       help="training steps per epoch, or 'all' for one pass over the data")
    group.add_argument("--validation-steps", type=_steps, default=defaults.validation_steps,
                       help="validation batches per epoch, or 'all' for the whole split")
    group.add_argument("--max-train-examples", type=int, default=None,
                       help="keep only the first N training examples")
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help="Adam learning rate of both players (paper: 1e-4)")
    group.add_argument("--lr-schedule", default=defaults.lr_schedule, choices=LR_SCHEDULES,
                       help="constant (the papers') or cosine: both learning rates fall "
                            "along a cosine to --lr-final-fraction times the first over "
                            "epochs x steps-per-epoch steps")
    group.add_argument("--lr-final-fraction", type=float, default=defaults.lr_final_fraction,
                       help="the cosine schedule's last learning rate over its first")
    group.add_argument("--adam-beta-1", type=float, default=defaults.adam_beta_1,
                       help="Adam's first-moment decay for both players (AVB's code: 0.5)")
    group.add_argument("--patience", type=int, default=defaults.patience,
                       help="epochs without improvement of val_reconstruction before "
                            "early stopping")
    group.add_argument("--min-delta", type=float, default=defaults.min_delta,
                       help="smallest decrease of val_reconstruction that counts as an "
                            "improvement")
    group.add_argument("--no-restore-best-weights", dest="restore_best_weights",
                       action="store_false",
                       help="export the last weights instead of the best ones")
    group.add_argument("--jit-compile", action="store_true", help="XLA-compile the steps")
    group.add_argument("--mixed-precision", nargs="?", const="auto", default="off",
                       choices=MIXED_PRECISION,
                       help="networks in mixed_float16 (GPU) / mixed_bfloat16 (CPU, TPU) "
                            "with --mixed-precision, or the named policy; log-densities, "
                            "logits and losses stay float32")
    group.add_argument("--strategy", default="default", choices=STRATEGIES,
                       help="tf.distribute strategy")
    group.add_argument("--num-devices", type=int, default=None,
                       help="devices of the mirrored strategy (GPUs, or the CPU split "
                            "into N logical devices); default: every GPU, or one CPU")
    group.add_argument("--cluster-timeout", type=float, default=600.0,
                       help="--strategy multiworker: seconds to wait for every task of "
                            "TF_CONFIG to start; then the task stops (SIGKILL, status 137) "
                            "naming the missing ones (TensorFlow itself waits forever)")
    group.add_argument("--deterministic", action="store_true",
                       help="TensorFlow op determinism: with the same --seed, two runs on "
                            "the same hardware give bit-identical weights (slower)")
    group.add_argument("--backup-freq", type=_backup_freq, default=defaults.backup_freq,
                       help="'epoch' or a number of steps between resumable backups")
    group.add_argument("--num-images", type=int, default=defaults.num_images,
                       help="images per logged grid of samples / reconstructions (0: none)")
    group.add_argument("--png", dest="save_png", action="store_true",
                       help="also write the image grids as PNG files in RUN/images/")

    group = parser.add_argument_group("outputs")
    group.add_argument(runfile.CONFIG_OPTION, default=None, metavar="RUN_FILE",
                       help="YAML or JSON file of options (or RUN/config.json); flags "
                            "given here override it")
    group.add_argument("--run-name", default=None,
                       help="name of the run (default: <model>_<dataset>)")
    group.add_argument("--run-dir", default=None, help="run directory (default: runs/<run-name>)")
    group.add_argument("--export-dir", default=None,
                       help="SavedModel destination; versions go in <export-dir>/<int>/ "
                            "(default: saved_models/<run-name>)")
    group.add_argument("--no-export", dest="export", action="store_false",
                       help="do not export a SavedModel")
    group.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                       help="0: silent, 1: progress bar, 2: one line per epoch")
    return parser


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """Validates parsed arguments into a :class:`RunSpec` (ValueError naming any bad
    value).  Pure Python: touches neither TensorFlow devices nor the disk."""
    if args.model not in MODEL_KINDS:
        raise ValueError(f"Unknown model: Received: model={args.model!r}. "
                         f"Expected one of {MODEL_KINDS}.")
    if args.dataset not in D.DATASETS and not D.sources.is_source(args.dataset):
        raise ValueError(f"Unknown dataset: Received: dataset={args.dataset!r}. "
                         f"Expected one of {tuple(sorted(D.DATASETS))} or folder:PATH, "
                         "tfds:NAME, npz:PATH.")
    if not isinstance(args.seed, int) or args.seed < 0:
        raise ValueError(f"seed must be an integer >= 0. Received: seed={args.seed!r}.")
    data_args = argparse.Namespace(**vars(args))
    if data_args.data_seed is None:
        data_args.data_seed = args.seed
    elif isinstance(data_args.data_seed, int) and data_args.data_seed < 0:
        raise ValueError(f"--data-seed must be an integer >= 0. "
                         f"Received: data_seed={data_args.data_seed}.")
    data = D.data_config_from_flags(data_args)
    # A folder/tfds/npz source is described here: a bad one fails before any work.
    preset = args.preset or DATASET_PRESETS.get(args.dataset, "conv")
    if preset not in PRESET_NAMES:
        raise ValueError(f"Unknown preset: Received: preset={preset!r}. "
                         f"Expected one of {PRESET_NAMES}.")
    data_shape = tuple(data.spec.image_shape)
    family: dict[str, Any] = {}
    if preset == "conv":
        family = dict(image_shape=data_shape, likelihood=(
            "gaussian" if data.spec.pixels == "natural" else "bernoulli"))
    elif tuple(PRESETS[preset].image_shape) != data_shape:
        fitting = [p for p, c in PRESETS.items() if tuple(c.image_shape) == data_shape]
        raise ValueError(
            f"preset={preset!r} is for {tuple(PRESETS[preset].image_shape)} images but "
            f"dataset={args.dataset!r} has {data_shape}. Expected a preset among {fitting}.")

    overrides: dict[str, Any] = {}
    if args.latent_dim is not None:
        overrides["latent_dim"] = args.latent_dim
    avb = args.model.startswith("avb")
    flow_length = args.flow_length
    base_flow = PRESETS[preset].flows.posterior_flow if preset in PRESETS else "none"
    if flow_length is None and not avb and base_flow == "planar":
        flow_length = DEFAULT_FLOW_LENGTH
    if flow_length is not None:
        if not isinstance(flow_length, int) or flow_length < 0:
            raise ValueError(f"flow_length must be an integer >= 0. "
                             f"Received: flow_length={flow_length!r}.")
        if avb and flow_length:
            raise ValueError(
                f"model={args.model!r} has a black-box (noise-input) encoder without a "
                f"posterior flow. Received: flow_length={flow_length}; expected 0 or none.")
        if not avb:
            kind = base_flow
            overrides["posterior_flow"] = ("none" if flow_length == 0
                                           else ("planar" if kind == "none" else kind))
            overrides["posterior_flow_length"] = flow_length
    objective = parse_objective_overrides(args.objective)
    objective.update(parse_network_overrides(args.network))
    if args.stabilizer is not None:
        objective["stabilizer"] = args.stabilizer
    model = preset_config(args.model, preset, **family, **overrides, **objective)

    training = TrainConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        lr_final_fraction=args.lr_final_fraction,
        adam_beta_1=args.adam_beta_1,
        patience=args.patience,
        min_delta=args.min_delta,
        restore_best_weights=args.restore_best_weights,
        jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision,
        strategy=args.strategy,
        num_devices=args.num_devices,
        max_train_examples=args.max_train_examples,
        backup_freq=args.backup_freq,
        num_images=args.num_images,
        save_png=args.save_png,
        deterministic=args.deterministic,
    )
    train_examples = min(D.num_examples(data, "train"),
                         training.max_train_examples or math.inf)
    if train_examples < data.batch_size:
        raise ValueError(
            f"The training set has {train_examples} examples, fewer than one batch. "
            f"Received: batch_size={data.batch_size}, max_train_examples="
            f"{training.max_train_examples}, max_examples={data.max_examples}.")
    if training.num_devices and data.batch_size % training.num_devices:
        raise ValueError(
            "The global batch size must be divisible by the number of devices. "
            f"Received: batch_size={data.batch_size}, num_devices={training.num_devices}.")
    # A batch the objective can use on every replica (AS-VAE's f_psi2 pairs each
    # example with a batch partner in its replica's batch).
    need = tf_asvae.MODEL_CLASSES[args.model].minimum_batch_size()
    if data.batch_size // (training.num_devices or 1) < need:
        raise ValueError(
            f"model={args.model!r} needs at least {need} examples per replica in a batch "
            f"(f_psi2 pairs each example with a batch partner). Received: batch_size="
            f"{data.batch_size}, num_devices={training.num_devices or 1}.")
    if training.num_images > MAX_GRID_IMAGES:
        raise ValueError(f"num_images must be at most {MAX_GRID_IMAGES} (images per logged "
                         f"grid). Received: num_images={training.num_images}.")

    for name, value in (("run_name", args.run_name), ("run_dir", args.run_dir),
                        ("export_dir", args.export_dir)):
        if value is not None and not str(value).strip():
            raise ValueError(f"{name} must not be empty (leave the flag out for the "
                             f"default). Received: {name}={value!r}.")
    run_name = args.run_name or (
        os.path.basename(os.path.abspath(args.run_dir)) if args.run_dir else
        f"{args.model}_{D.sources.run_name_part(args.dataset)}")
    if not run_name or os.sep in run_name or run_name in (".", ".."):
        raise ValueError(f"run_name must be a plain file name. Received: run_name={run_name!r}.")
    run_dir = args.run_dir or os.path.join("runs", run_name)
    export_dir = (args.export_dir or os.path.join("saved_models", run_name)) \
        if args.export else None
    for name, path in (("run_dir", run_dir), ("export_dir", export_dir)):
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{name} exists and is not a directory. Received: {name}={path!r}.")
        if path is not None:
            tio.check_writable_dir(path, name)  # up front, not after the training
    if export_dir is not None and os.path.abspath(export_dir) == os.path.abspath(run_dir):
        raise ValueError(f"export_dir must differ from run_dir. Received: run_dir={run_dir!r}, "
                         f"export_dir={export_dir!r}.")
    timeout = getattr(args, "cluster_timeout", 600.0)
    if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
        raise ValueError(f"cluster_timeout must be a positive finite number of seconds. "
                         f"Received: cluster_timeout={timeout!r}.")
    if training.strategy == "multiworker":
        tf_config_tasks()  # a malformed TF_CONFIG fails here, named
    return RunSpec(model=model, data=data, training=training, seed=args.seed,
                   run_name=run_name, run_dir=os.fspath(run_dir),
                   export_dir=None if export_dir is None else os.fspath(export_dir),
                   verbose=args.verbose, cluster_timeout=float(timeout))


def parse(argv=None) -> RunSpec:
    """Command-line arguments -> :class:`RunSpec` (ValueError on a bad value;
    argparse's own errors, such as an unknown choice, exit with status 2)."""
    parser = build_parser()
    return spec_from_args(runfile.parse_args_with_config(
        parser, _cli.join_negative_numbers(parser, argv)))


# --------------------------------------------------------------------------------------
# The run directory


def _comparable(config: dict) -> dict:
    config = {k: v for k, v in config.items() if k not in _VERSION_KEYS}
    for section, keys in _LOCATION_KEYS.items():
        if isinstance(config.get(section), dict):
            config[section] = {k: v for k, v in config[section].items() if k not in keys}
    model = config.get("model")
    if isinstance(model, dict) and isinstance(model.get("objective"), dict):
        # Compare what the objective does: the default stabilizer's R1 weight by kind.
        objective = {**_ADDED_OBJECTIVE_KEYS, **model["objective"]}
        if model.get("kind") not in ("asvae", "asvae_g"):     # no L_VAEz
            for key in ("generative_weight", "recon_z_to_decoder"):
                objective.pop(key)
        if objective.get("gradient_penalty") is None:
            objective["gradient_penalty"] = DEFAULT_GRADIENT_PENALTY.get(model.get("kind"),
                                                                         0.0)
        config["model"] = {**model, "objective": objective}
    if isinstance(config.get("training"), dict):
        defaults = TrainConfig()
        config["training"] = {**{k: getattr(defaults, k) for k in _ADDED_TRAINING_KEYS},
                              **config["training"]}
    return json.loads(json.dumps(config))  # tuples -> lists, as stored


def _differences(old, new, prefix=""):
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key, "<absent>"), new.get(key, "<absent>"),
                                f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} in the directory, {new!r} requested"]


def check_run_dir(spec: RunSpec) -> str:
    """The state of ``spec.run_dir``: ``"new"`` (absent or empty), ``"restart"`` (same
    configuration, nothing to resume from), ``"resume"`` (a backup exists) or
    ``"complete"``.  Raises ValueError if it holds another configuration or is not a
    run directory.  Reads only."""
    run_dir = spec.run_dir
    if not os.path.exists(run_dir) or (os.path.isdir(run_dir) and not os.listdir(run_dir)):
        return "new"
    if not os.path.isdir(run_dir):
        raise ValueError(f"run_dir exists and is not a directory. Received: run_dir={run_dir!r}.")
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"run_dir {run_dir!r} exists and is not a tf_asvae run directory (no "
            f"{CONFIG_FILE}); choose another --run-dir or --run-name.")
    try:
        with open(path) as f:
            existing = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Cannot read {path!r}: {e}") from e
    diffs = _differences(_comparable(existing), _comparable(spec.config_dict()))
    if diffs:
        raise ValueError(
            f"run_dir {run_dir!r} holds a run with a different configuration: "
            + "; ".join(diffs)
            + ". Re-run with the same arguments to resume it, or choose another --run-dir "
              "or --run-name.")
    backup = os.path.join(run_dir, BACKUP_DIR)
    if os.path.isdir(backup) and os.listdir(backup):
        return "resume"
    if os.path.exists(os.path.join(run_dir, FINAL_FILE)):
        return "complete"
    return "restart"


def _create_run_dir(spec: RunSpec) -> None:
    """Creates ``spec.run_dir`` holding ``config.json`` in one rename."""
    run_dir = os.path.abspath(spec.run_dir)
    parent = os.path.dirname(run_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(run_dir)}.partial-", dir=parent)
    try:
        os.chmod(tmp, tio.dir_mode())  # mkdtemp's 0o700 -> the user's usual mode
        cbs.write_json_atomic(os.path.join(tmp, CONFIG_FILE), spec.config_dict())
        if os.path.isdir(run_dir):
            os.rmdir(run_dir)  # empty (check_run_dir said "new")
        os.rename(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------
# Devices, precision, strategies


def configure_devices(training: TrainConfig) -> None:
    """Splits the CPU into ``num_devices`` logical devices for a mirrored strategy
    without GPUs.  Must run before TensorFlow initialises its devices."""
    n = training.num_devices
    if training.strategy != "mirrored" or not n or n == 1:
        return
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if n > len(gpus):
            raise ValueError(f"num_devices={n} but this machine has {len(gpus)} GPUs. "
                             f"Received: num_devices={n}.")
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        raise RuntimeError(
            f"num_devices={n} splits the CPU into logical devices, which must happen "
            f"before TensorFlow initialises its devices (run in a fresh process): {e}") from e


def precision_policy(training: TrainConfig) -> str:
    """The Keras dtype policy of ``training.mixed_precision``."""
    mode = training.mixed_precision
    if mode == "off":
        return "float32"
    if mode == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    return f"mixed_{mode}"


def make_strategy(training: TrainConfig) -> tf.distribute.Strategy:
    if training.strategy == "default":
        return tf.distribute.get_strategy()
    if training.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        n = training.num_devices or len(gpus)
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    n = training.num_devices or 1
    return tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(n)], cross_device_ops=tf.distribute.ReductionToOneDevice())


def tf_config_tasks():
    """``(cluster, (task type, index))`` of ``$TF_CONFIG``, checked (None when it is
    unset or empty: a single worker): ValueError naming TF_CONFIG for malformed JSON, a
    missing cluster or task, or a task not in the cluster."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return None
    shown = text if len(text) <= 200 else text[:200] + "..."
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}). Received: TF_CONFIG={shown!r}."
                         ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and v for v in cluster.values()):
        raise ValueError("TF_CONFIG needs a 'cluster' object of non-empty address lists, "
                         f"e.g. {{\"worker\": [\"host1:12345\", \"host2:12345\"]}}. "
                         f"Received: TF_CONFIG={shown!r}.")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(
            task.get("index", 0), int) or not 0 <= task.get("index", 0) < len(
            cluster[task.get("type")]):
        raise ValueError("TF_CONFIG's 'task' must name a type of its cluster "
                         f"({sorted(cluster)}) and an index within it. "
                         f"Received: TF_CONFIG={shown!r}.")
    return cluster, (task["type"], task.get("index", 0))


# The watchdog of a forming multi-worker cluster runs in a small child process: while
# TensorFlow waits for the cluster it holds the GIL (and ignores SIGTERM), so no thread of
# this process would run.  The child reads its stdin until the parent writes a line (the
# cluster formed) or the time runs out; then it names the tasks whose address accepts no
# connection and kills the parent.
_CLUSTER_WATCHDOG = """
import json, os, select, signal, socket, sys
parent, timeout, cluster, me = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if ready:
    sys.exit(0)
missing = []
for kind, addresses in cluster.items():
    for index, address in enumerate(addresses):
        if f"{kind} {index}" == me:
            continue
        host, _, port = str(address).rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except (OSError, ValueError):
            missing.append(f"{kind} {index} ({address})")
sys.stderr.write(
    f"asvae-train: error: the multi-worker cluster of TF_CONFIG did not form within "
    f"{timeout:g} s (--cluster-timeout); this task is {me}. Not reachable: "
    f"{', '.join(missing) or '(every address answers; a task may still be starting)'}. "
    "Start every task with its own TF_CONFIG, or check the addresses. The run directory "
    "was not created or changed; this task is stopped (SIGKILL).\\n")
sys.stderr.flush()
os.kill(parent, signal.SIGKILL)
"""


def _check_model_memory(model, spec: RunSpec) -> None:
    """ValueError (before the optimizers and the run directory exist) if the weights
    with their gradients and two Adam moments (4 float32 copies) exceed this machine's
    memory; names the settings that size the networks."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    need = 16 * model.count_params()
    if need > total:
        flows = spec.model.flows
        raise ValueError(
            f"The model has {model.count_params():,} weights; with their gradients and "
            f"Adam's two moments training needs {need / 2 ** 30:.1f} GiB, more than this "
            f"machine's {total / 2 ** 30:.1f} GiB. Lower --latent-dim or --flow-length. "
            f"Received: latent_dim={spec.model.latent_dim}, "
            f"flow_length={flows.posterior_flow_length}.")


def _make_strategy_within(training: TrainConfig, timeout: float) -> tf.distribute.Strategy:
    """:func:`make_strategy`; for ``multiworker``, a process that waits more than
    ``timeout`` seconds for the cluster to form (TensorFlow waits forever, and ignores
    SIGTERM while it does) is stopped with a message naming the missing tasks."""
    if training.strategy != "multiworker":
        return make_strategy(training)
    tasks = tf_config_tasks()
    if tasks is None:
        return make_strategy(training)
    import subprocess

    cluster, me = tasks
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER_WATCHDOG, str(os.getpid()), str(timeout),
         json.dumps(cluster), f"{me[0]} {me[1]}"], stdin=subprocess.PIPE)
    try:
        return make_strategy(training)
    finally:
        try:
            watchdog.communicate(b"formed\n", timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            watchdog.kill()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory and the export (TF's multi-worker
    guide: the ``chief``, or worker 0 of a cluster without one; always true outside a
    multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return (task_type == "worker" and task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


# --------------------------------------------------------------------------------------
# Training


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.  ``status``: ``"trained"``, ``"resumed"`` or
    ``"complete"`` (the run directory was already complete; nothing was done)."""

    status: str
    run_dir: str
    history: dict
    initial_epoch: int = 0
    export_path: str | None = None
    model: Any = None


def _check_export_available() -> None:
    try:
        from tf_asvae.export import export_saved_model  # noqa: F401
    except ImportError as e:
        raise ValueError(
            f"SavedModel export is not available ({e}); pass --no-export to train "
            "without exporting.") from e


def _export(model, export_dir, spec: RunSpec, history: dict):
    from tf_asvae.export import export_saved_model

    values = [v for v in history.get(cbs.MONITOR, []) if v is not None]
    metadata = dict(
        dataset=spec.data.name,
        run_name=spec.run_name,
        run_dir=os.path.abspath(spec.run_dir),
        weights="best" if spec.training.restore_best_weights else "last",
        epochs_trained=len(history.get("epoch", [])),
        best_val_reconstruction=min(values) if values else None,
        run_config=spec.config_dict(),  # RUN/config.json
    )
    return export_saved_model(model, export_dir, metadata=metadata)


# Training images from which RecalibrateBatchNorm takes the batch norm statistics before
# each validation, and on which GameDiagnostics evaluates the model at each epoch's end.
DIAGNOSTIC_EXAMPLES = 1000


def _training_sample(data: D.DataConfig, n: int) -> np.ndarray:
    """The first ``n`` training images as the training pipeline gives them (e.g.
    dynamically binarised), read once."""
    data = dataclasses.replace(data, max_examples=min(data.max_examples or math.inf, n),
                               cache=False)
    batches, count = [], 0
    for x in D.load_split(data, "train", training=True):
        x = x[0] if isinstance(x, (tuple, list)) else x
        x = x["image"] if isinstance(x, dict) else x
        batches.append(np.asarray(x))
        count += len(batches[-1])
        if count >= n:
            break
    return np.concatenate(batches)[:n]


def _validation_images(data: D.DataConfig, n: int) -> np.ndarray:
    """The first ``n`` validation images (those of the reconstruction grids)."""
    data = dataclasses.replace(data, max_examples=min(data.max_examples or math.inf, n),
                               cache=False)
    return np.concatenate([np.asarray(x) for x in D.load_split(data, "validation",
                                                                  training=False)])


def train(spec: RunSpec, callbacks=()) -> TrainResult:
    """Runs (or resumes, or finds complete) the training job ``spec``.

    ``callbacks`` are added to the program's own, after them and before the backup
    saver.  Raises ValueError (before writing anything) on an incompatible run
    directory, a run directory in use by another training (``tio.RunDirInUseError``),
    a batch that does not split over the replicas, or unavailable data.
    """
    lock = tio.RunDirLock(spec.run_dir) if _writes_run_dir(spec) else None
    if lock is not None:
        lock.acquire()
    try:
        return _train_in_run_dir(spec, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _writes_run_dir(spec: RunSpec) -> bool:
    """Whether this process writes ``spec.run_dir`` (and so takes its lock): all but the
    non-chief workers of a multi-worker cluster (read from ``TF_CONFIG`` before the
    cluster is joined)."""
    if spec.training.strategy != "multiworker":
        return True
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = config.get("task", {})
        cluster = config.get("cluster", {})
    except (ValueError, AttributeError):
        return True
    kind, index = task.get("type"), task.get("index", 0)
    return kind == "chief" or (kind in (None, "worker") and index == 0
                               and "chief" not in cluster)


def _train_in_run_dir(spec: RunSpec, callbacks=()) -> TrainResult:
    state = check_run_dir(spec)
    history_path = os.path.join(spec.run_dir, HISTORY_FILE)
    if state == "complete":
        if spec.verbose:
            print(f"Run {spec.run_dir!r} is already complete; nothing to do. "
                  "Choose another --run-dir to train again.")
        return TrainResult("complete", spec.run_dir, cbs.read_history(history_path))
    training = spec.training
    configure_devices(training)  # before anything might start TensorFlow's runtime
    if spec.export_dir is not None:
        _check_export_available()
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision_policy(training))
    was_deterministic = _op_determinism()
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        return _train(spec, state, callbacks)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if training.deterministic and not was_deterministic:
            _disable_op_determinism()


def _op_determinism() -> bool:
    from tensorflow.python.framework import config as tf_config  # no public getter

    return bool(tf_config.is_op_determinism_enabled())


def _disable_op_determinism() -> None:
    # Only to leave a Python caller's process as it was (tests train several runs).
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()


def _train(spec: RunSpec, state: str, extra_callbacks) -> TrainResult:
    training, data = spec.training, spec.data
    # First: tf.data's seeded shuffles and random streams combine their op seeds with
    # the global seed at creation, so the pipelines must see the same one in every run.
    keras.utils.set_random_seed(spec.seed)
    strategy = _make_strategy_within(training, spec.cluster_timeout)
    D.per_replica_batch_size(data.batch_size, strategy.num_replicas_in_sync)
    chief = is_chief(strategy)

    # Data first: a missing or corrupt data set fails before anything is written.
    train_data = data
    if training.max_train_examples is not None:
        train_data = dataclasses.replace(
            data, max_examples=min(data.max_examples or math.inf, training.max_train_examples))
    steps = training.steps_per_epoch or D.steps_per_epoch(train_data, "train")
    # A resumed run restarts its backup's epoch from the first batch: skip the batches
    # of the epochs before it, so that it reads what the uninterrupted run read.
    # (Every worker reads the chief's backup, which changes only once training runs.)
    skip = steps * cbs.backup_epoch(os.path.join(spec.run_dir, BACKUP_DIR))
    # validation_steps batches: the first validation_steps * batch_size examples, read
    # whole on every validation (a pipeline cut short would not fill its cache).
    n_val = D.num_examples(data, "validation")
    if training.validation_steps is not None:
        n_val = min(n_val, training.validation_steps * data.batch_size)
    if training.strategy != "default":
        # A distributed pipeline has no known length: Keras needs validation_steps and
        # then keeps one iterator across epochs, so the pipeline repeats and holds whole
        # global batches only (each validation is then exactly one pass, and no replica
        # is left without examples by a partial last batch).
        n_val -= n_val % data.batch_size
        if not n_val:
            raise ValueError(
                f"Under strategy={training.strategy!r} the validation set needs at least "
                f"one whole batch. Received: batch_size={data.batch_size}, "
                f"max_examples={data.max_examples}.")
        val_data = dataclasses.replace(data, max_examples=n_val)
        val_steps = n_val // data.batch_size
        train_ds = D.distributed_dataset(strategy, train_data, "train", True, repeat=True,
                                         skip_batches=skip)
        val_ds = D.distributed_dataset(strategy, val_data, "validation", False, repeat=True)
    else:
        # One pass of known length per validation.
        val_data = dataclasses.replace(data, max_examples=n_val)
        val_steps = None
        train_ds = D.load_split(train_data, "train", training=True, repeat=True,
                                skip_batches=skip)
        val_ds = D.load_split(val_data, "validation", training=False)
    grid_images = _validation_images(data, training.num_images) if training.num_images else None
    diagnostic_images = _training_sample(train_data, DIAGNOSTIC_EXAMPLES)

    keras.utils.set_random_seed(spec.seed)  # again: the weights do not depend on the data
    with strategy.scope():
        model = tf_asvae.model_from_config(spec.model, seed=spec.seed)
        _check_model_memory(model.build_all(), spec)
        model.compile(learning_rate=training.learning_rate, jit_compile=training.jit_compile,
                      decay_steps=(training.epochs * steps
                                   if training.lr_schedule == "cosine" else None),
                      final_lr_fraction=training.lr_final_fraction,
                      beta_1=training.adam_beta_1)

    # Outputs: the chief writes the run directory; other workers a temporary one.
    if chief:
        if state == "new":
            _create_run_dir(spec)
        out_dir = spec.run_dir
    else:
        out_dir = tempfile.mkdtemp(prefix="asvae-worker-")
    try:
        result = _fit_and_finish(spec, state, model, out_dir, train_ds, val_ds, steps,
                                 val_steps, grid_images, extra_callbacks, chief,
                                 diagnostic_images)
    finally:
        if not chief:
            shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _fit_and_finish(spec, state, model, out_dir, train_ds, val_ds, steps, val_steps,
                    grid_images, extra_callbacks, chief, diagnostic_images=None) -> TrainResult:
    training = spec.training
    path = lambda name: os.path.join(out_dir, name)  # noqa: E731
    shared = lambda name: os.path.join(spec.run_dir, name)  # noqa: E731  (chief's files)
    backup_dir = path(BACKUP_DIR)
    done_path = os.path.join(backup_dir, FIT_DONE_FILE)
    fit_done = chief and os.path.exists(done_path)

    if fit_done:
        # Interrupted after training, while writing the outputs: finish them.
        with open(done_path) as f:
            initial_epoch = json.load(f)["initial_epoch"]
        source = shared(BEST_FILE) if (training.restore_best_weights
                                       and os.path.exists(shared(BEST_FILE))) \
            else shared(FINAL_FILE)
        problem = tio.keras_file_problem(source)
        if problem is not None and source != shared(FINAL_FILE):
            print(f"Warning: {source} cannot be loaded ({problem}); exporting the last "
                  f"weights ({FINAL_FILE}).", file=sys.stderr)
            source = shared(FINAL_FILE)
            problem = tio.keras_file_problem(source)
        if problem is not None:
            raise ValueError(f"Cannot finish the run: {source!r} cannot be loaded: "
                             f"{problem}. Delete {spec.run_dir!r} and train again.")
        model.load_weights(source)
        status = "resumed"
    else:
        backup = cbs.RunBackup(backup_dir, save_freq=training.backup_freq,
                               restore_dir=None if chief else shared(BACKUP_DIR))
        # Written atomically; the best epoch in early stopping's sense, so that
        # best.keras is the model whose weights EarlyStopping restores (and the export).
        checkpoint = cbs.BestCheckpoint(path(BEST_FILE), min_delta=training.min_delta)
        early_stopping = cbs.reconstruction_early_stopping(
            training.patience, training.min_delta, training.restore_best_weights,
            verbose=1 if spec.verbose else 0)
        resume = cbs.ResumeBestState(shared(HISTORY_FILE), checkpoint, early_stopping,
                                     best_path=shared(BEST_FILE), repair=chief)
        callbacks = [
            backup,                                          # restores first
            cbs.RecalibrateBatchNorm(diagnostic_images, seed=spec.seed),
            cbs.TerminateOnNonFinite(),                      # before anything writes
            cbs.GameDiagnostics(diagnostic_images, seed=spec.seed),  # adds to the logs
            cbs.HistoryWriter(path(HISTORY_FILE), read_path=shared(HISTORY_FILE)),
            checkpoint,
            cbs.SaveModel(path(FINAL_FILE)),                 # last weights, before ES
            early_stopping,                                  # restores the best weights
            resume,
            keras.callbacks.TensorBoard(path(LOG_DIR), write_graph=False),
        ]
        if grid_images is not None:
            callbacks.append(cbs.ImageGrid(
                grid_images, os.path.join(path(LOG_DIR), "images"), training.num_images,
                seed=spec.seed, png_dir=path(IMAGE_DIR) if training.save_png else None))
        callbacks += list(extra_callbacks) + [backup.saver]  # backs up last

        if spec.verbose:
            print(f"Training {spec.model.kind} ({spec.model.preset} preset) on "
                  f"{spec.data.name} into {os.path.abspath(spec.run_dir)}")
        _report_source(spec, out_dir, callbacks, chief)
        try:
            model.fit(train_ds, epochs=training.epochs, steps_per_epoch=steps,
                      validation_data=val_ds, validation_steps=val_steps,
                      callbacks=callbacks, verbose=spec.verbose)
        except cbs.NonFiniteLossError as e:
            raise cbs.NonFiniteLossError(_diverged_message(e, spec)) from None
        initial_epoch = resume.resumed_from
        status = "resumed" if state == "resume" else "trained"
        if chief:
            os.makedirs(backup_dir, exist_ok=True)
            cbs.write_json_atomic(done_path, {"initial_epoch": initial_epoch})

    history = cbs.read_history(path(HISTORY_FILE))
    export_path = None
    if spec.export_dir is not None:
        export_dir = spec.export_dir if chief else path("export")
        export_path = os.fspath(_export(model, export_dir, spec, history))
    shutil.rmtree(backup_dir, ignore_errors=True)
    if spec.verbose and chief:
        print(f"Run directory: {os.path.abspath(spec.run_dir)}")
        if export_path is not None:
            print(f"Exported SavedModel: {os.path.abspath(export_path)}")
    return TrainResult(status, spec.run_dir, history, initial_epoch,
                       export_path if chief else None, model)


DATA_FILE = "data.json"


class _SkippedFiles(keras.callbacks.Callback):
    """Adds ``skipped_files`` (corrupt files of a folder source) to each epoch's logs,
    and so to ``history.json``."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["skipped_files"] = float(self.count)


def _report_source(spec: RunSpec, out_dir: str, callbacks: list, chief: bool) -> None:
    """For a folder/tfds/npz source: prints its conversions and skipped files, writes
    ``RUN/data.json`` and records the skipped-file count in history.json."""
    info = spec.data.spec.source
    if info is None:
        return
    if spec.verbose:
        print(f"Data: {info.kind} {info.location}: {dict(info.num_examples)} images of "
              f"{tuple(info.image_shape)}, {info.pixels} pixels")
        for note in info.notes:
            print(f"Data: {note}")
    if info.skipped:
        print(f"Data: skipped {len(info.skipped)} unreadable files: "
              + ", ".join(f"{f} ({r})" for f, r in info.skipped[:10])
              + (" ..." if len(info.skipped) > 10 else ""), file=sys.stderr)
    if chief:
        cbs.write_json_atomic(os.path.join(out_dir, DATA_FILE), info.summary())
    at = next((i for i, c in enumerate(callbacks) if isinstance(c, cbs.HistoryWriter)),
              len(callbacks))
    callbacks.insert(at, _SkippedFiles(len(info.skipped)))


def _diverged_message(error, spec: RunSpec) -> str:
    """The error of a diverged run, with what the run directory still holds."""
    run = os.path.abspath(spec.run_dir)
    kept = []
    history = cbs.read_history(os.path.join(run, HISTORY_FILE))
    values = [v for v in history.get(cbs.MONITOR, []) if v is not None]
    if os.path.exists(os.path.join(run, BEST_FILE)) and values:
        kept.append(f"{BEST_FILE} (the best epoch, {cbs.MONITOR} = {min(values):.6g})")
    epoch = cbs.backup_epoch(os.path.join(run, BACKUP_DIR))
    if epoch:
        kept.append(f"{BACKUP_DIR}/ (the state after epoch {epoch - 1}; re-running the "
                    "same command resumes from it)")
    return (f"{error} Stopped; nothing was written from the diverged weights ("
            f"{FINAL_FILE} and the export were not written). {run} keeps "
            f"{', '.join(kept) if kept else 'no checkpoint yet'}. Adversarial training can "
            "diverge: a lower --learning-rate or another --seed, in a new "
            "--run-dir, usually helps.")


# --------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = runfile.parse_args_with_config(  # --config FILE, then flags
            parser, _cli.join_negative_numbers(parser, argv))
        spec = spec_from_args(args)
        train(spec)
    except ValueError as e:  # includes tf_asvae.data.DataError
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except cbs.NonFiniteLossError as e:
        parser.exit(3, f"{parser.prog}: training diverged: {e}\n")
    except (tf.errors.ResourceExhaustedError, MemoryError) as e:
        parser.exit(4, f"{parser.prog}: error: " + _cli.out_of_memory_message(
            e, ["--batch-size", "--latent-dim", "--flow-length", "--num-images"])
            + " The run directory keeps its last good state.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
