"""The context-conditioned diffusion model: its masks, its network input, its scorer and its place in the image
detector."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.context import BlockMasks, condition
from models.errors import CheckpointMismatchError
from models.image_detector import ImageDetector, ImageDetectorConfig
from models.scorers import create_scorer, load_scorer
from models.training import TrainConfig, train_diffusion
from models.scheduler import NoiseScheduler
from models.transforms.cwt import CWTConfig, Scalogram
from models.unet import UNetConfig, WaveletPyramidUNet
from scorer_data import sensor_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest

FAST = dict(calibration_samples=64, batch_size=128, amp=False)
TRAIN = TrainConfig(steps=150, batch_size=32, lr=2e-3, amp=False)


@pytest.mark.parametrize("block,size", [(4, (16, 16)), (2, (8, 12)), (3, (10, 7))])
def test_the_four_patterns_hide_every_cell_once_and_each_hidden_block_has_clean_neighbours(block, size):
    masks = BlockMasks(block)
    patterns = torch.cat(masks.patterns(*size))
    assert patterns.shape == (4, 1, *size)
    assert torch.equal(patterns.sum(dim=0), torch.ones(1, *size))  # every cell exactly once
    hidden = patterns[0, 0].bool()
    h, w = size
    for i, j in hidden.nonzero().tolist():  # the cells a block away on either side are context, where they exist
        for di, dj in ((block, 0), (-block, 0), (0, block), (0, -block)):
            ii, jj = i + di, j + dj
            if 0 <= ii < h and 0 <= jj < w:
                assert not hidden[ii, jj]


def test_training_masks_vary_in_pattern_and_place():
    masks = BlockMasks(4)
    drawn = masks.sample(64, 16, 16, torch.Generator().manual_seed(0))
    assert drawn.shape == (64, 1, 16, 16) and set(drawn.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(drawn.mean(dim=(1, 2, 3)), torch.full((64,), 0.25))  # a quarter each
    assert len({tuple(m.flatten().tolist()) for m in drawn}) > 8


def test_the_condition_holds_the_context_and_the_mask_never_the_hidden_cells():
    z = torch.randn(3, 5, 8, 8)
    hidden = BlockMasks(2).pattern(1, 8, 8)
    cond = condition(z, hidden)
    assert cond.shape == (3, 6, 8, 8)
    assert torch.all(cond[:, :5][hidden.expand(3, 5, 8, 8).bool()] == 0)
    assert torch.equal(cond[:, :5] + hidden * z, z) and torch.equal(cond[:, 5:], hidden.expand(3, 1, 8, 8))


def test_a_conditioned_network_takes_its_condition_and_keeps_its_output_channels():
    net = WaveletPyramidUNet(UNetConfig.preset("tiny", in_channels=2, cond_channels=3))
    x, cond = torch.randn(4, 2, 16, 16), torch.randn(4, 3, 16, 16)
    assert net(x, 10, cond).shape == (4, 2, 16, 16)
    with pytest.raises(ValueError, match="conditioning"):
        net(x, 10)
    with pytest.raises(ValueError, match="conditioning"):
        net(x, 10, cond[:, :2])
    with pytest.raises(ValueError, match="conditioning"):
        WaveletPyramidUNet(UNetConfig.preset("tiny", in_channels=2))(x, 10, cond)
    with pytest.raises(ValueError, match="cond_channels"):
        UNetConfig.preset("tiny", cond_channels=-1)
    assert UNetConfig.from_dict({k: v for k, v in UNetConfig().to_dict().items() if k != "cond_channels"}) \
        .cond_channels == 0  # checkpoints from before conditioning load unchanged


class _OffOnVisibleCells(WaveletPyramidUNet):
    """Predicts like its parent on the hidden cells and far off on the visible ones."""

    def forward(self, x, t, cond=None):
        out = super().forward(x, t, cond)
        return out + 1000.0 * (1 - cond[:, -1:])


def test_the_training_loss_counts_the_hidden_cells_only():
    """What the network predicts for the visible cells must not matter: it is never asked for them."""
    cfg = UNetConfig.preset("tiny", in_channels=1, cond_channels=2)
    data = torch.randn(16, 1, 16, 16)
    train = TrainConfig(steps=1, batch_size=16, amp=False, grad_clip=0.0)
    losses = []
    for cls in (WaveletPyramidUNet, _OffOnVisibleCells):
        torch.manual_seed(0)
        result = train_diffusion(cls(cfg), NoiseScheduler(), data, train, progress=False, context=BlockMasks(4))
        losses.append(result.losses[0])
    assert 0.5 < losses[0] < 2 and losses[1] == pytest.approx(losses[0], rel=1e-6)
    with pytest.raises(ValueError, match="adversarial"):
        train_diffusion(WaveletPyramidUNet(cfg), NoiseScheduler(), data,
                        TrainConfig(steps=1, adversarial_weight=0.1, amp=False), progress=False,
                        context=BlockMasks(4))


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    to_image = Scalogram(CWTConfig(n_scales=16, out_size=(16, 16)))
    return {
        "train": to_image(sensor_windows(160, seed=0)),
        "normal": to_image(sensor_windows(30, seed=1)),
        "anomalous": to_image(sensor_windows(30, seed=2, anomalous=True)),
    }


@pytest.fixture(scope="module")
def context_recon(data):
    torch.manual_seed(0)
    return create_scorer("recon", unet="tiny", train=TRAIN, device="cpu", context_block=4, n_noise=2, lam=1.0,
                         **FAST).fit(data["train"])


def test_context_recon_scores_each_cell_from_the_pattern_that_hides_it(context_recon, data, monkeypatch):
    s = context_recon
    assert s.unet_config.cond_channels == s.unet_config.in_channels + 1
    x = data["anomalous"][:4]
    calls = []
    real = type(s).eps

    def recording(self, x_t, t, cond=None):
        calls.append((x_t.clone(), cond.clone()))
        return real(self, x_t, t, cond)

    monkeypatch.setattr(type(s), "eps", recording)
    got = s.score(x).reconstructions
    monkeypatch.undo()
    assert len(calls) == 4 * s.params.n_noise  # four patterns per noise draw
    z = s.to_space(x)
    for x_t, cond in calls:
        hidden = cond[:, -1:]
        assert torch.all(cond[:, :-1] * hidden == 0)  # a hidden cell never sees its own clean value
        assert torch.all(x_t * (1 - hidden) == 0)  # nor anything noised outside the hidden cells
    # by hand: each cell's x̂₀ from the pattern that hides it, averaged over the draws
    sched, t = s.scheduler, s.params.t_start
    want = torch.zeros_like(z)
    with torch.inference_mode():
        for k in range(s.params.n_noise):
            x_t = sched.add_noise(z, s.fixed_noise(tuple(z.shape[1:]), k).expand_as(z), t)
            for hidden in BlockMasks(4).patterns(16, 16):
                want += hidden * sched.pred_original_sample(x_t, s.eps(hidden * x_t, t, condition(z, hidden)), t)
    np.testing.assert_allclose(got, (want / s.params.n_noise).numpy(), rtol=1e-5, atol=1e-5)


def test_context_recon_separates_and_round_trips(context_recon, data, tmp_path):
    normal, anomalous = context_recon.score(data["normal"]), context_recon.score(data["anomalous"])
    y = np.r_[np.zeros(len(normal.scores)), np.ones(len(anomalous.scores))]
    assert roc_auc_score(y, np.r_[normal.scores, anomalous.scores]) > 0.8
    context_recon.save(tmp_path / "ctx")
    loaded = load_scorer(tmp_path / "ctx", device="cpu")
    assert loaded.params.context_block == 4 and loaded.unet_config.cond_channels == 2
    np.testing.assert_array_equal(loaded.score(data["normal"][:5]).maps, context_recon.score(data["normal"][:5]).maps)


def test_context_recon_options_are_validated(context_recon, data):
    with pytest.raises(ValueError, match="noised start"):
        create_scorer("recon", context_block=4, start="clean")
    with pytest.raises(ValueError, match="noised start"):
        create_scorer("recon", context_block=4, ddim_steps=5)
    with pytest.raises(ValueError, match="context_block"):
        create_scorer("recon", context_block=-1)
    plain = create_scorer("recon", unet="tiny", train=TrainConfig(steps=2, amp=False), device="cpu", **FAST)
    plain.fit(data["train"][:8])
    with pytest.raises(CheckpointMismatchError, match="context"):
        create_scorer("recon", unet="tiny", device="cpu", context_block=4, **FAST).fit(data["train"][:8], reuse=plain)
    with pytest.raises(CheckpointMismatchError, match="context"):
        create_scorer("recon", unet="tiny", device="cpu", **FAST).fit(data["train"][:8], reuse=context_recon)


def test_an_image_too_small_for_the_blocks_is_refused():
    with pytest.raises(ValueError, match="context_block"):
        ImageDetectorConfig(image_size=32)  # a 4x4 feature map: one pattern would hide all of it
    assert ImageDetectorConfig(image_size=32, context_block=2).context_block == 2


def test_image_detectors_saved_before_the_context_channel_keep_their_clean_start():
    new = ImageDetector(ImageDetectorConfig())._new_diffusion(10, 0)
    assert new.params.context_block == 4 and new.params.start == "noised" and new.params.n_noise == 8
    saved = {k: v for k, v in ImageDetectorConfig().to_dict().items() if k not in ("context_block", "noise_draws")}
    old = ImageDetectorConfig.from_dict(saved)
    assert old.context_block == 0
    assert ImageDetector(old)._new_diffusion(10, 0).params.start == "clean"
