"""A diffusion scorer as a causal per-point series detector (the ``SeriesDetector`` protocol of the benchmarks).

How a series becomes per-point scores
-------------------------------------
* **Window length** comes from the training part alone: its dominant period (autocorrelation peak), clamped to
  ``[min_window, max_window]`` and to a third of the training part (at least a few training windows). One rule
  for every file, no per-file tuning.
* **Training**: overlapping windows lying entirely inside the training part (stride chosen so that at most
  ``max_train_windows`` windows are used) train a fresh :class:`~models.pipeline.ScalogramPipeline` per series.
  The model never sees a point after the training part.
* **Scoring**: windows end at absolute positions ``w-1, w-1+hop, w-1+2·hop, …`` (a grid anchored at the start of
  the series, so appending points never moves it). Point ``t`` gets the score of the latest window that ends at or
  before ``t``: causal by construction. Points before the first window ends get 0.
* **No look-ahead in normalisation**: the diffusion, level/scale and discord channels are z-scored with
  statistics of the training windows only; the windowed-Gaussian channel and the likelihoods (``calibrate``)
  use past points only, never statistics of the part still to come.

Channels (one general method, the same for every file)
------------------------------------------------------
``diffusion``: the scorer's sample score (``recon`` by default) of each window's CWT scalogram, z-scored.
The scalogram is normalised per window, so the model judges *shape* only (``scalogram_normalise="training"``
standardises the series once with the training part instead, keeping each scale's amplitude). ``level_weight > 0`` adds the cheap
statistical channel the pipeline already reports — how far the window's mean (``level_z``) and log-std
(``scale_z``) are from the training windows' — because level and amplitude shifts are anomalies the shape model
is blind to by design. ``discord_scales`` adds one raw-shape channel per scale: the nearest-neighbour distance
of the window (length ``scale · w``, centred on the full window's centre) to the training windows, z-scored with
the training part's own nearest-neighbour distances (:mod:`models.discord`) — plausible-but-unseen shapes that
the scalogram model lets through. *Value discords* are the same distance without z-normalisation (windows only
standardised with the training part's fixed mean and std), so level and amplitude count — spikes, dips and
shifts that a shape-only view cannot see: ``value_discord_scales`` adds them at fractions of the window on the
discord grid (``value@<fraction>w``, UCR), ``value_discords`` for short windows of fixed lengths scored at every
point (``value@<length>``, NAB). Combined score = max(diffusion_z, discord_z…, value_z…,
level_weight · max(|level_z|, |scale_z|)).
``level_weight=0`` and no discord scales is the pure diffusion detector.

Fusion (``calibrate=True``)
---------------------------
``fusion="max_z"`` calibrates the combined score above with one online anomaly likelihood. ``fusion="likelihood"``
calibrates *each channel with its own likelihood* and outputs the largest: a channel is then judged against its
own history, so a drifting level (whose z against the training part stays high for ever) cannot drown a sudden
shape change, and the channels need no common scale. ``gaussian_channel`` adds NAB's online windowed-Gaussian
|z| of each point (past points only, :class:`~models.baselines.gaussian.WindowedGaussian`) as one more channel:
the diffusion and level channels are frozen after the training part and NAB streams drift. On NAB this fusion
is the benchmark's configuration; ``benchmarks/series_channels.py`` scores each channel alone so the diffusion
model's own share stays visible.

After the likelihoods, three optional causal steps (all NAB's configuration): ``log_scale`` reports HTM's
log-scaled likelihood (NAB's output convention; a monotone map, so it changes no NAB score — the scorer sweeps
every distinct value — but it spreads the interesting region above 0.99 over [0, 1] for a fixed alert threshold
and for people); ``spatial_tolerance`` overrides the output with 1 where the value leaves the range of every
earlier value (:mod:`models.spatial_novelty`), after the training part only (the range is still being learnt
there; a training part that is flat has no range, so the first jump after it does not fire); ``suppress`` /
``suppress_fraction`` keep one detection per rising edge (a horizon of points, or a fraction of the training
part — the stream's own time scale).

UCR convention: a window is scored at its last point, so the benchmark subtracts ``lag = (w - 1) // 2`` from the
argmax: the prediction is the *centre* of the highest-scoring window.
"""
from __future__ import annotations

import json
import logging
import os
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from models.baselines import as_series, register_series_detector
from models.baselines.gaussian import WindowedGaussian
from models.baselines.period import dominant_period
from models.calibration import log_likelihoods, training_part_likelihood
from models.discord import DiscordStats, TrainingDiscord, fixed_standardisation
from models.errors import InputError, NotFittedError
from models.pipeline import ScalogramPipeline
from models.scorers import create_scorer
from models.spatial_novelty import spatial_novelty
from models.training import TrainConfig
from models.transforms.cwt import CWTConfig

log = logging.getLogger(__name__)

DUMP_ENV = "SCALOWATCH_SERIES_DUMP_DIR"  # default ``dump_dir`` (plus ``/<scorer>``) for registry-built detectors
SCORERS = ("recon", "kl", "trend", "dynamic", "adversarial")
FUSIONS = ("max_z", "likelihood")
DISCORD_PREFIXES = ("discord@", "value@")  # channel names of shape (z-normalised) and value (level-keeping) discords


@dataclass(frozen=True)
class DiffusionDetectorConfig:
    """Every knob of the detector; one instance is used for all files of a benchmark.

    ``window``: fixed window length, or None for the dominant period of the training part (clamped).
    ``hop``: scoring stride (points between scored windows); ``hop_fraction`` > 0 instead sets it to
    ``max(1, round(window * hop_fraction))`` (long UCR series cannot afford a window per point).
    ``unet``: U-Net preset; the scalogram is resized to that preset's sample size.
    ``scorer_options``: passed to the scorer (e.g. ``lam=1.0``: pixel term only, no CNN).
    ``calibrate``: output the online anomaly likelihood (the NAB runner's own configuration: learning period =
    the training part, its first half skipped) instead of raw scores, so that ``suppress`` can follow it.
    ``suppress`` > 0 (needs ``calibrate``): a point keeps its likelihood only if it exceeds every likelihood of
    the previous ``suppress`` points, else 0 — one alert per rising edge instead of a run of them (NAB charges
    every point above the threshold outside a window as a false positive). Causal.
    ``discord_scales``: window fractions for the nearest-neighbour discord channels (empty: none); UCR uses
    (1.0, 0.5) — one-off shape distortions show at the period and at half of it. ``discord_hop``: their scoring
    stride (0: a quarter of ``hop``).
    ``fusion``: ``"max_z"`` or ``"likelihood"`` (per-channel likelihoods, needs ``calibrate``); see the module
    docstring. ``gaussian_channel``: add the online windowed-Gaussian channel (needs ``fusion="likelihood"``).
    ``value_discords``: window lengths (points) of the level-keeping nearest-neighbour channels ``value@<length>``
    (see the module docstring; lengths that do not fit three times into the training part are skipped), scored
    at every point. ``value_discord_scales``: the same level-keeping distance for windows of these fractions of the
    window, on the discord grid and centred like ``discord_scales`` (channels ``value@<fraction>w``; UCR uses 1).
    ``spatial_tolerance`` (needs ``calibrate``): after the training part, output 1 where the value leaves the range
    of all earlier values by more than this fraction of it (None: off). ``suppress_fraction`` > 0 (needs
    ``calibrate``, not with ``suppress``: pass ``suppress_fraction=0`` to use ``suppress`` instead): the suppression
    horizon is this fraction of the training part. ``log_scale`` (needs ``calibrate``): report HTM's log-scaled
    likelihood (monotone: same ranking). ``scalogram_normalise``: ``"window"`` (each window
    standardised on its own: the model judges shape only) or ``"training"`` (the series standardised once with the
    training part's mean and std: the scalogram keeps each scale's amplitude; NAB's setting).
    ``dump_dir``: also write every scored series' window channels there (``<sha1 of values>.npz``), so the
    pure-diffusion and statistical channels of one benchmark run can be scored separately afterwards.
    Defaults are sized for NAB on two shared CPU cores (80 training steps, a window every 4 points).
    """

    scorer: str = "recon"
    window: int | None = None
    min_window: int = 32
    max_window: int = 256
    hop: int = 4
    hop_fraction: float = 0.0
    max_train_windows: int = 512
    unet: str = "tiny"
    n_scales: int = 32
    steps: int = 80
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    level_weight: float = 1.0
    score_batch: int = 2048
    dump_dir: str | None = None
    calibrate: bool = False
    suppress: int = 0
    discord_scales: tuple[float, ...] = ()
    discord_hop: int = 0
    fusion: str = "max_z"
    gaussian_channel: bool = False
    value_discords: tuple[int, ...] = ()
    value_discord_scales: tuple[float, ...] = ()
    spatial_tolerance: float | None = None
    suppress_fraction: float = 0.0
    log_scale: bool = False
    scalogram_normalise: str = "window"
    scorer_options: dict[str, Any] = field(default_factory=lambda: {"lam": 1.0})

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.window is not None and self.window < 16:
            raise ValueError("window must be >= 16 samples (the CWT's minimum)")
        if not 16 <= self.min_window <= self.max_window:
            raise ValueError("need 16 <= min_window <= max_window")
        if self.hop < 1 or not 0.0 <= self.hop_fraction <= 1.0:
            raise ValueError("hop must be >= 1 and hop_fraction in [0, 1]")
        if self.max_train_windows < 2 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("max_train_windows >= 2, steps >= 1 and batch_size >= 1 required")
        if self.level_weight < 0:
            raise ValueError("level_weight must be >= 0")
        if self.suppress < 0 or (self.suppress and not self.calibrate):
            raise ValueError("suppress must be >= 0 and needs calibrate=True")
        for name in ("discord_scales", "value_discord_scales"):
            scales = _number_tuple(getattr(self, name), float, name, "'1;0.5'")
            if any(not 0.0 < f <= 1.0 for f in scales):
                raise ValueError(f"{name} must lie in (0, 1] (fractions of the window)")
            object.__setattr__(self, name, scales)
        if self.discord_hop < 0:
            raise ValueError("discord_hop must be >= 0 (0: a quarter of hop)")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion == "likelihood" and not self.calibrate:
            raise ValueError('fusion="likelihood" calibrates each channel: it needs calibrate=True')
        if self.gaussian_channel and self.fusion != "likelihood":
            raise ValueError('gaussian_channel needs fusion="likelihood" (its |z| has no common scale with the rest)')
        lengths = _number_tuple(self.value_discords, int, "value_discords", "'2;4;8'")
        if any(m < 2 for m in lengths):
            raise ValueError("value_discords lengths must be >= 2 points")
        object.__setattr__(self, "value_discords", tuple(dict.fromkeys(lengths)))
        if self.spatial_tolerance is not None and (self.spatial_tolerance < 0 or not self.calibrate):
            raise ValueError("spatial_tolerance must be >= 0 and needs calibrate=True")
        if not 0.0 <= self.suppress_fraction <= 1.0 or (self.suppress_fraction and (self.suppress or not self.calibrate)):
            raise ValueError("suppress_fraction must lie in [0, 1], needs calibrate=True and excludes suppress")
        if self.scalogram_normalise not in ("window", "training"):
            raise ValueError(f"scalogram_normalise must be 'window' or 'training', got {self.scalogram_normalise!r}")
        if self.log_scale and not self.calibrate:
            raise ValueError("log_scale scales the calibrated likelihood: it needs calibrate=True")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number_tuple(value: Any, kind: type, name: str, example: str) -> tuple:
    """A tuple of numbers from a tuple, one number, None, or a command-line string like "1;0.5" (commas
    separate detector options on the command line, so ';' or '/' separate the numbers)."""
    if value is None:
        return ()
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = (value,)
    elif isinstance(value, str):
        value = tuple(part for part in value.replace("/", ";").split(";") if part.strip())
    try:
        out = tuple(kind(float(v)) for v in value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name} must be finite numbers (e.g. {example}), got {value!r}") from exc
    if kind is int and any(float(v) != int(float(v)) for v in value):
        raise ValueError(f"{name} must be whole numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class FitSummary:
    """What ``fit`` decided and saw: reported in benchmark JSONs so readers know what each model saw."""

    train_points: int
    window: int
    hop: int
    train_windows: int
    train_stride: int
    train_seconds: float
    diffusion_mean: float
    diffusion_std: float
    discords: tuple[DiscordStats, ...] = ()


def sliding_windows(x: np.ndarray, window: int, ends: np.ndarray) -> np.ndarray:
    """Windows (len(ends), window) ending (inclusive) at ``ends`` — a view, no copy."""
    view = np.lib.stride_tricks.sliding_window_view(x, window)
    return view[ends - window + 1]


class DiffusionSeriesDetector:
    """``fit(train)`` trains a scalogram diffusion model on the training part; ``score(values)`` is causal."""

    def __init__(self, config: DiffusionDetectorConfig | None = None, **overrides: Any) -> None:
        cfg = config or DiffusionDetectorConfig()
        if overrides:
            opts = {k: overrides.pop(k) for k in list(overrides) if k.startswith("scorer_")
                    and k != "scorer_options"}
            cfg = replace(cfg, **overrides)
            if opts:  # "scorer_t_start=100" on the command line → scorer_options["t_start"]
                cfg = replace(cfg, scorer_options={**cfg.scorer_options,
                                                   **{k[len("scorer_"):]: v for k, v in opts.items()}})
        self.config = cfg
        self.name = f"diffusion-{cfg.scorer}"
        self.output_is_probability = cfg.calibrate
        self.pipeline: ScalogramPipeline | None = None
        self.summary: FitSummary | None = None
        self.window: int | None = None
        self.hop: int | None = None
        self.discords: dict[str, TrainingDiscord] = {}
        self.value_discords: dict[str, TrainingDiscord] = {}
        self._input_centre, self._input_scale = 0.0, 1.0

    # ------------------------------------------------------------------ protocol attributes
    @property
    def lag(self) -> int:
        """Points from a window's centre to its last point (where it is scored)."""
        return 0 if self.window is None else (self.window - 1) // 2

    # ------------------------------------------------------------------ fit
    def choose_window(self, train: np.ndarray) -> int:
        cfg = self.config
        upper = max(16, min(cfg.max_window, train.size // 3))
        if cfg.window is not None:
            w = cfg.window
        else:
            # Search every period the training part supports, then clamp: a long period gets the longest window.
            w = dominant_period(train, min_period=cfg.min_window // 2, max_period=None, default=cfg.min_window * 2)
        return int(np.clip(w, min(cfg.min_window, upper), upper))

    def _pipeline(self) -> ScalogramPipeline:
        cfg = self.config
        from models.unet import UNetConfig

        size = UNetConfig.preset(cfg.unet).sample_size
        train = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                            warmup_steps=min(20, cfg.steps // 10))
        options = dict(cfg.scorer_options)
        scorer = create_scorer(cfg.scorer, unet=cfg.unet, train=train, device="cpu", seed=1234 + cfg.seed,
                               **options)
        normalise = "window" if cfg.scalogram_normalise == "window" else "none"
        return ScalogramPipeline(CWTConfig(n_scales=cfg.n_scales, out_size=tuple(size), normalise=normalise), scorer)

    def _model_input(self, x: np.ndarray) -> np.ndarray:
        """What the scalogram model sees: the series itself (each window is then normalised on its own), or
        — ``scalogram_normalise="training"`` — the series standardised once with the training part's mean and
        std, so the scalogram keeps the amplitude of every scale."""
        if self.config.scalogram_normalise == "window":
            return x
        return (x - self._input_centre) / self._input_scale

    def fit(self, train: np.ndarray) -> "DiffusionSeriesDetector":
        cfg = self.config
        x = as_series(train, "training series", min_length=16 * 3)
        w = self.choose_window(x)
        n_windows = x.size - w + 1
        stride = max(1, math.ceil(n_windows / cfg.max_train_windows))
        ends = np.arange(w - 1, x.size, stride)
        if ends.size < 2:
            raise InputError(f"training part of {x.size} points gives fewer than 2 windows of {w}")
        torch.manual_seed(cfg.seed)
        started = time.perf_counter()
        pipe = self._pipeline()
        self._input_centre, self._input_scale = fixed_standardisation(x)
        windows = sliding_windows(self._model_input(x), w, ends)
        pipe.fit_windows(windows.copy())
        batch = pipe.score_windows(windows.copy())
        diff = np.asarray(batch.scores, dtype=np.float64)
        self.discords = {}  # shape discords, then value discords (level kept), on one grid, centred alike
        for fractions, normalize, name in ((cfg.discord_scales, True, "discord@{:g}"),
                                           (cfg.value_discord_scales, False, "value@{:g}w")):
            for fraction in fractions:
                m = max(16, round(w * fraction))
                self.discords[name.format(fraction)] = TrainingDiscord(normalize=normalize).fit(x, m)
        self.value_discords = {}
        for m in cfg.value_discords:
            if 3 * m > x.size:
                log.info("%s: value discord of %d points skipped (training part of %d points)", self.name, m, x.size)
                continue
            self.value_discords[f"value@{m}"] = TrainingDiscord(normalize=False).fit(x, m)
        seconds = time.perf_counter() - started
        self.pipeline, self.window = pipe, w
        self.hop = max(1, round(w * cfg.hop_fraction)) if cfg.hop_fraction > 0 else cfg.hop
        self.summary = FitSummary(
            train_points=int(x.size), window=w, hop=self.hop, train_windows=int(ends.size), train_stride=stride,
            train_seconds=round(seconds, 3), diffusion_mean=float(diff.mean()),
            diffusion_std=float(max(diff.std(), 1e-6)),
            discords=tuple(d.stats for d in (*self.discords.values(), *self.value_discords.values())
                           if d.stats is not None),
        )
        log.debug("%s fitted: %s", self.name, self.summary)
        return self

    # ------------------------------------------------------------------ score
    def window_scores(self, values: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(window end positions, channels) for every window of ``values`` the diffusion model scores.

        Channels: ``diffusion`` (z-scored with training statistics), ``level`` = |level_z|, ``scale`` = |scale_z|.
        """
        if self.pipeline is None or self.summary is None or self.window is None or self.hop is None:
            raise NotFittedError(f"{self.name}: call fit(train) before score()")
        x = as_series(values)
        w, hop = self.window, self.hop
        ends = np.arange(w - 1, x.size, hop)
        channels: dict[str, list[np.ndarray]] = {"diffusion": [], "level": [], "scale": []}
        step = max(1, self.config.score_batch)
        model_x = self._model_input(x)
        for i in range(0, ends.size, step):
            batch = self.pipeline.score_windows(sliding_windows(model_x, w, ends[i : i + step]).copy())
            channels["diffusion"].append(
                (np.asarray(batch.scores, dtype=np.float64) - self.summary.diffusion_mean) / self.summary.diffusion_std
            )
            channels["level"].append(np.abs(np.asarray(batch.extras["level_z"], dtype=np.float64)))
            channels["scale"].append(np.abs(np.asarray(batch.extras["scale_z"], dtype=np.float64)))
        out = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in channels.items()}
        return ends, out

    @property
    def discord_hop(self) -> int:
        """Discord windows are cheap next to a diffusion pass, so they are scored on a finer grid: a shape
        distance is sensitive to how the window is aligned with the anomaly."""
        if self.hop is None:
            raise NotFittedError(f"{self.name}: call fit(train) before score()")
        return self.config.discord_hop or max(1, self.hop // 4)

    def discord_scores(self, values: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``discord@<fraction>`` and ``value@<fraction>w`` -> (score positions, training-normalised z) on the
        discord grid; ``value@<length>`` -> the same at every point where one of its windows ends.

        A shorter discord window is centred where the full window is: the one scored at position ``e`` ends at
        ``e - (w - m) // 2`` (causal), so every channel's peak points at the same centre and one ``lag`` serves
        the UCR prediction whichever channel wins.
        """
        if self.window is None:
            raise NotFittedError(f"{self.name}: call fit(train) before score()")
        x = as_series(values)
        grid = np.arange(self.window - 1, x.size, self.discord_hop)
        out = {}
        for name, discord in self.discords.items():
            assert discord.stats is not None
            out[name] = (grid, discord.zscores(x, grid - (self.window - discord.stats.window) // 2))
        for name, discord in self.value_discords.items():  # short windows, scored at every point they end
            assert discord.stats is not None
            ends = np.arange(discord.stats.window - 1, x.size)
            out[name] = (ends, discord.zscores(x, ends))
        return out

    def point_channels(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Every channel as a causal per-point series (the latest window ending at or before each point)."""
        x = as_series(values)
        ends, channels = self.window_scores(x)
        discords = self.discord_scores(x)
        if self.config.dump_dir:
            self._dump(x, ends, channels, discords)
        out = {name: spread_to_points(ends, v, x.size) for name, v in channels.items()}
        out.update({name: spread_to_points(e, z, x.size) for name, (e, z) in discords.items()})
        out.update(self.online_channels(x))
        return out

    def online_channels(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """The channels that need no fitted state (computed from the values alone, past points only):
        ``gaussian`` and ``spatial`` where configured. The channel ablation recomputes them the same way."""
        x = as_series(values)
        out = {}
        if self.config.gaussian_channel:
            out["gaussian"] = online_gaussian_z(x)
        if self.config.spatial_tolerance is not None:
            out["spatial"] = spatial_novelty(x, self.config.spatial_tolerance)
        return out

    def combine(self, channels: dict[str, np.ndarray]) -> np.ndarray:
        """max(diffusion, discord…, level_weight · max(level, scale)) over arrays of one grid (see the module
        docstring); the ``gaussian`` channel only enters through ``fusion="likelihood"``."""
        s = channels["diffusion"]
        for name in channels:
            if name.startswith(DISCORD_PREFIXES):
                s = np.maximum(s, channels[name])
        if self.config.level_weight > 0:
            stat = np.maximum(channels["level"], channels["scale"])
            s = np.maximum(s, self.config.level_weight * stat)
        return s

    def fused_channels(self, channels: dict[str, np.ndarray]) -> list[str]:
        """Names of the channels ``fusion="likelihood"`` calibrates one by one."""
        names = ["diffusion", *(n for n in channels if n.startswith(DISCORD_PREFIXES))]
        if self.config.level_weight > 0:
            names += ["level", "scale"]
        return names + (["gaussian"] if "gaussian" in channels else [])

    def score(self, values: np.ndarray) -> np.ndarray:
        x = as_series(values)
        channels = self.point_channels(x)
        if not self.config.calibrate:
            return self.combine(channels)
        assert self.summary is not None
        return self.calibrated(channels, self.summary.train_points)

    def calibrated(self, channels: dict[str, np.ndarray], train_points: int,
                   names: list[str] | None = None) -> np.ndarray:
        """The calibrated output from per-point channels: likelihood(s) → log scale → spatial override →
        suppression, as configured. ``names`` picks the channels that speak (the ablation's hook; default:
        :meth:`fused_channels` plus ``spatial`` when present): every name but ``spatial`` gets its own likelihood,
        ``spatial`` the override."""
        cfg = self.config
        if names is not None and cfg.fusion == "max_z":
            raise ValueError('names selects channels of fusion="likelihood"; max_z fuses every channel it combines')
        if names is None:
            names = self.fused_channels(channels) + (["spatial"] if "spatial" in channels else [])
        fused = [name for name in names if name != "spatial"]
        if not fused:
            like = np.zeros(next(iter(channels.values())).size)
        elif cfg.fusion == "max_z":
            like = training_part_likelihood(train_points).transform(self.combine(channels))
        else:
            like = likelihood_fusion([channels[name] for name in fused], train_points)
        if cfg.log_scale:
            like = log_likelihoods(like)
        if "spatial" in names:
            like = np.maximum(like, channels["spatial"] * (np.arange(like.size) >= train_points))
        horizon = cfg.suppress or round(cfg.suppress_fraction * train_points)
        return suppress_repeats(like, horizon) if horizon else like

    def _dump(self, x: np.ndarray, ends: np.ndarray, channels: dict[str, np.ndarray],
              discords: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        import hashlib
        from pathlib import Path

        out = Path(str(self.config.dump_dir))
        out.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
        extra = {k: v for name, (e, z) in discords.items() for k, v in ((name, z), (f"{name}_ends", e))}
        config = {k: v for k, v in self.config.to_dict().items() if k != "dump_dir"}
        np.savez_compressed(out / f"{key}.npz", ends=ends, n=x.size, window=self.window, hop=self.hop,
                            summary=json.dumps(asdict(self.summary)) if self.summary else "{}",
                            config=json.dumps(config), **channels, **extra)


def online_gaussian_z(values: np.ndarray) -> np.ndarray:
    """NAB's windowed-Gaussian |z| of each point against past points only (the ``gaussian`` channel)."""
    return WindowedGaussian(output="zscore").score(values)


def likelihood_fusion(raw_channels: list[np.ndarray], train_points: int) -> np.ndarray:
    """Per point, the largest of the channels' own online likelihoods (``fusion="likelihood"``); a fresh
    likelihood per channel, since ``AnomalyLikelihood`` keeps state."""
    if not raw_channels:
        raise ValueError("likelihood_fusion needs at least one channel")
    return np.max([training_part_likelihood(train_points).transform(raw) for raw in raw_channels], axis=0)


def spread_to_points(ends: np.ndarray, window_scores: np.ndarray, n: int, fill: float = 0.0) -> np.ndarray:
    """Per-point scores: point t takes the score of the latest window ending at or before t (causal)."""
    out = np.full(n, fill, dtype=np.float64)
    if ends.size == 0:
        return out
    idx = np.searchsorted(ends, np.arange(n), side="right") - 1
    ok = idx >= 0
    out[ok] = window_scores[idx[ok]]
    return out


def suppress_repeats(scores: np.ndarray, horizon: int) -> np.ndarray:
    """Keep ``scores[t]`` only where it exceeds every score in ``scores[t-horizon:t]`` (else 0). Causal, O(n)."""
    from collections import deque

    out = np.zeros_like(scores)
    window: deque[int] = deque()  # indices of a decreasing run of values: the sliding maximum
    for t, v in enumerate(scores):
        while window and window[0] < t - horizon:
            window.popleft()
        if not window or v > scores[window[0]]:
            out[t] = v
        while window and scores[window[-1]] <= v:
            window.pop()
        window.append(t)
    return out


def _factory(scorer: str):
    def build(**kwargs: Any) -> DiffusionSeriesDetector:
        # The benchmark commands cannot pass a per-run folder without it entering the result label.
        dump = os.environ.get(DUMP_ENV)
        if dump and "dump_dir" not in kwargs:
            kwargs["dump_dir"] = os.path.join(dump, scorer)
        return DiffusionSeriesDetector(DiffusionDetectorConfig(scorer=scorer), **kwargs)

    return build


for _name in SCORERS:
    register_series_detector(f"diffusion-{_name}", _factory(_name))

__all__ = [
    "DiffusionDetectorConfig", "DiffusionSeriesDetector", "FitSummary", "likelihood_fusion", "online_gaussian_z",
    "sliding_windows", "spread_to_points", "suppress_repeats",
]
