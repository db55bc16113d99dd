"""The channel ablation (``benchmarks.series_channels``) must rescore a run's dump exactly as the detector scored
it — otherwise its "pure diffusion" and "without the diffusion channel" rows would not describe the run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.series_channels import CHANNELS, point_channels, series_key, ucr_channels
from benchmarks.ucr import load_ucr_series
from models.metrics.ucr import parse_ucr_name
from models.series_detector import DiffusionSeriesDetector

FAST = {"steps": 30, "batch_size": 16, "max_train_windows": 128}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ucr_file(folder, number: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    t = np.arange(1600)
    x = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(t.size)
    begin = 1000 + 100 * number
    x[begin : begin + 20] = x[begin : begin + 20][::-1] + 0.5
    path = folder / f"{number:03d}_UCR_Anomaly_synthetic{number}_600_{begin}_{begin + 20}.txt"
    path.write_text("\n".join(f"{v:.6f}" for v in x))
    return path


def test_dump_rescoring_reproduces_the_detectors_own_scores_and_predictions(tmp_path):
    data, dump = tmp_path / "ucr", tmp_path / "dump"
    data.mkdir()
    preds = {}
    for number in (1, 2):
        path = _ucr_file(data, number, seed=number)
        spec, x = parse_ucr_name(path.name), load_ucr_series(path)
        det = DiffusionSeriesDetector(window=40, hop=8, discord_scales=(1.0, 0.5), dump_dir=str(dump), **FAST)
        scores = det.fit(x[: spec.train_end]).score(x)
        z = dict(np.load(dump / f"{series_key(x)}.npz"))
        assert "discord@1_ends" in z and z["discord@1_ends"][1] - z["discord@1_ends"][0] == 2
        np.testing.assert_array_equal(CHANNELS["max z of all channels"](point_channels(z)), scores)
        peak = spec.train_end + int(np.argmax(scores[spec.train_end :]))
        preds[spec.stem] = peak - det.lag
    result = ucr_channels(dump, data)
    combined = result["accuracy"]["max z of all channels"]
    assert combined["n_series"] == 2
    from models.metrics.ucr import is_hit

    expected = {stem: bool(is_hit(parse_ucr_name(stem + ".txt"), p)) for stem, p in preds.items()}
    assert combined["hits_by_file"] == expected
    assert set(result["accuracy"]) == set(CHANNELS)  # discord rows present: the run had discord channels
