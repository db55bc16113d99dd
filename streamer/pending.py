"""A stream's unscored samples, record by record, in flat arrays.

Why: a sensor feed that sends one reading per record — the commonest way sensors publish — left one Python object
per sample while it waited (two one-element arrays, a dataclass, an origin tuple: about 440 bytes for 16 bytes of
data, measured with tracemalloc), and counting a stream's pending samples or its held offsets walked every one of
them in Python at every poll round. A stream collecting a long training part, or the backlog the monitor allows
(``max_backlog_samples``), then took about eighteen times the memory the stream cap budgeted for
(:data:`streamer.memory.BUFFERED_SAMPLE_BYTES`, 24 bytes a sample then), and a backlog of a million records cost
over half a second per round just to be counted. Here the samples lie in two growing arrays and each record is a
few numbers (where it ends, its partition and offset, its stamp): 44 bytes for a one-sample record (up to half again
while the arrays have room to grow), and counts and holds are array operations.

A record stays the unit the processor scores, holds offsets for and dead-letters by; the arrays only change how
the records are kept. Arrays handed out (:meth:`PendingRecords.take`, :meth:`PendingRecords.records`) are never
written again: appending past the arrays' room moves the live part into new arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterator

import numpy as np

from streamer.offsets import Holds, Origin

_NO_STAMP = np.iinfo(np.int64).min
_NO_PARTITION = -1
_MIN_ROOM = 16


@dataclass(frozen=True)
class Record:
    """One pending record: its samples and where it came from."""

    ts_ns: np.ndarray
    values: np.ndarray
    origin: Origin | None
    """None once the samples are saved with the stream's state (a training part saved by a checkpoint, or restored
    from one): they no longer hold the commit."""
    stamp: int | None
    """Audio: the timestamp its chunk carried."""


@dataclass(frozen=True)
class Taken:
    """The oldest ``records`` pending records, joined: what one scoring pass of a stream takes."""

    ts_ns: np.ndarray
    values: np.ndarray
    records: int
    holds: Holds
    """The lowest offset per partition among them (records without an origin hold nothing)."""
    last_stamp: int | None
    """Audio: the largest stamp among them."""


class PendingRecords:
    """A stream's pending records, oldest first."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._ts = np.empty(0, dtype=np.int64)
        self._values = np.empty(0, dtype=np.float64)
        self._ends = np.empty(0, dtype=np.int64)  # records lie back to back: one starts where the one before ends
        self._parts = np.empty(0, dtype=np.int32)
        self._offsets = np.empty(0, dtype=np.int64)
        self._stamps = np.empty(0, dtype=np.int64)
        self._s0 = self._s1 = 0  # live samples: [s0, s1)
        self._r0 = self._r1 = 0  # live records: [r0, r1)
        self._partitions: list[Hashable] = []
        self._partition_index: dict[Hashable, int] = {}
        # Asked for every stream at every poll round (a worker may hold 10,000 streams): kept up to date by
        # appends, recomputed from the arrays only after a pop.
        self._holds: Holds | None = {}
        self._held: int | None = 0

    # -- size ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._r1 - self._r0

    @property
    def samples(self) -> int:
        return self._s1 - self._s0

    def held(self) -> int:
        """Records that hold an offset (not saved with the stream's state)."""
        if self._held is None:
            self._held = int(np.count_nonzero(self._parts[self._r0:self._r1] != _NO_PARTITION))
        return self._held

    # -- adding and removing ------------------------------------------------------------------------------------
    def append(self, ts_ns: np.ndarray, values: np.ndarray, origin: Origin | None, stamp: int | None = None) -> None:
        n = int(values.size)
        if n != int(ts_ns.size):
            raise ValueError(f"{ts_ns.size} timestamps for {n} values")
        if self._s1 + n > self._values.size or self._r1 + 1 > self._ends.size:
            self._move(self.samples + n, len(self) + 1)
        s, r = self._s1, self._r1
        self._ts[s:s + n] = ts_ns
        self._values[s:s + n] = values
        self._ends[r] = s + n
        if origin is None:
            self._parts[r], self._offsets[r] = _NO_PARTITION, 0
        else:
            part, offset = origin
            index = self._partition_index.get(part)
            if index is None:
                index = self._partition_index[part] = len(self._partitions)
                self._partitions.append(part)
            self._parts[r], self._offsets[r] = index, offset
            if self._holds is not None:
                current = self._holds.get(part)
                if current is None or offset < current:
                    self._holds[part] = offset
            if self._held is not None:
                self._held += 1
        self._stamps[r] = _NO_STAMP if stamp is None else stamp
        self._s1, self._r1 = s + n, r + 1

    def _move(self, samples: int, records: int) -> None:
        """Copy the live part into new arrays with room for ``samples`` and ``records`` and half as much again (so
        appends stay amortised O(1), and an audio stream's 100 s training part is at most half again its size, not
        twice). New arrays, never a shift in place: what was handed out stays as it was."""
        room_s, room_r = max(_MIN_ROOM, samples + samples // 2), max(_MIN_ROOM, records + records // 2)
        s0, s1, r0, r1 = self._s0, self._s1, self._r0, self._r1

        def moved(a: np.ndarray, lo: int, hi: int, room: int) -> np.ndarray:
            out = np.empty(room, dtype=a.dtype)
            out[:hi - lo] = a[lo:hi]
            return out

        self._ts, self._values = moved(self._ts, s0, s1, room_s), moved(self._values, s0, s1, room_s)
        self._ends = moved(self._ends, r0, r1, room_r) - s0
        self._parts, self._offsets = moved(self._parts, r0, r1, room_r), moved(self._offsets, r0, r1, room_r)
        self._stamps = moved(self._stamps, r0, r1, room_r)
        self._s0, self._s1, self._r0, self._r1 = 0, s1 - s0, 0, r1 - r0

    def pop(self, records: int) -> None:
        """Forget the oldest ``records`` records (scored, or given up)."""
        if not 0 <= records <= len(self):
            raise ValueError(f"cannot pop {records} of {len(self)} records")
        if records == len(self):
            self._clear()  # the arrays' memory goes with the last record
            return
        self._s0 = int(self._ends[self._r0 + records - 1])
        self._r0 += records
        if records:
            self._holds = self._held = None

    def release_origins(self) -> None:
        """The samples were saved with the stream's state: they hold no offset any more."""
        self._parts[self._r0:self._r1] = _NO_PARTITION
        self._holds, self._held = {}, 0

    # -- reading ------------------------------------------------------------------------------------------------
    def count_within(self, limit: int | None, max_records: int | None = None, *, reach: bool = False) -> int:
        """How many of the oldest records fit ``limit`` samples (None: all) and ``max_records``; at least one.
        ``reach``: the record that reaches or crosses ``limit`` counts too."""
        n = len(self)
        if max_records is not None:
            n = min(n, max_records)
        if limit is None or n == 0:
            return n
        ends = self._ends[self._r0:self._r0 + n] - self._s0
        if reach:
            return min(n, int(np.searchsorted(ends, limit, side="left")) + 1)
        return max(1, int(np.searchsorted(ends, limit, side="right")))

    def take(self, records: int | None = None) -> Taken:
        """The oldest ``records`` records joined (None: all); views, not copies."""
        k = len(self) if records is None else records
        r0, r1 = self._r0, self._r0 + k
        end = int(self._ends[r1 - 1]) if k else self._s0
        stamps = self._stamps[r0:r1]
        stamps = stamps[stamps != _NO_STAMP]
        holds = self.holds() if k == len(self) else self._holds_of(r0, r1)
        return Taken(self._ts[self._s0:end], self._values[self._s0:end], k, holds,
                     int(stamps.max()) if stamps.size else None)

    def values(self) -> np.ndarray:
        """Every pending sample's value, oldest first (a view)."""
        return self._values[self._s0:self._s1]

    def timestamps(self) -> np.ndarray:
        return self._ts[self._s0:self._s1]

    def holds(self) -> Holds:
        """The lowest offset per partition among the pending records (a copy)."""
        if self._holds is None:
            self._holds = self._holds_of(self._r0, self._r1)
        return dict(self._holds)

    def _holds_of(self, r0: int, r1: int) -> Holds:
        parts, offsets = self._parts[r0:r1], self._offsets[r0:r1]
        present = np.unique(parts)
        return {self._partitions[int(p)]: int(offsets[parts == p].min()) for p in present if p != _NO_PARTITION}

    def stamps(self) -> np.ndarray:
        """The pending records' stamps (records without one left out)."""
        stamps = self._stamps[self._r0:self._r1]
        return stamps[stamps != _NO_STAMP]

    def records(self, records: int | None = None) -> list[Record]:
        """The oldest ``records`` records one by one (None: all): what is dead-lettered record by record."""
        k = len(self) if records is None else records
        out, lo = [], self._s0
        for r in range(self._r0, self._r0 + k):
            hi, p = int(self._ends[r]), int(self._parts[r])
            origin = None if p == _NO_PARTITION else (self._partitions[p], int(self._offsets[r]))
            stamp = None if self._stamps[r] == _NO_STAMP else int(self._stamps[r])
            out.append(Record(self._ts[lo:hi], self._values[lo:hi], origin, stamp))
            lo = hi
        return out

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())
