"""Windows in, scores out: the CWT scalogram transform and a scorer as one saved unit.

This is what the streamer and the series benchmarks call. Keeping transform and model together means a saved
pipeline can never be scored with a different scalogram configuration than it was trained on, and its
``version`` (a short hash of the CWT config, the scorer config and the weights) tags every score written to
the store, so an alert can always be traced to the exact model that raised it.

Level and scale: the scalogram is normalised per window (see ``models.transforms.cwt``), so the model is blind
to a window that is shifted or rescaled as a whole. The pipeline therefore keeps the training windows' level
(mean) and log-scale (log std) statistics and reports, per window, ``level_z`` and ``scale_z`` in
``ScoreBatch.extras`` (plus the raw ``level``/``scale``). They are *not* folded into ``scores``: the scores stay
the diffusion model's, and the alerting layer decides whether a level shift alone should alert.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.errors import CheckpointMismatchError, InputError, NotFittedError
from models.scorers import load_scorer
from models.scorers.base import Scorer
from models.transforms.cwt import CWTConfig, Scalogram
from models.types import ScoreBatch

log = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"
SCORER_DIR = "scorer"


@dataclass(frozen=True)
class WindowStats:
    """Training-window statistics of what per-window normalisation removes."""

    length: int
    level_mean: float
    level_std: float
    log_scale_mean: float
    log_scale_std: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _log_scale(scale: torch.Tensor) -> torch.Tensor:
    return torch.log(scale.double().clamp_min(1e-12))


class ScalogramPipeline:
    """``fit_windows`` / ``score_windows`` on (N, L) windows; ``save``/``load``; ``version``."""

    def __init__(self, cwt: CWTConfig | None, scorer: Scorer) -> None:
        self.cwt_config = cwt or CWTConfig()
        self.transform = Scalogram(self.cwt_config)
        self.scorer = scorer
        self.stats: WindowStats | None = None
        self._version: str | None = None

    def __repr__(self) -> str:
        return f"ScalogramPipeline({self.scorer!r}, cwt={self.cwt_config}, version={self._version})"

    @property
    def scorer_name(self) -> str:
        return getattr(self.scorer, "name", type(self.scorer).__name__)

    @property
    def window_length(self) -> int | None:
        return self.stats.length if self.stats else None

    # ------------------------------------------------------------------ fit / score
    def scalograms(self, windows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (N,1,H,W), level (N,), scale (N,)) for windows of the fitted length."""
        x = self.transform.validate(windows)
        if self.stats is not None and x.shape[1] != self.stats.length:
            raise InputError(f"windows have {x.shape[1]} samples; this pipeline was fitted on {self.stats.length}")
        out = self.transform.transform(x)
        return out.images, out.level, out.scale

    def fit_windows(self, windows, reuse: Scorer | None = None) -> "ScalogramPipeline":
        """Train the scorer on normal windows (N, L) and record level/scale statistics.

        ``reuse``: a fitted scorer whose network to take instead of training (see ``DiffusionScorer.fit``).
        """
        x = self.transform.validate(windows)
        out = self.transform.transform(x)
        if out.images.shape[0] < 2:
            raise InputError("need at least 2 normal windows to fit")
        log_scale = _log_scale(out.scale)
        self.stats = WindowStats(
            length=int(x.shape[1]),
            level_mean=float(out.level.double().mean()),
            level_std=float(out.level.double().std().clamp_min(1e-12)),
            log_scale_mean=float(log_scale.mean()),
            log_scale_std=float(log_scale.std().clamp_min(1e-6)),
        )
        if reuse is not None:
            self.scorer.fit(out.images, reuse=reuse)  # type: ignore[call-arg]
        else:
            self.scorer.fit(out.images)
        self._version = None
        return self

    def score_windows(self, windows) -> ScoreBatch:
        """Score (N, L) windows. ``extras``: scalogram, level, scale, level_z, scale_z and the scorer's own."""
        if self.stats is None:
            raise NotFittedError("pipeline is not fitted: call fit_windows() or ScalogramPipeline.load()")
        return self.score_scalograms(*self.scalograms(windows))

    def score_scalograms(self, images: torch.Tensor, level: torch.Tensor, scale: torch.Tensor) -> ScoreBatch:
        """Score what :meth:`scalograms` made: the second half of :meth:`score_windows`, for callers that batch
        the model differently from the transform (:class:`models.detector.fitted.FittedDetector` pads only the
        model's batches)."""
        if self.stats is None:
            raise NotFittedError("pipeline is not fitted: call fit_windows() or ScalogramPipeline.load()")
        batch = self.scorer.score(images)
        s = self.stats
        extras = dict(batch.extras)
        extras.update(
            scalogram=images.numpy(),
            level=level.double().numpy(),
            scale=scale.double().numpy(),
            level_z=((level.double() - s.level_mean) / s.level_std).numpy(),
            scale_z=((_log_scale(scale) - s.log_scale_mean) / s.log_scale_std).numpy(),
        )
        return ScoreBatch(scores=batch.scores, maps=batch.maps, reconstructions=batch.reconstructions,
                          extras=extras)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        if self.stats is None:
            raise NotFittedError("cannot save an unfitted pipeline")
        return {"cwt": self.cwt_config.to_dict(), "window_stats": self.stats.to_dict(),
                "scorer": self.scorer_name, "scorer_dir": SCORER_DIR}

    def save(self, directory: str | Path) -> str:
        """Write ``pipeline.json`` and ``scorer/`` (weights + config); returns the version id."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.scorer.save(directory / SCORER_DIR)
        (directory / PIPELINE_FILE).write_text(json.dumps(self._config(), indent=2, sort_keys=True))
        self._version = version_of(directory)
        log.info("saved %s pipeline to %s (version %s)", self.scorer_name, directory, self._version)
        return self._version

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> "ScalogramPipeline":
        directory = Path(directory)
        path = directory / PIPELINE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {PIPELINE_FILE} in {directory}: not a saved ScalogramPipeline")
        config = json.loads(path.read_text())
        try:
            cwt = CWTConfig.from_dict(config["cwt"])
            stats = WindowStats(**config["window_stats"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointMismatchError(f"{path} is not a valid pipeline config: {exc}") from None
        scorer = load_scorer(directory / config.get("scorer_dir", SCORER_DIR), device=device)
        if getattr(scorer, "name", None) != config.get("scorer"):
            raise CheckpointMismatchError(
                f"{directory}: pipeline names scorer {config.get('scorer')!r}, checkpoint holds {scorer.name!r}"
            )
        shape = getattr(scorer, "input_shape", None)
        made = (1 + int(cwt.waveform_channel), *cwt.out_size)
        if shape is not None and tuple(shape) != made:
            raise CheckpointMismatchError(f"{directory}: scorer expects {tuple(shape)} inputs, CWT makes {made}")
        pipe = cls(cwt, scorer)
        pipe.stats = stats
        pipe._version = version_of(directory)
        return pipe

    @property
    def version(self) -> str:
        """Short id of the saved model: 12 hex digits of a SHA-256 over its files. Saved or loaded only."""
        if self._version is None:
            raise NotFittedError("version exists once the pipeline is saved or loaded")
        return self._version


def version_of(directory: str | Path) -> str:
    """12-hex-digit SHA-256 of a saved pipeline's files (pipeline.json, scorer config and weights)."""
    directory = Path(directory)
    h = hashlib.sha256()
    files = [directory / PIPELINE_FILE] + sorted((directory / SCORER_DIR).glob("*"))
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]
