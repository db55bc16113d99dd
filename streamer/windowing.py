"""Cut each stream into fixed-length sliding windows on a regular time grid.

Why a grid: the model sees windows of N equally spaced samples, but sensors report irregularly, repeat
themselves and sometimes arrive out of order. Why an *absolute* grid (grid point k sits at ``k * period``
since the epoch, and windows end at grid indices that are multiples of ``hop``): a monitor that restarts from a
committed offset rebuilds exactly the same windows with exactly the same timestamps, so rewritten points
overwrite instead of duplicating.

Rules (documented in docs/streaming.md):

- **resampling**: sensor samples are linearly interpolated onto the grid; a grid point is produced as soon as a
  sample at or after it arrives.
- **duplicates** (same timestamp as the newest sample): last write wins; grid points not yet emitted in a window
  take the new value, windows already emitted keep theirs.
- **late samples** (older than the newest sample): if they fall inside the window being built they overwrite the
  nearest grid point (last write wins); older than that they are rejected with reason ``late`` (the caller
  dead-letters them).
- **gaps**: up to ``max_gap_periods`` periods are bridged by linear interpolation; a longer gap resets the
  stream's buffer (logged; the buffered samples that were in no window yet are dropped on purpose) and the grid
  restarts at the new sample.
- **audio** chunks carry their own sample rate; samples sit on the grid already (no resampling). A chunk that
  overlaps what was already received is ``late``; a short gap is bridged by interpolation, a long one resets.

Offset bookkeeping: every sample carries an :data:`Origin` ``(partition, offset)``. Windows report the lowest
origin per partition they were built from, and the windower reports what its buffer still needs, so the
monitor can commit only below everything that is not yet durably scored (see streamer/offsets.py).
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable, Iterable

import numpy as np

log = logging.getLogger(__name__)

Origin = tuple[Hashable, int]
"""Where a sample came from: (partition key, offset). The demo uses its own partition keys."""

Holds = dict[Hashable, int]
"""Lowest offset still needed, per partition."""

NS_PER_S = 1_000_000_000


def merge_holds(target: Holds, origins: Iterable[Origin]) -> Holds:
    """Fold origins into ``target`` keeping the lowest offset per partition (in place; returns target)."""
    for part, off in origins:
        cur = target.get(part)
        if cur is None or off < cur:
            target[part] = off
    return target


@dataclass(frozen=True)
class WindowSpec:
    """How one stream class is windowed. Lengths are in grid samples (see :meth:`from_seconds`)."""

    length: int
    hop: int
    period_ns: int = 0
    """Grid period; 0 = infer from the median interval of the first ``infer_samples`` samples (sensors) or
    from the chunk's sample rate (audio)."""
    max_gap_periods: int = 3
    infer_samples: int = 6

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ValueError(f"window length must be >= 2 samples, got {self.length}")
        if not 1 <= self.hop:
            raise ValueError(f"hop must be >= 1 sample, got {self.hop}")
        if self.period_ns < 0:
            raise ValueError("period_ns must be >= 0")
        if self.max_gap_periods < 1:
            raise ValueError("max_gap_periods must be >= 1")
        if self.infer_samples < 2:
            raise ValueError("infer_samples must be >= 2")

    @classmethod
    def from_seconds(cls, window_s: float, hop_s: float, sample_rate: float, **kw) -> "WindowSpec":
        """Window and hop given in seconds at a known sample rate."""
        period_ns = int(round(NS_PER_S / sample_rate))
        return cls(length=max(2, int(round(window_s * sample_rate))), hop=max(1, int(round(hop_s * sample_rate))),
                   period_ns=period_ns, **kw)


@dataclass(frozen=True)
class Window:
    """One window ready for the model. ``end_ns`` (timestamp of the last sample) is the point's time."""

    stream: str
    stream_class: str
    end_index: int
    start_ns: int
    end_ns: int
    values: np.ndarray
    sample_rate: float
    value: float
    """What the ``value`` field shows: last raw sample (sensors) or RMS of the last hop (audio)."""
    holds: Holds = field(default_factory=dict)


@dataclass
class AddResult:
    windows: list[Window] = field(default_factory=list)
    late: bool = False
    reset: bool = False
    dropped: int = 0
    """Grid samples discarded by a reset (they were in no emitted window)."""


@dataclass
class _GridPoint:
    k: int
    value: float
    origins: tuple[Origin, ...]


class SensorWindower:
    """Irregular scalar samples → grid → sliding windows, for one stream."""

    def __init__(self, stream: str, stream_class: str, spec: WindowSpec):
        self.stream = stream
        self.stream_class = stream_class
        self.spec = spec
        self.period_ns = spec.period_ns
        self.resets = 0
        self._probe: list[tuple[int, float, Origin]] = []  # samples seen while inferring the period
        self._clear()

    def _clear(self) -> None:
        self._grid: deque[_GridPoint] = deque()
        self._last: tuple[int, float, Origin] | None = None
        self._next_k = 0
        self._next_end: int | None = None

    # -- public -----------------------------------------------------------------------------------------------
    def add(self, t_ns: int, value: float, origin: Origin) -> AddResult:
        """Feed one sample; return the windows it completes (usually none or one)."""
        if self.period_ns == 0:
            return self._probe_period(t_ns, value, origin)
        return self._add(int(t_ns), float(value), origin)

    def holds(self) -> Holds:
        """Lowest offsets (per partition) of samples the buffer still needs for windows not yet emitted."""
        out: Holds = {}
        merge_holds(out, (o for s in self._probe for o in (s[2],)))
        if self._last is not None:
            merge_holds(out, (self._last[2],))
        if self._next_end is not None:
            first_needed = self._next_end - self.spec.length + 1
            for gp in self._grid:
                if gp.k >= first_needed:
                    merge_holds(out, gp.origins)
        return out

    @property
    def open_window_start_ns(self) -> int | None:
        if self._next_end is None or not self.period_ns:
            return None
        return (self._next_end - self.spec.length + 1) * self.period_ns

    # -- internals --------------------------------------------------------------------------------------------
    def _probe_period(self, t_ns: int, value: float, origin: Origin) -> AddResult:
        self._probe.append((int(t_ns), float(value), origin))
        times = sorted({s[0] for s in self._probe})
        if len(times) < self.spec.infer_samples:
            return AddResult()
        diffs = np.diff(np.asarray(times, dtype=np.int64))
        self.period_ns = int(np.median(diffs))
        log.info("stream %s: inferred grid period %.3f s from %d samples", self.stream,
                 self.period_ns / NS_PER_S, len(times))
        # Stable sort: out-of-order probe samples fall into place, duplicates keep arrival order (last wins).
        probe, self._probe = sorted(self._probe, key=lambda s: s[0]), []
        result = AddResult()
        for t, v, o in probe:
            r = self._add(t, v, o)
            result.windows.extend(r.windows)
            result.reset |= r.reset
            result.dropped += r.dropped
        return result

    def _start(self, t: int, v: float, origin: Origin) -> None:
        p = self.period_ns
        k0 = -(-t // p)  # ceil: first grid point at or after t
        self._last = (t, v, origin)
        self._next_k = k0
        if k0 * p == t:
            self._grid.append(_GridPoint(k0, v, (origin,)))
            self._next_k = k0 + 1
        first_end = k0 + self.spec.length - 1
        hop = self.spec.hop
        self._next_end = -(-first_end // hop) * hop

    def _add(self, t: int, v: float, origin: Origin) -> AddResult:
        p = self.period_ns
        if self._last is None:
            self._start(t, v, origin)
            return AddResult(windows=self._emit())
        last_t, last_v, last_o = self._last
        if t == last_t:  # duplicate: last write wins
            self._last = (t, v, origin)
            if self._grid and self._grid[-1].k * p == t:
                self._grid[-1] = _GridPoint(self._grid[-1].k, v, (origin,))
            return AddResult()
        if t < last_t:
            return self._late(t, v, origin)
        if t - last_t > self.spec.max_gap_periods * p:
            dropped = sum(1 for gp in self._grid if gp.k >= self._next_end - self.spec.length + 1)
            log.warning("stream %s: gap of %.1f periods (> %d): resetting its buffer, %d grid samples dropped",
                        self.stream, (t - last_t) / p, self.spec.max_gap_periods, dropped)
            self.resets += 1
            self._clear()
            self._start(t, v, origin)
            return AddResult(windows=self._emit(), reset=True, dropped=dropped)
        k_last = t // p
        span = t - last_t
        for k in range(self._next_k, k_last + 1):
            g = k * p
            val = last_v + (v - last_v) * ((g - last_t) / span)
            self._grid.append(_GridPoint(k, val, (last_o, origin) if g != t else (origin,)))
        self._next_k = max(self._next_k, k_last + 1)
        self._last = (t, v, origin)
        return AddResult(windows=self._emit())

    def _late(self, t: int, v: float, origin: Origin) -> AddResult:
        start = self.open_window_start_ns
        if start is None or t < start:
            return AddResult(late=True)
        k = int(round(t / self.period_ns))
        for i, gp in enumerate(self._grid):
            if gp.k == k:
                self._grid[i] = _GridPoint(k, v, gp.origins + (origin,))
                return AddResult()
        return AddResult(late=True)

    def _emit(self) -> list[Window]:
        out: list[Window] = []
        length, hop, p = self.spec.length, self.spec.hop, self.period_ns
        assert self._next_end is not None
        while self._grid and self._grid[-1].k >= self._next_end:
            end = self._next_end
            first = end - length + 1
            while self._grid and self._grid[0].k < first:
                self._grid.popleft()
            pts = [gp for gp in self._grid if gp.k <= end]
            if len(pts) == length and pts[0].k == first:
                holds: Holds = {}
                for gp in pts:
                    merge_holds(holds, gp.origins)
                out.append(Window(
                    stream=self.stream, stream_class=self.stream_class, end_index=end,
                    start_ns=first * p, end_ns=end * p,
                    values=np.fromiter((gp.value for gp in pts), dtype=np.float32, count=length),
                    sample_rate=NS_PER_S / p, value=float(self._value_at(end)), holds=holds,
                ))
            self._next_end = end + hop
        # Keep only what future windows need.
        first_needed = self._next_end - length + 1
        while self._grid and self._grid[0].k < first_needed:
            self._grid.popleft()
        return out

    def _value_at(self, k: int) -> float:
        for gp in reversed(self._grid):
            if gp.k == k:
                return gp.value
        return math.nan


class AudioWindower:
    """Contiguous PCM chunks → sliding windows, for one stream. Vectorised: chunks hold thousands of samples."""

    def __init__(self, stream: str, stream_class: str, spec: WindowSpec, expected_rate: float | None = None):
        self.stream = stream
        self.stream_class = stream_class
        self.spec = spec
        self.expected_rate = expected_rate
        self.resets = 0
        self._clear()

    def _clear(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._base_k = 0  # absolute index of _buf[0]
        self._segments: deque[tuple[int, int, Origin]] = deque()  # (first k, last k, origin) per chunk
        self._next_k: int | None = None
        self._next_end: int | None = None
        self.period_ns = self.spec.period_ns

    def add_chunk(self, start_ns: int, sample_rate: float, samples: np.ndarray, origin: Origin) -> AddResult:
        """Feed one chunk (samples already float, any scale). Sample-rate checks belong to the caller."""
        period = int(round(NS_PER_S / sample_rate))
        if self.period_ns and period != self.period_ns and self._next_k is not None:
            # A rate change mid-stream: start over rather than mix two grids.
            self.resets += 1
            self._clear()
        self.period_ns = period
        samples = np.asarray(samples, dtype=np.float32).ravel()
        n = samples.size
        if n == 0:
            return AddResult()
        k0 = int(round(start_ns / period))
        result = AddResult()
        if self._next_k is None:
            self._start(k0)
        elif k0 < self._next_k:
            return AddResult(late=True)
        elif k0 > self._next_k:
            gap = k0 - self._next_k
            if gap > self.spec.max_gap_periods:
                dropped = max(0, self._buf.size - max(0, (self._next_end - self.spec.length + 1) - self._base_k))
                log.warning("stream %s: audio gap of %d samples (> %d): resetting its buffer", self.stream, gap,
                            self.spec.max_gap_periods)
                self.resets += 1
                self._clear()
                self.period_ns = period
                self._start(k0)
                result.reset, result.dropped = True, dropped
            else:
                prev = self._buf[-1] if self._buf.size else samples[0]
                fill = np.linspace(prev, samples[0], gap + 2, dtype=np.float32)[1:-1]
                self._append(fill, self._segments[-1][2] if self._segments else origin)
        self._append(samples, origin)
        result.windows = self._emit()
        return result

    def holds(self) -> Holds:
        out: Holds = {}
        if self._next_end is None:
            return out
        first_needed = self._next_end - self.spec.length + 1
        merge_holds(out, (o for a, b, o in self._segments if b >= first_needed))
        return out

    def _start(self, k0: int) -> None:
        self._base_k = k0
        self._next_k = k0
        first_end = k0 + self.spec.length - 1
        self._next_end = -(-first_end // self.spec.hop) * self.spec.hop

    def _append(self, samples: np.ndarray, origin: Origin) -> None:
        k = self._next_k
        self._buf = np.concatenate([self._buf, samples]) if self._buf.size else samples.copy()
        self._segments.append((k, k + samples.size - 1, origin))
        self._next_k = k + samples.size

    def _emit(self) -> list[Window]:
        out: list[Window] = []
        length, hop, p = self.spec.length, self.spec.hop, self.period_ns
        last_k = self._next_k - 1
        while self._next_end <= last_k:
            end = self._next_end
            first = end - length + 1
            lo = first - self._base_k
            if lo >= 0:
                values = self._buf[lo:lo + length].copy()
                tail = values[-min(hop, length):]
                holds: Holds = {}
                merge_holds(holds, (o for a, b, o in self._segments if b >= first and a <= end))
                out.append(Window(
                    stream=self.stream, stream_class=self.stream_class, end_index=end,
                    start_ns=first * p, end_ns=end * p, values=values, sample_rate=NS_PER_S / p,
                    value=float(np.sqrt(np.mean(tail.astype(np.float64) ** 2))), holds=holds,
                ))
            self._next_end = end + hop
        first_needed = self._next_end - length + 1
        cut = min(first_needed - self._base_k, self._buf.size)
        if cut > 0:
            self._buf = self._buf[cut:]
            self._base_k += cut
        while self._segments and self._segments[0][1] < first_needed:
            self._segments.popleft()
        return out
