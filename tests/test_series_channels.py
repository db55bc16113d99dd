"""The channel ablation (``benchmarks.series_channels``) must rescore a run's dump exactly as the detector scored
it — otherwise its "pure diffusion" and "without the diffusion channel" rows would not describe the run."""
from __future__ import annotations

import numpy as np
import pytest
from nab_corpus import write_tiny_nab_corpus

from benchmarks.nab import NAB_DIFFUSION_DEFAULTS, PROFILES
from benchmarks.nab_files import NabCorpus
from benchmarks.series_channels import (
    DETECTOR, WITHOUT_DIFFUSION, detector_of, nab_channels, point_channels, series_key, ucr_channels,
)
from benchmarks.ucr import load_ucr_series
from models.metrics import nab as nab_metrics
from models.metrics.ucr import is_hit, parse_ucr_name
from models.series_detector import DiffusionSeriesDetector

FAST = {"steps": 30, "batch_size": 16, "max_train_windows": 128}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def _ucr_file(folder, number: int, seed: int):
    rng = np.random.default_rng(seed)
    t = np.arange(1600)
    x = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(t.size)
    begin = 1000 + 100 * number
    x[begin : begin + 20] = x[begin : begin + 20][::-1] + 0.5
    path = folder / f"{number:03d}_UCR_Anomaly_synthetic{number}_600_{begin}_{begin + 20}.txt"
    path.write_text("\n".join(f"{v:.6f}" for v in x))
    return path


def test_ucr_rescoring_reproduces_the_detectors_scores_and_hits(tmp_path):
    data, dump = tmp_path / "ucr", tmp_path / "dump"
    data.mkdir()
    preds = {}
    for number in (1, 2):
        path = _ucr_file(data, number, seed=number)
        spec, x = parse_ucr_name(path.name), load_ucr_series(path)
        det = DiffusionSeriesDetector(window=40, hop=8, discord_scales=(1.0, 0.5), value_discord_scales=(1.0,),
                                      level_weight=0.5,
                                      dump_dir=str(dump), **FAST)
        scores = det.fit(x[: spec.train_end]).score(x)
        z = dict(np.load(dump / f"{series_key(x)}.npz"))
        assert "discord@1_ends" in z and z["discord@1_ends"][1] - z["discord@1_ends"][0] == 2
        assert detector_of(z).config.level_weight == 0.5  # the run's own configuration travels with the dump
        np.testing.assert_array_equal(detector_of(z).combine(point_channels(z)), scores)
        peak = spec.train_end + int(np.argmax(scores[spec.train_end :]))
        preds[spec.stem] = peak - det.lag
    result = ucr_channels(dump, data)
    expected = {stem: bool(is_hit(parse_ucr_name(stem + ".txt"), p)) for stem, p in preds.items()}
    assert result["accuracy"][DETECTOR]["hits_by_file"] == expected
    assert {"discord (nearest neighbour only)", "value discords (level-keeping nearest neighbour only)",
            WITHOUT_DIFFUSION} <= set(result["accuracy"])


def test_nab_rescoring_reproduces_the_detectors_nab_score(tmp_path):
    root, dump = tmp_path / "nab", tmp_path / "dump"
    write_tiny_nab_corpus(root, short_file=True)
    corpus = NabCorpus(root)
    windows, layouts, scores, detectors, values = corpus.windows(), [], [], [], []
    for key in corpus.keys():
        s = corpus.read(key)
        probation = nab_metrics.probationary_length(len(s))
        det = DiffusionSeriesDetector(**NAB_DIFFUSION_DEFAULTS, dump_dir=str(dump), **FAST)
        scores.append(det.fit(s.values[:probation]).score(s.values))
        layouts.append(nab_metrics.build_layout(key, s.timestamps, windows.get(key, [])))
        detectors.append(det)
        values.append(s.values)
    assert [len(d.value_discords) for d in detectors] == [5, 5, 4]  # the short file has no value@32
    # per file: the dump rescored by the detector's own calibration is the detector's output
    for det, x, direct in zip(detectors, values, scores):
        z = dict(np.load(dump / f"{series_key(x)}.npz"))
        p = point_channels(z)
        p.update(detector_of(z).online_channels(x))
        np.testing.assert_array_equal(detector_of(z).calibrated(p, nab_metrics.probationary_length(x.size)), direct)
        pure = detector_of(z).calibrated(p, nab_metrics.probationary_length(x.size), ["diffusion"])
        assert not np.array_equal(pure, direct)
    n_windows = sum(len(windows.get(k, [])) for k in corpus.keys())
    direct = nab_metrics.score_all_profiles(layouts, scores, n_windows, corpus.profiles())
    result = nab_channels(dump, root)
    rescored = result["scores"][DETECTOR]
    for profile in PROFILES:
        assert rescored[profile] == pytest.approx(round(direct[profile].normalized, 3), abs=1e-9)
    assert {WITHOUT_DIFFUSION, "diffusion (pure)", "value discords (level-keeping nearest neighbour only)",
            "spatial rule only", "windowed Gaussian channel only"} <= set(result["scores"])
    assert "discord (nearest neighbour only)" not in result["scores"]  # NAB configures no shape discords
    assert result["detector_config"]["fusion"] == "likelihood"
    assert tuple(result["detector_config"]["value_discords"]) == NAB_DIFFUSION_DEFAULTS["value_discords"]


def test_dumps_without_a_configuration_are_refused():
    with pytest.raises(SystemExit, match="no detector configuration"):
        detector_of({"n": 10})
