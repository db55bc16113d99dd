"""When does a stream's calibrated score become an alert, and when does the alert end?

The one alert rule of the project: a small pure state machine per stream, fed the detector's score of each
scored sample (audio: each window end) in stream time order:

- **open** when the score reaches ``threshold`` for ``open_after`` consecutive windows (one by default);
- **hysteresis**: an open alert stays open until the score falls below ``threshold - hysteresis`` for
  ``close_after`` consecutive windows, so a score that hovers around the threshold makes one alert, not many;
- **cooldown**: after an alert closes, no new alert opens for ``cooldown_s`` seconds of *stream* time
  (windows keep being scored and written; they just don't page anyone twice for one incident).

Stream time, not wall time: replays at any speed and restarts give the same alerts.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class AlertPolicy:
    threshold: float = 0.99
    hysteresis: float = 0.05
    open_after: int = 1
    close_after: int = 2
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.threshold >= 0.0:  # calibrated presets score in [0, 1]; the ucr preset reports raw z-scores
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        if self.hysteresis < 0 or self.hysteresis > self.threshold:
            raise ValueError("hysteresis must be in [0, threshold]")
        if self.open_after < 1 or self.close_after < 1:
            raise ValueError("open_after and close_after must be >= 1")
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")


class AlertState(str, Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Alert:
    """One alert as the store keeps it (measurement ``alert``, keyed by ``start_ns``)."""

    stream: str
    start_ns: int
    end_ns: int
    severity: float
    peak_raw_score: float
    state: AlertState
    model_version: str = ""
    decided_by: str = ""
    """The detector channel whose score opened the alert (models.detector.online.CHANNEL_WORDS)."""

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / NS_PER_S


@dataclass(frozen=True)
class AlertDecision:
    """What one window did to the stream's alert state."""

    in_alert: bool
    changed: Alert | None = None
    """The alert that opened or closed on this window (written to the store and the alerts topic)."""


class AlertMachine:
    """Alert state of one stream. ``update`` once per scored window, in time order."""

    def __init__(self, stream: str, policy: AlertPolicy):
        self.stream = stream
        self.policy = policy
        self._above = 0
        self._below = 0
        self._open: Alert | None = None
        self._cooldown_until_ns: int | None = None
        self._last_ns: int | None = None

    @property
    def current(self) -> Alert | None:
        return self._open

    def update(self, time_ns: int, score: float, raw_score: float, model_version: str = "",
               decided_by: str = "") -> AlertDecision:
        pol = self.policy
        if self._last_ns is not None and time_ns <= self._last_ns:
            # Re-delivered window (at-least-once): don't count it twice.
            return AlertDecision(in_alert=self._open is not None)
        self._last_ns = time_ns
        if self._open is None:
            in_cooldown = self._cooldown_until_ns is not None and time_ns < self._cooldown_until_ns
            self._above = self._above + 1 if score >= pol.threshold else 0
            if self._above >= pol.open_after and not in_cooldown:
                self._open = Alert(self.stream, time_ns, 0, float(score), float(raw_score), AlertState.OPEN,
                                   model_version, decided_by)
                self._below = 0
                return AlertDecision(in_alert=True, changed=self._open)
            return AlertDecision(in_alert=False)
        a = self._open
        self._open = a = Alert(a.stream, a.start_ns, 0, max(a.severity, float(score)),
                               max(a.peak_raw_score, float(raw_score)), AlertState.OPEN, a.model_version,
                               a.decided_by)
        self._below = self._below + 1 if score < pol.threshold - pol.hysteresis else 0
        if self._below >= pol.close_after:
            closed = Alert(a.stream, a.start_ns, time_ns, a.severity, a.peak_raw_score, AlertState.CLOSED,
                           a.model_version, a.decided_by)
            self._open = None
            self._above = 0
            self._cooldown_until_ns = time_ns + int(pol.cooldown_s * NS_PER_S)
            return AlertDecision(in_alert=False, changed=closed)
        return AlertDecision(in_alert=True)

    def state_dict(self) -> dict:
        """JSON-able state, so a restarted monitor continues an open alert instead of forgetting it."""
        a = self._open
        return {
            "above": self._above, "below": self._below, "cooldown_until_ns": self._cooldown_until_ns,
            "last_ns": self._last_ns,
            "open": None if a is None else {"start_ns": a.start_ns, "severity": a.severity,
                                            "peak_raw_score": a.peak_raw_score, "model_version": a.model_version,
                                            "decided_by": a.decided_by},
        }

    def load_state_dict(self, state: dict) -> None:
        self._above = int(state["above"])
        self._below = int(state["below"])
        self._cooldown_until_ns = state["cooldown_until_ns"]
        self._last_ns = state["last_ns"]
        o = state["open"]
        self._open = None if o is None else Alert(self.stream, int(o["start_ns"]), 0, float(o["severity"]),
                                                  float(o["peak_raw_score"]), AlertState.OPEN, o["model_version"],
                                                  o.get("decided_by", ""))

    def close_open(self, time_ns: int) -> Alert | None:
        """End an open alert at ``time_ns`` (e.g. the stream's buffer was reset by a long gap)."""
        if self._open is None:
            return None
        a = self._open
        self._open = None
        self._above = self._below = 0
        return Alert(a.stream, a.start_ns, max(time_ns, a.start_ns), a.severity, a.peak_raw_score,
                     AlertState.CLOSED, a.model_version, a.decided_by)
