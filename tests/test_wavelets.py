"""The conv DWT must be pywt's periodized DWT exactly, invertible, differentiable and dyadic."""
from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from models.wavelets import DWT2d, IDWT2d, wavelet_pyramid


@pytest.mark.parametrize("wavelet", ["db1", "db2", "db3", "db4"])
@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (3, 2, 8, 32), (1, 3, 32, 8), (2, 1, 4, 6)])
def test_dwt_matches_pywt_periodization(wavelet, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    ll, lh, hl, hh = DWT2d(wavelet)(x)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy().astype(np.float64), wavelet, mode="periodization")
    for ours, ref in zip((ll, lh, hl, hh), (ca, ch, cv, cd)):
        assert ours.shape == ref.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("wavelet", ["db1", "db2", "db4", "sym3"])
def test_idwt_reconstructs_perfectly(wavelet):
    x = torch.randn(4, 3, 16, 24, dtype=torch.float64)
    dwt, idwt = DWT2d(wavelet), IDWT2d(wavelet)
    rec = idwt(*dwt(x))
    assert rec.shape == x.shape
    assert torch.allclose(rec, x, atol=1e-10)
    rec_concat = idwt.forward_concat(dwt.forward_concat(x))
    assert torch.allclose(rec_concat, x, atol=1e-10)


def test_idwt_matches_pywt_inverse():
    rng = np.random.default_rng(0)
    bands = [rng.standard_normal((2, 1, 4, 8)) for _ in range(4)]
    ref = pywt.idwt2((bands[0], tuple(bands[1:])), "db2", mode="periodization")
    ours = IDWT2d("db2")(*[torch.from_numpy(b) for b in bands])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)


def test_concat_layout_is_band_major():
    x = torch.randn(2, 3, 8, 8)
    ll, lh, hl, hh = DWT2d("db2")(x)
    concat = DWT2d("db2").forward_concat(x)
    assert concat.shape == (2, 12, 4, 4)
    assert torch.equal(concat[:, 0:3], ll) and torch.equal(concat[:, 3:6], lh)
    assert torch.equal(concat[:, 6:9], hl) and torch.equal(concat[:, 9:12], hh)


def test_energy_preserved_orthogonal():
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    bands = DWT2d("db4")(x)
    assert torch.allclose(sum((b**2).sum() for b in bands), (x**2).sum())


def test_gradcheck_float64():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    dwt, idwt = DWT2d("db2").double(), IDWT2d("db2").double()
    assert torch.autograd.gradcheck(lambda v: dwt.forward_concat(v), (x,))
    c = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: idwt.forward_concat(v), (c,))


def test_pyramid_shapes_and_recursion():
    x = torch.randn(2, 3, 32, 64)
    levels = wavelet_pyramid(x, 3, "db2")
    assert [tuple(p.shape) for p in levels] == [(2, 12, 16, 32), (2, 12, 8, 16), (2, 12, 4, 8)]
    # level l+1 is the DWT of level l's LL (first C channels)
    again = DWT2d("db2").forward_concat(levels[0][:, :3])
    assert torch.allclose(again, levels[1])
    ca = pywt.wavedec2(x.numpy().astype(np.float64), "db2", mode="periodization", level=3)[0]
    np.testing.assert_allclose(levels[2][:, :3].numpy(), ca, atol=1e-4)


def test_bad_sizes_and_wavelets_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        wavelet_pyramid(torch.randn(1, 1, 12, 12), 3, "db2")
    with pytest.raises(ValueError, match="even"):
        DWT2d("db2")(torch.randn(1, 1, 5, 4))
    with pytest.raises(ValueError, match="orthogonal"):
        DWT2d("bior2.2")
