"""Reading a model folder's ``config.json``: any bytes give a dict or one line saying why not.

osrkit writes ``config.json`` with ``allow_nan=False`` (NaN and infinity as ``null``) and
at most a few levels deep, so a ``NaN`` or ``Infinity`` literal, a number out of float
range and deep nesting are refused here as damage: no later reader (the finite-value
checks, the scorers' states) then meets them, and no recursive walk over the config can
exceed Python's recursion limit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from osrkit.errors import ModelFormatError

MAX_DEPTH = 32  # levels of nested lists and objects; osrkit's own configs use about 5
_FIX = "restore the file from a backup, or save or train the model again"


class _NotWritten(ValueError):
    """A value that osrkit's writer never produces."""


def _refuse_constant(literal: str) -> float:
    raise _NotWritten(f"the literal {literal}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotWritten(f"the number {text[:40]}, out of float range")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def parse_config(text: str, source: Path | str) -> Any:
    """The JSON value of ``text`` (the contents of ``source``), or a one-line
    ``ModelFormatError``: invalid JSON, NaN or Infinity, a number out of range, an integer
    too long to convert, or nesting deeper than ``MAX_DEPTH``."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotWritten as exc:
        raise ModelFormatError(f"{source} holds {exc}, which osrkit never writes; {_FIX}") from None
    except RecursionError:
        raise ModelFormatError(f"{source} is nested too deeply to be an osrkit config; {_FIX}") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over Python's digit limit
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "integer string conversion" in first:
            first = "an integer with thousands of digits"
        raise ModelFormatError(f"{source} is not valid JSON ({first}); {_FIX}") from None
    if _depth_over(value, MAX_DEPTH):
        raise ModelFormatError(
            f"{source} nests lists or objects more than {MAX_DEPTH} levels deep, which osrkit never "
            f"writes; {_FIX}"
        )
    return value


def read_config(config_path: Path) -> Any:
    """``parse_config`` of a file; bytes that are not UTF-8 are one line too."""
    try:
        text = config_path.read_bytes().decode("utf-8-sig")  # a BOM from an editor is harmless
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{config_path} is not UTF-8 text ({exc.reason}); {_FIX}") from None
    return parse_config(text, config_path)
