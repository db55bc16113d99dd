"""Windowed Gaussian (z-score) detector, as NAB's ``windowedGaussian`` baseline defines it.

Score of point t = 1 - Q(|z|), z against the mean/std of a window of earlier points. NAB's variant
grows the window to 6400 points, then slides it in steps of 100 (statistics refresh every 100 points).
Vectorised with cumulative sums, so millions of points (UCR) take well under a second.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from models.baselines import as_series, register_series_detector


class WindowedGaussian:
    """``adapt=True``: the window keeps moving with the stream (NAB's reference behaviour).
    ``adapt=False``: mean/std come from the training part only and stay fixed (no learning after fit).
    ``output``: "probability" gives NAB's 1 - Q(|z|) in [0.5, 1] (0 for the first point);
    "zscore" gives |z| itself, which keeps ranking extreme points where the probability saturates at 1.
    """

    lag = 0

    def __init__(self, window: int = 6400, step: int = 100, adapt: bool = True, output: str = "probability",
                 min_std: float = 1e-6) -> None:
        if window < 1 or step < 1:
            raise ValueError("window and step must be >= 1")
        if output not in ("probability", "zscore"):
            raise ValueError("output must be 'probability' or 'zscore'")
        self.window, self.step, self.adapt, self.output, self.min_std = window, step, adapt, output, min_std
        self.name = "windowed_gaussian" if adapt else "windowed_gaussian_train"
        self.output_is_probability = output == "probability"
        self._train: np.ndarray | None = None

    def fit(self, train: np.ndarray) -> "WindowedGaussian":
        self._train = as_series(train, "training series", min_length=2)
        return self

    def _window_bounds(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of the window whose statistics score point i (i points already seen)."""
        k = np.arange(n)
        full = k > self.window
        hi = np.where(full, self.window + self.step * ((k - self.window) // self.step), k)
        lo = np.maximum(hi - self.window, 0)
        return lo, hi

    def score(self, values: np.ndarray) -> np.ndarray:
        x = as_series(values)
        n = x.size
        if self.adapt:
            lo, hi = self._window_bounds(n)
            ref = x[0] if n else 0.0
            c1 = np.r_[0.0, np.cumsum(x - ref)]
            c2 = np.r_[0.0, np.cumsum((x - ref) ** 2)]
            cnt = (hi - lo).astype(np.float64)
            safe = np.maximum(cnt, 1.0)
            mean_c = (c1[hi] - c1[lo]) / safe
            var = np.maximum((c2[hi] - c2[lo]) / safe - mean_c**2, 0.0)
            mean = mean_c + ref
            std = np.sqrt(var)
        else:
            if self._train is None:
                from models.errors import NotFittedError

                raise NotFittedError("windowed_gaussian_train: call fit(train) before score()")
            tail = self._train[-self.window:]
            mean = np.full(n, tail.mean())
            std = np.full(n, tail.std())
            cnt = np.full(n, float(tail.size))
        # Tiny relative noise in the cumulative sums must not read as variance of a flat window.
        std = np.where(std <= 1e-9 * np.maximum(np.abs(mean), 1.0), 0.0, std)
        std = np.where(std == 0.0, self.min_std, std)
        z = np.abs(x - mean) / std
        if self.output == "zscore":
            out = z
        else:
            out = 1.0 - 0.5 * special.erfc(z / np.sqrt(2.0))
        return np.where(cnt > 0, out, 0.0)


register_series_detector("windowed_gaussian", lambda **kw: WindowedGaussian(**kw))
register_series_detector("windowed_gaussian_train", lambda **kw: WindowedGaussian(**{"adapt": False, **kw}))
