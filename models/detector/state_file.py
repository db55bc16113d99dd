"""One detector state (a :meth:`DetectorState.state_dict`) in one ``.npz`` file: the nested structure as JSON, every
array and append-only series as an array beside it.

Why not the streamer's state files: those journal a live stream's growing series across checkpoints and fsync
them; a fitted detector's reference state (:attr:`FittedDetector.reference`) is written once, with the detector,
and never changes. ``models`` may not import the streamer, and the detector's folder must stay readable without it.
No pickle: a model folder is data, and loading it must not run code.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CheckpointMismatchError
from models.types import AppendOnlySeries

_STRUCTURE = "structure"
_ARRAY = "__array__"
_SERIES = "__series__"


def _pack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, AppendOnlySeries):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value.values)
        return {_SERIES: key, "end": int(value.end)}
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {_ARRAY: key}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("a detector state's dict keys are strings")
        return {k: _pack(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if _SERIES in value:
            return AppendOnlySeries(np.asarray(arrays[value[_SERIES]]), int(value["end"]))
        if _ARRAY in value:
            return np.asarray(arrays[value[_ARRAY]])
        return {k: _unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    return value


def write_state(path: str | Path, state: dict[str, Any]) -> None:
    """``state``: dicts with string keys, lists, scalars, None, arrays and append-only series."""
    arrays: dict[str, np.ndarray] = {}
    structure = _pack(state, arrays)
    np.savez(Path(path), **{_STRUCTURE: np.array(json.dumps(structure, sort_keys=True))}, **arrays)


def read_state(path: str | Path) -> dict[str, Any]:
    """The state :func:`write_state` wrote; :class:`CheckpointMismatchError` for a file that is not one."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            structure = json.loads(str(z[_STRUCTURE]))
            return _unpack(structure, {k: z[k] for k in z.files if k != _STRUCTURE})
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointMismatchError(f"{path}: unreadable detector state: {exc}") from None
