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
