"""The per-stream, ever-changing part of the detector: channels that follow the stream, likelihoods, suppression.

Why a state object, river-style: the monitor sees a stream a few samples at a time, the benchmarks see a whole
file at once, and both must produce the same score for the same sample. So there is one implementation, and it is
online: :meth:`DetectorState.update` takes the next samples (any number) and the model's scores of the diffusion
windows that end among them, and returns one :class:`Detections` row per sample. Scoring a whole series is the
same call with every sample at once (:func:`score_series`). Chunking changes nothing but float rounding far below
anything a threshold sees (the tests hold chunked and whole scoring to 1e-9).

Positions are absolute: position 0 is the stream's first training sample, and the training samples are scored
too — every sample a stream sent gets a score. A sample's channels are those of the latest window ending at or
before it (causal). Two steps, each with its own state:

* :class:`ChannelState` — per-point channel values: the diffusion-window channels (``diffusion``, ``level``,
  ``scale``), nearest-neighbour discords against the training part, NAB's windowed Gaussian |z| and the
  running range of the spatial rule.
* :class:`FusionState` — what turns channels into one score: per-channel anomaly likelihoods (or the max of the
  raw z), HTM's log scale, the spatial override and one detection per rising edge. ``channels`` restricts which
  channels speak, so an ablation fuses the *same* channel values without, or with only, the diffusion channel.

Alerting (threshold, hysteresis, cooldown) is not here: it follows the score, in the streamer.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator

import numpy as np

from models.calibration import AnomalyLikelihood, log_likelihoods, training_part_likelihood
from models.detector.channels import CHANNEL_WORDS, MODEL_CHANNELS, SPATIAL, channel_kind, describe_channel
from models.detector.fitted import FittedDetector, WindowScores, sliding_windows
from models.errors import CheckpointMismatchError, InputError
from models.types import AppendOnlySeries, series_values


@dataclass(frozen=True)
class Detection:
    """One scored sample."""

    position: int
    score: float
    decided_by: str
    """The channel whose value made the score (``none`` when no channel speaks yet)."""
    channel_value: float
    """That channel's own value (a z-score, or 1 for the spatial rule)."""
    channels: dict[str, float]


@dataclass(frozen=True)
class Detections:
    """Scores of consecutive samples, columnar (one row per sample); iterate for :class:`Detection` rows."""

    positions: np.ndarray
    scores: np.ndarray
    channels: dict[str, np.ndarray]
    decided_by: tuple[str, ...]
    """Channel name per row."""

    def __len__(self) -> int:
        return int(self.positions.size)

    def channel_value(self, i: int) -> float:
        name = self.decided_by[i]
        if name == SPATIAL:
            return 1.0
        return float(self.channels[name][i]) if name in self.channels else 0.0

    def __iter__(self) -> Iterator[Detection]:
        for i in range(len(self)):
            yield Detection(int(self.positions[i]), float(self.scores[i]), self.decided_by[i],
                            self.channel_value(i), {k: float(v[i]) for k, v in self.channels.items()})

    @classmethod
    def concat(cls, parts: list["Detections"]) -> "Detections":
        if not parts:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0), {}, ())
        names = parts[0].channels.keys()
        return cls(np.concatenate([p.positions for p in parts]), np.concatenate([p.scores for p in parts]),
                   {k: np.concatenate([p.channels[k] for p in parts]) for k in names},
                   tuple(n for p in parts for n in p.decided_by))


def grid_ends(first: int, hop: int, lo: int, hi: int) -> np.ndarray:
    """Positions ``first + k·hop`` (k >= 0) in ``[lo, hi]``."""
    if hi < max(lo, first):
        return np.zeros(0, dtype=np.int64)
    k0 = max(0, -(-(lo - first) // hop))
    return np.arange(first + k0 * hop, hi + 1, hop, dtype=np.int64)


class OnlineGaussian:
    """NAB's windowed Gaussian |z| of each point against earlier points (6,400 of them, refreshed every 100)."""

    def __init__(self, window: int = 6400, step: int = 100, min_std: float = 1e-6) -> None:
        self.window, self.step, self.min_std = window, step, min_std
        self.count = 0
        self.ref = 0.0
        self._buf = np.zeros(0)
        self._buf_start = 0

    def update(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if x.size == 0:
            return np.zeros(0)
        if self.count == 0:
            self.ref = float(x[0])
        k = np.arange(self.count, self.count + x.size)
        full = k > self.window
        hi = np.where(full, self.window + self.step * ((k - self.window) // self.step), k)
        lo = np.maximum(hi - self.window, 0)
        allx = np.concatenate([self._buf, x]) - self.ref
        c1 = np.concatenate([[0.0], np.cumsum(allx)])
        c2 = np.concatenate([[0.0], np.cumsum(allx * allx)])
        a, b = lo - self._buf_start, hi - self._buf_start
        cnt = (hi - lo).astype(np.float64)
        safe = np.maximum(cnt, 1.0)
        mean_c = (c1[b] - c1[a]) / safe
        var = np.maximum((c2[b] - c2[a]) / safe - mean_c ** 2, 0.0)
        mean = mean_c + self.ref
        std = np.sqrt(var)
        std = np.where(std <= 1e-9 * np.maximum(np.abs(mean), 1.0), 0.0, std)
        std = np.where(std == 0.0, self.min_std, std)
        out = np.where(cnt > 0, np.abs(x - mean) / std, 0.0)
        self.count += x.size
        keep = self.window + self.step + 1
        merged = np.concatenate([self._buf, x])
        if merged.size > keep:
            self._buf_start += merged.size - keep
            merged = merged[-keep:]
        self._buf = merged
        return out

    def state_dict(self) -> dict[str, Any]:
        # The buffer holds the stream's newest values: append-only (see AppendOnlySeries).
        return {"count": self.count, "ref": self.ref, "buf": AppendOnlySeries(self._buf.copy(), end=self.count),
                "buf_start": self._buf_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.ref = int(state["count"]), float(state["ref"])
        self._buf = np.asarray(series_values(state["buf"]), dtype=np.float64)
        self._buf_start = int(state["buf_start"])


class ChannelState:
    """Per-point channel values of one stream (see the module docstring)."""

    def __init__(self, fitted: FittedDetector) -> None:
        self.fitted = fitted
        cfg = fitted.config
        self.position = 0
        self._tail = np.zeros(0)
        self.names: tuple[str, ...] = (*MODEL_CHANNELS, *fitted.discords,
                                       *(("gaussian",) if cfg.gaussian_channel else ()))
        self._last = {name: 0.0 for name in self.names if name != "gaussian"}
        self._gaussian = OnlineGaussian() if cfg.gaussian_channel else None
        self._range: tuple[float, float] | None = None

    # ------------------------------------------------------------------ windows the model must score
    def extended(self, samples: np.ndarray) -> tuple[np.ndarray, int]:
        """(this stream's kept tail followed by ``samples``, the absolute position of its first element)."""
        x = np.asarray(samples, dtype=np.float64).ravel()
        if x.size and not np.all(np.isfinite(x)):
            raise InputError("samples must be finite (found NaN or inf)")
        return np.concatenate([self._tail, x]), self.position - self._tail.size

    def window_ends(self, n: int) -> np.ndarray:
        """Absolute end positions of the diffusion windows that end among the next ``n`` samples."""
        f = self.fitted
        return grid_ends(f.window - 1, f.hop, self.position, self.position + n - 1)

    def windows_for(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(end positions, model-input windows) the model must score before :meth:`update` with ``samples``.
        Pure: the state does not change."""
        x, base = self.extended(samples)
        ends = self.window_ends(x.size - self._tail.size)
        windows = sliding_windows(self.fitted.model_input(x), self.fitted.window, ends - base)
        return ends, np.ascontiguousarray(windows, dtype=np.float32)

    def model_window(self, samples: np.ndarray, position: int) -> np.ndarray | None:
        """The model-input diffusion window whose scores ``position`` carries (the latest ending at or before it),
        cut from the stream's tail plus ``samples`` (the window inspector's picture; pure). None if not at hand."""
        f = self.fitted
        if position < f.window - 1:
            return None
        x, base = self.extended(samples)
        end = f.window - 1 + ((position - (f.window - 1)) // f.hop) * f.hop
        lo = end - f.window + 1 - base
        if lo < 0 or lo + f.window > x.size:
            return None
        return f.model_input(x[lo:lo + f.window]).astype(np.float32)

    # ------------------------------------------------------------------ update
    def _spread(self, name: str, ends: np.ndarray, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        out = np.full(positions.size, self._last[name])
        if ends.size:
            idx = np.searchsorted(ends, positions, side="right") - 1
            ok = idx >= 0
            out[ok] = values[idx[ok]]
            self._last[name] = float(values[-1])
        return out

    def update(self, samples: np.ndarray, scores: WindowScores) -> dict[str, np.ndarray]:
        """Per-point channels of ``samples`` (plus ``spatial`` when configured); advances the state."""
        f, cfg = self.fitted, self.fitted.config
        x, base = self.extended(samples)
        n = x.size - self._tail.size
        if n == 0:
            empty = {name: np.zeros(0) for name in self.names}
            if cfg.spatial_tolerance is not None:
                empty[SPATIAL] = np.zeros(0)
            return empty
        first, last = self.position, self.position + n - 1
        positions = np.arange(first, last + 1)
        ends = self.window_ends(n)
        if len(scores) != ends.size:
            raise InputError(f"expected scores of {ends.size} diffusion windows, got {len(scores)}")
        out: dict[str, np.ndarray] = {}
        for name in MODEL_CHANNELS:
            out[name] = self._spread(name, ends, getattr(scores, name), positions)
        grid = grid_ends(f.window - 1, f.summary.discord_hop, first, last)
        for name, discord in f.discords.items():
            m = discord.window
            if f.is_point_discord(name):
                at = grid_ends(m - 1, 1, first, last)
                query = at
            else:
                at = grid
                query = grid - f.discord_end_offset(name)
            values = discord.zscores_of(sliding_windows(x, m, query - base), query) if at.size else np.zeros(0)
            out[name] = self._spread(name, at, values, positions)
        new = x[self._tail.size:]
        if self._gaussian is not None:
            out["gaussian"] = self._gaussian.update(new)
        if cfg.spatial_tolerance is not None:
            out[SPATIAL] = self._spatial(new, cfg.spatial_tolerance)
        self.position += n
        self._tail = x[-f.memory:] if f.memory > 0 else np.zeros(0)
        return out

    def _spatial(self, new: np.ndarray, tolerance: float) -> np.ndarray:
        """1 where a value leaves ``[min - tol·range, max + tol·range]`` of every earlier value (range > 0)."""
        if self._range is None:
            lo0, hi0 = new[0], new[0]
            rest, prefix = new[1:], np.zeros(1)
        else:
            lo0, hi0 = self._range
            rest, prefix = new, np.zeros(0)
        past_max = np.maximum.accumulate(np.concatenate([[hi0], rest]))[:-1]
        past_min = np.minimum.accumulate(np.concatenate([[lo0], rest]))[:-1]
        span = past_max - past_min
        beyond = (rest > past_max + tolerance * span) | (rest < past_min - tolerance * span)
        self._range = (float(min(lo0, rest.min()) if rest.size else lo0),
                       float(max(hi0, rest.max()) if rest.size else hi0))
        return np.concatenate([prefix, (beyond & (span > 0)).astype(np.float64)])

    # ------------------------------------------------------------------ crash recovery
    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "tail": self._tail.copy(), "last": dict(self._last),
                "gaussian": self._gaussian.state_dict() if self._gaussian is not None else None,
                "range": list(self._range) if self._range is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self._tail = np.asarray(state["tail"], dtype=np.float64)
        if set(state["last"]) != set(self._last):
            raise CheckpointMismatchError("stream state was written for another detector's channels")
        self._last = {k: float(v) for k, v in state["last"].items()}
        if self._gaussian is not None:
            self._gaussian.load_state_dict(state["gaussian"])
        self._range = tuple(state["range"]) if state["range"] is not None else None  # type: ignore[assignment]


class Suppressor:
    """Keep a score only where it exceeds every score of the previous ``horizon`` points (else 0): one detection
    per rising edge (NAB charges every point above the threshold outside a window as a false positive)."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self._window: deque[tuple[int, float]] = deque()  # (position, score), decreasing: the sliding maximum

    def update(self, positions: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.zeros_like(scores)
        window, horizon = self._window, self.horizon
        for i, (t, v) in enumerate(zip(positions.tolist(), scores.tolist())):
            while window and window[0][0] < t - horizon:
                window.popleft()
            if not window or v > window[0][1]:
                out[i] = v
            while window and window[-1][1] <= v:
                window.pop()
            window.append((t, v))
        return out

    def state_dict(self) -> list[list[float]]:
        return [[t, v] for t, v in self._window]

    def load_state_dict(self, state: list) -> None:
        self._window = deque((int(t), float(v)) for t, v in state)


class FusionState:
    """Channels → one score (see the module docstring). ``channels``: the names that may speak (None: all)."""

    def __init__(self, fitted: FittedDetector, channel_names: tuple[str, ...],
                 channels: Collection[str] | None = None) -> None:
        cfg = fitted.config
        self.config = cfg
        self.train_points = fitted.train_points
        # The likelihoods learn over the training part's rows: every sample, or every window end.
        self.train_rows = train_rows(fitted)
        allowed = set(channel_names) | ({SPATIAL} if cfg.spatial_tolerance is not None else set())
        if channels is not None:
            allowed &= set(channels)
        fused = [n for n in channel_names if n in allowed and n not in ("level", "scale")]
        if cfg.level_weight > 0:
            fused += [n for n in ("level", "scale") if n in cfg.level_channels and n in allowed]
        self.fused: tuple[str, ...] = tuple(fused)
        self.spatial = SPATIAL in allowed
        # One likelihood object calibrates every fused channel (or the max z) at once: see AnomalyLikelihood.
        self._calibrated: tuple[str, ...] = ()
        self._likelihood: AnomalyLikelihood | None = None
        if cfg.calibrate:
            self._calibrated = self.fused if cfg.fusion == "likelihood" else (("max_z",) if self.fused else ())
            if self._calibrated:
                self._likelihood = training_part_likelihood(self.train_rows, channels=len(self._calibrated),
                                                            learns=cfg.likelihood_learns)
        horizon = round(cfg.suppress_fraction * self.train_points)
        self._suppressor = Suppressor(horizon) if horizon else None

    def _weighted(self, name: str, values: np.ndarray) -> np.ndarray:
        if name in ("level", "scale") and self.config.fusion == "max_z":
            return self.config.level_weight * values
        return values

    def update(self, positions: np.ndarray, channels: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
        n = positions.size
        cfg = self.config
        likelihood = self._likelihood
        seen = likelihood.count if likelihood is not None else self.train_rows
        if not self.fused:
            score, who = np.zeros(n), np.full(n, -1)
        elif cfg.fusion == "likelihood":
            assert likelihood is not None
            stacked = likelihood.transform(np.stack([channels[k] for k in self.fused]))
            who = np.argmax(stacked, axis=0)
            score = stacked[who, np.arange(n)]
        else:
            stacked = np.stack([self._weighted(k, channels[k]) for k in self.fused])
            who = np.argmax(stacked, axis=0)
            score = stacked[who, np.arange(n)]
            if likelihood is not None:
                score = likelihood.transform(score)
        # While the likelihoods still learn (the training part's rows) no channel has an opinion yet.
        learning = max(0, min(n, self.train_rows - seen))
        names = ["none"] * learning + [self.fused[i] if i >= 0 else "none" for i in who[learning:].tolist()]
        if cfg.log_scale:
            score = log_likelihoods(score)
        if self.spatial:
            override = channels[SPATIAL] * (positions >= self.train_points)
            wins = override > score
            score = np.maximum(score, override)
            for i in np.flatnonzero(wins).tolist():
                names[i] = SPATIAL
        if self._suppressor is not None:
            score = self._suppressor.update(positions, score)
        # A zero score (a repeat the suppressor silenced, or nothing at all) was decided by no channel. Naming the
        # argmax there would report a tie between saturated likelihoods, which flips with the last bits of the
        # channel values (found by benchmarks/faults.py: 58 points whose score matched and whose label did not).
        for i in np.flatnonzero(score == 0.0).tolist():
            names[i] = "none"
        return score, tuple(names)

    def state_dict(self) -> dict[str, Any]:
        states = self._likelihood.channel_states() if self._likelihood is not None else []
        return {"likelihoods": dict(zip(self._calibrated, states)),
                "suppressor": self._suppressor.state_dict() if self._suppressor is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["likelihoods"]) != set(self._calibrated):
            raise CheckpointMismatchError("stream state was written for another detector's fusion")
        if self._likelihood is not None:
            self._likelihood.load_channel_states([state["likelihoods"][k] for k in self._calibrated])
        if self._suppressor is not None and state.get("suppressor") is not None:
            self._suppressor.load_state_dict(state["suppressor"])


class DetectorState:
    """One stream's online detector: :meth:`windows_for` says which windows the model must score,
    :meth:`update` turns the samples and those scores into :class:`Detections`."""

    def __init__(self, fitted: FittedDetector, channels: Collection[str] | None = None) -> None:
        self.fitted = fitted
        self.channels = ChannelState(fitted)
        self.fusion = FusionState(fitted, self.channels.names, channels)

    @property
    def position(self) -> int:
        return self.channels.position

    def windows_for(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.channels.windows_for(samples)

    def update(self, samples: np.ndarray, scores: WindowScores) -> Detections:
        first = self.channels.position
        ends = self.channels.window_ends(np.asarray(samples).size)
        channels = self.channels.update(samples, scores)
        positions, channels = rows(self.fitted, first, self.channels.position, ends, channels)
        score, names = self.fusion.update(positions, channels)
        return Detections(positions, score, channels, names)

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.fitted.version, "channels": self.channels.state_dict(),
                "fusion": self.fusion.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != self.fitted.version:
            raise CheckpointMismatchError(
                f"stream state belongs to detector {state.get('version')!r}, not {self.fitted.version!r}")
        self.channels.load_state_dict(state["channels"])
        self.fusion.load_state_dict(state["fusion"])


def train_rows(fitted: FittedDetector) -> int:
    """Rows (scored samples, or window ends with ``score_every="window"``) inside the training part."""
    if fitted.config.score_every == "sample":
        return fitted.train_points
    return int(grid_ends(fitted.window - 1, fitted.hop, 0, fitted.train_points - 1).size)


def rows(fitted: FittedDetector, first: int, stop: int, ends: np.ndarray,
         channels: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The scored rows of samples ``[first, stop)``: all of them, or (``score_every="window"``) the window ends."""
    if fitted.config.score_every == "sample":
        return np.arange(first, stop), channels
    idx = ends - first
    return ends, {k: v[idx] for k, v in channels.items()}


def window_scores_together(fitted: FittedDetector,
                           pending: list[tuple["DetectorState", np.ndarray]]) -> list[WindowScores]:
    """The model's scores of the windows that end among each stream's new samples, for many streams of one
    fitted detector in one micro-batch (the monitor's round; a window's score does not depend on the batch it
    lands in). Pure for the states: pass each result with the same samples to that stream's
    :meth:`DetectorState.update`. Windows of a training part that the fit's own pass scored
    (:attr:`FittedDetector.training_pass`) are taken from it, not scored again."""
    cut = []
    for state, samples in pending:
        ends, windows = state.windows_for(samples)
        known = None
        if ends.size and fitted.training_pass is not None:  # right after a fit: see FittedDetector.training_pass
            known = fitted.scored_in_training(*state.channels.extended(samples), ends)
        cut.append((known, windows[len(known):] if known else windows))
    stacked = [windows for _, windows in cut if len(windows)]
    scores = fitted.score_windows(np.concatenate(stacked)) if stacked else WindowScores.empty()
    out, at = [], 0
    for known, windows in cut:
        part = scores.take(slice(at, at + len(windows)))
        at += len(windows)
        out.append(WindowScores.concat([known, part]) if known else part)
    return out


def ablation_variants(fitted: FittedDetector) -> dict[str, Collection[str] | None]:
    """The ablation's channel selections of one fitted detector: ``product`` (every channel),
    ``without_diffusion`` and ``diffusion_only`` — what ``score_series(..., variants)`` fuses from one pass."""
    names = ChannelState(fitted).names + ((SPATIAL,) if fitted.config.spatial_tolerance is not None else ())
    return {"product": None, "without_diffusion": tuple(n for n in names if n != "diffusion"),
            "diffusion_only": ("diffusion",)}


def score_series(fitted: FittedDetector, values: np.ndarray,
                 variants: dict[str, Collection[str] | None] | None = None, chunk: int | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, Detections]:
    """Every sample of a stream (training part first): the benchmarks' path, and ``scalowatch score``'s. ``variants``
    maps a name to the channels that may speak (None: all); every variant fuses the same channel values.

    ``chunk``: feed the samples ``chunk`` at a time, as the monitor does, instead of all at once. The temporaries
    then stay within the chunk — all at once, every sample gets a few float64 temporaries and every window its model
    input (an hour of 16 kHz audio took about 6 GB) —, while the input and the rows returned still grow with the
    series. The scores equal the whole-series ones up to float rounding (module docstring). ``progress`` is called
    with the number of samples done after each chunk.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1 sample, got {chunk}")
    variants = variants or {"product": None}
    x = np.asarray(values).ravel()
    step = max(1, x.size if chunk is None else int(chunk))
    channel_state = ChannelState(fitted)
    fusions = {name: FusionState(fitted, channel_state.names, keep) for name, keep in variants.items()}
    parts: dict[str, list[Detections]] = {name: [] for name in variants}
    for lo in range(0, max(x.size, 1), step):
        part = x[lo:lo + step]
        first = channel_state.position
        ends, windows = channel_state.windows_for(part)
        scores = fitted.score_windows(windows) if ends.size else WindowScores.empty()
        channels = channel_state.update(part, scores)
        positions, channels = rows(fitted, first, channel_state.position, ends, channels)
        for name, fusion in fusions.items():
            score, names = fusion.update(positions, channels)
            parts[name].append(Detections(positions, score, channels, names))
        if progress is not None:
            progress(channel_state.position)
    return {name: p[0] if len(p) == 1 else Detections.concat(p) for name, p in parts.items()}


__all__ = ["CHANNEL_WORDS", "ChannelState", "Detection", "Detections", "DetectorState", "FusionState",
           "OnlineGaussian", "Suppressor", "ablation_variants", "channel_kind", "describe_channel", "grid_ends",
           "score_series", "window_scores_together"]
