"""Machine-audio benchmark (MIMII fan id_00): clip-level AUROC of scalogram scorers and a band-energy baseline.

Protocol (deterministic, no randomness in the split):

* Clips are sorted by file name. The first half of the ``normal/`` clips (00000000–00000009 for the shared
  set) is the training set; the other normal clips and *all* ``abnormal/`` clips are the test set
  (10 normal + 20 abnormal). Labels come from the folder (``labels.csv`` agrees).
* Each clip (16 kHz mono) is cut into windows of ``window`` samples: training windows do not overlap
  (``hop = window``: bounds the memory of the CWT at fit time), test windows overlap by half.
* Windows → CWT log-magnitude scalograms (Morlet, ``n_scales`` geometric scales from 2 samples = 8 kHz down to
  half a window) through :class:`models.pipeline.ScalogramPipeline` → diffusion scorer → one score per window.
* Clip score = mean of the top ``top_fraction`` of its window scores: a fault that shows in a fraction of the
  clip (a rattle, a periodic imbalance beat) is not averaged away, one odd window does not decide alone.
* Baseline ``band_knn``: per window, the mean log-magnitude of every CWT scale *without* per-window
  normalisation (so loudness counts), standardised with training statistics; window score = mean Euclidean
  distance to the 5 nearest training windows; same clip aggregation.

``lam = 1.0``: the recon-family scorers use their scalogram term only. Their perceptual term runs an
ImageNet CNN on every 32×32 window (upsampled to 64 px), which costs most of the scoring time on two cores
for a network never trained on scalograms; ``AudioBenchConfig(lam=0.5)`` restores the scorers' default.

What the diffusion scorers see is normalised per window (shape, not loudness — see ``models.transforms.cwt``);
the baseline sees absolute band levels. Both numbers are reported so the difference is visible.

``<scorer>+level`` (e.g. ``recon+level``) scores windows the way the live monitor does (``docs/streaming.md``,
"level/scale-shift likelihood"): beside the diffusion score it uses the pipeline's ``level_z``/``scale_z`` (how
far a window's mean and log-std are from the training windows'). Each channel is a z-score against the
*training* windows only and is taken two-sided — a window the model reconstructs unusually *well* is as
unlike the training data as one it reconstructs badly — and the window score is the largest of
``|z_diffusion|``, ``|level_z|``, ``|scale_z|`` (the monitor's max), then the same clip aggregation. The plain
``<scorer>`` run is computed from the same fitted model and reported beside it, so what the diffusion model adds
stays visible; ``details`` also carry the clip AUROC of the level/scale channel alone and of the two-sided
diffusion z alone. Caveat: the diffusion score's training statistics are in-sample (the model was fitted on those
windows), so held-out normal windows sit slightly above them.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import InputError
from models.metrics.classification import roc_auc

log = logging.getLogger(__name__)

BASELINE = "band_knn"
DIFFUSION_SCORERS = ("recon", "trend", "kl", "dynamic", "adversarial")
LEVEL_SUFFIX = "+level"
LEVEL_VARIANTS = tuple(n + LEVEL_SUFFIX for n in DIFFUSION_SCORERS)
PROFILE_SUFFIX = "+profile"
PROFILE_VARIANTS = tuple(n + PROFILE_SUFFIX for n in DIFFUSION_SCORERS)


@dataclass(frozen=True)
class AudioBenchConfig:
    """Everything that decides the numbers; saved into ``audio.json``."""

    window: int = 2048
    test_hop: int = 1024
    n_scales: int = 32
    image_size: int = 32
    top_fraction: float = 0.1
    knn_k: int = 5
    train_steps: int = 1000
    train_batch: int = 64
    lam: float = 1.0
    device: str = "auto"
    score_chunk: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < 64 or self.test_hop < 1:
            raise ValueError("window must be >= 64 samples and test_hop >= 1")
        if not 0 < self.top_fraction <= 1:
            raise ValueError("top_fraction must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cwt(self, normalise: str = "window"):
        from models.transforms.cwt import CWTConfig

        return CWTConfig(n_scales=self.n_scales, out_size=(self.image_size, self.image_size), min_period=2.0,
                         normalise=normalise)


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int  # 1 = abnormal

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


@dataclass(frozen=True)
class AudioSplit:
    train: list[Clip]
    test: list[Clip]

    def describe(self) -> dict[str, list[str]]:
        return {"train": [c.name for c in self.train], "test": [c.name for c in self.test]}


def split_clips(data: str | Path) -> AudioSplit:
    """The deterministic split described in the module docstring. InputError if a folder is missing/empty."""
    root = Path(data)
    normal = sorted((root / "normal").glob("*.wav"))
    abnormal = sorted((root / "abnormal").glob("*.wav"))
    if len(normal) < 2:
        raise InputError(f"{root}/normal needs at least 2 .wav clips (found {len(normal)})")
    if not abnormal:
        raise InputError(f"{root}/abnormal holds no .wav clips")
    half = len(normal) // 2
    train = [Clip(p, 0) for p in normal[:half]]
    test = [Clip(p, 0) for p in normal[half:]] + [Clip(p, 1) for p in abnormal]
    return AudioSplit(train, test)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 in [-1, 1] and the sample rate; multi-channel files keep channel 0."""
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if data.ndim == 2:
        data = data[:, 0]
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32), int(rate)


def windows_of(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(n, window) frames; a clip shorter than one window is an InputError."""
    if signal.size < window:
        raise InputError(f"clip of {signal.size} samples is shorter than one window ({window})")
    n = 1 + (signal.size - window) // hop
    idx = np.arange(window)[None, :] + hop * np.arange(n)[:, None]
    return signal[idx]


def clip_score(window_scores: np.ndarray, top_fraction: float) -> float:
    """Mean of the highest ``top_fraction`` of a clip's window scores (at least one)."""
    k = max(1, int(math.ceil(window_scores.size * top_fraction)))
    return float(np.sort(window_scores)[-k:].mean())


# ---------------------------------------------------------------------------------------------- detectors
class BandEnergyKNN:
    """Baseline: kNN distance of per-window mean log band energies (absolute levels) to training windows."""

    name = BASELINE

    def __init__(self, config: AudioBenchConfig) -> None:
        from models.transforms.cwt import Scalogram

        self.config = config
        self.transform = Scalogram(config.cwt(normalise="none"))
        self.bank: torch.Tensor | None = None

    def features(self, windows: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(windows), self.config.score_chunk):
            img = self.transform(windows[i : i + self.config.score_chunk])  # (n, 1, S, T) log|W|
            out.append(img[:, 0].mean(dim=-1))
        return torch.cat(out).double()

    def fit(self, windows: np.ndarray) -> "BandEnergyKNN":
        f = self.features(windows)
        self.mean, self.std = f.mean(dim=0), f.std(dim=0).clamp_min(1e-6)
        self.bank = (f - self.mean) / self.std
        return self

    def score(self, windows: np.ndarray) -> np.ndarray:
        assert self.bank is not None
        z = (self.features(windows) - self.mean) / self.std
        d = torch.cdist(z, self.bank)
        k = min(self.config.knn_k, self.bank.shape[0])
        return d.topk(k, dim=1, largest=False).values.mean(dim=1).numpy()


class PipelineDetector:
    """A diffusion scorer behind :class:`models.pipeline.ScalogramPipeline` (window-normalised scalograms)."""

    def __init__(self, name: str, config: AudioBenchConfig, progress: bool) -> None:
        from models.pipeline import ScalogramPipeline
        from models.scorers import create_scorer
        from models.training import TrainConfig

        self.name, self.config = name, config
        train = TrainConfig(steps=config.train_steps, batch_size=config.train_batch, lr=1e-3, seed=config.seed)
        opts = {"lam": config.lam} if name in ("recon", "adversarial", "kl", "dynamic") else {}
        scorer = create_scorer(name, unet="series", train=train, device=config.device, progress=progress, **opts)
        self.pipeline = ScalogramPipeline(config.cwt(), scorer)

    def fit(self, windows: np.ndarray) -> "PipelineDetector":
        self.pipeline.fit_windows(windows)
        return self

    def score(self, windows: np.ndarray) -> np.ndarray:
        return self.score_with_shift(windows).scores

    def score_with_shift(self, windows: np.ndarray) -> "WindowScores":
        """Diffusion scores plus the pipeline's level/scale z-scores (training-window statistics) and the
        per-scale profiles of the anomaly map and of the scalogram itself."""
        parts = [self.pipeline.score_windows(windows[i : i + self.config.score_chunk])
                 for i in range(0, len(windows), self.config.score_chunk)]
        return WindowScores(
            np.concatenate([np.asarray(p.scores, dtype=np.float64) for p in parts]),
            np.concatenate([np.asarray(p.extras["level_z"], dtype=np.float64) for p in parts]),
            np.concatenate([np.asarray(p.extras["scale_z"], dtype=np.float64) for p in parts]),
            np.concatenate([np.asarray(p.maps, dtype=np.float64).mean(axis=2) for p in parts]),
            np.concatenate([np.asarray(p.extras["scalogram"], dtype=np.float64).reshape(
                len(p.scores), self.config.image_size, -1).mean(axis=2) for p in parts]),
        )


@dataclass(frozen=True)
class WindowScores:
    """Per-window diffusion score and the level/scale channel the per-window normalisation hides."""

    scores: np.ndarray
    level_z: np.ndarray
    scale_z: np.ndarray
    error_profile: np.ndarray  # (N, scales): the anomaly map averaged over time — *where in frequency* it fails
    scalogram_profile: np.ndarray  # (N, scales): the per-window-normalised scalogram averaged over time

    FIELDS = ("scores", "level_z", "scale_z", "error_profile", "scalogram_profile")

    def shift(self) -> np.ndarray:
        """The monitor's level/scale-shift value: max(|level_z|, |scale_z|)."""
        return np.maximum(np.abs(self.level_z), np.abs(self.scale_z))


@dataclass(frozen=True)
class LevelScaleCombiner:
    """Window score = max(|diffusion z|, |level_z|, |scale_z|), every z against *training* windows.

    Why z-scores: the diffusion score and the level/scale shift live on unrelated scales; standardising each
    on the normal training windows puts them on one ("how many training standard deviations away") so the
    monitor's max is meaningful. Why two-sided: on MIMII fan the faulty clips are more tonal and *easier* to
    reconstruct, so an unusually low diffusion score is as much a departure from normal as a high one.
    The statistics are fitted from training windows only and frozen: test windows never move them.
    """

    score_mean: float
    score_std: float

    @classmethod
    def fit(cls, train_scores: np.ndarray) -> "LevelScaleCombiner":
        s = np.asarray(train_scores, dtype=np.float64)
        if s.size < 2 or not np.all(np.isfinite(s)):
            raise InputError("need at least 2 finite training-window scores to standardise")
        return cls(float(s.mean()), float(max(s.std(ddof=1), 1e-12)))

    def score_z(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.score_mean) / self.score_std

    def combine(self, windows: WindowScores) -> np.ndarray:
        return np.maximum(np.abs(self.score_z(windows.scores)), windows.shift())

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def base_scorer(name: str) -> str:
    """``recon+level`` / ``recon+profile`` → ``recon``; a plain name is its own base."""
    for suffix in (LEVEL_SUFFIX, PROFILE_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class ProfileKNN:
    """Mean distance of a z-scored per-scale profile to its k nearest training profiles.

    Why: the size of the reconstruction error measures how *noisy* a window is (a tonal fault is easier to
    reconstruct than healthy broadband noise, so the plain score is inverted on MIMII); *which frequencies* the
    model fails at is a pattern, and a faulty machine's pattern is unlike every training window's.
    """

    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, profiles: np.ndarray) -> "ProfileKNN":
        f = torch.as_tensor(profiles, dtype=torch.float64)
        self.mean, self.std = f.mean(dim=0), f.std(dim=0).clamp_min(1e-6)
        self.bank = (f - self.mean) / self.std
        return self

    def score(self, profiles: np.ndarray) -> np.ndarray:
        z = (torch.as_tensor(profiles, dtype=torch.float64) - self.mean) / self.std
        d = torch.cdist(z, self.bank)
        return d.topk(min(self.k, self.bank.shape[0]), dim=1, largest=False).values.mean(dim=1).numpy()


# ---------------------------------------------------------------------------------------------- run
@dataclass
class DetectorRun:
    name: str
    clip_scores: np.ndarray
    auroc: float
    fit_seconds: float
    score_seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AudioReport:
    data: Path
    config: AudioBenchConfig
    split: AudioSplit
    runs: list[DetectorRun]
    sample_rate: int
    n_train_windows: int
    n_test_windows: int

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.split.test])


def resolve_detectors(names: list[str] | None) -> list[str]:
    """Default: the baseline and ``recon``; ``all`` = baseline + every diffusion scorer.

    ``<scorer>+level`` brings its plain ``<scorer>`` with it (same fitted model, reported beside it).
    """
    if not names:
        return [BASELINE, "recon"]
    known = (BASELINE, *DIFFUSION_SCORERS, *LEVEL_VARIANTS, *PROFILE_VARIANTS)
    out: list[str] = []
    for name in names:
        for n in ((BASELINE, *DIFFUSION_SCORERS) if name == "all" else (name,)):
            if n not in known:
                raise InputError(f"unknown scorer {n!r}; choose from {BASELINE}, {', '.join(DIFFUSION_SCORERS)}, "
                                 f"<scorer>{LEVEL_SUFFIX} (e.g. recon{LEVEL_SUFFIX}), <scorer>{PROFILE_SUFFIX}, all")
            if n != base_scorer(n) and base_scorer(n) not in out:
                out.append(base_scorer(n))
            if n not in out:
                out.append(n)
    if BASELINE not in out:
        out.insert(0, BASELINE)  # the baseline always runs beside the asked scorers
    return out


def run_audio(data: str | Path, names: list[str], config: AudioBenchConfig | None = None,
              progress: bool = True) -> AudioReport:
    from tqdm.auto import tqdm

    config = config or AudioBenchConfig()
    torch.manual_seed(config.seed)
    split = split_clips(data)
    rates = set()
    train_w, test_w, owner = [], [], []
    for clip in tqdm(split.train + split.test, desc="reading clips", disable=not progress, leave=False):
        sig, rate = read_wav(clip.path)
        rates.add(rate)
        if clip in split.train:
            train_w.append(windows_of(sig, config.window, config.window))
        else:
            w = windows_of(sig, config.window, config.test_hop)
            test_w.append(w)
            owner.append(len(w))
    if len(rates) != 1:
        raise InputError(f"clips have different sample rates: {sorted(rates)}")
    train_windows = np.concatenate(train_w)
    test_windows = np.concatenate(test_w)
    bounds = np.cumsum([0, *owner])
    labels = np.array([c.label for c in split.test])
    window_labels = np.repeat(labels, owner)

    def clip_scores_of(scores: np.ndarray) -> np.ndarray:
        return np.array([clip_score(scores[a:b], config.top_fraction) for a, b in zip(bounds[:-1], bounds[1:])])

    def score_chunked(det, windows: np.ndarray, desc: str) -> WindowScores:
        parts = [det.score_with_shift(windows[i : i + config.score_chunk])
                 for i in tqdm(range(0, len(windows), config.score_chunk), desc=desc, disable=not progress,
                               leave=False)]
        return WindowScores(*(np.concatenate([getattr(p, f) for p in parts]) for f in WindowScores.FIELDS))

    fitted: dict[str, tuple[PipelineDetector, WindowScores, float, float]] = {}  # one model per base scorer
    runs: list[DetectorRun] = []
    for name in names:
        if name == BASELINE:
            t0 = time.perf_counter()
            det = BandEnergyKNN(config).fit(train_windows)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores = np.concatenate([
                det.score(test_windows[i : i + config.score_chunk])
                for i in tqdm(range(0, len(test_windows), config.score_chunk), desc=f"scoring {name}",
                              disable=not progress, leave=False)
            ])
            clips = clip_scores_of(scores)
            details = {"window_auroc": roc_auc(window_labels, scores), "k": config.knn_k}
            runs.append(DetectorRun(name, clips, roc_auc(labels, clips), fit_s, time.perf_counter() - t0, details))
            log.info("%s: clip AUROC %.3f", name, runs[-1].auroc)
            continue
        base = base_scorer(name)
        if base not in fitted:
            t0 = time.perf_counter()
            pdet = PipelineDetector(base, config, progress).fit(train_windows)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            test_scores = score_chunked(pdet, test_windows, f"scoring {base}")
            fitted[base] = (pdet, test_scores, fit_s, time.perf_counter() - t0)
        pdet, test_scores, fit_s, score_s = fitted[base]
        sc = pdet.pipeline.scorer
        if name.endswith(PROFILE_SUFFIX):
            t0 = time.perf_counter()
            train_scores = score_chunked(pdet, train_windows, f"scoring {base} on training windows")
            scores = ProfileKNN(config.knn_k).fit(train_scores.error_profile).score(test_scores.error_profile)
            control = ProfileKNN(config.knn_k).fit(train_scores.scalogram_profile).score(
                test_scores.scalogram_profile)
            score_s += time.perf_counter() - t0
            clips = clip_scores_of(scores)
            details = {
                "combination": f"mean distance of the z-scored per-scale error profile (anomaly map of {base} "
                               f"averaged over time) to its {config.knn_k} nearest training windows'; same fitted "
                               f"{base} model as the '{base}' entry",
                "window_auroc": roc_auc(window_labels, scores),
                "scalogram_profile_knn_auroc": roc_auc(labels, clip_scores_of(control)),
            }
        elif name == base:
            scores = test_scores.scores
            details = {"params": sc.params.to_dict(), "unet": sc.unet_config.to_dict(),
                       "train": sc.train_config.to_dict(), "train_seconds": sc.train_seconds,
                       "window_auroc": roc_auc(window_labels, scores)}
            clips = clip_scores_of(scores)
        else:
            t0 = time.perf_counter()
            train_scores = score_chunked(pdet, train_windows, f"scoring {base} on training windows")
            combiner = LevelScaleCombiner.fit(train_scores.scores)
            scores = combiner.combine(test_scores)
            score_s += time.perf_counter() - t0  # the extra pass over the training windows
            clips = clip_scores_of(scores)
            details = {
                "combination": f"max(|z({base})|, |level_z|, |scale_z|), z against training windows; "
                               f"same fitted {base} model as the '{base}' entry",
                "standardisation": {**combiner.to_dict(), **pdet.pipeline.stats.to_dict()},  # type: ignore
                "window_auroc": roc_auc(window_labels, scores),
                "level_scale_only_auroc": roc_auc(labels, clip_scores_of(test_scores.shift())),
                "diffusion_abs_z_only_auroc": roc_auc(labels, clip_scores_of(np.abs(combiner.score_z(
                    test_scores.scores)))),
                "train_abs_z_diffusion_p99": float(np.quantile(np.abs(combiner.score_z(train_scores.scores)), 0.99)),
                "train_shift_p99": float(np.quantile(train_scores.shift(), 0.99)),
            }
        auc = roc_auc(labels, clips)
        log.info("%s: clip AUROC %.3f", name, auc)
        runs.append(DetectorRun(name, clips, auc, fit_s, score_s, details))
    return AudioReport(Path(data), config, split, runs, rates.pop(), len(train_windows), len(test_windows))


def report_payload(report: AudioReport, run_info: dict[str, Any], plots: list[Path]) -> dict[str, Any]:
    cfg = report.config
    return {
        "benchmark": "audio",
        "dataset": report.data.name,
        "data": str(report.data.resolve()),
        "run": run_info,
        "protocol": {
            "split": "clips sorted by name; first half of normal/ = train, rest of normal/ + all abnormal/ = test",
            "train_clips": [c.name for c in report.split.train],
            "test_clips": [c.name for c in report.split.test],
            "windows": f"{cfg.window} samples ({1000 * cfg.window / report.sample_rate:.0f} ms at "
                       f"{report.sample_rate} Hz); train hop {cfg.window}, test hop {cfg.test_hop}",
            "scalogram": f"Morlet CWT, {cfg.n_scales} scales, log-magnitude, {cfg.image_size}x{cfg.image_size}",
            "clip_score": f"mean of the top {cfg.top_fraction:.0%} window scores",
            "metric": "ROC AUC over test clips (abnormal = 1)",
            "level_variants": "<scorer>+level: window score = max(|z of the diffusion score|, |level_z|, "
                              "|scale_z|), each z against the training windows only (the live monitor's max), "
                              "same clip aggregation; <scorer> alone is the pure diffusion score",
            "baseline": "band_knn: per-window mean log band energy (no per-window normalisation), z-scored with "
                        f"training statistics, mean distance to the {cfg.knn_k} nearest training windows",
        },
        "config": cfg.to_dict(),
        "n_train_windows": report.n_train_windows,
        "n_test_windows": report.n_test_windows,
        "targets": {"auroc": 0.85, "goal": 0.95},
        "auroc": {r.name: round(r.auroc, 4) for r in report.runs},
        "scorers": {r.name: {"auroc": r.auroc, "fit_seconds": round(r.fit_seconds, 2),
                             "score_seconds": round(r.score_seconds, 2), **r.details} for r in report.runs},
        "clip_scores": {r.name: {c.name: float(s) for c, s in zip(report.split.test, r.clip_scores)}
                        for r in report.runs},
        "plots": [str(p) for p in plots],
    }


def write_clip_scores(report: AudioReport, path: Path) -> Path:
    """``clip,label,<scorer>...`` one row per test clip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(["clip", "label", *(r.name for r in report.runs)])]
    for i, c in enumerate(report.split.test):
        lines.append(",".join([c.name, str(c.label), *(f"{r.clip_scores[i]:.6g}" for r in report.runs)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_audio(report: AudioReport, path: Path) -> Path:
    """ROC curves (left) and clip scores by label per scorer (right, each scorer min-max scaled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.metrics.classification import roc_curve

    labels = report.labels
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for j, r in enumerate(report.runs):
        fpr, tpr, _ = roc_curve(labels, r.clip_scores)
        axes[0].plot(fpr, tpr, lw=1.5, label=f"{r.name} (AUC {r.auroc:.3f})")
        s = r.clip_scores
        s = (s - s.min()) / max(s.max() - s.min(), 1e-12)
        jitter = np.linspace(-0.15, 0.15, len(s))
        axes[1].scatter(j + jitter[labels == 0], s[labels == 0], s=14, c="tab:blue", label="normal" if j == 0 else None)
        axes[1].scatter(j + jitter[labels == 1], s[labels == 1], s=14, c="tab:red", marker="x",
                        label="abnormal" if j == 0 else None)
    axes[0].plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    axes[0].set_title(f"{report.data.name}: clip-level ROC")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[1].set_xticks(range(len(report.runs)), [r.name for r in report.runs], fontsize=8)
    axes[1].set_ylabel("clip score (min-max scaled per scorer)")
    axes[1].set_title("test clip scores")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
