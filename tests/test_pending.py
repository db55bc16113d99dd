"""A stream's pending records in flat arrays (streamer/pending.py) against a list of records, the way they were kept
before: every operation the processor uses, in random order."""
import tracemalloc

import numpy as np
import pytest

from streamer.offsets import merge_holds
from streamer.pending import PendingRecords


def _reference_holds(records):
    return merge_holds({}, (r[2] for r in records if r[2] is not None))


def _joined(records):
    if not records:
        return np.empty(0, dtype=np.int64), np.empty(0)
    return np.concatenate([r[0] for r in records]), np.concatenate([r[1] for r in records])


def _reference_within(records, limit, max_records, reach):
    """The processor's loops before the arrays: step's (whole records within the limit, at least one) and the
    careful scoring's (the record that reaches the limit is the run's last)."""
    n = len(records) if max_records is None else min(len(records), max_records)
    if limit is None or n == 0:
        return n
    if reach:
        j, total = 1, records[0][1].size
        while j < n and total < limit:
            total += records[j][1].size
            j += 1
        return j
    out, total = 0, 0
    for r in records[:n]:
        if out and total + r[1].size > limit:
            break
        out, total = out + 1, total + r[1].size
    return out


def test_pending_records_behave_as_a_list_of_records():
    rng = np.random.default_rng(7)
    pending, reference = PendingRecords(), []
    handed_out = []  # (array handed out, its copy then): appends that move the arrays must leave them as they were
    t = 0
    for step in range(3000):
        op = rng.random()
        if op < 0.55:
            n = int(rng.choice([1, 1, 1, 2, 5, 40]))
            ts = np.arange(t, t + n, dtype=np.int64)
            t += n
            values = rng.normal(size=n)
            origin = None if rng.random() < 0.1 else (("topic", int(rng.integers(0, 3))), step)
            stamp = int(ts[0]) + 7 if rng.random() < 0.5 else None
            pending.append(ts, values, origin, stamp)
            reference.append((ts, values, origin, stamp))
        elif op < 0.75 and reference:
            k = int(rng.integers(1, len(reference) + 1))
            taken = pending.take(k)
            ts, values = _joined(reference[:k])
            assert taken.records == k
            np.testing.assert_array_equal(taken.ts_ns, ts)
            np.testing.assert_array_equal(taken.values, values)
            assert taken.holds == _reference_holds(reference[:k])
            stamps = [r[3] for r in reference[:k] if r[3] is not None]
            assert taken.last_stamp == (max(stamps) if stamps else None)
            handed_out.append((taken.values, taken.values.copy()))
            pending.pop(k)
            del reference[:k]
        elif op < 0.85 and reference:
            limit = int(rng.integers(1, 60))
            run = None if rng.random() < 0.5 else int(rng.integers(1, 8))
            for reach in (False, True):
                assert pending.count_within(limit, run, reach=reach) == _reference_within(reference, limit, run,
                                                                                         reach)
            assert pending.count_within(None, run) == _reference_within(reference, None, run, False)
        elif op < 0.88:
            pending.release_origins()
            reference = [(ts, v, None, s) for ts, v, _, s in reference]
        elif op < 0.9 and reference:
            one = pending.records(1)[0]
            ts, values, origin, stamp = reference[0]
            np.testing.assert_array_equal(one.ts_ns, ts)
            assert one.origin == origin and one.stamp == stamp
        assert len(pending) == len(reference)
        assert pending.samples == sum(r[1].size for r in reference)
        assert pending.held() == sum(r[2] is not None for r in reference)
        assert pending.holds() == _reference_holds(reference)
        assert pending.stamps().tolist() == [r[3] for r in reference if r[3] is not None]
        ts, values = _joined(reference)
        np.testing.assert_array_equal(pending.values(), values)
        np.testing.assert_array_equal(pending.timestamps(), ts)
    for array, copy in handed_out:
        np.testing.assert_array_equal(array, copy)


def test_popping_everything_frees_the_arrays():
    pending = PendingRecords()
    for i in range(10_000):
        pending.append(np.array([i], dtype=np.int64), np.array([1.0]), ("p", i))
    pending.pop(len(pending))
    assert len(pending) == 0 and pending.samples == 0 and pending.values().size == 0
    assert pending._values.size == 0  # not 10,000 dead slots kept for a stream that went quiet
    with pytest.raises(ValueError):
        pending.pop(1)


def test_one_sample_records_cost_bytes_not_objects():
    """A sensor that sends one reading per record: before, ~440 bytes per pending sample (two one-element arrays, a
    dataclass and an origin tuple), which the stream cap budgets at 24 (streamer/memory.py). The arrays keep a record
    in a few numbers; with their growth room at most half again that."""
    pending = PendingRecords()
    ts, value = np.array([0], dtype=np.int64), np.array([1.0])
    n = 100_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            pending.append(ts, value, ("partition", i))
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used / n < 1.5 * (16 + 36) + 8, f"{used / n:.0f} bytes per one-sample record"
