"""Offset tracking: commit below everything held, never backwards, forget revoked partitions."""
from __future__ import annotations

import numpy as np

from streamer.offsets import OffsetTracker
from streamer.windowing import SensorWindower, WindowSpec


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


def test_windower_holds_drive_commits_and_replay_loses_nothing():
    """Commit from the windower's holds plus unwritten windows, crash, resume: every window appears."""
    spec = WindowSpec(length=6, hop=2, period_ns=10)
    samples = [(10 * k, float(np.cos(k))) for k in range(60)]
    tracker = OffsetTracker()
    w = SensorWindower("s", "sensor", spec)
    written: set[int] = set()
    unwritten = []
    for off, (t, v) in enumerate(samples[:33]):
        tracker.seen(0, off)
        unwritten.extend(w.add(t, v, (0, off)).windows)
        if off % 5 == 0:  # the sink accepts everything but the last window of each batch
            for win in unwritten[:-1]:
                written.add(win.end_index)
            unwritten = unwritten[-1:]
            tracker.committed(tracker.positions([w.holds()] + [x.holds for x in unwritten]))
    resume = tracker.committed_position(0)
    w2 = SensorWindower("s", "sensor", spec)
    for off in range(resume, 60):
        for win in w2.add(*samples[off], (0, off)).windows:
            written.add(win.end_index)
    expected = set(range(6, 60, 2))
    assert written == expected
