"""Sliding windows → CWT scalograms, the image the diffusion model sees for every series and audio stream.

A batched FFT Morlet CWT in torch: one rFFT of all windows, one multiply with a cached filter bank, one
inverse FFT. That is what makes thousands of short windows per second possible on two cores (a per-window
``ssqueezepy``/``pywt`` call costs more in Python overhead than in arithmetic).

Conventions (chosen to match ``ssqueezepy.cwt(x, wavelet=('morlet', {'mu': ω0}), l1_norm=True)``):

* Morlet in the frequency domain, zero-mean corrected: ψ̂(sξ) = 2·[exp(−(sξ−ω0)²/2) − e^{−ω0²/2}·exp(−(sξ)²/2)]
  for ξ ≥ 0 (analytic: negative frequencies dropped). The factor 2 makes a unit-amplitude sinusoid give
  |W| ≈ 1 at its scale (L1 / peak normalisation: magnitudes do not grow with scale, so long periods are not
  favoured over short ones).
* Scale ↔ period: the wavelet at scale s peaks at ξ = ω0/s rad/sample, i.e. period P = 2π·s/ω0 samples.
  Scales are geometric between ``min_period`` and ``max_period``.
* Row 0 of the scalogram is the *shortest* period (highest frequency); columns are time, oldest first.
* Causal: a window's scalogram uses only that window's samples (reflect padding inside the window, never
  samples from the next window), so streaming and offline scoring give identical results.

Normalisation — level versus shape
----------------------------------
Each window is standardised ((x − mean) / std) before the transform and the log-magnitude scalogram is
standardised again, so the model learns the *shape* of normal behaviour and one model serves streams whose
units and operating points differ. The price: a window that is normal in shape but shifted in level, or
scaled in amplitude, looks normal to the model (the Morlet wavelet is blind to a constant offset anyway).
Level shifts *are* anomalies, so :meth:`Scalogram.transform` also returns each window's ``level`` (mean) and
``scale`` (std); :class:`models.pipeline.ScalogramPipeline` compares them with the training windows and
reports ``level_z`` / ``scale_z`` in ``ScoreBatch.extras`` for the calibration/alert layer. A level step
*inside* a window is an edge and shows in the scalogram itself. A flat (constant) window has std 0: it maps
to an all-zero scalogram — unlike any normal window, so a stuck sensor scores high, never NaN.

The waveform channel (``waveform_channel=True``)
------------------------------------------------
A magnitude scalogram keeps neither phase nor level: a window moved wholesale to a level the series never had, or
turned upside down, gives the same image. With the training part's standardisation (``normalise="none"``, the
``nab`` preset) the level *is* the anomaly more often than not, so the image gets a second channel: the window's
samples themselves, resampled to H·W points and laid out so that column t holds the t-th block of consecutive
samples — the same time span as the scalogram's column t. The diffusion model then learns the normal joint
pattern of both, and a level it never saw is pulled back, not copied (NAB: the diffusion channel alone from 21.5
to 32.0; ``benchmarks/README.md``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.errors import InputError

Normalisation = Literal["window", "none"]


@dataclass(frozen=True)
class CWTConfig:
    """How a window becomes a model input. Saved beside the model: the model only knows these images.

    ``max_period=None`` means half the window length (longer periods cannot be resolved inside the window).
    ``min_length`` is the shortest window accepted: below it the scalogram is mostly padding.
    ``waveform_channel`` adds the window's samples as a second image channel (see the module docstring).
    """

    n_scales: int = 32
    out_size: tuple[int, int] = (32, 32)
    wavelet: Literal["morlet"] = "morlet"
    omega0: float = 6.0
    min_period: float = 2.0
    max_period: float | None = None
    log_magnitude: bool = True
    normalise: Normalisation = "window"
    log_floor: float = 1e-3
    min_length: int = 16
    waveform_channel: bool = False

    def __post_init__(self) -> None:
        if self.wavelet != "morlet":
            raise ValueError(f"only the 'morlet' wavelet is implemented, got {self.wavelet!r}")
        if self.n_scales < 1:
            raise ValueError("n_scales must be at least 1")
        if len(self.out_size) != 2 or min(self.out_size) < 1:
            raise ValueError(f"out_size must be (H, W) with positive sizes, got {self.out_size}")
        object.__setattr__(self, "out_size", (int(self.out_size[0]), int(self.out_size[1])))
        if self.min_period < 2.0:
            raise ValueError("min_period below 2 samples is above the Nyquist frequency")
        if self.max_period is not None and self.max_period <= self.min_period:
            raise ValueError("max_period must exceed min_period")
        if self.normalise not in ("window", "none"):
            raise ValueError(f"normalise must be 'window' or 'none', got {self.normalise!r}")
        if self.min_length < 4:
            raise ValueError("min_length must be at least 4")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_size"] = list(self.out_size)
        if not self.waveform_channel:  # saved only where set: a release from before it refuses unknown keys
            del d["waveform_channel"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CWTConfig":
        d = dict(d)
        if "out_size" in d:
            d["out_size"] = tuple(d["out_size"])
        return cls(**d)

    def periods(self, length: int) -> np.ndarray:
        """Geometric periods (samples) from ``min_period`` to ``max_period`` for a window of ``length``."""
        top = self.max_period if self.max_period is not None else length / 2.0
        top = max(top, self.min_period * 1.0001)
        return np.geomspace(self.min_period, top, self.n_scales)

    def scales(self, length: int) -> np.ndarray:
        """The CWT scales for ``length`` (period P ↔ scale s = ω0·P / 2π)."""
        return self.periods(length) * self.omega0 / (2 * math.pi)


@dataclass(frozen=True)
class ScalogramOutput:
    """Scalograms plus what normalisation removed: per-window level (mean) and scale (std)."""

    images: torch.Tensor
    level: torch.Tensor
    scale: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def morlet_filter_bank(scales: np.ndarray, n_fft: int, omega0: float) -> torch.Tensor:
    """Frequency responses ψ̂(s·ξ) on the rFFT grid, shape (S, n_fft//2 + 1), float64."""
    xi = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (2 * math.pi / n_fft)
    s = torch.as_tensor(scales, dtype=torch.float64).reshape(-1, 1)
    w = s * xi
    correction = math.exp(-0.5 * omega0**2)
    return 2.0 * (torch.exp(-0.5 * (w - omega0) ** 2) - correction * torch.exp(-0.5 * w**2))


def _as_windows(windows) -> torch.Tensor:
    if isinstance(windows, np.ndarray):
        if windows.dtype == object:
            raise InputError("windows must be a numeric array, got dtype=object")
        windows = torch.from_numpy(np.ascontiguousarray(windows))
    elif isinstance(windows, (list, tuple)):
        try:
            windows = torch.as_tensor(np.asarray(windows, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise InputError(f"windows must be numeric, got {exc}") from None
    if not torch.is_tensor(windows):
        raise InputError(f"expected windows of shape (N, L) as tensor/ndarray, got {type(windows).__name__}")
    if windows.is_complex() or windows.dtype == torch.bool:
        raise InputError(f"windows must be real numbers, got dtype {windows.dtype}")
    return windows


#: FFT length from which :meth:`Scalogram.magnitude` transforms windows one at a time (windows of 2,049 samples and
#: more: the FFT is the next power of two from twice the window): from there the CPU FFT threads a lone complex
#: transform differently from a batch of them.
ONE_AT_A_TIME_FFT = 8_192

#: The waveform channel's bound, in the units the samples arrive in (training standard deviations with
#: ``normalise="none"``; a window-normalised sample never exceeds the square root of the window's length).
WAVEFORM_LIMIT = 1e4


class Scalogram:
    """Callable: windows (N, L) → scalograms (N, C, H, W), float32, on the windows' device (C = 1, or 2 with the
    waveform channel).

    Filter banks are cached per (length, device) so a stream of equal-length windows pays for them once.
    """

    def __init__(self, config: CWTConfig | None = None) -> None:
        self.config = config or CWTConfig()
        self._banks: dict[tuple[int, str], tuple[torch.Tensor, int]] = {}

    def __call__(self, windows) -> torch.Tensor:
        return self.transform(windows).images

    # ------------------------------------------------------------------ validation
    def validate(self, windows) -> torch.Tensor:
        """Float tensor (N, L), or :class:`InputError` that says what is wrong with the windows."""
        x = _as_windows(windows)
        if x.ndim != 2:
            raise InputError(f"expected windows of shape (N, L), got {x.ndim}-D shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError("empty batch: no windows to transform")
        if x.shape[1] == 0:
            raise InputError("empty windows: length 0")
        if x.shape[1] < self.config.min_length:
            raise InputError(
                f"windows of {x.shape[1]} samples are too short; need at least {self.config.min_length}"
            )
        x = x.to(torch.float64) if x.dtype == torch.float64 else x.float()
        finite = torch.isfinite(x)
        if not finite.all():
            rows = (~finite).any(dim=1).nonzero().flatten().tolist()
            raise InputError(
                f"{int((~finite).sum())} NaN/inf sample(s) in window(s) {rows[:10]}"
                f"{' …' if len(rows) > 10 else ''}; fill or drop them before the transform"
            )
        return x

    # ------------------------------------------------------------------ transform
    def _bank(self, length: int, device: torch.device) -> tuple[torch.Tensor, int]:
        key = (length, str(device))
        if key not in self._banks:
            pad = length - 1  # reflect padding can add at most L-1 samples per side
            n_fft = 1 << math.ceil(math.log2(length + 2 * min(pad, length // 2)))
            bank = morlet_filter_bank(self.config.scales(length), n_fft, self.config.omega0)
            self._banks[key] = (bank.to(device=device, dtype=torch.complex64), n_fft)
        return self._banks[key]

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """|W| for already validated, normalised windows (N, L) → (N, S, L), no resizing. Windows from an FFT of
        :data:`ONE_AT_A_TIME_FFT` points on are given one at a time by :meth:`_image` (why: there)."""
        n, length = x.shape
        bank, n_fft = self._bank(length, x.device)
        left = (n_fft - length) // 2
        right = n_fft - length - left
        # Reflect padding needs pad < L; longer FFTs (short windows) fall back to zeros beyond that.
        rl, rr = min(left, length - 1), min(right, length - 1)
        xp = F.pad(x.float().unsqueeze(1), (rl, rr), mode="reflect").squeeze(1)
        xp = F.pad(xp, (left - rl, right - rr))
        # A complex FFT of the real input, halved, rather than rfft: the CPU's real FFT gives a window other bits in
        # a batch of one (or an odd count) than among many with two threads (seen on an AMD EPYC: 1e-5 in a
        # log-magnitude pixel; presumably real signals are paired into one complex transform and a lone one is done
        # another way), which moved a monitor's score off the offline one by 1e-6. The complex transform of each row is
        # the same in any batch (tests/test_cwt.py); it costs one of the 1 + n_scales transforms twice the work.
        spec = torch.fft.fft(xp.to(torch.complex64), n=n_fft, dim=-1)[..., : n_fft // 2 + 1]
        coeffs = torch.fft.ifft(spec.unsqueeze(1) * bank, n=n_fft, dim=-1)
        # ifft of a one-sided spectrum: the analytic signal is the full complex result, times 1 (the factor 2
        # in the bank restores the energy of the dropped negative frequencies).
        return coeffs[..., left : left + length].abs()

    def transform(self, windows) -> ScalogramOutput:
        cfg = self.config
        x = self.validate(windows)
        level = x.mean(dim=1)
        scale = x.std(dim=1, unbiased=False) if x.shape[1] > 1 else torch.zeros_like(level)
        if cfg.normalise == "window":
            x = (x - level[:, None]) / scale.clamp_min(1e-12)[:, None]
            x = torch.where(scale[:, None] > 1e-6 * (1 + level.abs()[:, None]), x, torch.zeros_like(x))
        img = self._image(x.float())
        if cfg.normalise == "window":
            mu = img.mean(dim=(1, 2, 3), keepdim=True)
            sd = img.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
            img = torch.where(sd > 1e-6, (img - mu) / sd.clamp_min(1e-6), torch.zeros_like(img))
        if cfg.waveform_channel:
            img = torch.cat([img, self._waveform(x.float())], dim=1)
        return ScalogramOutput(images=img.contiguous(), level=level.float(), scale=scale.float())

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised windows (N, L) → resized (log-)magnitudes (N, 1, H, W).

        Long windows go one at a time. For the bits: from an FFT of :data:`ONE_AT_A_TIME_FFT` points on, PyTorch's
        CPU FFT spreads a lone transform over several threads, so a window's coefficients would differ in the last
        bits between a batch of one and a larger batch; alone, a window is always transformed the same way, and the
        loop costs nothing next to transforms that long. Shorter windows are transformed identically in a batch and
        alone (``tests/test_cwt.py`` holds both to bitwise equality with one, two and four threads). And through the
        whole step, not only the FFT, each image written straight into one output tensor, for memory: their
        full-resolution magnitudes (1 MB for 32 scales × 8,192 samples)
        would otherwise all be held at once, and with glibc's allocator a list of small per-window results kept
        while megabyte buffers come and go grows the heap by about a buffer per window. The audio preset's fit
        (512 windows of 8,192) peaked at 2.7 GB and kept 2.2 GB; now 0.4 GB (``tests/test_cwt.py``)."""
        n, length = x.shape
        if n > 1 and self._bank(length, x.device)[1] >= ONE_AT_A_TIME_FFT:
            first = self._image(x[:1])
            out = first.new_empty((n, *first.shape[1:]))
            out[0] = first[0]
            del first
            for i in range(1, n):
                out[i] = self._image(x[i:i + 1])[0]
            return out
        mag = self.magnitude(x)
        img = torch.log(mag + self.config.log_floor) if self.config.log_magnitude else mag
        return self._resize(img.unsqueeze(1))

    def _waveform(self, x: torch.Tensor) -> torch.Tensor:
        """The (normalised) window itself as an (N, 1, H, W) image aligned with the scalogram's time axis: resampled
        to H·W samples, column t holds the t-th of W consecutive blocks of H samples (oldest at the top). The
        magnitude scalogram drops phase and level; this channel keeps both."""
        h, w = self.config.out_size
        n, length = x.shape
        if length >= h * w:
            wave = F.adaptive_avg_pool1d(x.unsqueeze(1), h * w)
        else:
            wave = F.interpolate(x.unsqueeze(1), size=h * w, mode="linear", align_corners=False)
        # Bounded: a sample ten thousand training standard deviations out is as anomalous as one further out, and the
        # float32 network's normalisation layers square their inputs (a 1e30 spike gave inf scores).
        wave = wave.clamp(-WAVEFORM_LIMIT, WAVEFORM_LIMIT)
        return wave.reshape(n, 1, w, h).transpose(2, 3).contiguous()

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, L) → (N, 1, H, W): average pooling when shrinking (anti-aliased), bilinear when growing."""
        h, w = self.config.out_size
        s, length = img.shape[-2:]
        if (s, length) == (h, w):
            return img
        if s >= h and length >= w:
            return F.adaptive_avg_pool2d(img, (h, w))
        if s <= h and length <= w:
            return F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
        # Mixed: pool the axis that shrinks, interpolate the one that grows.
        img = F.adaptive_avg_pool2d(img, (min(s, h), min(length, w)))
        return F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
