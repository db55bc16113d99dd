"""A detector fitted on one stream's training part: the window, the scalogram model, the discord references and
every normaliser — everything that is learnt once and then frozen.

Fitting takes *samples* (the training part as it arrived), not pre-cut windows: choosing the window is part of
fitting. The result is shared by every stream that uses it (one per stream, or one per stream class) and by the
benchmarks; the per-stream, ever-changing part lives in :class:`models.detector.online.DetectorState`.

Layout on disk (``save``/``load``): ``detector.json`` (the configuration), ``fitted.json`` (what fitting
decided), ``discords.npz`` (each discord channel's training part, from which its reference windows are cut
at load), ``reference.json`` (a stream's state after the training part: see
:attr:`FittedDetector.reference`) and ``pipeline/`` (the CWT + scorer checkpoint).
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.baselines import as_series
from models.baselines.period import dominant_period
from models.checkpoint import version_of
from models.detector.config import MIN_TRAIN_SAMPLES, DetectorConfig
from models.detector.state_json import read_state, write_state
from models.discord import DiscordStats, TrainingDiscord, fixed_standardisation
from models.errors import CheckpointMismatchError, InputError
from models.pipeline import ScalogramPipeline
from models.scorers import create_scorer
from models.scorers.maps import reduce_map
from models.training import TrainConfig
from models.transforms.cwt import CWTConfig

if TYPE_CHECKING:
    from models.detector.online import DetectorState

log = logging.getLogger(__name__)

FITTED_FILE = "fitted.json"
DISCORD_FILE = "discords.npz"
REFERENCE_FILE = "reference.json"
REFERENCE_HEAD = 64
"""At least this many of the training part's first samples are kept with the reference (more where the detector
keeps more past samples): enough that live samples are not taken for the training part by chance."""
REFERENCE_CHUNK = 65_536
"""Samples fed at a time when the training part passes through a state for :attr:`FittedDetector.reference` (bounds
the temporaries, as the monitor's rounds do; scores do not depend on the chunking beyond float rounding)."""
PIPELINE_DIR = "pipeline"
PAD_TO = 16
# PyTorch intra-op threads up to which a window's score is independent of its micro-batch (see _model_scores);
# every stream processor (monitor, demo, bench --via monitor) caps the threads at this (streamer/assemble.py).
BATCH_INDEPENDENT_THREADS = 2
_SMALL_CUT = 4096  # values: below this, sliding_windows copies (see there)
# The scalogram model computes in float32. A model input beyond this (a sensor value of 1e38, or an ordinary one
# standardised by a tiny training spread) would overflow there — to inf in the cast, then NaN in the transform —
# and stop the stream. Clipped to it, such a window is simply as far out as a window can be.
MODEL_INPUT_LIMIT = 1e30


@dataclass(frozen=True)
class FitSummary:
    """What fitting decided and saw: reported in benchmark JSONs and beside the saved model."""

    train_points: int
    window: int
    hop: int
    discord_hop: int
    train_windows: int
    train_stride: int
    train_seconds: float
    diffusion_mean: float | None
    """The training windows' pooled diffusion score; None where each image channel has its own
    (``channel_errors="apart"``: :attr:`channel_error_mean`)."""
    diffusion_std: float | None
    input_centre: float
    input_scale: float
    discords: tuple[DiscordStats, ...] = ()
    channel_error_mean: tuple[float, ...] = ()
    """Per image channel, the training windows' mean reduced error (``channel_errors="apart"``; else empty)."""
    channel_error_std: tuple[float, ...] = ()


@dataclass(frozen=True)
class WindowScores:
    """The model-side channels of diffusion windows: z-scored diffusion score, |level_z| and |scale_z|."""

    diffusion: np.ndarray
    level: np.ndarray
    scale: np.ndarray

    def __len__(self) -> int:
        return int(self.diffusion.size)

    @classmethod
    def empty(cls) -> "WindowScores":
        return cls(np.zeros(0), np.zeros(0), np.zeros(0))

    @classmethod
    def concat(cls, parts: list["WindowScores"]) -> "WindowScores":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("diffusion", "level", "scale")))

    def take(self, index: np.ndarray | slice) -> "WindowScores":
        return WindowScores(self.diffusion[index], self.level[index], self.scale[index])


@dataclass(frozen=True)
class TrainingPass:
    """The training part and the model scores of every window on its grid (window ``k`` ends at
    ``window - 1 + k * hop``), from the pass that built :attr:`FittedDetector.reference`.

    Why: right after a fit the monitor scores the stream's pending samples, which begin with that same training
    part, through a fresh state — every window of it through the model a second time (an audio stream's 100 s:
    about 2 s of the monitor's loop). A window cut from the same samples gets the same scores in any batch, so
    those windows are taken from here where the samples are the training part's, compared value for value
    (:meth:`FittedDetector.scored_in_training`)."""

    samples: np.ndarray
    scores: WindowScores


def choose_window(config: DetectorConfig, train: np.ndarray) -> int:
    """The configured window (at most a third of the training part), or the training part's dominant period
    clamped to ``[min_window, max_window]`` and to a third of the training part."""
    if config.window is not None:
        return int(max(16, min(config.window, train.size // 3)))
    upper = max(16, min(config.max_window, train.size // 3))
    w = dominant_period(train, min_period=config.min_window // 2, max_period=None, default=config.min_window * 2)
    return int(np.clip(w, min(config.min_window, upper), upper))


def sliding_windows(x: np.ndarray, window: int, ends: np.ndarray) -> np.ndarray:
    """Windows (len(ends), window) ending (inclusive) at ``ends``.

    Why two ways: the live monitor cuts a handful of windows per stream many times a second, where
    ``sliding_window_view``'s set-up costs more than copying them; whole series (the benchmarks) take the view.
    """
    x = np.asarray(x)
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size == 0:
        return np.zeros((0, window), dtype=x.dtype)
    if ends.size * window <= _SMALL_CUT:
        if ends.min() < window - 1 or ends.max() >= x.shape[0]:
            raise IndexError(f"window ends must lie in [{window - 1}, {x.shape[0] - 1}]")
        return x[(ends - (window - 1))[:, None] + np.arange(window)]
    view = np.lib.stride_tricks.sliding_window_view(x, window)
    return view[ends - window + 1]


class FittedDetector:
    """The frozen part of a detector. Build with :meth:`fit` or :meth:`load`; score windows with
    :meth:`score_windows`; give each stream a :meth:`new_state`."""

    def __init__(self, config: DetectorConfig, summary: FitSummary, pipeline: ScalogramPipeline,
                 discords: dict[str, TrainingDiscord], version: str = "unsaved",
                 reference: dict[str, Any] | None = None) -> None:
        self.config = config
        self.summary = summary
        self.pipeline = pipeline
        self.discords = discords
        self.version = version
        self.reference = reference
        """A stream's state (channels and fusion of :meth:`DetectorState.state_dict`) right after the training part
        — what :meth:`resumed_state` starts from — and the training part's first samples (``head``:
        :meth:`begins_training_part`). Why: a stream whose state is lost after its training part (an
        unreadable state file, a state replaced after scoring failures, a restart that finds no state) would
        otherwise start a fresh state at "position 0" on its *live* samples, and take them for its training part:
        its likelihoods would learn their reference from them. With ``likelihood_learns=False`` (audio) that
        reference is kept for ever, so a fault under way when the state was lost became the machine's normal.
        None: fitted before this existed, or with ``reference=False`` (:meth:`resumed_state` then falls back to a
        fresh state)."""
        self.training_pass: TrainingPass | None = None
        """Held in memory from the fit until its windows are used, or samples other than the training part (or past
        it) are scored instead (never saved): see :class:`TrainingPass`."""

    # ------------------------------------------------------------------ geometry
    @property
    def window(self) -> int:
        return self.summary.window

    @property
    def hop(self) -> int:
        return self.summary.hop

    @property
    def train_points(self) -> int:
        return self.summary.train_points

    @property
    def lag(self) -> int:
        """Points from a window's centre to its last point (where it is scored): UCR predicts the centre."""
        return (self.window - 1) // 2

    @property
    def memory(self) -> int:
        """Samples of the past a stream must keep to cut every window that can still end at a future sample."""
        return max([self.window, *(d.window for d in self.discords.values())]) - 1

    @functools.cached_property
    def nbytes(self) -> int:
        """Memory the detector holds: its discord channels' training windows, its networks' weights and its
        reference state. Why: a monitor with a detector per stream weighs each stream by it at its stream cap. A
        ``nab`` detector holds about 0.5 MB; a detector keeps every training window of its discord channels (up
        to 60,000 each), so the ``ucr`` preset's holds 1–3 MB with its 750 training samples and 48–295 MB on UCR's
        training parts of 15,000–100,000 samples."""
        modules = [m for m in vars(self.pipeline.scorer).values() if isinstance(m, torch.nn.Module)]
        weights = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        return sum(d.nbytes for d in self.discords.values()) + _nbytes(weights) + _nbytes(self.reference)

    def discord_end_offset(self, name: str) -> int:
        """A grid discord (``discord@f``, ``value@fw``) scored at grid position ``g`` ends at ``g - offset``:
        centred on the diffusion window, so every channel's peak points at the same centre."""
        if name.startswith("value@") and not name.endswith("w"):
            return 0
        return (self.window - self.discords[name].window) // 2

    def is_point_discord(self, name: str) -> bool:
        """``value@<length>`` discords are scored at every point; the others on the discord grid."""
        return name.startswith("value@") and not name.endswith("w")

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """What the scalogram model sees: the samples as they are (each window is normalised on its own), or the
        samples standardised once with the training part (``scalogram_normalise="training"``)."""
        if self.config.scalogram_normalise == "window":
            out = np.asarray(x, dtype=np.float64)
        else:
            out = (np.asarray(x, dtype=np.float64) - self.summary.input_centre) / self.summary.input_scale
        # Two reductions, no temporary array: this runs on every round's samples of every stream.
        if out.size and (out.max() > MODEL_INPUT_LIMIT or out.min() < -MODEL_INPUT_LIMIT):
            out = np.clip(out, -MODEL_INPUT_LIMIT, MODEL_INPUT_LIMIT)  # a copy: x stays as it is
        return out

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, train: np.ndarray, config: DetectorConfig, device: str = "cpu", *,
            reference: bool = True) -> "FittedDetector":
        """Fit on a stream's training part (samples in arrival order). Deterministic for a given config on the
        CPU (fp32); ``device="cuda"`` trains and scores on a GPU.

        ``reference=False`` skips :attr:`reference` (a pass of the training part through a state: up to a third
        of a UCR fit): for callers that score a series from its first sample and never resume a stream — the
        benchmarks. It changes no score."""
        cfg = config
        x = as_series(train, "training part", min_length=MIN_TRAIN_SAMPLES)
        w = choose_window(cfg, x)
        n_windows = x.size - w + 1
        stride = max(1, math.ceil(n_windows / cfg.max_train_windows))
        ends = np.arange(w - 1, x.size, stride)
        if ends.size < 2:
            raise InputError(f"training part of {x.size} points gives fewer than 2 windows of {w}")
        torch.manual_seed(cfg.seed)
        started = time.perf_counter()
        pipe = _new_pipeline(cfg, device)
        centre, scale = fixed_standardisation(x)
        hop = max(1, round(w * cfg.hop_fraction)) if cfg.hop_fraction > 0 else cfg.hop
        provisional = FitSummary(train_points=int(x.size), window=w, hop=hop, discord_hop=1, train_windows=0,
                                 train_stride=stride, train_seconds=0.0, diffusion_mean=0.0, diffusion_std=1.0,
                                 input_centre=centre, input_scale=scale)
        fitted = cls(cfg, provisional, pipe, {})
        windows = sliding_windows(fitted.model_input(x), w, ends).astype(np.float32)
        pipe.fit_windows(windows)
        diff = fitted._raw_diffusion(windows)  # (n,) pooled; (n, channels) judged apart
        discords: dict[str, TrainingDiscord] = {}
        for fractions, normalize, name in ((cfg.discord_scales, True, "discord@{:g}"),
                                           (cfg.value_discord_scales, False, "value@{:g}w")):
            for fraction in fractions:
                m = max(16, round(w * fraction))
                discords[name.format(fraction)] = TrainingDiscord(normalize=normalize).fit(x, m)
        for m in cfg.value_discords:
            if 3 * m > x.size:
                log.info("value discord of %d points skipped (training part of %d points)", m, x.size)
                continue
            discords[f"value@{m}"] = TrainingDiscord(normalize=False).fit(x, m)
        fitted.discords = discords
        fitted.summary = FitSummary(
            train_points=int(x.size), window=w, hop=hop, discord_hop=cfg.discord_hop or max(1, hop // 4),
            train_windows=int(ends.size), train_stride=stride, train_seconds=0.0,
            diffusion_mean=float(diff.mean()) if diff.ndim == 1 else None,
            diffusion_std=float(max(diff.std(), 1e-6)) if diff.ndim == 1 else None,
            input_centre=centre, input_scale=scale,
            discords=tuple(d.stats for d in discords.values() if d.stats is not None),
            channel_error_mean=tuple(float(v) for v in diff.mean(axis=0)) if diff.ndim == 2 else (),
            channel_error_std=tuple(float(max(v, 1e-6)) for v in diff.std(axis=0)) if diff.ndim == 2 else (),
        )
        fitted.reference = fitted._state_after_training(x) if reference else None
        fitted.summary = replace(fitted.summary, train_seconds=round(time.perf_counter() - started, 3))
        log.debug("detector fitted: %s", fitted.summary)
        return fitted

    def _state_after_training(self, train: np.ndarray) -> dict[str, Any]:
        """The training part fed through a fresh state, as a stream feeds it (see :attr:`reference`)."""
        from models.detector.online import window_scores_together

        state = self.new_state()
        scored = []
        for lo in range(0, train.size, REFERENCE_CHUNK):
            part = train[lo:lo + REFERENCE_CHUNK]
            scored.append(window_scores_together(self, [(state, part)])[0])
            state.update(part, scored[-1])
        self.training_pass = TrainingPass(np.asarray(train, dtype=np.float64), WindowScores.concat(scored))
        saved = state.state_dict()
        head = train[:max(REFERENCE_HEAD, self.memory)].astype(np.float64)  # see begins_training_part
        return {"channels": saved["channels"], "fusion": saved["fusion"], "head": head}

    # ------------------------------------------------------------------ score
    def _model_scores(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw diffusion score, level_z, scale_z) of (n, window) model-input windows.

        Why the padding: in fp32 on the CPU a window's score is the same at every position of a batch, but the
        kernels change for small batches (oneDNN for batches of 1–3 with two threads; with one thread the
        attention's batched matrix products for batches under 16), which moves a score by ~1e-7. Every forward
        pass therefore runs on a multiple of :data:`PAD_TO` scalograms (the last one repeated; the transform before
        it needs no padding, see :meth:`models.transforms.cwt.Scalogram.magnitude`), so a window's score does not
        depend on the micro-batch it lands in (``tests/test_detector.py`` holds every split to exact
        equality with one and with two threads). Limit: with three or more threads some batch sizes are split
        across threads differently (four threads: a batch of 80 moved a diffusion z by 6e-5 against the same window
        scored alone), hence :data:`BATCH_INDEPENDENT_THREADS`. Running every pass on exactly 16 scalograms
        removes the effect at any thread count but cost the monitor's detector 40 % of its throughput (5,000
        against 8,100 samples/s), so the threads are capped instead.
        """
        x = np.asarray(windows, dtype=np.float32)
        raw, level, scale = [], [], []
        for i in range(0, x.shape[0], self.config.score_batch):
            part = x[i:i + self.config.score_batch]
            n = part.shape[0]
            # Only the model's batch is padded: the transform gives a window the same image in any batch
            # (models.transforms.cwt), and repeating half-second audio windows cost 4x the audio detector's time.
            scalograms = self.pipeline.scalograms(part)
            padded = -(-n // PAD_TO) * PAD_TO
            if padded != n:
                scalograms = tuple(torch.cat([t, t[-1:].expand(padded - n, *t.shape[1:])]) for t in scalograms)
            batch = self.pipeline.score_scalograms(*scalograms)
            if self.config.channel_errors == "apart":
                raw.append(self._channel_errors(scalograms[0][:n], batch.reconstructions[:n]))
            else:
                raw.append(np.asarray(batch.scores, dtype=np.float64)[:n])
            level.append(np.asarray(batch.extras["level_z"], dtype=np.float64)[:n])
            scale.append(np.asarray(batch.extras["scale_z"], dtype=np.float64)[:n])
        if not raw:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        return np.concatenate(raw), np.concatenate(level), np.concatenate(scale)

    def _channel_errors(self, images: torch.Tensor, reconstructions: np.ndarray | None) -> np.ndarray:
        """(n, channels): each image channel's reconstruction error |x − x̂| reduced as the scorer reduces its map.

        Why apart: the scorer's map averages the channels, and with the waveform channel beside the scalogram the
        waveform's error drowns the scalogram's — on UCR the pooled channel lost the two series the scalogram alone
        decided. Judged apart (each against its own training windows, the larger z: :meth:`score_windows`), each
        channel keeps what it finds (benchmarks/README.md)."""
        if reconstructions is None:
            raise InputError("channel_errors='apart' needs a scorer that reconstructs its input")
        params = self.pipeline.scorer.params  # type: ignore[attr-defined]
        err = (images.float() - torch.as_tensor(np.asarray(reconstructions), dtype=torch.float32)).abs()
        return np.stack([reduce_map(err[:, c], params.reduction, params.top_percent).double().numpy()
                         for c in range(err.shape[1])], axis=1)

    def _raw_diffusion(self, windows: np.ndarray) -> np.ndarray:
        return self._model_scores(windows)[0]

    def score_windows(self, windows: np.ndarray) -> WindowScores:
        """Model-side channels of (n, window) model-input windows (see :meth:`model_input`). A window's scores
        do not depend on the windows it is batched with (fp32 on the CPU, padded batches)."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window:
            raise InputError(f"expected (n, {self.window}) windows, got {x.shape}")
        raw, level, scale = self._model_scores(x)
        s = self.summary
        if raw.ndim == 2:  # channel errors judged apart: the larger of their training z
            z = (raw - np.asarray(s.channel_error_mean)) / np.asarray(s.channel_error_std)
            return WindowScores(diffusion=z.max(axis=1), level=np.abs(level), scale=np.abs(scale))
        assert s.diffusion_mean is not None and s.diffusion_std is not None  # pooled: set by fit and load
        return WindowScores(diffusion=(raw - s.diffusion_mean) / s.diffusion_std, level=np.abs(level),
                            scale=np.abs(scale))

    def scored_in_training(self, x: np.ndarray, base: int, ends: np.ndarray) -> WindowScores:
        """The scores of the leading windows of ``ends`` (cut from ``x``, whose first value is the stream's sample
        ``base``) that the training pass scored on these very samples; empty where there are none (then, and once
        its last window is taken, :attr:`training_pass` is let go)."""
        known = self.training_pass
        if known is None or not ends.size:
            return WindowScores.empty()
        if ends[0] >= self.train_points:
            # A stream past its training part (resumed after it): the pass would be held for the detector's life.
            self.training_pass = None
            return WindowScores.empty()
        m = min(x.size, self.train_points - base)
        if not np.array_equal(x[:m], known.samples[base:base + m]):
            # Another stream's samples (a shared detector's other streams), or a stream whose training part is
            # not what was fitted on: scored by the model, and the pass is not kept for a stream that never comes.
            self.training_pass = None
            return WindowScores.empty()
        n = int(np.searchsorted(ends, base + m))  # windows ending inside the matched samples lie wholly in them
        first = (int(ends[0]) - (self.window - 1)) // self.hop
        if first + n >= len(known.scores):
            self.training_pass = None
        return known.scores.take(slice(first, first + n))

    def inspect(self, window: np.ndarray):
        """The pipeline's full :class:`~models.types.ScoreBatch` of one model-input window (scalogram,
        reconstruction, anomaly map): what the dashboard's window inspector draws."""
        return self.pipeline.score_windows(np.asarray(window, dtype=np.float32)[None, :])

    def new_state(self) -> "DetectorState":
        """A fresh per-stream state (position 0 = the first sample of the training part): for a stream whose next
        samples *are* its training part (the stream this detector is being fitted on, or a new stream of a class
        whose detector is shared, which learns its own reference from its first samples)."""
        from models.detector.online import DetectorState

        return DetectorState(self)

    def begins_training_part(self, samples: np.ndarray) -> bool:
        """Whether ``samples`` begin with this detector's training part (all of it, or the part received so far) —
        then a stream's state starts with :meth:`new_state`, else (its training part is behind it) with
        :meth:`resumed_state`. Decided by the content: the training part's first samples are kept in
        :attr:`reference`. Why not a flag: a lost state comes back by many paths (a restart that finds no state
        file, a detector fitted elsewhere meanwhile, a state file that held only part of a training part whose fit
        finished before the crash), and the samples at hand say which case it is. Without a reference it cannot
        tell and says True: a fresh state, the behaviour before the reference."""
        head = np.asarray((self.reference or {}).get("head", ()), dtype=np.float64)
        if head.size == 0:
            return True
        x = np.asarray(samples, dtype=np.float64).ravel()
        m = min(x.size, head.size)
        return m > 0 and np.array_equal(x[:m], head[:m])

    def resumed_state(self) -> "DetectorState":
        """A per-stream state as it stood right after the training part (position ``train_points``): for a stream
        whose training part is behind it but whose state is gone, so that its live samples are judged, not learnt
        as a reference (see :attr:`reference`). Its first windows reach back into the training part's last samples
        — a seam like any gap in a stream's history."""
        state = self.new_state()
        if self.reference is None:
            log.warning("detector %s was fitted without a reference state (before it was kept): a stream resumed "
                        "on it learns its reference again from the samples that follow", self.version)
            return state
        reference = copy.deepcopy(self.reference)  # loading keeps some arrays: the reference must stay as it is
        try:
            state.channels.load_state_dict(reference["channels"])
            state.fusion.load_state_dict(reference["fusion"])
        except (CheckpointMismatchError, InputError, KeyError, TypeError, ValueError) as exc:
            log.error("detector %s: its reference state does not fit it (%s); a fresh state instead", self.version,
                      exc)
            return self.new_state()
        return state

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> str:
        """Write the detector to ``directory``; returns its version (a hash of every file written)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        summary = asdict(self.summary)
        for name in ("channel_error_mean", "channel_error_std"):
            if not summary[name]:  # saved only where set: a release from before them refuses unknown keys
                del summary[name]
        (directory / FITTED_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
        arrays: dict[str, np.ndarray] = {}
        for i, (name, d) in enumerate(self.discords.items()):
            arrays.update(d.arrays(f"d{i}_"))
        np.savez(directory / DISCORD_FILE, names=np.array(list(self.discords), dtype=str), **arrays)
        if self.reference is not None:
            write_state(directory / REFERENCE_FILE, self.reference)
        else:  # a folder written before must not lend this detector another fit's reference
            (directory / REFERENCE_FILE).unlink(missing_ok=True)
        self.pipeline.save(directory / PIPELINE_DIR)
        self.version = version_of(directory)
        return self.version

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> "FittedDetector":
        directory = Path(directory)
        config = DetectorConfig.load(directory)
        try:
            raw = json.loads((directory / FITTED_FILE).read_text())
            raw["discords"] = tuple(DiscordStats(**d) for d in raw.get("discords", ()))
            for name in ("channel_error_mean", "channel_error_std"):
                if name in raw:
                    raw[name] = tuple(float(v) for v in raw[name])
            summary = FitSummary(**raw)
            if config.channel_errors == "apart" and not (
                    len(summary.channel_error_mean) == len(summary.channel_error_std) >= 2):
                raise ValueError("channel_errors='apart' without each image channel's training statistics")
            if config.channel_errors != "apart" and (summary.diffusion_mean is None or summary.diffusion_std is None):
                raise ValueError("pooled channel errors without their training statistics")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointMismatchError(f"{directory}: unreadable {FITTED_FILE}: {exc}") from None
        with np.load(directory / DISCORD_FILE) as z:
            names = [str(n) for n in z["names"]]
            discords = {name: TrainingDiscord.from_arrays(z, f"d{i}_") for i, name in enumerate(names)}
        pipeline = ScalogramPipeline.load(directory / PIPELINE_DIR, device=device)
        reference = None
        if (directory / REFERENCE_FILE).is_file():
            try:
                reference = read_state(directory / REFERENCE_FILE)
            except CheckpointMismatchError as exc:  # the detector itself is sound: refitting would cost more
                log.error("%s; streams that lose their state on this detector start fresh ones", exc)
        return cls(config, summary, pipeline, discords, version=version_of(directory), reference=reference)


def _new_pipeline(cfg: DetectorConfig, device: str = "cpu") -> ScalogramPipeline:
    from models.unet import UNetConfig

    size = UNetConfig.preset(cfg.unet).sample_size
    train = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                        warmup_steps=min(20, cfg.steps // 10), adversarial_weight=cfg.adversarial_weight)
    scorer = create_scorer(cfg.scorer, unet=cfg.unet, train=train, device=device, seed=1234 + cfg.seed,
                           **dict(cfg.scorer_options))
    normalise = "window" if cfg.scalogram_normalise == "window" else "none"
    return ScalogramPipeline(CWTConfig(n_scales=cfg.n_scales, out_size=tuple(size), normalise=normalise,
                                       waveform_channel=cfg.scalogram_waveform), scorer)


def _nbytes(obj: Any) -> int:
    """Bytes of the arrays and tensors in nested dicts, lists and tuples."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0
