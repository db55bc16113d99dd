"""A detector can start from a shipped pretrained U-Net and fine-tune it; a mismatched or unknown one is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import models.pretrained as pretrained
from models.detector import FittedDetector, preset
from models.errors import CheckpointMismatchError
from models.unet import UNetConfig, WaveletPyramidUNet

FAST = {"steps": 1, "max_train_windows": 64}


def _series(n: int = 900, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * np.arange(n) / 40) + 0.05 * rng.standard_normal(n)


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A pretrained model for the ucr preset's U-Net in a private folder (the package folder stays untouched)."""
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    config = preset("ucr")
    torch.manual_seed(123)
    unet = UNetConfig.preset(config.unet)
    model = WaveletPyramidUNet(unet)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # far from any random initialisation
    scalogram = {"scalogram_normalise": config.scalogram_normalise, "n_scales": config.n_scales}
    pretrained.save_pretrained("test-model", model, unet.to_dict(), scalogram, {"note": "test"})
    return model, scalogram, unet


def test_fitting_starts_from_the_pretrained_weights(shipped):
    model, _, _ = shipped
    started = FittedDetector.fit(_series(), preset("ucr", init_model="test-model", **FAST))
    scratch = FittedDetector.fit(_series(), preset("ucr", **FAST))
    target = _weights(model)
    near = (_weights(started.pipeline.scorer.model) - target).abs().max()
    far = (_weights(scratch.pipeline.scorer.model) - target).abs().max()
    assert near < 0.05 < far  # one fine-tuning step moves the EMA only a little from where it started
    assert started.config.init_model == "test-model"


def test_a_mismatched_or_unknown_pretrained_model_is_refused(shipped):
    model, scalogram, unet = shipped
    pretrained.save_pretrained("other-scalograms", model, unet.to_dict(),
                               {**scalogram, "scalogram_normalise": "training"}, {})
    with pytest.raises(CheckpointMismatchError, match="other-scalograms"):
        FittedDetector.fit(_series(), preset("ucr", init_model="other-scalograms", **FAST))
    with pytest.raises(ValueError, match="not a shipped pretrained model"):
        preset("ucr", init_model="no-such-model")
