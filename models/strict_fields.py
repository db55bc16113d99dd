"""Configuration dataclasses are read back from JSON and command lines: a misspelt key must fail loudly, naming
the keys that exist, instead of being dropped or raising an opaque ``TypeError`` from the constructor; and a
tuple field must take what a command line can write (one number, or numbers separated by ';')."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np


def reject_unknown_fields(cls: type, data: dict[str, Any], what: str | None = None) -> None:
    """Raise ``ValueError`` if ``data`` has keys that are not fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__ + ' field(s)'} {unknown}; known: {sorted(known)}")


def number_tuple(value: Any, kind: type, name: str, example: str) -> tuple:
    """A tuple of numbers from a tuple, one number, None, or a command-line string like "1;0.5" (commas
    separate detector options on the command line, so ';' or '/' separate the numbers)."""
    if value is None:
        return ()
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = (value,)
    elif isinstance(value, str):
        value = tuple(part for part in value.replace("/", ";").split(";") if part.strip())
    try:
        out = tuple(kind(float(v)) for v in value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name} must be finite numbers (e.g. {example}), got {value!r}") from exc
    if kind is int and any(float(v) != int(float(v)) for v in value):
        raise ValueError(f"{name} must be whole numbers, got {value!r}")
    return out
