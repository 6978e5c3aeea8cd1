"""Pieces the command-line programs share: negative numbers after a flag, and the
messages of errors that only show once TensorFlow runs (out of memory)."""

from __future__ import annotations

import argparse
import re
import sys

# What argparse itself accepts as a negative number after a flag is only "-3" or
# "-0.5"; "-1e-3" would be read as an unknown option ("expected one argument").
_NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d)[\d.]*([eE][-+]?\d+)?$|^-(inf|nan)$", re.I)


def join_negative_numbers(parser: argparse.ArgumentParser, argv):
    """``argv`` with ``--flag -1e-3`` rewritten as ``--flag=-1e-3`` for the parser's
    flags that take one number, so that argparse passes the value to the flag (whose
    own check then names it) instead of calling it a missing argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    numeric = set()
    for action in parser._actions:  # noqa: SLF001 (argparse has no public listing)
        if action.option_strings and action.nargs is None and action.type in (int, float):
            numeric.update(action.option_strings)
    out, i = [], 0
    while i < len(argv):
        token = str(argv[i])
        if token in numeric and i + 1 < len(argv) and _NEGATIVE_NUMBER.match(str(argv[i + 1])):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def out_of_memory_message(error, settings) -> str:
    """The message for a ``ResourceExhaustedError`` / ``MemoryError``: what ran out and
    the settings to lower."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"out of memory ({type(error).__name__}: {first[:300]}). Lower "
            + ", ".join(settings) + ".")
