"""Offset tracking: commit below everything held, never backwards, forget revoked partitions."""
from __future__ import annotations

import numpy as np

from streamer.offsets import OffsetTracker


def test_commit_is_lowest_hold_or_next_after_read():
    t = OffsetTracker()
    for off in range(10):
        t.seen("p0", off)
    t.seen("p1", 4)
    pos = t.positions([{"p0": 6}, {"p0": 3, "p1": 9}])
    assert pos == {"p0": 3, "p1": 5}  # a hold above what was read never lets the position pass read + 1
    t.committed(pos)
    assert t.positions([{"p0": 3}]) == {}  # nothing new to commit
    assert t.positions([]) == {"p0": 10}


def test_never_moves_backwards():
    t = OffsetTracker()
    t.seen(0, 20)
    t.committed({0: 15})
    assert t.positions([{0: 12}]) == {}


def test_forget_drops_partition():
    t = OffsetTracker()
    t.seen(0, 5)
    t.committed({0: 6})
    t.forget([0])
    assert t.positions([]) == {} and t.committed_position(0) is None
