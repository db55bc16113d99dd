"""Checkpoint round trip and config mismatch detection."""
from __future__ import annotations

import json

import pytest
import torch

from models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, read_config, save_checkpoint
from models.errors import CheckpointMismatchError
from models.unet import UNetConfig, WaveletPyramidUNet


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = WaveletPyramidUNet(UNetConfig.preset("tiny", **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # make conv_out non-zero so outputs are informative
    return model


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    config = {"unet": model.config.to_dict(), "scorer": {"name": "recon", "steps": 3}}
    extra = {"mean": torch.tensor([1.5, -2.0])}
    save_checkpoint(tmp_path / "ckpt", {"unet": model.state_dict(), "stats": extra}, config)
    assert (tmp_path / "ckpt" / WEIGHTS_FILE).is_file() and (tmp_path / "ckpt" / CONFIG_FILE).is_file()

    loaded_config, tensors = load_checkpoint(tmp_path / "ckpt", expected_config=config)
    assert loaded_config == json.loads(json.dumps(config))
    assert torch.equal(tensors["stats"]["mean"], extra["mean"])
    restored = WaveletPyramidUNet(UNetConfig.from_dict(loaded_config["unet"])).eval()
    restored.load_state_dict(tensors["unet"])
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(model(x, t), restored(x, t))
    assert read_config(tmp_path / "ckpt") == loaded_config


def test_different_config_raises_mismatch_naming_keys(tmp_path):
    model = _model()
    config = {"unet": model.config.to_dict(), "scorer": {"name": "recon"}}
    save_checkpoint(tmp_path, {"unet": model.state_dict()}, config)
    other = {"unet": UNetConfig.preset("tiny", base_channels=16).to_dict(), "scorer": {"name": "kl"}}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(tmp_path, expected_config=other)
    message = str(info.value)
    assert "unet.base_channels" in message and "scorer.name" in message
    assert "unet.wavelet" not in message
    with pytest.raises(CheckpointMismatchError, match="extra"):
        load_checkpoint(tmp_path, expected_config={**config, "extra": 1})


def test_tuples_in_expected_config_match_stored_lists(tmp_path):
    cfg = UNetConfig.preset("tiny")
    save_checkpoint(tmp_path, {"unet": {"w": torch.zeros(1)}}, {"unet": cfg.to_dict()})
    from dataclasses import asdict

    load_checkpoint(tmp_path, expected_config={"unet": asdict(cfg)})  # tuples, not lists: still equal


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {"g": {"w": torch.ones(2)}}, {"a": 1})
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_checkpoint(tmp_path)


def test_non_serialisable_config_rejected(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path, {"g": {"w": torch.ones(1)}}, {"bad": object()})
