"""Micro-batching: collect windows from many streams and hand them to the model in batches.

Why: one model call on 64 windows costs little more than on one, so throughput needs batches; but a window
must not wait forever for company, so a batch also leaves when its oldest window has waited ``max_wait_s``.
Windows are grouped by a key (the model that scores them: one per stream, or one shared per stream class),
because only windows for the same model can share a forward pass. Pure: the caller passes the clock.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, Hashable, Iterator, TypeVar

T = TypeVar("T")


@dataclass
class _Group(Generic[T]):
    first_at: float
    items: list[T] = field(default_factory=list)


class MicroBatcher(Generic[T]):
    def __init__(self, max_batch: int = 64, max_wait_s: float = 0.2):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._groups: OrderedDict[Hashable, _Group[T]] = OrderedDict()

    def add(self, key: Hashable, item: T, now: float) -> None:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(first_at=now)
        group.items.append(item)

    def take_ready(self, now: float, force: bool = False) -> list[tuple[Hashable, list[T]]]:
        """Pop every batch that is full or has waited long enough (all of them with ``force``).

        A group larger than ``max_batch`` leaves as several batches; the remainder keeps waiting from ``now``.
        """
        out: list[tuple[Hashable, list[T]]] = []
        for key in list(self._groups):
            group = self._groups[key]
            due = force or now - group.first_at >= self.max_wait_s
            while len(group.items) >= self.max_batch:
                out.append((key, group.items[: self.max_batch]))
                group.items = group.items[self.max_batch:]
                group.first_at = now
            if group.items and due:
                out.append((key, group.items))
                group.items = []
            if not group.items:
                del self._groups[key]
        return out

    def next_due(self) -> float | None:
        """Clock time at which the oldest waiting batch becomes due (None when empty)."""
        if not self._groups:
            return None
        return min(g.first_at for g in self._groups.values()) + self.max_wait_s

    def pending(self) -> Iterator[T]:
        for group in self._groups.values():
            yield from group.items

    def drop(self, key: Hashable) -> list[T]:
        group = self._groups.pop(key, None)
        return group.items if group else []

    def __len__(self) -> int:
        return sum(len(g.items) for g in self._groups.values())
