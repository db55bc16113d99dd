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
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.errors import InputError

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

    def __post_init__(self) -> None:
        if self.historic_window < 2:
            raise ValueError("historic_window must be >= 2")
        if self.short_window < 1:
            raise ValueError("short_window must be >= 1")
        if self.learning_period < 0 or self.skip_first < 0:
            raise ValueError("learning_period and skip_first must be >= 0")
        if not 0.0 <= self.learning_value <= 1.0:
            raise ValueError("learning_value must be in [0, 1]")


class AnomalyLikelihood:
    """Causal HTM-style anomaly likelihood: ``update(raw) -> float in [0, 1]``.

    During the first ``learning_period`` points the output is ``learning_value`` (HTM returns 0.5:
    "no opinion yet"); after that, at least two past averaged scores are needed for a distribution.
    The first ``skip_first`` raw scores never enter the distribution (a model's warm-up scores are
    not representative). ``min_std``/``relative_min_std`` floor the std so a perfectly flat history
    does not turn the tiniest change into certainty — HTM does the same with a variance floor.
    """

    def __init__(self, config: LikelihoodConfig | None = None, **overrides: Any) -> None:
        base = config or LikelihoodConfig()
        if overrides:
            base = LikelihoodConfig(**{**asdict(base), **overrides})
        self.config = base
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        self._recent: deque[float] = deque(maxlen=self.config.short_window)
        self._recent_sum = 0.0
        self._history: deque[float] = deque()
        self._hist_sum = 0.0
        self._hist_sq = 0.0
        self._count = 0
        self._since_refresh = 0

    @property
    def count(self) -> int:
        """Number of raw scores seen so far."""
        return self._count

    def update(self, raw_score: float) -> float:
        """Feed one raw score (higher = more anomalous); return the likelihood for this point."""
        x = float(raw_score)
        if not math.isfinite(x):
            raise InputError(f"raw anomaly score must be finite, got {raw_score!r}")
        return float(self.transform([x])[0])

    def transform(self, raw_scores: np.ndarray | list[float]) -> np.ndarray:
        """Feed a sequence in order; the state carries over, so any chunking gives the same numbers.

        The state lives in locals inside the loop: the live monitor calls this for every channel of every sample,
        and a method call per value was a quarter of the detector's time.
        """
        arr = np.asarray(raw_scores, dtype=np.float64).ravel()
        if arr.size and not np.all(np.isfinite(arr)):
            raise InputError("raw anomaly scores must be finite (found NaN or inf)")
        cfg = self.config
        recent, history = self._recent, self._history
        short_window, historic_window = cfg.short_window, cfg.historic_window
        learning_period, skip_first, learning_value = cfg.learning_period, cfg.skip_first, cfg.learning_value
        min_std, relative_min_std = cfg.min_std, cfg.relative_min_std
        two_sided, log_scale = cfg.two_sided, cfg.log_scale
        recent_sum, hist_sum, hist_sq = self._recent_sum, self._hist_sum, self._hist_sq
        count, since_refresh = self._count, self._since_refresh
        sqrt, erfc, root2 = math.sqrt, math.erfc, math.sqrt(2.0)
        out = np.empty(arr.size, dtype=np.float64)
        for i, x in enumerate(arr.tolist()):
            if len(recent) == short_window:
                recent_sum -= recent[0]
            recent.append(x)
            recent_sum += x
            short_mean = recent_sum / len(recent)
            n = len(history)
            if count < learning_period or n < 2:
                value = learning_value
            else:
                mean = hist_sum / n
                var = max(hist_sq / n - mean * mean, 0.0)
                std = max(sqrt(var), max(min_std, relative_min_std * abs(mean)))
                z = (short_mean - mean) / std
                if two_sided:
                    z = abs(z)
                value = 0.5 * erfc(-z / root2)
                if log_scale:
                    value = log_likelihood(value)
                value = min(max(value, 0.0), 1.0)
            if count >= skip_first:
                history.append(short_mean)
                hist_sum += short_mean
                hist_sq += short_mean * short_mean
                if len(history) > historic_window:
                    old = history.popleft()
                    hist_sum -= old
                    hist_sq -= old * old
                since_refresh += 1
                if since_refresh >= historic_window:
                    exact = np.fromiter(history, dtype=np.float64)
                    hist_sum = float(exact.sum())
                    hist_sq = float((exact * exact).sum())
                    since_refresh = 0
            count += 1
            out[i] = value
        self._recent_sum, self._hist_sum, self._hist_sq = recent_sum, hist_sum, hist_sq
        self._count, self._since_refresh = count, since_refresh
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, so a monitor can resume a stream after restart."""
        return {
            "config": asdict(self.config),
            "recent": list(self._recent),
            "history": list(self._history),
            "count": self._count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``; the config stored there replaces the current one."""
        try:
            self.config = LikelihoodConfig(**state["config"])
            recent = [float(v) for v in state["recent"]]
            history = [float(v) for v in state["history"]]
            count = int(state["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid AnomalyLikelihood state: {exc}") from exc
        self.reset()
        for v in recent[-self.config.short_window:]:
            self._recent.append(v)
        self._recent_sum = float(sum(self._recent))
        for v in history[-self.config.historic_window:]:
            self._history.append(v)
        arr = np.asarray(self._history, dtype=np.float64)
        self._hist_sum = float(arr.sum())
        self._hist_sq = float((arr * arr).sum())
        self._count = count


def training_part_likelihood(train_points: int) -> AnomalyLikelihood:
    """The HTM-style calibration every series benchmark uses for one stream: silent during the training part,
    whose first half never enters the distribution (a detector's warm-up scores are not representative).

    One factory, so the NAB runner, the series detector's own calibration and the channel ablation can never
    drift apart. A fresh instance per raw series: ``transform`` keeps state.
    """
    return AnomalyLikelihood(historic_window=8640, short_window=10, learning_period=train_points,
                             skip_first=train_points // 2, learning_value=0.5)
