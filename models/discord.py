"""Nearest-neighbour discord distance to the training part: the raw-shape channel beside the diffusion score.

Why it exists: the diffusion model sees a window's CWT scalogram, resized and normalised, and judges whether it is
*plausible*; a small distortion of one beat or a missing dip can still be plausible. The distance from a window to
its nearest neighbour among the training windows (z-normalised Euclidean, the matrix-profile AB-join of the UCR
literature) judges whether the raw shape was ever *seen*. The two fail on different series, so the series detector
fuses their training-normalised z-scores (see ``models.series_detector``).

Normalisation uses the training part only: a sample of training windows is joined against the other training
windows outside an exclusion zone of one window (trivial matches excluded), and the mean/std of those distances
turn a test distance into a z-score comparable with the diffusion channel's. Nothing after the training part is
ever a reference, so scores are causal and appending points never changes earlier ones.

``normalize=False`` keeps each window's level and amplitude (NAB's short *value* discords): the windows are only
standardised with the training part's mean and std, so a spike, a level shift or a new amplitude counts as much as
a new shape. That variant suits short windows (2–32 points) on drifting operational metrics, where *how high* is
often the anomaly; the z-normalised one suits long periodic recordings (UCR), where *which shape* is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import InputError, NotFittedError


def fixed_standardisation(train: np.ndarray) -> tuple[float, float]:
    """(mean, std) of a training part for standardising later values with *fixed* statistics. A (numerically)
    flat training part gets scale 1: its float rounding noise (std ~1e-10 of a level of 1e6) must not become the
    unit that turns every later deviation into billions."""
    x = np.asarray(train, dtype=np.float64)
    centre, spread = float(x.mean()), float(x.std())
    return centre, spread if spread > 1e-12 * max(abs(centre), 1.0) else 1.0


def _window_view(x: np.ndarray, window: int, ends: np.ndarray) -> np.ndarray:
    """float64 windows ending (inclusive) at ``ends``; an end outside the series is refused, never wrapped."""
    values = np.asarray(x, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size and (ends.min() < window - 1 or ends.max() >= values.size):
        raise InputError(f"window ends must lie in [{window - 1}, {values.size - 1}] for windows of {window} "
                         f"in a series of {values.size} points, got [{ends.min()}, {ends.max()}]")
    return np.lib.stride_tricks.sliding_window_view(values, window)[ends - window + 1]


def znormalized_windows(x: np.ndarray, window: int, ends: np.ndarray) -> np.ndarray:
    """float64 windows ending (inclusive) at ``ends``, each shifted to mean 0 and scaled to std 1 (float64 for the
    reason :func:`raw_windows` gives).

    A constant window stays all-zero (its std is replaced by a floor far below float64 rounding of real data), so
    two constant windows are 0 apart and a constant and a varying window are sqrt(window) apart — the
    matrix-profile convention.
    """
    view = _window_view(x, window, ends)
    mu = view.mean(axis=1, keepdims=True)
    sd = view.std(axis=1, keepdims=True)
    floor = 1e-12 * np.maximum(np.abs(mu), 1.0)
    return (view - mu) / np.maximum(sd, floor)


def raw_windows(x: np.ndarray, window: int, ends: np.ndarray, centre: float, scale: float) -> np.ndarray:
    """float64 windows ending (inclusive) at ``ends``, standardised with *fixed* training statistics (level and
    amplitude kept). float64 because these windows are short (NAB: 2–32 points) and their nearest distances
    are often tiny: in float32 the Gram-product cancellation noise would depend on how queries are blocked,
    and a stream scored in chunks must get the same distances as one scored at once."""
    return (_window_view(x, window, ends) - centre) / scale


def nearest_distances(queries: np.ndarray, refs: np.ndarray, *, query_pos: np.ndarray | None = None,
                      ref_pos: np.ndarray | None = None, exclusion: int = 0, chunk: int = 8192,
                      query_block: int = 1024, ref_norms: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance from each z-normalised query to its nearest z-normalised reference (= sqrt(2 w (1 - corr))
    for two varying windows; the squared norms keep the constant-window convention exact).

    With ``exclusion`` > 0, references whose position is closer than that to the query's are skipped (a training
    window must not match itself or its overlapping neighbours); a query with no reference left gets inf.
    Peak memory is about 3 arrays of ``query_block`` x ``chunk`` (≈ 200 MiB in float64 at the defaults), whatever
    the number of queries. In float64 the Gram products' cancellation noise is far below anything a normaliser
    floor or a threshold sees, so how the queries are blocked (a stream scored in chunks) changes nothing.
    ``ref_norms``: the references' squared norms, when the caller keeps them (the live monitor asks a few queries
    at a time against the same references).
    """
    if exclusion > 0 and (query_pos is None or ref_pos is None):
        raise ValueError("exclusion needs query_pos and ref_pos")
    best = np.full(queries.shape[0], np.inf, dtype=queries.dtype)
    r_norm = np.einsum("ij,ij->i", refs, refs) if ref_norms is None else ref_norms
    for q0 in range(0, queries.shape[0], query_block):
        q = queries[q0 : q0 + query_block]
        q_norm = np.einsum("ij,ij->i", q, q)
        for r0 in range(0, refs.shape[0], chunk):
            d2 = q @ refs[r0 : r0 + chunk].T
            d2 *= -2.0
            d2 += q_norm[:, None]
            d2 += r_norm[None, r0 : r0 + chunk]
            if exclusion > 0:
                assert query_pos is not None and ref_pos is not None
                qp, rp = query_pos[q0 : q0 + query_block], ref_pos[r0 : r0 + chunk]
                if qp.min() - rp.max() < exclusion and rp.min() - qp.max() < exclusion:  # any pair close at all?
                    near = np.abs(qp[:, None] - rp[None, :]) < exclusion
                    d2[near] = np.inf
                    del near
            np.minimum(best[q0 : q0 + query_block], d2.min(axis=1), out=best[q0 : q0 + query_block])
            del d2
    return np.sqrt(np.maximum(best, 0.0))


MAX_REFERENCES = 60_000
"""Training windows a discord channel keeps at most (every k-th beyond: see :class:`TrainingDiscord`)."""


@dataclass(frozen=True)
class DiscordStats:
    """What the training part says about its own nearest-neighbour distances (reported in fit summaries)."""

    window: int
    references: int
    reference_stride: int
    mean: float
    std: float


class TrainingDiscord:
    """``fit(train, window)`` keeps the training windows; ``zscores(x, ends)`` scores windows of any series.

    ``max_references`` bounds memory and time on long training parts (UCR has 100k-point ones): the references
    are then every k-th training window, which costs phase resolution (a normal window can sit up to k/2 samples
    from its nearest reference and look farther than it is) and nothing in causality. 60,000 keeps every
    training window of all but the longest UCR training parts (≈ 120 MB of float64 references at w = 256).
    """

    def __init__(self, max_references: int = MAX_REFERENCES, self_join_queries: int = 512,
                 normalize: bool = True) -> None:
        if max_references < 2 or self_join_queries < 2:
            raise ValueError("max_references and self_join_queries must be >= 2")
        self.max_references = max_references
        self.self_join_queries = self_join_queries
        self.normalize = normalize
        self._centre, self._scale = 0.0, 1.0
        self.stats: DiscordStats | None = None
        self._refs: np.ndarray | None = None
        self._train: np.ndarray | None = None
        self._ref_ends: np.ndarray | None = None
        self._ref_norms: np.ndarray | None = None

    def fit(self, train: np.ndarray, window: int) -> "TrainingDiscord":
        x = np.asarray(train, dtype=np.float64)
        smallest = 3 if self.normalize else 2  # a z-normalised pair of points carries only its sign
        if window < smallest:
            raise InputError(f"discord window must be >= {smallest} samples, got {window}")
        if x.size < 3 * window:
            raise InputError(f"discord window {window} needs a training part of >= {3 * window} points, got {x.size}")
        ends = np.arange(window - 1, x.size)
        stride = max(1, int(np.ceil(ends.size / self.max_references)))
        ref_ends = ends[::stride]
        if not self.normalize:
            self._centre, self._scale = fixed_standardisation(x)
        refs = self._windows(x, window, ref_ends)
        sample = ref_ends[:: max(1, ref_ends.size // self.self_join_queries)]
        own = nearest_distances(self._windows(x, window, sample), refs, query_pos=sample, ref_pos=ref_ends,
                                exclusion=window)
        own = own[np.isfinite(own)]
        if own.size < 2:
            raise InputError(f"training part of {x.size} points has too few non-overlapping windows of {window}")
        self._refs, self._ref_ends, self._train = refs, ref_ends, x.copy()
        self._ref_norms = None
        # Floors: a constant or noise-free training part has (almost) no spread of its own distances; without them
        # any tiny change would score z ~ 1e6.
        scale = float(np.sqrt(window))
        self.stats = DiscordStats(window=int(window), references=int(ref_ends.size), reference_stride=stride,
                                  mean=float(own.mean()),
                                  std=float(max(own.std(), 0.05 * own.mean(), 1e-2 * scale)))
        return self

    def _windows(self, x: np.ndarray, window: int, ends: np.ndarray) -> np.ndarray:
        if self.normalize:
            return znormalized_windows(x, window, ends)
        return raw_windows(x, window, ends, self._centre, self._scale)

    @property
    def nbytes(self) -> int:
        """Memory of the kept training windows, the training part they are cut from and their norms (once scored)."""
        return sum(int(a.nbytes) for a in (self._refs, self._ref_ends, self._ref_norms, self._train) if a is not None)

    @property
    def window(self) -> int:
        if self.stats is None:
            raise NotFittedError("TrainingDiscord: call fit(train, window) first")
        return self.stats.window

    # ------------------------------------------------------------------ persistence (beside a fitted detector)
    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Everything ``from_arrays`` needs, as named arrays (saved in one ``.npz`` with the other channels'): the
        training part, from which the reference windows are cut again at load, not the windows. Why: they are the
        training part repeated ``window`` times over — 48–295 MB per ``ucr`` detector on UCR's long training parts,
        written to ``MODEL_DIR`` at every per-stream fit and read at every restore, against 0.1–0.5 MB for the
        samples; cut again by the same function from the same samples they are the same to the bit."""
        if self._refs is None or self._ref_ends is None or self.stats is None:
            raise NotFittedError("TrainingDiscord: call fit(train, window) first")
        s = self.stats
        meta = np.array([s.window, s.references, s.reference_stride, s.mean, s.std, self._centre, self._scale,
                         float(self.normalize)], dtype=np.float64)
        kept = {f"{prefix}train": self._train} if self._train is not None else {f"{prefix}refs": self._refs}
        return {**kept, f"{prefix}ref_ends": self._ref_ends, f"{prefix}meta": meta}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "TrainingDiscord":
        meta = np.asarray(arrays[f"{prefix}meta"], dtype=np.float64)
        out = cls(normalize=bool(meta[7]))
        out.stats = DiscordStats(window=int(meta[0]), references=int(meta[1]), reference_stride=int(meta[2]),
                                 mean=float(meta[3]), std=float(meta[4]))
        out._centre, out._scale = float(meta[5]), float(meta[6])
        out._ref_ends = np.asarray(arrays[f"{prefix}ref_ends"], dtype=np.int64)
        if f"{prefix}train" in arrays:
            out._train = np.asarray(arrays[f"{prefix}train"], dtype=np.float64)
            out._refs = out._windows(out._train, out.stats.window, out._ref_ends)
        else:  # saved before 2026-12-07: the windows themselves
            out._refs = np.asarray(arrays[f"{prefix}refs"])
        return out

    def zscores(self, x: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Training-normalised nearest-neighbour distance of the windows of ``x`` ending at ``ends``.

        ``x`` must begin with the training part (the positions of the references are its positions): a window
        that overlaps the training part is then compared outside an exclusion zone of one window, exactly as the
        normaliser was computed — otherwise it would find itself and score far below normal.
        """
        ends = np.asarray(ends, dtype=np.int64)
        if ends.size == 0:
            return np.zeros(0)
        return self.zscores_of(_window_view(x, self.window, ends), ends)

    def zscores_of(self, windows: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """:meth:`zscores` of raw windows (n, window) that end at absolute positions ``ends`` of their stream
        (position 0 = the first training point): what an online detector that keeps only a stream's tail calls."""
        if self._refs is None or self._ref_ends is None or self.stats is None:
            raise NotFittedError("TrainingDiscord: call fit(train, window) first")
        ends = np.asarray(ends, dtype=np.int64)
        if ends.size == 0:
            return np.zeros(0)
        w = self.stats.window
        view = np.asarray(windows, dtype=np.float64)
        if view.ndim != 2 or view.shape != (ends.size, w):
            raise InputError(f"expected ({ends.size}, {w}) windows, got {view.shape}")
        if self.normalize:
            mu = view.mean(axis=1, keepdims=True)
            sd = view.std(axis=1, keepdims=True)
            queries = (view - mu) / np.maximum(sd, 1e-12 * np.maximum(np.abs(mu), 1.0))
        else:
            queries = (view - self._centre) / self._scale
        if self._ref_norms is None:
            self._ref_norms = np.einsum("ij,ij->i", self._refs, self._refs)
        d = nearest_distances(queries, self._refs, query_pos=ends, ref_pos=self._ref_ends, exclusion=w,
                              ref_norms=self._ref_norms).astype(np.float64)
        d[~np.isfinite(d)] = self.stats.mean  # no reference outside the exclusion zone: no evidence either way
        return (d - self.stats.mean) / self.stats.std


__all__ = ["DiscordStats", "TrainingDiscord", "fixed_standardisation", "nearest_distances", "raw_windows",
           "znormalized_windows"]
