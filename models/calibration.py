"""Online calibration of raw anomaly scores into an anomaly likelihood (the HTM / NAB approach).

Raw scores from different models live on different scales and drift with the data, so a fixed
threshold on them cannot be shared across streams. The HTM "anomaly likelihood" answers a scale-free
question instead: *how unusual is the recent level of raw scores compared with their own history?*

- a long rolling window of (short-averaged) past raw scores gives a mean and a standard deviation;
- a short moving average of the most recent raw scores (including the current one) smooths single-point noise;
- likelihood = 1 - Q(z), z = (short_mean - mean) / std, Q the Gaussian upper-tail probability.

Everything is causal: the output for point t depends only on raw scores 0..t, and the distribution is
estimated from points strictly before t, so appending points never changes earlier outputs.
NAB's detectors report the log-scaled likelihood ``log(1.0000000001 - L) / log(1e-10)``, which spreads
the interesting region L > 0.99 over [0, 1]; ``log_scale=True`` gives that.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special

from models.errors import InputError
from models.types import AppendOnlySeries, series_values

_LOG_EPS = 1.0000000001
_LOG_NORM = math.log(1.0000000001 - 1.0)  # log(1e-10) ~ -23.03


def log_likelihood(likelihood: float) -> float:
    """NAB/HTM log scaling: 0 stays ~0, 0.5 -> 0.03, 0.99999 -> 0.5, 1 -> 1."""
    return math.log(_LOG_EPS - likelihood) / _LOG_NORM


def log_likelihoods(likelihoods: np.ndarray) -> np.ndarray:
    """:func:`log_likelihood` of every element (clipped to [0, 1]). Why a detector reports it: a plain likelihood
    crowds every strong anomaly into 1 - 1e-6 … 1, where a person or a fixed alert threshold cannot tell them
    apart. Monotone, so it changes no ranking (and no NAB score: NAB's threshold sweep sees the same order)."""
    arr = np.clip(np.asarray(likelihoods, dtype=np.float64), 0.0, 1.0)
    return np.clip(np.log(_LOG_EPS - arr) / _LOG_NORM, 0.0, 1.0)


@dataclass(frozen=True)
class LikelihoodConfig:
    """Hyperparameters; the defaults follow HTM's (learning 288 + estimation 100, window 8640, average 10)."""

    historic_window: int = 8640
    short_window: int = 10
    learning_period: int = 388
    skip_first: int = 0
    learning_value: float = 0.5
    min_std: float = 1e-6
    relative_min_std: float = 1e-3
    two_sided: bool = False
    log_scale: bool = False
    history_until: int | None = None

    def __post_init__(self) -> None:
        if self.historic_window < 2:
            raise ValueError("historic_window must be >= 2")
        if self.history_until is not None and self.history_until < 0:
            raise ValueError("history_until must be >= 0 (or None: the history follows the stream for ever)")
        if self.short_window < 1:
            raise ValueError("short_window must be >= 1")
        if self.learning_period < 0 or self.skip_first < 0:
            raise ValueError("learning_period and skip_first must be >= 0")
        if not 0.0 <= self.learning_value <= 1.0:
            raise ValueError("learning_value must be in [0, 1]")


class AnomalyLikelihood:
    """Causal HTM-style anomaly likelihood of one raw-score series, or of ``channels`` series at once.

    During the first ``learning_period`` points the output is ``learning_value`` (HTM returns 0.5:
    "no opinion yet"); after that, at least two past averaged scores are needed for a distribution.
    The first ``skip_first`` raw scores never enter the distribution (a model's warm-up scores are
    not representative). ``min_std``/``relative_min_std`` floor the std so a perfectly flat history
    does not turn the tiniest change into certainty — HTM does the same with a variance floor.

    Why several channels in one object: the detector calibrates every channel of a stream with the same settings,
    a few samples at a time, and the live monitor does that for every stream many times a second. One vectorised
    pass over (channels, samples) costs about what one channel's pass costs, so the likelihoods went from a fifth
    of the monitor's time to a few per cent. Channels never mix: each has its own history.
    """

    def __init__(self, config: LikelihoodConfig | None = None, *, channels: int = 1, **overrides: Any) -> None:
        base = config or LikelihoodConfig()
        if overrides:
            base = LikelihoodConfig(**{**asdict(base), **overrides})
        if channels < 1:
            raise ValueError("channels must be >= 1")
        self.config = base
        self.channels = channels
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        c = self.channels
        self._recent = np.zeros((c, 0))
        # The history is a window into a growing buffer: appending and dropping the oldest values are slices.
        self._buf = np.empty((c, 0))
        self._lo = self._hi = 0
        self._hist_sum = np.zeros(c)
        self._hist_sq = np.zeros(c)
        self._count = 0
        self._since_refresh = 0

    @property
    def count(self) -> int:
        """Number of raw scores seen so far (per channel)."""
        return self._count

    def update(self, raw_score: float) -> float:
        """Feed one raw score of a one-channel likelihood (higher = more anomalous); return its likelihood."""
        x = float(raw_score)
        if not math.isfinite(x):
            raise InputError(f"raw anomaly score must be finite, got {raw_score!r}")
        return float(self.transform(np.array([x]))[0])

    def transform(self, raw_scores: np.ndarray | list[float]) -> np.ndarray:
        """Feed scores in order — shape (n,) for one channel, (channels, n) for several — and get their
        likelihoods in the same shape. The state carries over: any chunking gives the same numbers up to float
        rounding of the running sums (~1e-15 relative; the tests hold chunked and whole to 1e-12)."""
        arr = np.asarray(raw_scores, dtype=np.float64)
        one = arr.ndim == 1
        if one:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] != self.channels:
            raise InputError(f"expected scores of shape ({self.channels}, n), got {np.shape(raw_scores)}")
        if arr.size and not np.all(np.isfinite(arr)):
            raise InputError("raw anomaly scores must be finite (found NaN or inf)")
        cfg = self.config
        out = np.empty(arr.shape, dtype=np.float64)
        start, n = 0, arr.shape[1]
        while start < n:
            # Up to the next exact re-summation of the history (every historic_window values that enter it).
            before = max(0, cfg.skip_first - self._count)
            stop = min(n, start + before + cfg.historic_window - self._since_refresh)
            out[:, start:stop] = self._segment(arr[:, start:stop])
            start = stop
        return out[0] if one else out

    def _segment(self, x: np.ndarray) -> np.ndarray:
        cfg = self.config
        sw, hw = cfg.short_window, cfg.historic_window
        c, m = x.shape
        idx = np.arange(m)
        # Short means: column by column, so a value's mean has the same rounding in any chunking.
        joined = np.concatenate([np.zeros((c, sw - self._recent.shape[1])), self._recent, x], axis=1)
        short = joined[:, 1:m + 1].copy()
        for j in range(2, sw + 1):
            short += joined[:, j:m + j]
        short /= np.minimum(self._recent.shape[1] + idx + 1, sw)
        self._recent = joined[:, -min(sw, self._recent.shape[1] + m):].copy()  # not a view of the whole chunk
        # History before each point: what it held, plus the short means entered since, minus those dropped.
        skipped = min(m, max(0, cfg.skip_first - self._count))
        last = m if cfg.history_until is None else min(m, max(skipped, cfg.history_until - self._count))
        entering = short[:, skipped:last]
        held = self._hi - self._lo
        entered = np.clip(idx - skipped, 0, last - skipped)
        dropped = np.maximum(0, held + entered - hw)
        n_drop = max(0, held + entering.shape[1] - hw)
        old = self._buf[:, self._lo:self._lo + n_drop]
        add_sum = np.concatenate([np.zeros((c, 1)), np.cumsum(entering, axis=1)], axis=1)
        add_sq = np.concatenate([np.zeros((c, 1)), np.cumsum(entering * entering, axis=1)], axis=1)
        drop_sum = np.concatenate([np.zeros((c, 1)), np.cumsum(old, axis=1)], axis=1)
        drop_sq = np.concatenate([np.zeros((c, 1)), np.cumsum(old * old, axis=1)], axis=1)
        size = np.minimum(held + entered, hw)
        ready = (self._count + idx >= cfg.learning_period) & (size >= 2)
        out = np.full((c, m), cfg.learning_value)
        if ready.any():
            k, r, size_k = entered[ready], dropped[ready], size[ready]
            total = self._hist_sum[:, None] + add_sum[:, k] - drop_sum[:, r]
            squares = self._hist_sq[:, None] + add_sq[:, k] - drop_sq[:, r]
            mean = total / size_k
            var = np.maximum(squares / size_k - mean * mean, 0.0)
            std = np.maximum(np.sqrt(var), np.maximum(cfg.min_std, cfg.relative_min_std * np.abs(mean)))
            z = (short[:, ready] - mean) / std
            if cfg.two_sided:
                z = np.abs(z)
            value = 0.5 * special.erfc(-z / math.sqrt(2.0))
            if cfg.log_scale:
                value = np.log(_LOG_EPS - value) / _LOG_NORM
            out[:, ready] = np.clip(value, 0.0, 1.0)
        self._append(entering, n_drop)
        self._hist_sum = self._hist_sum + add_sum[:, -1] - drop_sum[:, -1]
        self._hist_sq = self._hist_sq + add_sq[:, -1] - drop_sq[:, -1]
        self._count += m
        self._since_refresh += entering.shape[1]
        if self._since_refresh >= hw:
            history = self._history
            self._hist_sum, self._hist_sq = history.sum(axis=1), (history * history).sum(axis=1)
            self._since_refresh = 0
        return out

    def _append(self, values: np.ndarray, n_drop: int) -> None:
        k = values.shape[1]
        if self._hi + k > self._buf.shape[1]:
            # Grow by doubling while the history fills, then keep an eighth of a window of slack: a full history
            # is moved to the front once every historic_window/8 values (a memcpy), and a stream's nine channels
            # hold ~0.7 MB instead of twice that.
            kept = self._buf[:, self._lo + n_drop:self._hi]
            hw = self.config.historic_window
            capacity = min(max(64, 2 * (kept.shape[1] + k)), hw + max(64, hw // 8))
            buf = np.empty((self.channels, max(capacity, kept.shape[1] + k)))
            buf[:, :kept.shape[1]] = kept
            self._buf, self._lo, self._hi = buf, 0, kept.shape[1]
        else:
            self._lo += n_drop
        self._buf[:, self._hi:self._hi + k] = values
        self._hi += k

    @property
    def _history(self) -> np.ndarray:
        return self._buf[:, self._lo:self._hi]

    # ------------------------------------------------------------------ crash recovery
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state of a one-channel likelihood, so a monitor can resume a stream after restart."""
        if self.channels != 1:
            raise ValueError("state_dict is per channel: use channel_states() for several channels")
        state = self.channel_states()[0]
        return {**state, "recent": state["recent"].tolist(), "history": state["history"].values.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``; the config stored there replaces the current one."""
        if self.channels != 1:
            raise ValueError("load_state_dict is per channel: use load_channel_states() for several channels")
        self.load_channel_states([state])

    def channel_states(self) -> list[dict[str, Any]]:
        """One state per channel, in the one-channel format but with a float64 array for ``recent`` and an
        :class:`AppendOnlySeries` for ``history`` (8,640 values): the monitor checkpoints every busy stream's
        histories every 30 s; turning them into Python lists and back cost seconds of a 200-stream soak's time per
        checkpoint, and rewriting them whole cost 0.9 MB per stream (a checkpoint appends what is new instead)."""
        history, recent = self._history, self._recent
        config = asdict(self.config)
        if config["history_until"] is None:  # saved only where set: a release from before it can read the state
            del config["history_until"]
        until = self._count if self.config.history_until is None else min(self._count, self.config.history_until)
        entered = max(0, until - self.config.skip_first)  # short means that ever entered the history
        return [{"config": config, "recent": recent[i].copy(), "count": self._count,
                 "history": AppendOnlySeries(history[i].copy(), end=entered)} for i in range(self.channels)]

    def load_channel_states(self, states: list[dict[str, Any]]) -> None:
        if len(states) != self.channels:
            raise InputError(f"expected {self.channels} channel states, got {len(states)}")
        try:
            configs = [LikelihoodConfig(**s["config"]) for s in states]
            recent = [np.asarray(s["recent"], dtype=np.float64) for s in states]
            history = [np.asarray(series_values(s["history"]), dtype=np.float64) for s in states]
            counts = {int(s["count"]) for s in states}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid AnomalyLikelihood state: {exc}") from exc
        if any(cfg != configs[0] for cfg in configs) or len(counts) != 1:
            raise InputError("invalid AnomalyLikelihood state: channels differ in settings or count")
        if len({r.size for r in recent}) != 1 or len({h.size for h in history}) != 1:
            raise InputError("invalid AnomalyLikelihood state: channels differ in length")
        self.config = configs[0]
        self.reset()
        cfg = self.config
        self._recent = np.stack(recent)[:, -cfg.short_window:] if recent[0].size else np.zeros((self.channels, 0))
        hist = np.stack(history)[:, -cfg.historic_window:] if history[0].size else np.zeros((self.channels, 0))
        self._append(hist, 0)
        self._hist_sum, self._hist_sq = hist.sum(axis=1), (hist * hist).sum(axis=1)
        self._count = counts.pop()


def training_part_likelihood(train_points: int, channels: int = 1, *, learns: bool = True) -> AnomalyLikelihood:
    """The HTM-style calibration every series benchmark uses for one stream: silent during the training part,
    whose first half never enters the distribution (a detector's warm-up scores are not representative).

    ``learns=False``: the distribution is the training part's second half and nothing after it. HTM's history
    follows the stream, so a change that lasts becomes the new normal within minutes — right for NAB's streams,
    whose level drifts and where an anomaly counts once, at its start; wrong for a machine whose fault persists,
    which an adapting likelihood stops reporting while the machine is still faulty (MIMII fan clips scored back to
    back: clip AUROC 0.755 against 1.000 judged against the training part; benchmarks/README.md).

    One factory, so the NAB runner, the series detector's own calibration and the channel ablation can never
    drift apart. A fresh instance per raw series: ``transform`` keeps state.
    """
    return AnomalyLikelihood(historic_window=8640, short_window=10, learning_period=train_points,
                             skip_first=train_points // 2, learning_value=0.5, channels=channels,
                             history_until=None if learns else train_points)
