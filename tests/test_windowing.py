"""Windowing rules: grid resampling, duplicates, late samples, gaps, restart alignment, audio chunks."""
from __future__ import annotations

import numpy as np
import pytest

from streamer.windowing import AudioWindower, SensorWindower, WindowSpec

S = 1_000_000_000
P = 10 * S  # 10 s grid


def feed(w: SensorWindower, samples, part=0, first_offset=0):
    out = []
    lates = []
    for i, (t, v) in enumerate(samples):
        r = w.add(t, v, (part, first_offset + i))
        out.extend(r.windows)
        if r.late:
            lates.append(first_offset + i)
    return out, lates


def test_regular_series_gives_aligned_overlapping_windows():
    w = SensorWindower("s", "sensor", WindowSpec(length=8, hop=4, period_ns=P))
    samples = [(k * P, float(k)) for k in range(100, 140)]
    wins, lates = feed(w, samples)
    assert not lates
    # windows end on absolute grid indices that are multiples of hop
    assert all(win.end_index % 4 == 0 for win in wins)
    assert [win.end_index for win in wins] == list(range(108, 140, 4))
    for win in wins:
        np.testing.assert_array_equal(win.values, np.arange(win.end_index - 7, win.end_index + 1, dtype=np.float32))
        assert win.end_ns == win.end_index * P
        assert win.start_ns == (win.end_index - 7) * P
        assert win.value == float(win.end_index)
        assert win.sample_rate == pytest.approx(0.1)


def test_irregular_timestamps_are_linearly_interpolated():
    w = SensorWindower("s", "sensor", WindowSpec(length=4, hop=4, period_ns=P))
    # a ramp v = t/S sampled at jittered times: the grid values must be exactly the ramp at grid times
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.integers(3 * S, 17 * S, size=60)) + 1000 * S
    wins, _ = feed(w, [(int(t), t / S) for t in times])
    assert len(wins) > 5
    for win in wins:
        expected = np.arange(win.end_index - 3, win.end_index + 1) * P / S
        np.testing.assert_allclose(win.values, expected, rtol=1e-6)


def test_duplicate_timestamp_last_write_wins_for_open_windows():
    w = SensorWindower("s", "sensor", WindowSpec(length=4, hop=2, period_ns=P))
    wins, _ = feed(w, [(k * P, 1.0) for k in range(0, 4)])  # window ending at 3? no: ends on multiples of 2
    assert [x.end_index for x in wins] == []
    r = w.add(4 * P, 1.0, (0, 10))
    assert [x.end_index for x in r.windows] == [4]
    r = w.add(4 * P, 9.0, (0, 11))  # duplicate of the newest sample: emitted window keeps 1.0, later ones get 9.0
    assert not r.late and not r.windows
    wins, _ = feed(w, [(5 * P, 1.0), (6 * P, 1.0)], first_offset=12)
    assert wins[0].end_index == 6
    np.testing.assert_array_equal(wins[0].values, [1.0, 9.0, 1.0, 1.0])


def test_late_sample_inside_open_window_overwrites_older_is_rejected():
    w = SensorWindower("s", "sensor", WindowSpec(length=4, hop=4, period_ns=P))
    feed(w, [(k * P, 0.0) for k in range(0, 6)])  # window ending at 4 emitted; open window is 5..8
    r = w.add(5 * P, 7.0, (0, 50))  # late but inside the open window
    assert not r.late
    r = w.add(2 * P, 7.0, (0, 51))  # older than the open window
    assert r.late
    wins, _ = feed(w, [(k * P, 0.0) for k in range(6, 9)], first_offset=60)
    np.testing.assert_array_equal(wins[0].values, [7.0, 0.0, 0.0, 0.0])


def test_small_gap_interpolated_large_gap_resets():
    spec = WindowSpec(length=4, hop=1, period_ns=P, max_gap_periods=3)
    w = SensorWindower("s", "sensor", spec)
    wins, _ = feed(w, [(0, 0.0), (3 * P, 3.0)])  # 3-period gap: bridged
    assert [x.end_index for x in wins] == [3]
    np.testing.assert_allclose(wins[0].values, [0, 1, 2, 3])
    r = w.add(10 * P, 10.0, (0, 5))  # 7-period gap: reset
    assert r.reset and not r.windows and w.resets == 1
    wins, _ = feed(w, [(k * P, float(k)) for k in range(11, 14)], first_offset=6)
    assert [x.end_index for x in wins] == [13]  # a fresh buffer needs a full window again


def test_period_inferred_from_first_samples():
    w = SensorWindower("s", "sensor", WindowSpec(length=4, hop=2, period_ns=0, infer_samples=4))
    wins, _ = feed(w, [(k * 300 * S, float(k)) for k in range(1000, 1010)])
    assert w.period_ns == 300 * S
    assert [x.end_index for x in wins] == [1004, 1006, 1008]


def test_holds_track_lowest_offset_of_unemitted_windows():
    w = SensorWindower("s", "sensor", WindowSpec(length=4, hop=2, period_ns=P))
    feed(w, [(k * P, float(k)) for k in range(0, 5)])  # emitted window ends at 4; open window is 3..6
    assert w.holds() == {0: 3}
    feed(w, [(5 * P, 5.0), (6 * P, 6.0)], first_offset=5)  # window 3..6 emitted; open 5..8
    assert w.holds() == {0: 5}


def test_restart_from_held_offset_rebuilds_identical_windows():
    """The property the at-least-once monitor relies on: re-reading from the hold gives the same windows."""
    spec = WindowSpec(length=8, hop=3, period_ns=P)
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.integers(4 * S, 16 * S, size=200)) + 10_000 * S
    samples = [(int(t), float(np.sin(i / 5))) for i, t in enumerate(times)]
    full = SensorWindower("s", "sensor", spec)
    all_wins, _ = feed(full, samples)
    by_end = {x.end_index: x for x in all_wins}

    first = SensorWindower("s", "sensor", spec)
    before, _ = feed(first, samples[:97])
    resume = first.holds()[0]
    second = SensorWindower("s", "sensor", spec)
    after, _ = feed(second, samples[resume:], first_offset=resume)
    assert after, "restart produced no windows"
    assert after[0].end_index == before[-1].end_index + spec.hop  # nothing lost, nothing repeated
    for x in after:
        np.testing.assert_allclose(x.values, by_end[x.end_index].values, rtol=1e-6)


def test_audio_chunks_windows_gap_and_overlap():
    rate = 16000
    spec = WindowSpec.from_seconds(0.064, 0.032, rate)  # 1024 / 512
    w = AudioWindower("a", "audio", spec)
    period = S // rate
    x = np.sin(np.arange(16000) / 7.0).astype(np.float32)
    t0 = 1_700_000_000 * S
    wins = []
    for i in range(0, 16000, 1600):
        r = w.add_chunk(t0 + i * period, rate, x[i:i + 1600], (3, i // 1600))
        assert not r.late
        wins.extend(r.windows)
    assert len(wins) >= 28
    k0 = t0 // period
    for win in wins:
        assert win.end_index % 512 == 0 and len(win.values) == 1024
        lo = win.end_index - 1023 - k0
        np.testing.assert_array_equal(win.values, x[lo:lo + 1024])
    # overlapping chunk → late; far gap → reset
    assert w.add_chunk(t0, rate, x[:1600], (3, 99)).late
    r = w.add_chunk(t0 + 20 * rate * period, rate, x[:1600], (3, 100))
    assert r.reset


def test_audio_holds_release_as_windows_leave():
    rate = 16000
    spec = WindowSpec.from_seconds(0.064, 0.064, rate)
    w = AudioWindower("a", "audio", spec)
    period = S // rate
    for i in range(5):
        w.add_chunk(i * 512 * period, rate, np.ones(512, np.float32), (0, i))
    # windows end at multiples of 1024: k=1023 not (grid multiple is 1024), first full window ends at 2048
    assert min(w.holds().values()) >= 2
