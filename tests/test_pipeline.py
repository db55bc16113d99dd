"""ScalogramPipeline: windows → CWT → scorer, as one saved and versioned unit."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.errors import InputError, NotFittedError
from models.pipeline import ScalogramPipeline
from models.scorers import create_scorer
from models.training import TrainConfig
from models.transforms.cwt import CWTConfig
from scorer_data import sensor_windows

CWT = CWTConfig(n_scales=16, out_size=(16, 16))


@pytest.fixture(scope="module")
def pipeline() -> ScalogramPipeline:
    scorer = create_scorer("recon", unet="tiny", train=TrainConfig(steps=120, batch_size=32, lr=2e-3, amp=False),
                           device="cpu", calibration_samples=64, amp=False)
    return ScalogramPipeline(CWT, scorer).fit_windows(sensor_windows(160, seed=10))


def test_scores_windows_and_separates_anomalies(pipeline):
    normal = pipeline.score_windows(sensor_windows(24, seed=11))
    anomalous = pipeline.score_windows(sensor_windows(24, seed=12, anomalous=True))
    assert normal.maps.shape == (24, 16, 16)
    assert normal.extras["scalogram"].shape == (24, 1, 16, 16)
    y = np.r_[np.zeros(24), np.ones(24)]
    assert roc_auc_score(y, np.r_[normal.scores, anomalous.scores]) > 0.9


def test_level_and_scale_shifts_are_reported_in_extras(pipeline):
    w = sensor_windows(4, seed=13)
    shifted = w.copy()
    shifted[1] += 10.0  # whole window shifted: invisible in the normalised scalogram
    shifted[2] *= 5.0  # whole window rescaled
    out = pipeline.score_windows(shifted)
    ref = pipeline.score_windows(w)
    # The scalogram (and so the model's score) does not see it ...
    np.testing.assert_allclose(out.scores[[1, 2]], ref.scores[[1, 2]], rtol=1e-3, atol=1e-3)
    # ... but the extras do.
    assert abs(out.extras["level_z"][1]) > 10 * max(abs(ref.extras["level_z"][1]), 0.5)
    assert out.extras["scale_z"][2] > 5 and abs(ref.extras["scale_z"][2]) < 3
    np.testing.assert_allclose(out.extras["level"][1], w[1].mean() + 10.0, rtol=1e-5)


def test_save_load_round_trip_and_version(pipeline, tmp_path):
    version = pipeline.save(tmp_path / "p")
    assert len(version) == 12 and pipeline.version == version
    loaded = ScalogramPipeline.load(tmp_path / "p", device="cpu")
    assert loaded.version == version and loaded.cwt_config == CWT and loaded.scorer_name == "recon"
    w = sensor_windows(6, seed=14, anomalous=True)
    np.testing.assert_allclose(loaded.score_windows(w).scores, pipeline.score_windows(w).scores, atol=1e-6)
    # A different model has a different version.
    config = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    config["window_stats"]["level_mean"] += 1.0
    (tmp_path / "p" / "pipeline.json").write_text(json.dumps(config))
    assert ScalogramPipeline.load(tmp_path / "p", device="cpu").version != version


def test_bad_windows_raise_input_error(pipeline):
    with pytest.raises(InputError, match="fitted on 128"):
        pipeline.score_windows(sensor_windows(2, length=64))
    with pytest.raises(InputError, match="NaN"):
        pipeline.score_windows(np.full((2, 128), np.nan))
    with pytest.raises(InputError):
        pipeline.score_windows(np.zeros((0, 128)))
    with pytest.raises(InputError):
        pipeline.score_windows(np.zeros(128))


def test_unfitted_pipeline(tmp_path):
    pipe = ScalogramPipeline(CWT, create_scorer("recon", unet="tiny", device="cpu"))
    with pytest.raises(NotFittedError):
        pipe.score_windows(sensor_windows(2))
    with pytest.raises(NotFittedError):
        pipe.save(tmp_path / "x")
    with pytest.raises(NotFittedError):
        _ = pipe.version
    with pytest.raises(FileNotFoundError):
        ScalogramPipeline.load(tmp_path / "nothing")
