"""Matrix-profile discord detector (stumpy): a subsequence is anomalous when its nearest neighbour is far.

Two references, both causal when the score of a subsequence is written at its *last* point:
- ``reference="past"``: the left matrix profile — nearest neighbour among all earlier subsequences of
  the same stream (what an incremental STAMPI would maintain online); the natural streaming detector.
- ``reference="train"``: AB-join against the training prefix only — the standard train/test discord
  (nothing after the training part is ever used as a reference).
The window defaults to the training part's dominant period (one rule for every file, no tuning).
``normalize=False`` uses plain Euclidean distance: z-normalised shapes are blind to level and amplitude
changes, which are many of NAB's anomalies.
"""
from __future__ import annotations

import logging

import numpy as np

from models.baselines import as_series, register_series_detector
from models.baselines.period import dominant_period
from models.errors import InputError, NotFittedError

logger = logging.getLogger(__name__)


def _rolling_mean_std(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    win = np.lib.stride_tricks.sliding_window_view(x, m)
    return win.mean(axis=1), win.std(axis=1)


def _is_constant(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return sd <= 1e-8 * np.maximum(np.abs(mu), 1.0)


def left_profile_from_index(x: np.ndarray, m: int, left_index: np.ndarray, normalize: bool = True) -> np.ndarray:
    """z-normalised distance from each subsequence to its left nearest neighbour (inf when none).

    stumpy returns the left neighbour's index but not its distance; recomputing only that distance
    is O(n m) and far cheaper than ``stumpi(egress=False)``. Constant subsequences follow stumpy's
    convention: two constants are 0 apart, a constant and a non-constant sqrt(m).
    """
    win = np.lib.stride_tricks.sliding_window_view(x, m)
    mu, sd = _rolling_mean_std(x, m)
    const = _is_constant(mu, sd)
    out = np.full(win.shape[0], np.inf)
    has = left_index >= 0
    i = np.nonzero(has)[0]
    j = left_index[has].astype(np.int64)
    chunk = 4096
    if not normalize:
        for s in range(0, i.size, chunk):
            ii, jj = i[s : s + chunk], j[s : s + chunk]
            out[ii] = np.sqrt(np.einsum("ij,ij->i", win[ii] - win[jj], win[ii] - win[jj]))
        return out
    for s in range(0, i.size, chunk):
        ii, jj = i[s : s + chunk], j[s : s + chunk]
        both_ok = ~const[ii] & ~const[jj]
        corr = np.zeros(ii.size)
        if both_ok.any():
            a, b = ii[both_ok], jj[both_ok]
            num = np.einsum("ij,ij->i", win[a] - mu[a, None], win[b] - mu[b, None]) / m
            corr[both_ok] = np.clip(num / (sd[a] * sd[b]), -1.0, 1.0)
        d = np.sqrt(np.maximum(2.0 * m * (1.0 - corr), 0.0))
        d = np.where(const[ii] & const[jj], 0.0, d)
        d = np.where(const[ii] ^ const[jj], np.sqrt(m), d)
        out[ii] = d
    return out


class MatrixProfileDiscord:
    """Score at point t = matrix-profile distance of the subsequence ``values[t-m+1 : t+1]``."""

    output_is_probability = False

    def __init__(self, window: int | None = None, reference: str = "past", normalize: bool = True,
                 min_window: int = 8, max_window: int = 1000, default_window: int = 64) -> None:
        if reference not in ("past", "train"):
            raise ValueError("reference must be 'past' or 'train'")
        self.reference = reference
        self.normalize = normalize
        self.fixed_window = window
        self.min_window, self.max_window, self.default_window = min_window, max_window, default_window
        self.window: int | None = window
        self.name = "matrix_profile" if reference == "past" else "matrix_profile_train"
        self._train: np.ndarray | None = None

    @property
    def lag(self) -> int:
        m = self.window or 0
        return max(m - 1 - m // 2, 0)

    def fit(self, train: np.ndarray) -> "MatrixProfileDiscord":
        x = as_series(train, "training series", min_length=8)
        self._train = x
        if self.fixed_window is None:
            self.window = dominant_period(x, self.min_window, self.max_window, self.default_window)
        else:
            self.window = int(self.fixed_window)
        if self.window < 3 or self.window > x.size:
            raise InputError(f"matrix profile window {self.window} does not fit a training part of {x.size} points")
        logger.debug("%s: window %d from %d training points", self.name, self.window, x.size)
        return self

    def score(self, values: np.ndarray) -> np.ndarray:
        import stumpy  # heavy (numba); only when used

        if self._train is None or self.window is None:
            raise NotFittedError(f"{self.name}: call fit(train) before score()")
        x = as_series(values)
        m = self.window
        out = np.zeros(x.size)
        if x.size < m:
            return out
        if self.reference == "train":
            mp = stumpy.stump(x, m, self._train, ignore_trivial=False, normalize=self.normalize)
            dist = mp[:, 0].astype(np.float64)
        else:
            if x.size < 2 * m:
                return out
            mp = stumpy.stump(x, m, normalize=self.normalize)
            dist = left_profile_from_index(x, m, mp[:, 2].astype(np.int64), self.normalize)
        dist = np.where(np.isfinite(dist), dist, 0.0)
        out[m - 1 :] = dist
        return out


register_series_detector("matrix_profile", lambda **kw: MatrixProfileDiscord(**kw))
register_series_detector("matrix_profile_train", lambda **kw: MatrixProfileDiscord(**{"reference": "train", **kw}))
