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
- a journal is never rewritten in place: when it has grown to 2–3 times what the state needs, or the first time a
  series is written by this process, a new generation file is written whole, the JSON switches to it, and only
  then are the older generations deleted — so the file the durable JSON references is always intact;
- every record carries a CRC: a torn record at a journal's end (power loss mid-append) ends the read there;
- a generation that a crash left unreferenced is deleted at the stream's first write in a later process, once it
  is ``ORPHAN_AGE_S`` old.

Several workers share the folder (a rebalance moves a stream to another worker, which restores and then saves
it). A write appends to the journal it remembers only while the JSON on disk still references it and its size
is what this process left; otherwise — another worker moved the stream to a new generation, or a checkpoint that
was still in flight when the stream left lands late — it writes a new generation whole, never recreating a
deleted journal with only the newest elements. A reader that finds the referenced journal gone reads the JSON
again (another worker switched generations between its two reads).

A state written by an older version (series inline in the JSON, base64 float64) still reads; an older version
cannot read a journaled state (it re-learns the stream's history), so a group is upgraded all at once.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.detector.state_json import array_from_b64, b64_array, pack_state, unpack_state
from models.types import AppendOnlySeries
from streamer.durable import sync_directory

log = logging.getLogger(__name__)

_JOURNALED = "__journal__"
_RECORD = struct.Struct("<4sHqI")  # magic, name length, first element's index, element count
_MAGIC = b"SWJ1"
_CRC = struct.Struct("<I")
COMPACT_RATIO = 2.0
"""A journal is rewritten as a new generation once it is between this many and one more times the size its state
needs (where in that range is fixed per stream, by its name): streams that started together would otherwise all
rewrite their journals (~0.7 MB each) at the same checkpoint, every 8,640 samples they score."""
_MIN_COMPACT_BYTES = 64 * 1024
ORPHAN_AGE_S = 600.0
"""A generation no JSON references is deleted once it is this old (a crash left it; a younger one may be another
worker's, written but not yet referenced)."""
_GENERATION = re.compile(r"(.+)\.([0-9a-f]{32})\.journal")


class StateFileError(ValueError):
    """A state file or its journal cannot give back the state it references."""


# ---------------------------------------------------------------------------------------------- inline encoding
def encode_samples(ts: np.ndarray, values: np.ndarray) -> dict[str, str]:
    return {"ts_ns": b64_array(ts, "<i8"), "values": b64_array(values, "<f8")}


def decode_samples(blob: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    ts = array_from_b64(blob["ts_ns"], "<i8").astype(np.int64)
    values = array_from_b64(blob["values"], "<f8").astype(np.float64)
    if ts.size != values.size:
        raise ValueError("saved training samples: timestamps and values differ in length")
    return ts, values


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

    ``write`` runs on one background thread at a time (the processor's checkpoint job); ``read``, ``remove`` and
    ``forget`` on the loop thread. Several workers may share the folder (a rebalance moves a stream and its files
    to another worker); a write therefore trusts what it remembers of a journal only while the file on disk
    still says the same (the JSON references it, its size is what this process left), and starts a new
    generation otherwise.
    """

    _journals: dict[Path, _Journal] = field(default_factory=dict)
    _swept: set[Path] = field(default_factory=set)
    _listings: dict[Path, dict[str, list[str]]] = field(default_factory=dict)

    # -- writing ------------------------------------------------------------------------------------------------
    def write(self, files: list[tuple[Path, dict, Any]]) -> None:
        """Write each ``(json path, state, lineage)``: the state's :class:`AppendOnlySeries` into the journal, the
        rest into the JSON. ``lineage`` names the in-memory object the series come from: another lineage (a stream
        refitted, restored or re-created) starts a new journal generation, since its series are not a continuation
        of what the journal holds. Raises ``OSError`` after the first file that could not be written."""
        folders: set[Path] = set()
        for path, state, lineage in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_one(path, state, lineage)  # after a failure the next write starts a new generation
            folders.add(path.parent)
        for folder in folders:
            sync_directory(folder)

    def _write_one(self, path: Path, state: dict, lineage: Any) -> None:
        series: dict[str, AppendOnlySeries] = {}
        doc = _split(state, "", series)
        on_disk = _referenced_journal(path)  # what the durable JSON references (another worker may have moved on)
        known = self._journals.pop(path, None)  # put back only once this write is whole
        journal = None
        if series and known is not None and self._continues(known, path, on_disk, series, lineage):
            journal = self._append_new(known, path, series)  # None: the file went away meanwhile
        created: Path | None = None
        if series and journal is None:  # a new generation, written whole
            name = f"{path.stem}.{uuid.uuid4().hex}.journal"
            blob = b"".join(_record(k, s.start, s.values) for k, s in series.items())
            created = path.parent / name
            try:
                with open(created, "xb") as fh:
                    _sync_write(fh, blob)
                sync_directory(path.parent)  # the new file's name is durable before a JSON references it
            except BaseException:
                created.unlink(missing_ok=True)
                raise
            journal = _Journal(lineage, name, {k: s.end for k, s in series.items()}, len(blob))
        if journal is not None:
            doc["journal"] = journal.file
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(doc))
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        except BaseException:
            if created is not None:
                created.unlink(missing_ok=True)  # no JSON references it
            raise
        if journal is not None:
            self._journals[path] = journal
        current = None if journal is None else journal.file
        stale = {f for f in (on_disk, known.file if known is not None else None) if f is not None and f != current}
        if path not in self._swept:  # once per stream and process: generations a crash left unreferenced
            self._swept.add(path)
            stale |= self._orphans(path, current)
        if stale:
            sync_directory(path.parent)  # the JSON that stopped referencing them is durable before they go
            if _referenced_journal(path) == current:  # not switched to one of them by another worker meanwhile
                for name in stale:
                    (path.parent / name).unlink(missing_ok=True)

    @staticmethod
    def _continues(known: _Journal, path: Path, on_disk: str | None, series: dict[str, AppendOnlySeries],
                   lineage: Any) -> bool:
        """Whether this state's series may be appended to the journal this process last wrote."""
        needed = 8 * sum(s.values.size for s in series.values())
        return (known.lineage == lineage and known.file == on_disk and set(known.ends) == set(series)
                and all(s.end >= known.ends[k] for k, s in series.items())
                and known.size <= max(_compact_ratio(path) * needed, _MIN_COMPACT_BYTES)
                and _size(path.parent / known.file) == known.size)

    @staticmethod
    def _append_new(known: _Journal, path: Path, series: dict[str, AppendOnlySeries]) -> _Journal | None:
        """Append the elements new since ``known``; None if the file is gone (never re-created half empty)."""
        parts = []
        for k, s in series.items():
            first = max(known.ends[k], s.start)  # after a gap longer than the series holds: from its oldest
            if s.end > first:
                parts.append(_record(k, first, s.values[first - s.start:]))
        blob = b"".join(parts)
        if blob:
            try:
                fd = os.open(path.parent / known.file, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                return None
            with os.fdopen(fd, "ab") as fh:
                _sync_write(fh, blob)
        return _Journal(known.lineage, known.file, {k: s.end for k, s in series.items()}, known.size + len(blob))

    def _orphans(self, path: Path, keep: str | None) -> set[str]:
        """Generations of ``path`` that no JSON references and that are older than ``ORPHAN_AGE_S`` (younger
        ones may be another worker's, about to be referenced). The folder is listed once per process."""
        listing = self._listings.get(path.parent)
        if listing is None:
            listing = self._listings[path.parent] = {}
            with os.scandir(path.parent) as entries:
                for entry in entries:
                    m = _GENERATION.fullmatch(entry.name)
                    if m:
                        listing.setdefault(m.group(1), []).append(entry.name)
        now = time.time()
        out = set()
        for name in listing.pop(path.stem, []):
            try:
                old = now - (path.parent / name).stat().st_mtime > ORPHAN_AGE_S
            except FileNotFoundError:
                continue
            if name != keep and old:
                out.add(name)
        return out

    def forget(self, path: Path) -> None:
        """The stream left this worker (evicted, or its partition revoked): drop what is remembered of its journal.
        Its next write here starts a new generation anyway (a new lineage); this only bounds the memory."""
        self._journals.pop(path, None)
        self._swept.discard(path)

    # -- reading ------------------------------------------------------------------------------------------------
    def read(self, path: Path) -> dict:
        """The state written to ``path``; series come back as float64 arrays, inline ones as lists.
        Raises :class:`StateFileError` (or ``OSError`` / ``ValueError``) if it cannot be given back whole.

        A journal that is missing is looked for again through a fresh read of the JSON: another worker may have
        switched the state to a new generation, and deleted the old one, between the two reads."""
        for attempt in range(3):
            doc = json.loads(path.read_text())
            file = doc.pop("journal", None) if isinstance(doc, dict) else None
            if file is not None and (not isinstance(file, str) or Path(file).name != file):
                raise StateFileError(f"{path}: invalid journal reference {file!r}")
            try:
                records = read_journal(path.parent / file) if file is not None else []
            except FileNotFoundError:
                if attempt == 2:
                    raise StateFileError(f"{path}: its journal {file} is missing") from None
                continue
            return _join(unpack_state(doc), records, path)
        raise AssertionError("unreachable")

    def journal_files(self, path: Path) -> list[Path]:
        """Every journal generation of the state file ``path`` (not another stream's whose name extends it)."""
        if not path.parent.is_dir():
            return []
        return [p for p in path.parent.iterdir() if (m := _GENERATION.fullmatch(p.name)) and m.group(1) == path.stem]

    def remove(self, path: Path) -> None:
        """Delete a stream's state: its JSON and every journal generation."""
        path.unlink(missing_ok=True)
        for journal in self.journal_files(path):
            journal.unlink(missing_ok=True)
        self._journals.pop(path, None)


def _compact_ratio(path: Path) -> float:
    return COMPACT_RATIO + (zlib.crc32(path.name.encode()) % 1024) / 1024


def _sync_write(fh: Any, blob: bytes) -> None:
    fh.write(blob)
    fh.flush()
    os.fsync(fh.fileno())


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


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


__all__ = ["COMPACT_RATIO", "StateFileError", "StateFiles", "decode_samples", "encode_samples", "read_journal"]
