"""Which offset may be committed, per partition, so that a crash never loses a score (at-least-once).

Kafka's committed offset means "everything before this is done". For the monitor, *done* means the record's
samples are in windows whose scores are durably in the store (or the record was dead-lettered, or was
deliberately dropped by a logged buffer reset). Records still sitting in a stream buffer, in a window waiting
for a model or for the sink, are *held*. The commit position of a partition is therefore the lowest held
offset, or one past the highest offset read when nothing is held. After a crash the consumer re-reads from
there; the windowing is aligned to an absolute grid and writes are idempotent, so the replay rewrites the same
points instead of adding new ones.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Mapping

Origin = tuple[Hashable, int]
"""Where a sample came from: (partition key, offset). The demo uses its own partition keys."""

Holds = dict[Hashable, int]
"""Lowest offset still needed, per partition."""


def merge_holds(target: Holds, origins: Iterable[Origin]) -> Holds:
    """Fold origins into ``target`` keeping the lowest offset per partition (in place; returns target)."""
    for part, off in origins:
        cur = target.get(part)
        if cur is None or off < cur:
            target[part] = off
    return target


class OffsetTracker:
    """Pure bookkeeping: what was read, what was committed, and what may be committed now."""

    def __init__(self) -> None:
        self._read: dict[Hashable, int] = {}       # partition -> highest offset read
        self._committed: dict[Hashable, int] = {}  # partition -> last committed position (next to read)

    def seen(self, partition: Hashable, offset: int) -> None:
        cur = self._read.get(partition)
        if cur is None or offset > cur:
            self._read[partition] = offset

    def positions(self, holds: Iterable[Mapping[Hashable, int]]) -> dict[Hashable, int]:
        """Commit positions that move forward: min held offset, else highest read + 1."""
        low: dict[Hashable, int] = {}
        for h in holds:
            for part, off in h.items():
                cur = low.get(part)
                if cur is None or off < cur:
                    low[part] = off
        out: dict[Hashable, int] = {}
        for part, top in self._read.items():
            pos = min(low.get(part, top + 1), top + 1)
            if pos > self._committed.get(part, -1):
                out[part] = pos
        return out

    def committed(self, positions: Mapping[Hashable, int]) -> None:
        """Record a successful commit."""
        for part, pos in positions.items():
            if pos > self._committed.get(part, -1):
                self._committed[part] = pos

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Partitions revoked by a rebalance: their next owner starts from the committed position."""
        for part in partitions:
            self._read.pop(part, None)
            self._committed.pop(part, None)

    def highest_read(self, partition: Hashable) -> int | None:
        return self._read.get(partition)

    def committed_position(self, partition: Hashable) -> int | None:
        return self._committed.get(partition)

    def committed_positions(self) -> dict[Hashable, int]:
        return dict(self._committed)
