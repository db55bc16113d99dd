"""Shapes, presets, the wavelet pyramid and attention wiring of the ε-prediction U-Net."""
from __future__ import annotations

import json

import pytest
import torch

from models.embeddings import HybridTimeEmbedding, sinusoidal_embedding
from models.unet import PRESETS, SelfAttention2d, UNetConfig, WaveletPyramidUNet


def _tiny(**overrides) -> WaveletPyramidUNet:
    torch.manual_seed(0)
    return WaveletPyramidUNet(UNetConfig.preset("tiny", **overrides))


@pytest.mark.parametrize("size", [(16, 16), (16, 32), (32, 8), (4, 12)])
def test_output_shape_matches_input_incl_non_square(size):
    model = _tiny()
    x = torch.randn(3, 1, *size)
    out = model(x, torch.tensor([0, 10, 999]))
    assert out.shape == x.shape


def test_multi_channel_and_scalar_timestep():
    model = _tiny(in_channels=3)
    x = torch.randn(2, 3, 16, 16)
    assert model(x, 5).shape == x.shape


def test_output_is_zero_at_init_and_nonzero_after_perturbing_out_conv():
    model = _tiny()
    x = torch.randn(2, 1, 16, 16)
    assert torch.count_nonzero(model(x, torch.tensor([3, 7]))) == 0
    with torch.no_grad():
        model.conv_out.weight.normal_()
    assert model(x, torch.tensor([3, 7])).abs().sum() > 0


# Expected parameter count order of magnitude per preset: catches accidental blow-ups or empty models.
PARAM_RANGES = {
    "tiny": (1e4, 1e5),
    "series": (1e5, 1e6),
    "audio": (5e5, 5e6),
    "feature": (1e6, 1e7),
    "gpu": (1e7, 1e8),
}


@pytest.mark.parametrize("name", sorted(PRESETS), ids=lambda n: f"preset_{n}")  # id "gpu" would be skipped
def test_every_preset_constructs_with_expected_size(name):
    cfg = UNetConfig.preset(name)
    model = WaveletPyramidUNet(cfg)
    low, high = PARAM_RANGES[name]
    assert low <= model.num_parameters() <= high
    attn = [m for m in model.modules() if isinstance(m, SelfAttention2d)]
    # one per res block at each attention level, encoder and decoder, plus the bridge
    expected = 2 * cfg.num_res_blocks * len(cfg.attention_levels) + int(cfg.mid_attention)
    assert len(attn) == expected
    assert isinstance(model.mid_attn, SelfAttention2d)
    assert len(model.wavelet_proj) == len(cfg.channel_mults) - 1
    h, w = cfg.sample_size
    assert h % cfg.downsample_factor == 0 and w % cfg.downsample_factor == 0


@pytest.mark.parametrize("name", ["series", "feature"])
def test_preset_forward_at_its_sample_size(name):
    cfg = UNetConfig.preset(name)
    model = WaveletPyramidUNet(cfg).eval()
    x = torch.randn(2, cfg.in_channels, *cfg.sample_size)
    with torch.no_grad():
        assert model(x, torch.tensor([1, 500])).shape == x.shape


def test_preset_overrides_and_json_round_trip():
    cfg = UNetConfig.preset("feature", in_channels=80, sample_size=(32, 32))
    assert cfg.in_channels == 80 and cfg.sample_size == (32, 32)
    again = UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        UNetConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown UNetConfig"):
        UNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_config_rejects_indivisible_sizes_and_heads():
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(sample_size=(30, 32), channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="heads"):
        UNetConfig(base_channels=10, attention_heads=4, attention_levels=(0,))


def test_forward_rejects_wrong_channels_and_sizes():
    model = _tiny()
    with pytest.raises(ValueError, match="channel"):
        model(torch.randn(1, 2, 16, 16), 0)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 15, 16), 0)
    with pytest.raises(ValueError, match="timesteps"):
        model(torch.randn(3, 1, 16, 16), torch.tensor([1, 2]))


def test_gradients_reach_wavelet_projection_and_time_embedding():
    model = _tiny()
    with torch.no_grad():
        model.conv_out.weight.normal_(std=0.1)  # at zero init only conv_out itself would get gradient
    x = torch.randn(4, 1, 16, 16)
    model(x, torch.tensor([1, 2, 3, 4])).pow(2).mean().backward()
    for proj in model.wavelet_proj:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    conv_branch = model.time_embedding.conv[0].weight.grad
    assert conv_branch is not None and conv_branch.abs().sum() > 0


def test_wavelet_pyramid_changes_the_output():
    """With the pyramid on, perturbing only the projection weights changes ε̂: the sub-bands are used."""
    model = _tiny()
    with torch.no_grad():
        model.conv_out.weight.normal_(std=0.1)
    x = torch.randn(2, 1, 16, 16)
    before = model(x, torch.tensor([5, 5]))
    with torch.no_grad():
        model.wavelet_proj[0].weight.add_(1.0)
    assert not torch.allclose(before, model(x, torch.tensor([5, 5])))
    ablated = _tiny(use_wavelet_pyramid=False)
    assert len(ablated.wavelet_proj) == 0
    assert ablated(x, torch.tensor([5, 5])).shape == x.shape


def test_attention_is_global():
    """Self-attention lets a change at one position reach every position (a 1×1 conv could not)."""
    torch.manual_seed(0)
    attn = SelfAttention2d(8, heads=2)
    x = torch.randn(1, 8, 4, 4)
    y = x.clone()
    y[0, :, 0, 0] += 3.0
    diff = (attn(x) - attn(y)).abs().sum(dim=1)[0]
    assert (diff[1:, 1:] > 0).all()


def test_hybrid_time_embedding():
    emb = HybridTimeEmbedding(16, 64)
    t = torch.tensor([0, 1, 500, 999])
    out = emb(t)
    assert out.shape == (4, 64)
    assert not torch.allclose(out[0], out[1])
    sin = sinusoidal_embedding(t, 16)
    assert sin.shape == (4, 16)
    assert torch.allclose(sin[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    with pytest.raises(ValueError):
        sinusoidal_embedding(t, 15)


@pytest.mark.gpu
def test_forward_on_cuda_matches_cpu():
    model = _tiny()
    with torch.no_grad():
        model.conv_out.weight.normal_(std=0.1)
    x = torch.randn(2, 1, 16, 32)
    t = torch.tensor([3, 400])
    with torch.no_grad():
        cpu = model(x, t)
        gpu = model.cuda()(x.cuda(), t.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)
