"""DiffusionSeriesDetector: the benchmark protocol (causal, trains on the training part only), the UCR
window-centre convention, that it separates an injected anomaly, and that its registry names run through
``scalowatch bench nab`` on a tiny synthetic corpus.

Models here are trained for a few dozen steps on short synthetic series, so the file stays fast; the real
numbers come from ``scalowatch bench nab|ucr`` (see benchmarks/README.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.detectors import parse_spec
from nab_corpus import write_tiny_nab_corpus
from benchmarks.nab import detect_series
from benchmarks.nab_files import NabCorpus, NabSeries
from models.errors import InputError, NotFittedError
from models.metrics.nab import probationary_length
from models.series_detector import (
    DiffusionDetectorConfig,
    DiffusionSeriesDetector,
    sliding_windows,
    spread_to_points,
)
from streamer.cli import app

FAST = {"steps": 40, "batch_size": 16, "max_train_windows": 256}


def periodic(n: int, period: int = 32, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / period) + 0.5 * np.sin(4 * np.pi * t / period) + noise * rng.standard_normal(n)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def test_spread_to_points_takes_the_latest_finished_window():
    ends = np.array([3, 5, 7])
    out = spread_to_points(ends, np.array([1.0, 2.0, 3.0]), 10, fill=-1.0)
    np.testing.assert_array_equal(out, [-1, -1, -1, 1, 1, 2, 2, 3, 3, 3])
    x = np.arange(10.0)
    np.testing.assert_array_equal(sliding_windows(x, 4, np.array([3, 9])), [[0, 1, 2, 3], [6, 7, 8, 9]])


def test_window_follows_the_training_period_and_is_clamped():
    det = DiffusionSeriesDetector(**FAST)
    assert abs(det.choose_window(periodic(2000, period=64)) - 64) <= 2
    assert det.choose_window(periodic(2000, period=600)) == det.config.max_window  # clamp above
    assert det.choose_window(periodic(120, period=64)) <= 40  # at most a third of the training part
    assert DiffusionSeriesDetector(window=50, **FAST).choose_window(periodic(2000)) == 50


def test_score_is_causal_prefix_scores_do_not_change_when_points_are_appended():
    x = periodic(1400)
    x[1000:1040] += 3.0
    det = DiffusionSeriesDetector(hop=3, **FAST).fit(x[:500])
    full = det.score(x)
    for cut in (700, 1001, 1200):
        np.testing.assert_allclose(det.score(x[:cut]), full[:cut], rtol=1e-5, atol=1e-5)
    assert full.shape == x.shape and np.all(np.isfinite(full))
    # Points before the first window ends carry no opinion (0), none after.
    assert np.all(full[: det.window - 1] == 0.0)


def test_fit_sees_only_the_training_part_through_the_nab_runner():
    """Two series sharing the probationary part: identical model, so identical scores there."""
    n = 1500
    base = periodic(n, seed=1)
    other = base.copy()
    other[probationary_length(n):] = 5.0 * np.cos(np.arange(n - probationary_length(n)) / 3.0)
    ts = np.datetime64("2021-01-01T00:00") + np.arange(n) * np.timedelta64(5, "m")
    text = [str(t) for t in ts]
    spec = parse_spec("diffusion-recon:steps=30,batch_size=16,max_train_windows=128")
    raw_a, cal_a = detect_series(spec, NabSeries("cat/a.csv", text, ts, base))
    raw_b, cal_b = detect_series(spec, NabSeries("cat/a.csv", text, ts, other))
    p = probationary_length(n)
    np.testing.assert_allclose(raw_a[:p], raw_b[:p], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cal_a[:p], cal_b[:p])
    assert not np.allclose(raw_a[p:], raw_b[p:])

    det = DiffusionSeriesDetector(**FAST).fit(base[:p])
    assert det.summary is not None and det.summary.train_points == p
    assert det.summary.train_windows <= FAST["max_train_windows"]


def test_injected_anomaly_scores_above_every_normal_window():
    """Pure diffusion channel (no level/scale channel): a burst of a foreign frequency in a periodic series."""
    x = periodic(2400, period=32, noise=0.05, seed=3)
    t = np.arange(1700, 1764)
    x[t] = 1.2 * np.sin(2 * np.pi * t / 5.0)  # same amplitude range, different shape
    det = DiffusionSeriesDetector(level_weight=0.0, steps=150, batch_size=32, max_train_windows=512)
    det.fit(x[:800])
    s = det.score(x)
    inside = s[1700 : 1764 + det.window].max()
    normal = np.r_[s[det.window : 1690], s[1764 + 2 * det.window :]]
    assert inside > normal.max()
    # UCR convention: argmax after trainEnd minus the lag lands inside the anomaly (± the UCR slack).
    pred = 800 + int(np.argmax(s[800:])) - det.lag
    assert 1700 - 100 <= pred <= 1764 + 100


def test_lag_points_the_ucr_prediction_at_the_window_centre():
    det = DiffusionSeriesDetector(window=40, **FAST).fit(periodic(600))
    assert det.window == 40 and det.lag == 19


def test_bad_use_gets_clear_errors():
    with pytest.raises(NotFittedError):
        DiffusionSeriesDetector().score(np.zeros(100))
    with pytest.raises(InputError):
        DiffusionSeriesDetector(**FAST).fit(np.zeros(10))
    with pytest.raises(InputError):
        DiffusionSeriesDetector(**FAST).fit(np.r_[np.zeros(100), np.nan])
    with pytest.raises(ValueError):
        DiffusionDetectorConfig(scorer="nope")
    with pytest.raises(TypeError):
        DiffusionSeriesDetector(no_such_option=1)


def test_scorer_options_reach_the_scorer():
    det = DiffusionSeriesDetector(scorer_t_start=100, **FAST)
    assert det.config.scorer_options == {"lam": 1.0, "t_start": 100}
    det.fit(periodic(400))
    assert det.pipeline is not None and det.pipeline.scorer.params.t_start == 100


def test_registry_names_run_through_bench_nab(tmp_path):
    root = tmp_path / "nab"
    write_tiny_nab_corpus(root)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "bench", "nab", "--data", str(root), "--out", str(out), "--no-progress",
        "--scorer", "diffusion-recon:steps=20,batch_size=16,max_train_windows=64",
        "--scorer", "windowed_gaussian",
    ])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "nab.json").read_text())
    labels = set(meta["scores"])
    assert any(lab.startswith("diffusion-recon") for lab in labels) and "windowed_gaussian" in labels
    corpus = NabCorpus(root)
    for key in corpus.keys():
        cat, name = key.split("/")
        det_dir = next(p for p in out.iterdir() if p.name.startswith("diffusion-recon"))
        rows = (det_dir / cat / f"{det_dir.name}_{name}").read_text().strip().splitlines()
        assert len(rows) == 1001


def test_suppress_repeats_keeps_rising_edges_only_and_is_causal():
    from models.series_detector import suppress_repeats

    s = np.array([0.1, 0.9, 0.95, 0.5, 0.2, 0.2, 0.3, 0.99, 0.1])
    np.testing.assert_array_equal(suppress_repeats(s, 3), [0.1, 0.9, 0.95, 0, 0, 0, 0, 0.99, 0])
    rng = np.random.default_rng(0)
    x = rng.random(500)
    full = suppress_repeats(x, 20)
    for v, t in zip(x, range(500)):  # brute force: exceeds the max of the previous 20
        assert full[t] == (v if t == 0 or v > x[max(0, t - 20):t].max() else 0.0)
    np.testing.assert_array_equal(suppress_repeats(x[:300], 20), full[:300])
    with pytest.raises(ValueError):
        DiffusionDetectorConfig(suppress=10)


def test_calibrated_output_is_a_probability_the_nab_runner_uses_as_is():
    det = DiffusionSeriesDetector(calibrate=True, suppress=50, **FAST)
    assert det.output_is_probability
    x = periodic(900)
    det.fit(x[:300])
    s = det.score(x)
    assert np.all((s >= 0) & (s <= 1)) and np.all(s[:300] == 0.5 * (s[:300] > 0))


def test_discord_scales_parse_from_the_command_line_and_are_validated():
    assert DiffusionDetectorConfig(discord_scales="1;0.5").discord_scales == (1.0, 0.5)
    assert DiffusionDetectorConfig(discord_scales=0.5).discord_scales == (0.5,)
    assert DiffusionDetectorConfig(discord_scales=None).discord_scales == ()
    assert parse_spec("diffusion-recon:discord_scales=1/0.5").build().config.discord_scales == (1.0, 0.5)
    with pytest.raises(ValueError, match="discord_scales"):
        DiffusionDetectorConfig(discord_scales=(1.5,))


def test_discord_channels_are_centred_on_the_diffusion_window_and_catch_an_unseen_shape():
    period, n, train_end = 32, 1500, 600
    x = periodic(n, period=period, noise=0.02)
    x[1100:1116] = x[1100:1116][::-1]  # a reversed half period: same values, unseen shape
    det = DiffusionSeriesDetector(window=period, hop=8, discord_scales=(1.0, 0.5), **FAST).fit(x[:train_end])
    assert det.summary is not None and [d.window for d in det.summary.discords] == [32, 16]
    discords = det.discord_scores(x)
    assert set(discords) == {"discord@1", "discord@0.5"} and det.discord_hop == 2  # a quarter of hop
    grid, z = discords["discord@1"]
    assert grid[0] == 31 and np.all(np.diff(grid) == 2)
    # The half window scored at e is the one ending at e - 8: same centre as the full window ending at e.
    half_grid, half = discords["discord@0.5"]
    np.testing.assert_array_equal(half_grid, grid)
    np.testing.assert_allclose(half, det.discords["discord@0.5"].zscores(x, grid - 8))
    hit = (grid >= 1100) & (grid - period + 1 < 1116)
    after = grid >= train_end
    assert z[hit].max() > 3 * max(z[after & ~hit].max(), 1.0)
    # Inside the training part a window is compared outside its own exclusion zone, as the normaliser was:
    # it looks like an ordinary training window (z near 0), not like a perfect match (z far below 0).
    inside = (grid >= period) & (grid < train_end - period)
    assert abs(np.median(z[inside])) < 1.5
    channels = det.point_channels(x)
    assert set(channels) == {"diffusion", "level", "scale", "discord@1", "discord@0.5"}
    np.testing.assert_allclose(det.score(x[:1200]), det.score(x)[:1200], rtol=1e-5, atol=1e-5)  # still causal


def test_likelihood_fusion_calibrates_each_channel_and_needs_calibrate():
    with pytest.raises(ValueError, match="calibrate"):
        DiffusionDetectorConfig(fusion="likelihood")
    with pytest.raises(ValueError, match="gaussian_channel"):
        DiffusionDetectorConfig(gaussian_channel=True)
    with pytest.raises(ValueError, match="fusion"):
        DiffusionDetectorConfig(fusion="mean")
    x = periodic(1500)
    x[1200:] += 4.0  # a level shift the online Gaussian channel sees at once
    det = DiffusionSeriesDetector(calibrate=True, fusion="likelihood", gaussian_channel=True, **FAST).fit(x[:450])
    channels = det.point_channels(x)
    assert det.fused_channels(channels) == ["diffusion", "level", "scale", "gaussian"]
    assert all(c.shape == x.shape for c in channels.values())
    s = det.score(x)
    from models.calibration import training_part_likelihood

    per_channel = [training_part_likelihood(450).transform(channels[c]) for c in det.fused_channels(channels)]
    np.testing.assert_array_equal(s, np.max(per_channel, axis=0))  # each channel judged by its own likelihood
    combined_once = training_part_likelihood(450).transform(det.combine(channels))
    assert not np.array_equal(s, combined_once)  # and not the max-z fusion under another name
    assert np.all((s >= 0) & (s <= 1))
    assert s[1200:1230].max() > s[600:1150].max()  # the shift is the most likely anomaly after the probation
    np.testing.assert_allclose(det.score(x[:1300]), s[:1300], rtol=1e-6, atol=1e-6)


def test_nab_configuration_is_causal_and_each_step_does_its_job():
    """The NAB defaults: value discords, log-scaled likelihoods, the spatial rule after the training part only,
    suppression over a fifth of the training part — and still no look-ahead."""
    from benchmarks.nab import NAB_DIFFUSION_DEFAULTS
    from models.calibration import log_likelihoods
    from models.series_detector import likelihood_fusion, suppress_repeats

    x = periodic(1500, seed=4)
    x[1100] = 6.0  # a spike beyond every earlier value
    det = DiffusionSeriesDetector(**NAB_DIFFUSION_DEFAULTS, **FAST).fit(x[:450])
    assert set(det.value_discords) == {"value@2", "value@4", "value@8", "value@16", "value@32"}
    channels = det.point_channels(x)
    assert {"gaussian", "spatial", "value@2", "value@32"} <= set(channels)
    assert channels["spatial"][1100] == 1.0
    s = det.score(x)
    assert np.all((s >= 0) & (s <= 1)) and s[1100] == 1.0
    # the same steps written out: likelihood fusion → log scale → spatial after the training part → suppression
    like = log_likelihoods(likelihood_fusion([channels[n] for n in det.fused_channels(channels)], 450))
    like = np.maximum(like, channels["spatial"] * (np.arange(x.size) >= 450))
    np.testing.assert_array_equal(s, suppress_repeats(like, round(0.2 * 450)))
    assert s[:450].max() < 0.1  # the learning value, log-scaled: no alert during the training part
    for cut in (700, 1101, 1300):
        np.testing.assert_allclose(det.score(x[:cut]), s[:cut], rtol=1e-6, atol=1e-6)


def test_value_discords_and_new_options_are_validated():
    assert DiffusionDetectorConfig(value_discords="2;4/8").value_discords == (2, 4, 8)
    assert DiffusionDetectorConfig(value_discords=[4, 4, 2]).value_discords == (4, 2)
    with pytest.raises(ValueError, match="value_discords"):
        DiffusionDetectorConfig(value_discords=(1,))
    with pytest.raises(ValueError, match="whole"):
        DiffusionDetectorConfig(value_discords=(2.5,))
    with pytest.raises(ValueError, match="spatial_tolerance"):
        DiffusionDetectorConfig(spatial_tolerance=0.05)
    with pytest.raises(ValueError, match="suppress_fraction"):
        DiffusionDetectorConfig(calibrate=True, suppress=10, suppress_fraction=0.2)
    with pytest.raises(ValueError, match="log_scale"):
        DiffusionDetectorConfig(log_scale=True)
    with pytest.raises(ValueError, match="spatial_tolerance"):
        DiffusionDetectorConfig(calibrate=True, spatial_tolerance=-0.1)
    with pytest.raises(ValueError, match="finite"):
        DiffusionDetectorConfig(value_discords=float("inf"))
    assert DiffusionDetectorConfig(value_discords=np.int64(8)).value_discords == (8,)
    # names pick channels of the likelihood fusion; max_z has no such choice and says so
    max_z = DiffusionSeriesDetector(calibrate=True, **FAST).fit(periodic(300))
    with pytest.raises(ValueError, match="max_z"):
        max_z.calibrated(max_z.point_channels(periodic(400)), 300, ["diffusion"])
    # a length that does not fit three times into the training part is skipped, not an error
    det = DiffusionSeriesDetector(value_discords=(4, 64), **FAST).fit(periodic(150))
    assert set(det.value_discords) == {"value@4"}


def test_value_discord_scales_share_the_discord_grid_and_see_a_level_shift():
    period, n, train_end = 32, 1500, 600
    x = periodic(n, period=period, noise=0.02)
    x[1100:1140] += 1.5  # same shape, higher level: invisible after z-normalisation
    det = DiffusionSeriesDetector(window=period, hop=8, discord_scales=(1.0,), value_discord_scales=(1.0,),
                                  **FAST).fit(x[:train_end])
    discords = det.discord_scores(x)
    assert set(discords) == {"discord@1", "value@1w"}
    grid, value = discords["value@1w"]
    np.testing.assert_array_equal(grid, discords["discord@1"][0])
    inside = (grid >= 1100 + period) & (grid < 1140)
    normal = (grid >= train_end) & ((grid < 1100) | (grid >= 1140 + period))
    assert value[inside].min() > 3 * max(value[normal].max(), 1.0)
    channels = det.point_channels(x)
    np.testing.assert_array_equal(det.combine(channels), np.maximum.reduce(
        [channels["diffusion"], channels["discord@1"], channels["value@1w"],
         det.config.level_weight * np.maximum(channels["level"], channels["scale"])]))
    with pytest.raises(ValueError, match="value_discord_scales"):
        DiffusionDetectorConfig(value_discord_scales=(2.0,))


def test_training_normalised_scalograms_keep_amplitude_that_window_normalisation_removes():
    """``scalogram_normalise="training"``: the series is standardised once with the training part's statistics,
    so the same window at twice the amplitude reaches the model as a different scalogram; per-window
    normalisation maps both to the same image."""
    x = periodic(1200, seed=2)
    per_window = DiffusionSeriesDetector(window=32, hop=4, **FAST).fit(x[:500])
    per_train = DiffusionSeriesDetector(window=32, hop=4, scalogram_normalise="training", **FAST).fit(x[:500])
    assert per_train.pipeline is not None and per_train.pipeline.transform.config.normalise == "none"
    # fixed statistics of the training part, not of whatever the call is given
    np.testing.assert_allclose(per_train._model_input(x), (x - x[:500].mean()) / x[:500].std(), rtol=1e-12)
    np.testing.assert_allclose(per_train._model_input(x[700:]), (x[700:] - x[:500].mean()) / x[:500].std())
    np.testing.assert_array_equal(per_window._model_input(x), x)
    flat = DiffusionSeriesDetector(window=32, scalogram_normalise="training", **FAST).fit(np.full(300, 1e6 + 0.1))
    assert flat._input_scale == 1.0  # rounding noise of a flat training part is not a unit

    def image(det, w):
        return det.pipeline.transform.transform(det._model_input(w)[None].copy()).images

    w = x[600:632]
    assert float((image(per_window, w) - image(per_window, 2.0 * w)).abs().max()) < 1e-3
    assert float((image(per_train, w) - image(per_train, 2.0 * w)).abs().max()) > 0.1
    with pytest.raises(ValueError, match="scalogram_normalise"):
        DiffusionDetectorConfig(scalogram_normalise="file")
