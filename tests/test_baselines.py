"""Series baselines: one contract over every registered detector, plus per-detector behaviour checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from models.baselines import SERIES_DETECTORS, SeriesDetector, create_series_detector
from models.baselines.gaussian import WindowedGaussian
from models.baselines.matrix_profile import left_profile_from_index
from models.baselines.period import dominant_period
from models.errors import InputError, NotFittedError

BUILTIN = [
    "windowed_gaussian",
    "windowed_gaussian_train",
    "matrix_profile",
    "matrix_profile_train",
    "half_space_trees",
    "half_space_trees_train",
]


def _series(n=700, period=25, seed=0, anomaly_at=None):
    rng = np.random.default_rng(seed)
    x = np.sin(2 * np.pi * np.arange(n) / period) + 0.05 * rng.standard_normal(n)
    if anomaly_at is not None:
        x[anomaly_at : anomaly_at + period] = 0.9 * np.sign(np.sin(2 * np.pi * np.arange(period) / period))
    return x


def test_registry_has_builtins_and_rejects_unknown():
    assert set(BUILTIN) <= set(SERIES_DETECTORS)
    with pytest.raises(InputError, match="known"):
        create_series_detector("no_such_detector")


@pytest.mark.parametrize("name", BUILTIN)
def test_contract_causal_shape_finite(name):
    x = _series()
    det = create_series_detector(name)
    assert isinstance(det, SeriesDetector)
    det.fit(x[:200])
    full = det.score(x)
    assert full.shape == x.shape and np.all(np.isfinite(full))
    # No look-ahead: scores of a prefix do not change when later points are appended,
    # and score() restarts from the fitted state each call.
    for cut in (230, 451, 699):
        np.testing.assert_allclose(det.score(x[:cut]), full[:cut], rtol=0, atol=1e-9)
    altered = x.copy()
    altered[500:] += 5.0
    np.testing.assert_allclose(det.score(altered)[:500], full[:500], rtol=0, atol=1e-9)
    if det.output_is_probability:
        assert np.all((full >= 0) & (full <= 1))


@pytest.mark.parametrize("name", ["windowed_gaussian_train", "matrix_profile", "half_space_trees"])
def test_score_before_fit_is_a_clear_error(name):
    with pytest.raises(NotFittedError):
        create_series_detector(name).score(_series())


@pytest.mark.parametrize("name", BUILTIN)
def test_bad_input_is_input_error(name):
    det = create_series_detector(name)
    with pytest.raises(InputError):
        det.fit(np.array([1.0, np.nan, 2.0] * 10))


def _naive_windowed_gaussian(x, window, step):
    """NAB's loop, written out: score with the current stats, then update the window."""
    data, buf, mean, std, out = [], [], 0.0, 1.0, []
    for v in x:
        out.append(0.0 if not data else 1.0 - 0.5 * math.erfc(abs(v - mean) / std / math.sqrt(2)))
        if len(data) < window:
            data.append(v)
            mean, std = float(np.mean(data)), float(np.std(data)) or 1e-6
        else:
            buf.append(v)
            if len(buf) == step:
                data = data[step:] + buf
                buf = []
                mean, std = float(np.mean(data)), float(np.std(data)) or 1e-6
    return np.array(out)


def test_windowed_gaussian_matches_nab_loop():
    x = np.random.default_rng(3).gamma(2.0, 3.0, 900)
    x[400:420] = 7.0  # flat bit
    det = WindowedGaussian(window=300, step=50).fit(x[:100])
    np.testing.assert_allclose(det.score(x), _naive_windowed_gaussian(x, 300, 50), atol=1e-9)


def test_windowed_gaussian_flags_outlier():
    x = np.random.default_rng(4).normal(10, 1, 1000)
    x[800] = 30.0
    s = create_series_detector("windowed_gaussian", output="zscore").fit(x[:150]).score(x)
    assert int(np.argmax(s[150:])) + 150 == 800


def test_dominant_period():
    assert dominant_period(_series(3000, period=37)) in (36, 37, 38)
    assert dominant_period(_series(3000, period=144), max_period=1000) in (143, 144, 145)
    noise = np.random.default_rng(0).standard_normal(2000)
    assert 8 <= dominant_period(noise) <= 1000
    assert dominant_period(np.ones(500), default=50) == 50


@pytest.mark.parametrize("normalize", [True, False])
def test_left_profile_matches_brute_force(normalize):
    rng = np.random.default_rng(5)
    x = np.r_[rng.standard_normal(60), np.full(15, 2.0), rng.standard_normal(40)]
    m = 6
    n_sub = x.size - m + 1
    win = np.lib.stride_tricks.sliding_window_view(x, m)
    excl = int(math.ceil(m / 4))

    def dist(a, b):
        if not normalize:
            return float(np.sqrt(((a - b) ** 2).sum()))
        sa, sb = a.std(), b.std()
        if sa < 1e-8 and sb < 1e-8:
            return 0.0
        if sa < 1e-8 or sb < 1e-8:
            return math.sqrt(m)
        za, zb = (a - a.mean()) / sa, (b - b.mean()) / sb
        return float(np.sqrt(((za - zb) ** 2).sum()))

    left_idx = np.full(n_sub, -1)
    brute = np.full(n_sub, np.inf)
    for i in range(n_sub):
        cands = [j for j in range(0, i - excl)]
        if cands:
            d = [dist(win[i], win[j]) for j in cands]
            brute[i] = min(d)
            left_idx[i] = cands[int(np.argmin(d))]
    got = left_profile_from_index(x, m, left_idx, normalize)
    np.testing.assert_allclose(got, brute, atol=1e-9)


@pytest.mark.parametrize("name", ["matrix_profile", "matrix_profile_train"])
# normalize=False compiles stumpy's aamp kernels too (~1 min of numba on 2 cores): slow-marked.
@pytest.mark.parametrize("normalize", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_matrix_profile_finds_planted_discord(name, normalize):
    x = _series(900, period=25, anomaly_at=650)
    det = create_series_detector(name, normalize=normalize).fit(x[:300])
    assert det.window in (24, 25, 26)
    s = det.score(x)
    peak = int(np.argmax(s[300:])) + 300 - det.lag
    assert 650 - 25 <= peak <= 650 + 50


def test_half_space_trees_scores_anomaly_higher():
    x = np.random.default_rng(6).normal(0, 0.1, 1500)
    x[1200:1210] = 1.5
    s = create_series_detector("half_space_trees_train").fit(x[:600]).score(x)
    assert s[1200:1215].max() > np.quantile(s[600:1200], 0.99)
