"""Per-stream state files: ``<stream>.json`` plus an append-only journal of the state's growing series.

A stream's detector state is about 0.9 MB, nearly all of it series that only grow at their end
(:class:`~models.types.AppendOnlySeries`: nine likelihood histories of 8,640 values and the windowed Gaussian's
buffer). Rewriting them whole at every checkpoint cost every busy stream 0.9 MB of encoding and disk writes
every 30 s; a slow sensor that sent one sample since the last checkpoint still rewrote all of it. Here each
series lives in ``<stream>.<generation>.journal``: a checkpoint appends the elements that are new since the
previous one, and the JSON file keeps the rest of the state with a reference (``start``, ``end``) per series.

Crash safety (the JSON is what a restart reads, so it may only reference what is durable):

- the journal's appended records are fsynced *before* the JSON that references them is atomically replaced;
  records beyond the durable JSON's ``end`` (a crash between the two) are ignored by the reader;
- a journal is never rewritten in place: when it has grown to twice what the state needs, or the first time a
  series is written by this process, a new generation file is written whole, the JSON switches to it, and only
  then are the older generations deleted — so the file the durable JSON references is always intact;
- every record carries a CRC: a torn record at a journal's end (power loss mid-append) ends the read there.

A state written by an older version (series inline in the JSON, base64 float64) still reads.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.types import AppendOnlySeries
from streamer.durable import sync_directory

log = logging.getLogger(__name__)

_PACKED = "__float64_b64__"
_JOURNALED = "__journal__"
_RECORD = struct.Struct("<4sHqI")  # magic, name length, first element's index, element count
_MAGIC = b"SWJ1"
_CRC = struct.Struct("<I")
COMPACT_RATIO = 2.0
"""A journal is rewritten as a new generation once it is this many times the size its state needs."""
_MIN_COMPACT_BYTES = 64 * 1024


class StateFileError(ValueError):
    """A state file or its journal cannot give back the state it references."""


# ---------------------------------------------------------------------------------------------- inline encoding
def _b64(array: np.ndarray, dtype: str) -> str:
    """The one array encoding inside a state's JSON: little-endian raw bytes, base64 (bit-exact, no JSON lists)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def _unb64(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def encode_samples(ts: np.ndarray, values: np.ndarray) -> dict[str, str]:
    return {"ts_ns": _b64(ts, "<i8"), "values": _b64(values, "<f8")}


def decode_samples(blob: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    ts = _unb64(blob["ts_ns"], "<i8").astype(np.int64)
    values = _unb64(blob["values"], "<f8").astype(np.float64)
    if ts.size != values.size:
        raise ValueError("saved training samples: timestamps and values differ in length")
    return ts, values


def pack_state(obj: Any) -> Any:
    """A stream's state as JSON-ready data, every series inline. Its float series become base64 float64: the
    same numbers bit for bit, five times faster to write and read than JSON number lists and half the size. They
    read back as lists of floats (an :class:`AppendOnlySeries` reads back as its values)."""
    if isinstance(obj, dict):
        return {k: pack_state(v) for k, v in obj.items()}
    if isinstance(obj, AppendOnlySeries):
        return pack_state(obj.values)
    if isinstance(obj, np.ndarray):
        if obj.dtype != np.float64 or obj.ndim != 1:
            raise TypeError(f"stream state holds a {obj.dtype} array of shape {obj.shape}: only 1-D float64 packs")
        return {_PACKED: _b64(obj, "<f8")}
    if isinstance(obj, list):
        return [pack_state(v) for v in obj]
    return obj


def unpack_state(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and _PACKED in obj:
            return _unb64(obj[_PACKED], "<f8").tolist()
        return {k: unpack_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack_state(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- journal records
def _record(name: str, start: int, values: np.ndarray) -> bytes:
    key = name.encode()
    body = _RECORD.pack(_MAGIC, len(key), start, values.size) + key + np.ascontiguousarray(values, "<f8").tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def read_journal(path: Path) -> list[tuple[str, int, np.ndarray]]:
    """The journal's records in file order: (series name, index of its first element, elements). Reading stops
    at the first torn or corrupt record: only a crash mid-append leaves one, always after what the JSON
    references."""
    data = path.read_bytes()
    out: list[tuple[str, int, np.ndarray]] = []
    pos = 0
    while pos + _RECORD.size <= len(data):
        magic, key_len, start, n = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + key_len + 8 * n
        if magic != _MAGIC or end + _CRC.size > len(data):
            break
        if _CRC.unpack_from(data, end)[0] != zlib.crc32(data[pos:end]):
            break
        name = data[pos + _RECORD.size: pos + _RECORD.size + key_len].decode()
        out.append((name, start, np.frombuffer(data, "<f8", count=n, offset=pos + _RECORD.size + key_len)))
        pos = end + _CRC.size
    if pos != len(data):
        log.warning("%s: ignoring %d bytes after its last whole record (a write cut short)", path, len(data) - pos)
    return out


# ---------------------------------------------------------------------------------------------- files
@dataclass
class _Journal:
    """What this process last made durable for one state file."""

    lineage: Any
    file: str
    ends: dict[str, int]
    size: int


@dataclass
class StateFiles:
    """Writes and reads the per-stream state files of one state folder.

    ``write`` runs on one background thread at a time (the processor's checkpoint job); ``read`` and ``remove``
    on the loop thread, for streams with no write in flight.
    """

    _journals: dict[Path, _Journal] = field(default_factory=dict)

    # -- writing ------------------------------------------------------------------------------------------------
    def write(self, files: list[tuple[Path, dict, Any]]) -> None:
        """Write each ``(json path, state, lineage)``: the state's :class:`AppendOnlySeries` into the journal, the
        rest into the JSON. ``lineage`` names the in-memory object the series come from: another lineage (a stream
        refitted, restored or re-created) starts a new journal generation, since its series are not a continuation
        of what the journal holds. Raises ``OSError`` after the first file that could not be written."""
        folders: set[Path] = set()
        for path, state, lineage in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._write_one(path, state, lineage)
            except BaseException:
                self._journals.pop(path, None)  # the next write starts a clean generation
                raise
            folders.add(path.parent)
        for folder in folders:
            sync_directory(folder)

    def _write_one(self, path: Path, state: dict, lineage: Any) -> None:
        series: dict[str, AppendOnlySeries] = {}
        doc = _split(state, "", series)
        journal = self._journals.get(path)
        previous = journal.file if journal is not None else _referenced_journal(path)
        needed = 8 * sum(s.values.size for s in series.values())
        if journal is not None and (journal.lineage != lineage or set(journal.ends) != set(series)
                                    or any(s.end < journal.ends[k] for k, s in series.items())
                                    or journal.size > max(COMPACT_RATIO * needed, _MIN_COMPACT_BYTES)):
            journal = None
        if not series:
            journal = None
        elif journal is None:  # a new generation, written whole
            name = f"{path.stem}.{uuid.uuid4().hex}.journal"
            blob = b"".join(_record(k, s.start, s.values) for k, s in series.items())
            _append(path.parent / name, blob, mode="wb")
            sync_directory(path.parent)  # the new file's name is durable before a JSON references it
            journal = _Journal(lineage, name, {k: s.end for k, s in series.items()}, len(blob))
        else:  # what is new since the last write
            blob = b"".join(_record(k, max(journal.ends[k], s.start), s.values[max(journal.ends[k], s.start) - s.start:])
                            for k, s in series.items() if s.end > journal.ends[k])
            if blob:
                _append(path.parent / journal.file, blob, mode="ab")
            journal = _Journal(lineage, journal.file, {k: s.end for k, s in series.items()}, journal.size + len(blob))
        if journal is not None:
            doc["journal"] = journal.file
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        if journal is None:
            self._journals.pop(path, None)
        else:
            self._journals[path] = journal
        if previous is not None and (journal is None or previous != journal.file):
            sync_directory(path.parent)  # the JSON that stopped referencing it is durable before it goes
            (path.parent / previous).unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------------------------
    def read(self, path: Path) -> dict:
        """The state written to ``path``; series come back as float64 arrays, inline ones as lists.
        Raises :class:`StateFileError` (or ``OSError`` / ``ValueError``) if it cannot be given back whole."""
        doc = json.loads(path.read_text())
        file = doc.pop("journal", None) if isinstance(doc, dict) else None
        if file is not None and (not isinstance(file, str) or Path(file).name != file):
            raise StateFileError(f"{path}: invalid journal reference {file!r}")
        records = read_journal(path.parent / file) if file is not None else []
        return _join(unpack_state(doc), records, path)

    def journal_files(self, path: Path) -> list[Path]:
        """Every journal generation of the state file ``path`` (not another stream's whose name extends it)."""
        pattern = re.compile(re.escape(path.stem) + r"\.[0-9a-f]{32}\.journal")
        if not path.parent.is_dir():
            return []
        return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]

    def remove(self, path: Path) -> None:
        """Delete a stream's state: its JSON and every journal generation."""
        path.unlink(missing_ok=True)
        for journal in self.journal_files(path):
            journal.unlink(missing_ok=True)
        self._journals.pop(path, None)


def _append(path: Path, blob: bytes, mode: str) -> None:
    with open(path, mode) as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())


def _referenced_journal(path: Path) -> str | None:
    """The journal generation the state file on disk references (None without one, or if it cannot be read)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    file = doc.get("journal") if isinstance(doc, dict) else None
    return file if isinstance(file, str) and "/" not in file and file.startswith(path.stem + ".") else None


def _split(obj: Any, prefix: str, series: dict[str, AppendOnlySeries]) -> Any:
    """The state as JSON-ready data with each :class:`AppendOnlySeries` replaced by a journal reference."""
    if isinstance(obj, AppendOnlySeries):
        series[prefix] = obj
        return {_JOURNALED: prefix, "start": obj.start, "end": obj.end}
    if isinstance(obj, dict):
        return {k: _split(v, f"{prefix}/{k}", series) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_split(v, f"{prefix}/{i}", series) for i, v in enumerate(obj)]
    return pack_state(obj)


def _join(obj: Any, records: list[tuple[str, int, np.ndarray]], path: Path) -> Any:
    if isinstance(obj, dict):
        if _JOURNALED in obj and set(obj) == {_JOURNALED, "start", "end"}:
            return _assemble(obj[_JOURNALED], int(obj["start"]), int(obj["end"]), records, path)
        return {k: _join(v, records, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, records, path) for v in obj]
    return obj


def _assemble(name: str, start: int, end: int, records: list[tuple[str, int, np.ndarray]], path: Path) -> np.ndarray:
    """Elements ``start`` … ``end - 1`` of one series; later records override earlier ones for the same elements
    (a record written after a crash repeats what the crash left unreferenced)."""
    out = np.empty(end - start, dtype=np.float64)
    have = np.zeros(end - start, dtype=bool)
    for key, first, values in records:
        if key != name:
            continue
        lo, hi = max(start, first), min(end, first + values.size)
        if lo < hi:
            out[lo - start:hi - start] = values[lo - first:hi - first]
            have[lo - start:hi - start] = True
    if not have.all():
        raise StateFileError(f"{path}: its journal lacks {int((~have).sum())} of the {end - start} elements of {name}")
    return out


__all__ = ["COMPACT_RATIO", "StateFileError", "StateFiles", "decode_samples", "encode_samples", "pack_state",
           "read_journal", "unpack_state"]
