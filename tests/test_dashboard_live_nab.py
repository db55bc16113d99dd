"""The running NAB score of a replay: label windows snapped onto scored rows, the monitor's alerts as detections."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboards.live_nab import live_nab_score, snap_windows
from dashboards.store import LabelWindow

S = 1_000_000_000


def frame(n: int, alert_rows=(), step: int = 10 * S) -> pd.DataFrame:
    alert = np.zeros(n)
    alert[list(alert_rows)] = 1
    return pd.DataFrame({"time_ns": np.arange(n, dtype=np.int64) * step, "alert": alert,
                         "score": alert * 0.9 + 0.05})


def window(start_s: float, end_s: float) -> LabelWindow:
    return LabelWindow("s", int(start_s * S), int(end_s * S), "nab:test.csv")


def test_windows_snap_to_rows_inside_them_and_unreached_ones_drop():
    times = np.arange(100, dtype=np.int64) * 10 * S
    spans = snap_windows(times, [window(205, 395), window(2000, 2100)])
    assert spans == [(21, 39)]  # first row >= 205 s is row 21, last row <= 395 s is row 39


def test_windows_that_collide_after_snapping_merge():
    times = np.arange(100, dtype=np.int64) * 10 * S
    assert snap_windows(times, [window(200, 300), window(301, 400)]) == [(20, 30), (31, 40)]
    assert snap_windows(times, [window(200, 350), window(300, 400)]) == [(20, 40)]  # overlapping labels


def test_detection_at_window_start_scores_near_perfect_and_silence_scores_zero():
    labels = [window(3000, 3500)]  # rows 300..350 of 1000, after the probationary 15 %
    hit = live_nab_score(frame(1000, alert_rows=[300]), labels)
    miss = live_nab_score(frame(1000), labels)
    late = live_nab_score(frame(1000, alert_rows=[345]), labels)
    assert hit.profiles["standard"].score > 95 and hit.profiles["standard"].tp == 1
    assert miss.profiles["standard"].score == pytest.approx(0.0) and miss.profiles["standard"].fn == 1
    assert 0 < late.profiles["standard"].score < hit.profiles["standard"].score
    assert hit.windows_reached == 1 and hit.detections == 1
    assert not hit.history.empty and set(hit.history["profile"]) == {"Standard", "Low FP", "Low FN"}


def test_false_alarms_cost_more_under_low_fp():
    labels = [window(3000, 3500)]
    noisy = live_nab_score(frame(1000, alert_rows=[300, 600, 700, 800]), labels)
    std, low_fp = noisy.profiles["standard"], noisy.profiles["reward_low_FP_rate"]
    assert std.fp == 3 and low_fp.score < std.score < 100


def test_nothing_reached_or_only_probation_is_explained():
    early = live_nab_score(frame(100), [window(5000, 6000)])
    assert not early.profiles and "No label window has been reached" in early.note
    probation = live_nab_score(frame(1000), [window(100, 200)])  # rows 10..20: inside the first 15 %
    assert not probation.profiles and "probationary" in probation.note
    empty = live_nab_score(frame(0), [window(1, 2)])
    assert empty.rows == 0 and "No scored windows" in empty.note
