"""Dominant period of a (training) series, used to size subsequence windows without per-file tuning."""
from __future__ import annotations

import numpy as np


def dominant_period(
    train: np.ndarray, min_period: int = 8, max_period: int | None = None, default: int = 64
) -> int:
    """Lag of the strongest positive local maximum of the autocorrelation in [min_period, max_period].

    The ACF (via FFT) is searched only up to half of the series so that at least two cycles
    support the estimate; when there is no positive peak (noise, trend, flat line) ``default`` is
    returned, clipped to the same range.
    """
    x = np.asarray(train, dtype=np.float64).ravel()
    n = x.size
    upper = n // 2 if max_period is None else min(max_period, n // 2)
    fallback = int(np.clip(default, min_period, max(min_period, upper)))
    if upper <= min_period + 1:
        return max(min(fallback, max(n // 4, 3)), 3)
    x = x - x.mean()
    var = float(np.dot(x, x))
    if var <= 0.0:
        return fallback
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(x, size)
    acf = np.fft.irfft(spec * np.conj(spec), size)[: upper + 1] / var
    lags = np.arange(min_period, upper)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > 0.0)]
    if peaks.size == 0:
        return fallback
    return int(peaks[np.argmax(acf[peaks])])
