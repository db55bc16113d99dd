"""The recon scorer's inpainting mode (``inpaint_fraction``): the newest columns of a scalogram are regenerated
from the older ones, so what is new in them cannot be copied from their own noisy values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.scorers import create_scorer
from models.scorers.recon import ReconParams, inpaint
from models.training import TrainConfig
from models.transforms.cwt import CWTConfig, Scalogram
from scorer_data import sensor_windows

SIZE = (16, 16)


@pytest.fixture(scope="module")
def scorer():
    to_image = Scalogram(CWTConfig(n_scales=16, out_size=SIZE))
    s = create_scorer("recon", unet="tiny", train=TrainConfig(steps=40, batch_size=32, lr=2e-3, amp=False),
                      device="cpu", calibration_samples=32, batch_size=64, amp=False, lam=1.0,
                      inpaint_fraction=0.25, t_start=600, ddim_steps=4)
    return s.fit(to_image(sensor_windows(64, seed=0))), to_image


def test_known_columns_come_back_exactly_and_only_new_columns_are_scored(scorer):
    s, to_image = scorer
    z = to_image(sensor_windows(8, seed=3)).float()
    known = torch.arange(SIZE[1]) < SIZE[1] - 4
    with torch.inference_mode():
        out = inpaint(s, z, known, 600, 4, s.fixed_noise(tuple(z.shape[1:]), 0))
    assert torch.equal(out[..., :12], z[..., :12])
    assert not torch.allclose(out[..., 12:], z[..., 12:])
    maps = s.score(z).maps
    # The pixel term |z - ẑ| is zero where ẑ = z: after the z-scoring every known pixel holds the same value, and
    # the new columns hold larger ones.
    assert np.ptp(maps[..., :12]) < 1e-5
    assert maps[..., 12:].mean() > maps[..., :12].max()


def test_inpainting_scores_do_not_depend_on_the_batch(scorer):
    s, to_image = scorer
    z = to_image(sensor_windows(12, seed=4))
    together = s.score(z).scores
    alone = np.concatenate([s.score(z[i:i + 1]).scores for i in range(len(z))])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_inpaint_fraction_is_checked():
    with pytest.raises(ValueError, match="inpaint_fraction"):
        ReconParams(inpaint_fraction=1.0)
