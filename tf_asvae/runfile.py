"""Run files: every command-line option of a program in one YAML or JSON file.

``asvae-train --config run.yaml`` reads the options from ``run.yaml``; options given on
the command line override the file's. Keys are the options' long names without the
leading dashes, with ``-`` or ``_`` (``batch-size: 32`` or ``batch_size: 32``), or their
destinations (``export: false`` for ``--no-export``); values have the option's type::

    dataset: folder:~/my_images
    image-size: [48, 48]
    model: vae
    epochs: 3
    objective: [disc_steps=2]        # repeatable options: a list, or a mapping
    network: {batch_norm: false}

A run directory's own ``config.json`` (written by the training program) is a valid run
file too (:func:`options_from_run_config`): ``asvae-train --config RUN/config.json``
relaunches that run in ``RUN`` (resuming it, or finding it complete).

An unknown key, a value of the wrong type or an unreadable file raises ``ValueError``
naming the file, the key and what was expected, before anything is done. YAML needs
PyYAML (in requirements.txt); JSON works without it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Mapping

__all__ = ["CONFIG_OPTION", "load_run_file", "options_from_run_config", "apply_options",
           "parse_args_with_config"]

CONFIG_OPTION = "--config"


def load_run_file(path: str) -> dict:
    """The options in ``path`` (a YAML or JSON mapping, or a run's ``config.json``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Run file {path!r} does not exist. Expected a YAML or JSON file "
                         "of options, or a run directory's config.json.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"Run file {path!r} is YAML, which needs PyYAML "
                             "(pip install pyyaml); or write it as JSON.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"Run file {path!r} is not valid YAML: {e}") from None
    elif ext == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"Run file {path!r} is not valid JSON: {e}") from None
    else:
        raise ValueError(f"Run file {path!r}: expected a .yaml, .yml or .json file.")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"Run file {path!r} must hold a mapping of option names to "
                         f"values. Received: a {type(data).__name__}.")
    if {"model", "data", "training"} <= set(data) and isinstance(data.get("model"), Mapping):
        return options_from_run_config(data, path)
    return dict(data)


def options_from_run_config(config: Mapping, path: str | None = None) -> dict:
    """The training program's options that rebuild the run of a ``config.json``.

    The model's kind, preset, latent size, posterior flow length, every objective field
    and every scalar network field; every data and training field; the seed; and
    ``run_dir``: the folder of ``path``."""
    where = f"Run file {path!r}" if path else "The run configuration"
    try:
        model, data, training = config["model"], config["data"], config["training"]
        options: dict[str, Any] = {
            "model": model["kind"], "preset": model["preset"],
            "latent_dim": model["latent_dim"],
            "flow_length": int(model.get("flows", {}).get("posterior_flow_length", 0)),
            "seed": config["seed"],
        }
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where} looks like a run's config.json but lacks {e}.") from None
    if str(model["kind"]).startswith("avb"):
        options.pop("flow_length")
    options["objective"] = [f"{k}={_text(v)}" for k, v in model.get("objective", {}).items()
                            if v is not None]
    options["network"] = [f"{k}={_text(v)}" for k, v in model.get("network", {}).items()
                          if not isinstance(v, (list, tuple))]
    renamed = {"name": "dataset", "seed": "data_seed"}
    for key, value in data.items():
        if key == "cache" and isinstance(value, str):
            key = "cache_dir"
        options[renamed.get(key, key)] = value
    options.update(training)
    if path:
        options["run_dir"] = os.path.dirname(os.path.abspath(path))
    return options


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _actions(parser: argparse.ArgumentParser) -> dict:
    """Every name a run file may use for each action: dests and long option names."""
    names = {}
    for action in parser._actions:  # argparse keeps no public list
        if action.dest in (argparse.SUPPRESS, "help"):
            continue
        names[action.dest] = (action, None)
        for option in action.option_strings:
            if option.startswith("--"):
                key = option[2:].replace("-", "_")
                names.setdefault(key, (action, option))
    return names


def _type_name(action) -> str:
    t = action.type
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "true or false"
    if t is int:
        return "an integer"
    if t is float:
        return "a number"
    if action.choices is not None:
        return f"one of {list(action.choices)}"
    return "a string"


def _convert(action, value, where: str):
    """``value`` checked (and converted) for one argparse action."""
    expected = _type_name(action)

    def bad(what=None):
        return ValueError(f"{where}: expected {what or expected}. Received: {value!r} "
                          f"({type(value).__name__}).")

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(action, argparse._AppendAction):
        if isinstance(value, Mapping):
            value = [f"{k}={_text(v)}" for k, v in value.items()]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of KEY=VALUE strings or a mapping")
        return list(value)
    if value is None:
        return None
    if isinstance(action.nargs, int) and action.nargs > 1:
        if not isinstance(value, (list, tuple)) or len(value) != action.nargs:
            raise bad(f"a list of {action.nargs} values, each {expected}")
        return [_scalar(action, v, bad) for v in value]
    return _scalar(action, value, bad)


def _scalar(action, value, bad):
    t = action.type
    if isinstance(value, bool) and t is not None:
        raise bad()
    if t is int:
        if not isinstance(value, int):
            raise bad()
    elif t is float:
        if not isinstance(value, (int, float)):
            raise bad()
        value = float(value)
    elif t is not None:
        if isinstance(value, str):
            try:
                value = t(value)
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise bad(str(e)) from None
        elif not isinstance(value, int):
            raise bad()
    elif not isinstance(value, str):
        if action.choices is None or value not in action.choices:
            raise bad()
    if action.choices is not None and value not in action.choices:
        raise bad()
    return value


def apply_options(parser: argparse.ArgumentParser, options: Mapping, path: str) -> None:
    """Sets ``options`` as ``parser``'s defaults after checking every key and type
    (ValueError naming ``path``, the key and what is expected)."""
    names = _actions(parser)
    defaults = {}
    for key, value in options.items():
        norm = str(key).replace("-", "_")
        if norm == CONFIG_OPTION[2:] or norm not in names:
            accepted = sorted(k for k in names if k != CONFIG_OPTION[2:])
            raise ValueError(f"Run file {path!r}: unknown option {key!r}. Accepted keys: "
                             f"{accepted}.")
        action, option = names[norm]
        where = f"Run file {path!r}, option {key!r}"
        if option is not None and isinstance(action, (argparse._StoreTrueAction,
                                                      argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true or false. Received: {value!r}.")
            value = action.const if value else action.default
        defaults[action.dest] = _convert(action, value, where)
    parser.set_defaults(**defaults)


def parse_args_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--config FILE``'s options as defaults (the
    parser must define ``--config``); ValueError for a bad run file."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(CONFIG_OPTION, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        apply_options(parser, load_run_file(known.config), known.config)
    return parser.parse_args(argv)
