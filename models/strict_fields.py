"""Configuration dataclasses are read back from JSON and command lines; a misspelt key must fail loudly, naming
the keys that exist, instead of being dropped or raising an opaque ``TypeError`` from the constructor."""
from __future__ import annotations

from dataclasses import fields
from typing import Any


def reject_unknown_fields(cls: type, data: dict[str, Any], what: str | None = None) -> None:
    """Raise ``ValueError`` if ``data`` has keys that are not fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__ + ' field(s)'} {unknown}; known: {sorted(known)}")
