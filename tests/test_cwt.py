"""The scalogram transform: agrees with reference CWTs, is causal, normalises as documented, rejects bad input."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import InputError
from models.transforms.cwt import WAVEFORM_LIMIT, CWTConfig, Scalogram

L = 256


def _signal(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    return np.sin(2 * np.pi * t / 20) + 0.5 * np.sin(2 * np.pi * t / 7) * (t > L // 2) + 0.3 * rng.standard_normal(L)


def _raw(config: CWTConfig) -> Scalogram:
    return Scalogram(config)


def test_magnitudes_match_ssqueezepy_on_same_scales():
    ssq = pytest.importorskip("ssqueezepy")
    x = _signal()
    cfg = CWTConfig(n_scales=32, out_size=(32, L), normalise="none", log_magnitude=False)
    ours = Scalogram(cfg).magnitude(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    ref, _ = ssq.cwt(x, wavelet=("morlet", {"mu": cfg.omega0}), scales=cfg.scales(L).astype(np.float32),
                     padtype="reflect", l1_norm=True)
    ref = np.abs(np.asarray(ref))
    assert ours.shape == ref.shape == (32, L)
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99
    # Same normalisation convention too (peak-normalised Morlet): magnitudes agree, not only in shape.
    inner = slice(32, L - 32)
    assert np.abs(ours[:, inner] - ref[:, inner]).max() < 0.15 * ref.max()


def test_magnitudes_match_pywt_complex_morlet():
    pywt = pytest.importorskip("pywt")
    x = _signal(1)
    cfg = CWTConfig(n_scales=24, out_size=(24, L), normalise="none", log_magnitude=False, min_period=4)
    scales = cfg.scales(L)
    ours = Scalogram(cfg).magnitude(torch.tensor(x[None], dtype=torch.float32))[0].numpy()
    # pywt's cmorB-C: envelope exp(-t²/B), centre C cycles/sample; B=2, C=ω0/2π is our Morlet. Same scales.
    # pywt is L2-normalised (×√scale): divide it out to compare with our L1 (peak) normalisation.
    c = cfg.omega0 / (2 * np.pi)
    ref, _ = pywt.cwt(x, scales, f"cmor2.0-{c:.6f}", method="fft")
    ref = np.abs(ref) / np.sqrt(scales)[:, None]
    inner = slice(32, L - 32)
    assert np.corrcoef(ours[:, inner].ravel(), ref[:, inner].ravel())[0, 1] > 0.98


def test_unit_sinusoid_peaks_at_its_period_with_unit_magnitude():
    t = np.arange(L)
    cfg = CWTConfig(n_scales=64, out_size=(64, L), normalise="none", log_magnitude=False,
                    min_period=4, max_period=64)
    mag = Scalogram(cfg).magnitude(torch.tensor(np.sin(2 * np.pi * t / 16.0)[None], dtype=torch.float32))[0]
    profile = mag[:, 64:192].mean(dim=1).numpy()
    k = int(profile.argmax())
    assert abs(cfg.periods(L)[k] - 16.0) / 16.0 < 0.05
    assert profile[k] == pytest.approx(1.0, abs=0.05)


def test_output_shape_dtype_and_normalisation():
    x = np.stack([_signal(s) * 7 + 100 for s in range(5)])
    out = Scalogram(CWTConfig(n_scales=32, out_size=(32, 32))).transform(x)
    assert out.images.shape == (5, 1, 32, 32) and out.images.dtype == torch.float32
    assert torch.allclose(out.images.mean(dim=(1, 2, 3)), torch.zeros(5), atol=1e-4)
    assert torch.allclose(out.images.std(dim=(1, 2, 3), unbiased=False), torch.ones(5), atol=1e-3)
    # What normalisation removed is kept: level and scale of each window.
    assert torch.allclose(out.level, torch.tensor(x.mean(axis=1), dtype=torch.float32), rtol=1e-5)
    assert torch.allclose(out.scale, torch.tensor(x.std(axis=1), dtype=torch.float32), rtol=1e-4)


def test_level_and_amplitude_do_not_change_the_image_but_shape_does():
    sc = Scalogram(CWTConfig())
    x = _signal(2)
    a, b = sc(np.stack([x, 3.0 * x + 50.0]))
    assert torch.allclose(a, b, atol=1e-3)
    spiky = x.copy()
    spiky[100] += 8.0
    c = sc(spiky[None])[0]
    assert (c - a).abs().max() > 0.5


def test_the_waveform_channel_keeps_the_level_and_sign_the_magnitude_drops():
    """The magnitude scalogram of zero-mean wavelets cannot tell a window from the same window moved wholesale
    (a level outside the training range, NAB's commonest anomaly) or turned upside down; the second channel
    carries the samples themselves, column t the t-th block of consecutive samples, so the model sees both."""
    cfg = CWTConfig(n_scales=16, out_size=(16, 16), normalise="none", waveform_channel=True)
    x = _signal(3)  # 256 samples: exactly one per cell
    out = Scalogram(cfg).transform(np.stack([x, x + 5.0, -x]))
    assert out.images.shape == (3, 2, 16, 16)
    assert torch.equal(out.images[0, 1], torch.tensor(x, dtype=torch.float32).reshape(16, 16).T)
    assert torch.allclose(out.images[1, 0], out.images[0, 0], atol=1e-4)
    assert torch.equal(out.images[2, 0], out.images[0, 0])
    assert torch.allclose(out.images[1, 1] - out.images[0, 1], torch.full((16, 16), 5.0), atol=1e-5)
    assert torch.equal(out.images[2, 1], -out.images[0, 1])
    # Shorter and longer windows are resampled to the grid, in time order.
    short = Scalogram(cfg).transform(np.linspace(0.0, 1.0, 40)[None]).images[0, 1]
    assert torch.all(short.T.flatten().diff() >= 0)
    long = Scalogram(cfg).transform(np.linspace(0.0, 1.0, 1000)[None]).images[0, 1]
    assert torch.all(long.T.flatten().diff() > 0)
    # A float32-sized spike stays a finite, maximal input for the network.
    spike = x.copy()
    spike[7] = 1e30
    assert Scalogram(cfg).transform(spike[None]).images[0, 1].max() == WAVEFORM_LIMIT
    # Per-window normalisation applies to both channels: level and amplitude still change nothing.
    windowed = Scalogram(CWTConfig(n_scales=16, out_size=(16, 16), waveform_channel=True))
    a, b = windowed(np.stack([x, 3.0 * x + 50.0]))
    assert a.shape == (2, 16, 16) and torch.allclose(a, b, atol=1e-4)


def test_flat_window_gives_zeros_not_nan():
    img = Scalogram(CWTConfig())(np.full((2, 64), 3.5))
    assert torch.isfinite(img).all() and img.abs().max() == 0


def test_causal_each_window_independent_of_batch_neighbours():
    sc = Scalogram(CWTConfig())
    x = np.stack([_signal(s) for s in range(4)])
    together = sc(x)
    alone = torch.cat([sc(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    # Changing a later window leaves an earlier window's scalogram untouched.
    x2 = x.copy()
    x2[3] = 0.0
    assert torch.allclose(sc(x2)[:3], together[:3], atol=1e-6)


def test_resize_paths_grow_and_shrink():
    x = torch.randn(3, 64)
    for size in [(16, 16), (64, 128), (8, 128), (64, 16)]:
        cfg = CWTConfig(n_scales=32, out_size=size)
        assert Scalogram(cfg)(x).shape == (3, 1, *size)


def test_float64_and_tensor_inputs_agree():
    sc = Scalogram(CWTConfig())
    x = _signal(3)[None]
    assert torch.allclose(sc(x), sc(torch.tensor(x, dtype=torch.float32)), atol=1e-4)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 64)), "empty"),
        (np.zeros((2, 0)), "empty"),
        (np.zeros((2, 8)), "too short"),
        (np.zeros(64), "shape (N, L)"),
        (np.zeros((1, 1, 64)), "shape (N, L)"),
        (np.array([[np.nan] + [0.0] * 63]), "NaN"),
        (np.array([[np.inf] + [0.0] * 63]), "NaN/inf"),
        ("not windows", "expected windows"),
    ],
)
def test_bad_input_raises_input_error(bad, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Scalogram(CWTConfig())(bad)


def test_config_round_trip_and_validation():
    cfg = CWTConfig(n_scales=16, out_size=(16, 48), min_period=3.0, max_period=40.0)
    assert CWTConfig.from_dict(cfg.to_dict()) == cfg
    assert "waveform_channel" not in cfg.to_dict()  # a saved pipeline stays loadable by a release without it
    with_wave = CWTConfig(waveform_channel=True)
    assert CWTConfig.from_dict(with_wave.to_dict()) == with_wave
    with pytest.raises(ValueError):
        CWTConfig(min_period=1.0)
    with pytest.raises(ValueError):
        CWTConfig(min_period=10.0, max_period=5.0)
    with pytest.raises(ValueError):
        CWTConfig(wavelet="mexh")  # type: ignore[arg-type]


@pytest.mark.parametrize("torch_threads", [1, 2, 4], indirect=True)
def test_a_window_gets_the_same_image_alone_and_in_any_batch(torch_threads):
    """The detector pads only the model's batches, so the transform itself must give a window the same image in
    every batch: short windows are transformed in one batched FFT, long ones (from an FFT of 8,192 points: windows of
    2,049 samples and more, the audio preset's 8,192 among them) one at a time, because the CPU FFT threads a lone
    long transform differently from a batch of them."""
    for length, waveform in ((33, False), (33, True), (256, False), (2048, False), (4096, True), (8192, False),
                             (9000, False)):
        tr = Scalogram(CWTConfig(n_scales=32, out_size=(16, 16), waveform_channel=waveform))
        x = torch.randn(9, length, generator=torch.Generator().manual_seed(length))
        whole = tr.transform(x)
        for split in (1, 2, 4):
            parts = [tr.transform(x[i:i + split]) for i in range(0, 9, split)]
            assert torch.equal(torch.cat([p.images for p in parts]), whole.images), (length, split)
            assert torch.equal(torch.cat([p.scale for p in parts]), whole.scale), (length, split)


@pytest.mark.parametrize("torch_threads", [1, 2, 4], indirect=True)
def test_a_short_window_gets_the_same_image_in_a_batch_large_enough_for_threads(torch_threads):
    """The batches the benchmarks score at once (hundreds of windows) are where the CPU FFT uses several threads.
    There its real FFT gave a window other bits than alone or in an odd-sized batch (seen on an AMD EPYC with two
    threads: 1e-5 in a pixel, a monitor's NAB score 1e-6 off the offline one), which batches of nine never showed."""
    for length in (32, 33, 64, 200):
        tr = Scalogram(CWTConfig(n_scales=32, out_size=(16, 16), waveform_channel=length == 33))
        x = torch.randn(240, length, generator=torch.Generator().manual_seed(length))
        whole = tr.transform(x).images
        for split in (1, 3, 5, 16, 19, 80):
            parts = torch.cat([tr.transform(x[i:i + split]).images for i in range(0, 240, split)])
            assert torch.equal(parts, whole), (length, split)


def test_long_windows_never_hold_a_batch_of_full_resolution_magnitudes(monkeypatch):
    """A window of 8,192 samples has 32 × 8,192 magnitudes (1 MB) before it is pooled to 16 × 16; a detector fitted
    on 512 such windows held them all at once (1.9 GB peak). Long windows now go through magnitude, log and
    pooling one at a time; short ones stay one batched step."""
    seen: list[tuple[int, ...]] = []
    original = Scalogram._resize
    monkeypatch.setattr(Scalogram, "_resize", lambda self, img: seen.append(tuple(img.shape)) or original(self, img))
    tr = Scalogram(CWTConfig(n_scales=32, out_size=(16, 16)))
    out = tr.transform(torch.randn(5, 8192, generator=torch.Generator().manual_seed(0)))
    assert out.images.shape == (5, 1, 16, 16)
    assert seen == [(1, 1, 32, 8192)] * 5
    seen.clear()
    tr.transform(torch.randn(5, 256, generator=torch.Generator().manual_seed(0)))
    assert seen == [(5, 1, 32, 256)]


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak resident set size the Linux way")
def test_transforming_many_long_windows_keeps_memory_flat():
    """The audio preset fits on 512 windows of 8,192 samples. Holding their full-resolution magnitudes, or a list of
    small per-window images while megabyte FFT buffers come and go (glibc then grows the heap by about a buffer per
    window), took the fit's peak from 0.25 to 2.7 GB. Measured in a fresh process: the transform of 512 such
    windows must stay well under the 0.5 GB that 512 full-resolution magnitudes alone would take."""
    code = textwrap.dedent("""
        import resource, torch
        from models.transforms.cwt import Scalogram, CWTConfig
        torch.set_num_threads(1)
        tr = Scalogram(CWTConfig(n_scales=32, out_size=(16, 16)))
        x = torch.randn(512, 8192, generator=torch.Generator().manual_seed(0))
        tr.transform(x[:2])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        images = tr.transform(x).images
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, tuple(images.shape))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split(maxsplit=1)
    grew_mb, shape = int(out[0]), out[1].strip()
    assert shape == "(512, 1, 16, 16)"
    assert grew_mb < 200, f"the transform of 512 long windows grew the peak RSS by {grew_mb} MB"
