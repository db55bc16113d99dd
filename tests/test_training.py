"""train_diffusion on a tiny model: learning happens, EMA, determinism, ADDM, input validation."""
from __future__ import annotations

import math

import pytest
import torch

from models.errors import InputError
from models.scheduler import NoiseScheduler
from models.training import TrainConfig, train_diffusion
from models.unet import UNetConfig, WaveletPyramidUNet


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def _toy_data(n: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth oriented stripes with random phase: structured enough for ε-prediction to beat 1.0."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    return torch.sin(6 * xx + 3 * yy + phase).unsqueeze(1)


def _model(seed: int = 0) -> WaveletPyramidUNet:
    torch.manual_seed(seed)
    return WaveletPyramidUNet(UNetConfig.preset("tiny"))


def _scheduler() -> NoiseScheduler:
    return NoiseScheduler(num_train_timesteps=100)


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_loss_falls_on_toy_data():
    result = train_diffusion(
        _model(), _scheduler(), _toy_data(), TrainConfig(steps=100, batch_size=16, lr=2e-3), progress=False
    )
    assert len(result.losses) == 100
    first, last = sum(result.losses[:15]) / 15, sum(result.losses[-15:]) / 15
    assert first > 0.7  # zero-initialised output: ε̂ = 0 gives MSE ≈ E[ε²] = 1
    assert last < 0.5 * first
    assert result.seconds > 0
    assert result.discriminator is None and result.adversarial_losses == []


def test_returned_model_is_ema_copy_in_eval_mode():
    raw = _model()
    result = train_diffusion(raw, _scheduler(), _toy_data(), TrainConfig(steps=30, batch_size=16), progress=False)
    ema = result.model
    assert ema is not raw and result.raw_model is raw
    assert not ema.training
    assert not any(p.requires_grad for p in ema.parameters())
    assert not torch.allclose(_params(ema), _params(raw))
    # the EMA moved away from the initialisation too
    assert not torch.allclose(_params(ema), _params(_model()))


def test_same_seed_same_result_different_seed_differs():
    data = _toy_data()
    cfg = TrainConfig(steps=15, batch_size=8, seed=3)
    a = train_diffusion(_model(), _scheduler(), data, cfg, progress=False)
    b = train_diffusion(_model(), _scheduler(), data, cfg, progress=False)
    assert a.losses == b.losses
    assert torch.equal(_params(a.model), _params(b.model))
    c = train_diffusion(_model(), _scheduler(), data, TrainConfig(steps=15, batch_size=8, seed=4), progress=False)
    assert c.losses != a.losses


def test_fewer_samples_than_batch_size():
    result = train_diffusion(
        _model(), _scheduler(), _toy_data(n=5), TrainConfig(steps=4, batch_size=64), progress=False
    )
    assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)


def test_adversarial_training_updates_discriminator():
    data = _toy_data()
    cfg = TrainConfig(steps=12, batch_size=8, adversarial_weight=0.05)
    result = train_diffusion(_model(), _scheduler(), data, cfg, progress=False)
    disc = result.discriminator
    assert disc is not None
    assert len(result.adversarial_losses) == 12 and len(result.discriminator_losses) == 12
    assert all(math.isfinite(v) for v in result.adversarial_losses + result.discriminator_losses)
    # the discriminator we got back is not the one it started as (same seed → same initialisation)
    from models.discriminator import DiscriminatorConfig, TimeConditionedDiscriminator

    torch.manual_seed(cfg.seed)
    fresh = TimeConditionedDiscriminator(DiscriminatorConfig(in_channels=1, base_channels=cfg.discriminator_channels))
    assert not torch.allclose(_params(fresh), _params(disc))
    # and the adversarial term changes the generator's trajectory
    plain = train_diffusion(_model(), _scheduler(), data, TrainConfig(steps=12, batch_size=8), progress=False)
    assert not torch.equal(_params(plain.raw_model), _params(result.raw_model))


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="NaN"):
        bad = _toy_data(n=4)
        bad[1, 0, 2, 2] = float("nan")
        train_diffusion(_model(), _scheduler(), bad, TrainConfig(steps=1), progress=False)
    with pytest.raises(InputError, match="channel"):
        train_diffusion(_model(), _scheduler(), torch.randn(4, 2, 16, 16), TrainConfig(steps=1), progress=False)
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        train_diffusion(_model(), _scheduler(), torch.randn(4, 16, 16), TrainConfig(steps=1), progress=False)
    with pytest.raises(InputError, match="empty"):
        train_diffusion(_model(), _scheduler(), torch.randn(0, 1, 16, 16), TrainConfig(steps=1), progress=False)


def test_train_config_round_trip_and_validation():
    cfg = TrainConfig(steps=7, adversarial_weight=0.05, lr_schedule="constant")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        TrainConfig(steps=0)
    with pytest.raises(ValueError):
        TrainConfig(adversarial_weight=-1)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"steps": 3, "bogus": 1})


@pytest.mark.gpu
def test_training_on_cuda_with_amp():
    model = _model()
    result = train_diffusion(
        model, _scheduler(), _toy_data(), TrainConfig(steps=20, batch_size=16, adversarial_weight=0.05),
        device="cuda", progress=False,
    )
    assert next(result.model.parameters()).is_cuda
    assert all(math.isfinite(v) for v in result.losses)


def test_discriminator_is_time_conditioned_and_returns_one_logit_per_sample():
    from models.discriminator import DiscriminatorConfig, TimeConditionedDiscriminator

    torch.manual_seed(0)
    disc = TimeConditionedDiscriminator(DiscriminatorConfig(in_channels=3, base_channels=8))
    x = torch.randn(4, 3, 16, 24)
    same = x[:1].expand(2, -1, -1, -1)
    assert disc(x, torch.tensor([0, 1, 2, 3])).shape == (4,)
    logits = disc(same, torch.tensor([5, 900]))
    assert not torch.allclose(logits[0], logits[1])  # same image, different t → different verdict
