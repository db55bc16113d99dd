"""NAB scoring: rule-level checks on tiny inputs, and the validation against NAB's published scoreboard."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.nab_files import NabCorpus, score_detector_results
from models.errors import InputError
from models.metrics import nab

STANDARD = nab.DEFAULT_PROFILES["standard"]


def _ts(n: int) -> np.ndarray:
    return np.datetime64("2020-01-01T00:00:00", "us") + np.arange(n) * np.timedelta64(5, "m")


def _layout(n=100, spans=((40, 49),), key="cat/f.csv"):
    ts = _ts(n)
    return nab.build_layout(key, ts, [(ts[s], ts[e]) for s, e in spans])


def _sig(x: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def test_scaled_sigmoid_known_values():
    got = nab.scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 2.99, 3.0, 10.0]))
    np.testing.assert_allclose(got[:4], [0.98661, 0.84828, 0.0, -0.98661], atol=1e-5)
    assert got[4] > -1.0 and got[5] == -1.0 and got[6] == -1.0


def test_probationary_length_follows_nab():
    assert nab.probationary_length(100) == 15
    assert nab.probationary_length(4032) == 604
    assert nab.probationary_length(22695) == 750  # capped at 0.15 * 5000


def test_single_file_rules_by_hand():
    lay = _layout()
    base = np.zeros(100)

    def raw(rows):
        s = base.copy()
        s[list(rows)] = 1.0
        return nab.score_file(lay, s, 0.5, STANDARD)

    # Earliest possible detection earns exactly tp_weight.
    assert raw([40]).raw_score == pytest.approx(1.0)
    # Only the earliest detection of a window counts.
    assert raw([40, 45, 49]).raw_score == pytest.approx(1.0)
    late = 45
    assert raw([late]).raw_score == pytest.approx(_sig(-(49 - late + 1) / 10) / _sig(-1.0))
    # Missed window: -fn_weight.
    f = raw([])
    assert f.raw_score == pytest.approx(-1.0) and f.fn == 1 and f.tp == 0
    # FP before any window: -fp_weight; FP after it weighted by distance relative to width - 1.
    assert raw([20]).raw_score == pytest.approx(-1.0 - 0.11)
    assert raw([60]).raw_score == pytest.approx(-1.0 + 0.11 * _sig((60 - 49) / 9))
    # Probationary rows (first 15) are ignored.
    assert raw([3, 10]).raw_score == pytest.approx(-1.0)
    # Both FPs count individually.
    r = raw([20, 21, 40])
    assert r.raw_score == pytest.approx(1.0 - 0.22) and r.fp == 2 and r.tp == 1


def test_window_inside_probation_is_not_scored():
    lay = _layout(n=200, spans=((5, 10), (100, 120)))  # probation = 30 rows
    assert list(lay.scorable_windows) == [1]
    res = nab.score_corpus([lay], [np.zeros(200)], STANDARD, n_label_windows=2)
    assert res.null_score == pytest.approx(-1.0)


def test_sweep_matches_brute_force_per_threshold():
    rng = np.random.default_rng(0)
    layouts = [
        _layout(300, ((60, 80), (150, 170)), "a/x.csv"),
        _layout(500, ((100, 140),), "a/y.csv"),
        _layout(200, (), "b/z.csv"),
    ]
    scores = [np.round(rng.random(lay.n_rows), 2) for lay in layouts]  # rounding creates ties
    for prof in nab.DEFAULT_PROFILES.values():
        thresholds, totals = nab.sweep_thresholds(layouts, scores, prof)
        assert thresholds[0] == nab.NO_DETECTION_THRESHOLD
        assert np.all(np.diff(thresholds) < 0)
        for thr, tot in zip(thresholds, totals):
            brute = sum(nab.score_file(lay, s, thr, prof).raw_score for lay, s in zip(layouts, scores))
            assert tot == pytest.approx(brute, abs=1e-9)
        best_thr, best = nab.optimize_threshold(layouts, scores, prof)
        assert best == pytest.approx(totals.max())


def test_null_and_perfect_detectors_normalise_to_0_and_100():
    layouts = [_layout(300, ((60, 80), (150, 170)), "a/x.csv"), _layout(400, ((100, 140),), "a/y.csv")]
    null = [np.full(lay.n_rows, 0.5) for lay in layouts]
    perfect = []
    for lay in layouts:
        s = np.zeros(lay.n_rows)
        s[[w[0] for w in lay.windows]] = 1.0
        perfect.append(s)
    for prof in nab.DEFAULT_PROFILES.values():
        assert nab.score_corpus(layouts, null, prof, 3).normalized == pytest.approx(0.0)
        assert nab.score_corpus(layouts, perfect, prof, 3).normalized == pytest.approx(100.0)


def test_bad_inputs_raise_input_error():
    lay = _layout()
    with pytest.raises(InputError):
        nab.score_file(lay, np.zeros(99), 0.5, STANDARD)
    with pytest.raises(InputError):
        nab.score_file(lay, np.full(100, np.nan), 0.5, STANDARD)
    ts = _ts(10)
    with pytest.raises(InputError):
        nab.build_layout("k", ts, [(ts[0] - np.timedelta64(1, "m"), ts[3])])


# ---------------------------------------------------------------- validation against NAB's scoreboard


@pytest.fixture(scope="module")
def nab_root(shared_data):
    root = shared_data / "nab"
    if not (root / "results" / "numenta").is_dir():
        pytest.skip(f"NAB reference results not found under {root}/results")
    return root


@pytest.mark.parametrize("detector", ["numenta", "windowedGaussian"])
def test_reproduces_published_nab_scores(nab_root, detector):
    """From the anomaly_score column alone, the optimised-threshold scores match final_results.json."""
    published = json.loads((nab_root / "results" / "final_results.json").read_text())[detector]
    corpus = NabCorpus(nab_root)
    results = score_detector_results(corpus, nab_root / "results", detector)
    assert set(results) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for profile, res in results.items():
        assert res.normalized == pytest.approx(published[profile], abs=0.1), profile


def test_reproduces_numenta_at_stored_thresholds(nab_root):
    """NAB scored the published numenta numbers at config/thresholds.json's thresholds: exact match."""
    published = json.loads((nab_root / "results" / "final_results.json").read_text())["numenta"]
    stored = json.loads((nab_root / "config" / "thresholds.json").read_text())["numenta"]
    thresholds = {p: v["threshold"] for p, v in stored.items()}
    results = score_detector_results(NabCorpus(nab_root), nab_root / "results", "numenta", thresholds)
    for profile, res in results.items():
        assert res.threshold == thresholds[profile]
        assert res.normalized == pytest.approx(published[profile], abs=0.01), profile
