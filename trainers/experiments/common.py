"""What every experiment shares: its command line, the hardware it ran on, a clock,
and the two result files (``results.json`` for programs, ``results.md`` for people).

A result row is a dict ``{"quantity", "method", "ours", "paper", "estimator"}``;
``paper`` is ``None`` where the paper gives no number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import time

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--quick", action="store_true",
                   help="the same code at a size that finishes in a minute or two on a CPU")
    p.add_argument("--seed", type=int, default=0)
    return p


def hardware() -> dict:
    """The machine, in words and numbers (CPU model, usable cores, load, accelerators)."""
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    info = {"cpu": cpu, "usable_cores": cores, "gpus": gpus, "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "tensorflow_probability": tfp.__version__}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def describe_hardware(info: dict) -> str:
    acc = ", ".join(info["gpus"]) if info["gpus"] else "no accelerator"
    load = info.get("load_average_at_start")
    shared = f"; load average {load[0]} at start (machine shared)" if load else ""
    return (f"{info['cpu']}, {info['usable_cores']} usable cores, {acc}{shared}; "
            f"TensorFlow {info['tensorflow']}, Keras {info['keras']}, "
            f"TFP {info['tensorflow_probability']}")


class Clock:
    """Wall-clock seconds per named stage: ``with clock("train vae"): ...``."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}

    def __call__(self, name):
        clock = self

        class _Stage:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.stages[name] = clock.stages.get(name, 0.0) + time.perf_counter() - self.t

        return _Stage()

    def total(self) -> float:
        return time.perf_counter() - self.start


def to_jsonable(value):
    """numpy / tensor values -> plain JSON (non-finite floats become strings)."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = float(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.3e}"
    return f"{value:.4f}"


def write_results(out_dir, *, experiment: str, title: str, command: str, rows: list,
                  budget: dict, hardware_info: dict, clock: Clock, details: dict,
                  figures: list, notes: list) -> dict:
    """Write ``results.json`` and ``results.md`` under ``out_dir``; return the JSON dict."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runtime = {"total_s": clock.total(), "stages_s": dict(clock.stages)}
    data = to_jsonable({"experiment": experiment, "title": title, "command": command,
                        "results": rows, "budget": budget, "hardware": hardware_info,
                        "runtime": runtime, "details": details, "figures": figures,
                        "notes": notes})
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# {title}", "", f"Command: `{command}`", "",
             "| quantity | method | ours | paper | estimator |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['quantity']} | {r['method']} | {_fmt(r['ours'])} | "
                     f"{_fmt(r.get('paper'))} | {r['estimator']} |")
    lines += ["", "## Training budget", ""]
    lines += [f"- {k}: {v}" for k, v in budget.items()]
    lines += ["", "## Hardware and runtime", "", f"- {describe_hardware(hardware_info)}",
              f"- total wall clock: {runtime['total_s']:.1f} s"]
    lines += [f"- {k}: {v:.1f} s" for k, v in runtime["stages_s"].items()]
    if figures:
        lines += ["", "## Figures", ""] + [f"- `{f}`" for f in figures]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return data


def savefig(fig, out_dir, name: str) -> str:
    pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = pathlib.Path(out_dir) / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


# ------------------------------------------------------------------------------ trained runs
# The image experiments (mnist, cifar10, imagenet64) train with ``trainers.train`` and
# evaluate with ``trainers.evaluate``; these helpers hold what they share: checking the
# data before anything is written, run directories that resume, evaluation reports that
# are reused when nothing changed, and the figures made from the reports.


def check_data(configs) -> None:
    """Prepares (or finds prepared) every data set of ``configs`` (DataConfigs) before
    anything is written; a missing or corrupt data set raises ``tf_asvae.data.DataError``
    naming the file and the place it was expected."""
    from tf_asvae import data as D

    seen = set()
    for config in configs:
        key = (config.name, config.data_dir, config.manual_dir)
        if key not in seen:
            seen.add(key)
            D.prepare(config)


def run_spec(argv, model_changes: dict | None = None):
    """``trainers.train.parse(argv)`` (a RunSpec), with ``model_changes`` applied to its
    ModelConfig (``ModelConfig.replace``: top-level or nested fields; validated)."""
    import dataclasses

    from trainers import train as T

    spec = T.parse(list(argv))
    if model_changes:
        spec = dataclasses.replace(spec, model=spec.model.replace(**model_changes))
    return spec


def check_runs(specs) -> None:
    """Raises ValueError (before any training) if a run directory holds a run of another
    configuration, e.g. an earlier invocation with another budget in the same --out."""
    from trainers import train as T

    for spec in specs:
        T.check_run_dir(spec)


def train_run(spec, clock: Clock | None = None, stage: str = "train") -> dict:
    """Trains (or resumes, or finds complete) ``spec`` with ``trainers.train.train``.

    Returns ``{"status", "history", "epochs_trained", "seconds", "message"}``; ``status``
    is ``trained``, ``resumed``, ``complete`` (finished by an earlier invocation, nothing
    done) or ``diverged`` (non-finite loss: ``best.keras``, if any, holds the best epoch
    before it).  ``seconds``: training time over all invocations, kept in
    ``RUN_DIR.seconds.json``; ``clock`` gets it as ``stage`` (this invocation) or
    ``stage (earlier invocation)``."""
    from tf_asvae import callbacks as cbs
    from trainers import train as T

    record = pathlib.Path(str(spec.run_dir) + ".seconds.json")
    try:
        earlier = float(json.loads(record.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        earlier = 0.0
    start = time.perf_counter()
    try:
        result = T.train(spec)
        status, history, message = result.status, result.history, None
    except cbs.NonFiniteLossError as e:
        status, message = "diverged", str(e)
        history = cbs.read_history(os.path.join(spec.run_dir, T.HISTORY_FILE))
    elapsed = time.perf_counter() - start
    if status == "trained":  # from scratch: an old record belongs to a removed run
        earlier = 0.0
    if status == "complete":
        elapsed = 0.0
        if clock is not None:
            clock.stages[f"{stage} (earlier invocation)"] = earlier
    else:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"seconds": earlier + elapsed}) + "\n")
        if clock is not None:
            clock.stages[stage] = clock.stages.get(stage, 0.0) + elapsed
    return {"status": status, "history": history,
            "epochs_trained": len(history.get("epoch", [])), "seconds": earlier + elapsed,
            "message": message}


def has_checkpoint(run_dir) -> bool:
    from trainers import evaluate as E

    return os.path.isfile(os.path.join(run_dir, E.BEST_FILE))


def evaluate_run(argv, clock: Clock | None = None, stage: str = "evaluate") -> tuple:
    """``trainers.evaluate.evaluate(parse(argv))`` -> ``(report, reused)``.  A report
    already at ``--out`` is reused when its settings equal the requested ones and it is
    newer than the checkpoint (so a resumed experiment does not re-run AIS); its time then
    goes to ``clock`` as ``stage (earlier invocation)``."""
    import dataclasses

    from trainers import evaluate as E

    spec = E.parse(list(argv))
    out = pathlib.Path(spec.out)
    if out.is_file() and out.stat().st_mtime > os.path.getmtime(spec.checkpoint):
        try:
            old = json.loads(out.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        wanted = json.loads(json.dumps(E._clean(dataclasses.asdict(spec))))
        if old and old.get("format") == E.REPORT_FORMAT and old.get("settings") == wanted:
            if clock is not None:
                key = f"{stage} (earlier invocation)"
                clock.stages[key] = clock.stages.get(key, 0.0) + float(old.get("seconds") or 0)
            return old, True
    return E.evaluate(spec), False


def small_classifier(dataset: str, cfg: dict, args, out) -> dict:
    """Trains (or reuses, if made with the same settings) this project's small classifier
    of ``dataset`` with ``trainers.train_classifier`` into ``OUT/classifier/``; returns
    its metadata with ``path`` and ``reused``.  ``cfg``: ``classifier_epochs``,
    ``classifier_max_train``, ``max_eval_examples``, ``verbose``."""
    from tf_asvae import data as D
    from tf_asvae.evaluation import classifiers as C
    from trainers import train_classifier as TC

    path = pathlib.Path(out) / "classifier" / f"{dataset}.keras"
    wanted = {"epochs": cfg["classifier_epochs"], "seed": args.seed, "dataset": dataset}
    meta_path = pathlib.Path(C.metadata_path(str(path)))
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        limit = cfg["classifier_max_train"]
        if all(meta.get(k) == v for k, v in wanted.items()) and (
                limit is None or meta.get("num_train_examples") == limit):
            return {**meta, "path": str(path), "reused": True}
    manual = args.manual_dir if args.manual_dir is not None else D._env_manual_dir()
    config = D.DataConfig(dataset, 128, data_dir=args.data_dir, manual_dir=manual)
    meta = TC.train_classifier(config, str(path), epochs=cfg["classifier_epochs"],
                               seed=args.seed, max_train_examples=cfg["classifier_max_train"],
                               max_eval_examples=cfg["max_eval_examples"],
                               verbose=2 if cfg["verbose"] else 0)
    return {**meta, "path": str(path), "reused": False}


def metric_text(entry: dict, digits: int = 3) -> str:
    """``s.e. X, N examples`` for a metric entry of an evaluation report."""
    parts = []
    se = entry.get("standard_error")
    if isinstance(se, (int, float)) and math.isfinite(se):
        parts.append(f"s.e. {se:.{digits}g}")
    if entry.get("num_examples") is not None:
        parts.append(f"{entry['num_examples']} test examples")
    return ", ".join(parts)


def plot_report_images(reports: dict, key: str, out_dir, name: str, title: str):
    """One figure of the PNG grids (``key``: ``samples`` or ``reconstructions``) that
    ``trainers.evaluate`` wrote beside each report; ``reports``: label -> (report path,
    report).  Returns the file name, or None when no report has such a grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    panels = []
    for label, (path, report) in reports.items():
        image = (report or {}).get("images", {}).get(key)
        if image and (pathlib.Path(path).parent / image).is_file():
            panels.append((label, mpimg.imread(pathlib.Path(path).parent / image)))
    if not panels:
        return None
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, image) in zip(axes.ravel(), panels):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return savefig(fig, out_dir, name)


def plot_histories(histories: dict, out_dir, name: str = "training_curves.png"):
    """Training loss and validation reconstruction (the early-stopping monitor) per epoch,
    one line per run (``histories``: label -> history.json content)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, history in histories.items():
        epochs = history.get("epoch") or []
        for ax, key in zip(axes, ("loss", "val_reconstruction")):
            values = history.get(key) or []
            points = [(e + 1, v) for e, v in zip(epochs, values)
                      if isinstance(v, (int, float)) and math.isfinite(v)]
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
    axes[0].set_ylabel("training loss (the model's objective)")
    axes[1].set_ylabel("validation reconstruction (early stopping)")
    for ax in axes:
        ax.set_xlabel("epoch")
    if any(ax.lines for ax in axes):
        axes[1].legend(fontsize=7)
    return savefig(fig, out_dir, name)


# ------------------------------------------------------------------------------ image experiments' flags


def add_run_flags(p: argparse.ArgumentParser, manual_help: str):
    """``--data-dir --manual-dir`` and the training-budget group shared by the image
    experiments; returns the budget group (for experiment-specific flags)."""
    p.add_argument("--data-dir", default=None, help="TFDS directory of prepared data")
    p.add_argument("--manual-dir", default=None,
                   help=f"directory of {manual_help} (or their parent); default "
                        "$TF_ASVAE_MANUAL_DIR")
    g = p.add_argument_group("training budget (default: the full setting, or --quick's)")
    g.add_argument("--epochs", type=int, default=None, help="maximum epochs per model")
    g.add_argument("--steps-per-epoch", default=None,
                   help="training steps per epoch, or 'all' (one pass over the training set)")
    g.add_argument("--validation-steps", default=None, help="validation batches, or 'all'")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--learning-rate", type=float, default=None)
    g.add_argument("--lr-schedule", default=None, choices=("constant", "cosine"),
                   help="constant (the papers') or cosine (to zero over the epochs; "
                        "trainers.train --lr-schedule) for every model; default: the "
                        "budget's")
    g.add_argument("--adam-beta-1", type=float, default=None,
                   help="Adam's first-moment decay for every player (0.9; AVB's code: 0.5)")
    g.add_argument("--patience", type=int, default=None,
                   help="epochs without improvement of the validation reconstruction")
    g.add_argument("--max-train-examples", type=int, default=None)
    return g


def add_estimator_flags(p: argparse.ArgumentParser, eval_examples_help: str):
    """The estimator group shared by the image experiments; returns it."""
    g = p.add_argument_group("estimators (default: the full setting, or --quick's)")
    g.add_argument("--max-eval-examples", type=int, default=None, help=eval_examples_help)
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--num-samples", type=int, default=None, help="importance samples K")
    g.add_argument("--num-images", type=int, default=None, help="images per sample grid")
    return g


def settings_from_args(base: dict, args, positive: tuple, optional_positive: tuple) -> dict:
    """``base`` (the full or --quick setting) with the command line's overrides; the keys
    in ``positive`` must be positive integers, those in ``optional_positive`` None or
    positive (ValueError naming the flag otherwise)."""
    cfg = dict(base)
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    for key in positive:
        if not (isinstance(cfg[key], int) and cfg[key] > 0):
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer. "
                             f"Received: {cfg[key]!r}")
    for key in optional_positive:
        if cfg[key] is not None and cfg[key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer. "
                             f"Received: {cfg[key]!r}")
    return cfg


def adam_text(cfg: dict) -> str:
    """The budget's optimizer in words, for the experiments' budget descriptions
    (``lr_schedule``: one schedule, or a mapping from a table to its schedule)."""
    def words(schedule):
        return "cosine decay to zero over the epochs" if schedule == "cosine" else "constant"

    lr_schedule = cfg["lr_schedule"]
    if isinstance(lr_schedule, dict):
        schedule = "; " + ", ".join(f"{table} {words(s)}" for table, s in lr_schedule.items())
    else:
        schedule = ", " + words(lr_schedule) if lr_schedule == "cosine" else ""
    beta = f", beta_1 {cfg['adam_beta_1']:g}" if cfg["adam_beta_1"] != 0.9 else ""
    return f"Adam (learning rate {cfg['learning_rate']:g}{schedule}{beta})"


def data_flags(args) -> list:
    """``--data-dir``/``--manual-dir`` to pass on to the training and evaluation programs."""
    out = []
    if args.data_dir:
        out += ["--data-dir", args.data_dir]
    if args.manual_dir:
        out += ["--manual-dir", args.manual_dir]
    return out


def base_train_argv(kind: str, dataset: str, run_dir, run_name: str, cfg: dict, args) -> list:
    """The ``trainers.train`` arguments every image experiment passes (budget, seed,
    data location; no export, no image grids)."""
    argv = ["--model", kind, "--dataset", dataset, "--run-dir", str(run_dir),
            "--run-name", run_name, "--no-export",
            "--epochs", str(cfg["epochs"]), "--steps-per-epoch", str(cfg["steps_per_epoch"]),
            "--validation-steps", str(cfg["validation_steps"]),
            "--batch-size", str(cfg["batch_size"]), "--learning-rate", str(cfg["learning_rate"]),
            "--patience", str(cfg["patience"]), "--num-images", "0",
            "--shuffle-buffer", str(cfg["shuffle_buffer"]), "--seed", str(args.seed),
            "--verbose", str(cfg["verbose"]), "--lr-schedule", cfg["lr_schedule"],
            "--adam-beta-1", str(cfg["adam_beta_1"])] + data_flags(args)
    if cfg["max_train_examples"]:
        argv += ["--max-train-examples", str(cfg["max_train_examples"])]
    return argv


def run_figures(reports: dict, histories: dict, out_dir, what: str = "") -> list:
    """The image experiments' figures: samples, reconstructions and training curves
    (``reports``: label -> (report path, report)); the file names that were written."""
    prefix = f"{what}: " if what else ""
    figures = (
        plot_report_images(reports, "samples", out_dir, "samples.png",
                           f"{prefix}samples (decoder means at z ~ p(z))"),
        plot_report_images(reports, "reconstructions", out_dir, "reconstructions.png",
                           f"{prefix}test images (odd rows) and reconstructions (even rows)"),
        plot_histories(histories, out_dir))
    return [f for f in figures if f]


def run_details(spec, trained: dict, result: dict) -> dict:
    """What results.json records of one trained and evaluated model."""
    return {"run_dir": str(spec.run_dir), "training_status": trained["status"],
            "epochs_trained": trained["epochs_trained"],
            "training_message": trained["message"],
            "model": spec.model.to_dict(), "data": spec.data.to_dict(),
            "training": spec.training.to_dict(),
            "evaluation_reused": result.get("reused"),
            "metrics": (result.get("report") or {}).get("metrics"),
            "elbo_metrics": (result.get("elbo_report") or {}).get("metrics"),
            "report": result.get("report_path")}


def training_notes(trained: dict) -> list:
    """The results' notes on how the runs were trained: which were reused from an earlier
    invocation, and which diverged.  ``trained``: run name -> :func:`train_run`'s result,
    in the order the notes should name them."""
    notes = []
    reused = [name for name, t in trained.items() if t["status"] == "complete"]
    if reused:
        notes.append("Trained by an earlier invocation with the same settings (run "
                     f"directories reused, training time not counted here): {', '.join(reused)}.")
    notes += [f"{name} diverged: {t['message']}" for name, t in trained.items()
              if t["status"] == "diverged"]
    return notes
