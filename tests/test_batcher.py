"""Micro-batcher: size and wait limits, grouping by model key, forced flush."""
from __future__ import annotations

import pytest

from streamer.batcher import MicroBatcher


def test_full_batches_leave_immediately_rest_waits():
    b = MicroBatcher(max_batch=3, max_wait_s=1.0)
    for i in range(7):
        b.add("m", i, now=0.0)
    assert b.take_ready(now=0.0) == [("m", [0, 1, 2]), ("m", [3, 4, 5])]
    assert len(b) == 1
    assert b.take_ready(now=0.5) == []
    assert b.take_ready(now=1.0) == [("m", [6])]
    assert len(b) == 0 and b.next_due() is None


def test_wait_is_measured_from_the_oldest_item_per_group():
    b = MicroBatcher(max_batch=10, max_wait_s=1.0)
    b.add("a", 1, now=0.0)
    b.add("b", 2, now=0.6)
    b.add("a", 3, now=0.9)
    assert b.next_due() == pytest.approx(1.0)
    assert b.take_ready(now=1.0) == [("a", [1, 3])]
    assert b.take_ready(now=1.6) == [("b", [2])]


def test_force_flushes_everything_and_pending_lists_items():
    b = MicroBatcher(max_batch=10, max_wait_s=100.0)
    b.add("a", 1, 0.0)
    b.add("b", 2, 0.0)
    assert sorted(b.pending()) == [1, 2]
    assert sorted(b.take_ready(0.0, force=True)) == [("a", [1]), ("b", [2])]


def test_drop_and_validation():
    b = MicroBatcher(max_batch=2, max_wait_s=0.1)
    b.add("a", 1, 0.0)
    assert b.drop("a") == [1] and b.drop("a") == []
    with pytest.raises(ValueError):
        MicroBatcher(max_batch=0)
