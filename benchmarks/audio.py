"""Machine-audio benchmark (MIMII fan id_00): clip-level AUROC of scalogram scorers and a band-energy baseline.

Protocol (deterministic, no randomness in the split):

* Clips are sorted by file name. The first half of the ``normal/`` clips (00000000–00000009 for the shared
  set) is the training set; the other normal clips and *all* ``abnormal/`` clips are the test set
  (10 normal + 20 abnormal). Labels come from the folder (``labels.csv`` agrees).
* **The product** (``scalowatch``, the monitor's ``audio`` preset, :mod:`models.detector`): the detector is fitted
  on the training clips joined end to end (the training part of one "stream"); the test clips then follow in the
  split's order (normal, then abnormal: a machine that develops a fault), back to back as that stream continues —
  what a monitor fed the same recordings as one stream computes (``--via monitor`` does exactly that) — and each
  window end gets the detector's score (diffusion and scale channels, each calibrated by its own likelihood
  against the training part, the larger wins). Clip score = mean of the top ``top_fraction`` of those scores: a
  fault that shows in a fraction of the clip is not averaged away, one odd window does not decide alone. The same
  run also reports, from the same fit and the same channel values, the detector *without* its diffusion channel
  and the diffusion channel *alone* (``details``), so what the diffusion model adds stays visible.
  ``recon``/``kl``/``trend``/``dynamic``/``adversarial`` are the same detector with that scorer.
* Baseline ``band_knn``: per window, the mean log-magnitude of every CWT scale *without* per-window
  normalisation (so loudness counts), standardised with training statistics; window score = mean Euclidean
  distance to the 5 nearest training windows; same clip aggregation.

The ``+profile`` variants (kNN on the diffusion model's per-frequency error profile) measured 0.420 on MIMII fan
id_00 and were removed (benchmarks/README.md keeps the record); so was the separate ``+level`` combination, which
the detector's own level/scale channel replaces.
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

from benchmarks.detectors import VARIANTS
from models.errors import InputError
from models.metrics.classification import roc_auc

log = logging.getLogger(__name__)

BASELINE = "band_knn"
PRODUCT = "scalowatch"
DIFFUSION_SCORERS = ("recon", "trend", "kl", "dynamic", "adversarial")
VIAS = ("detector", "monitor")
MONITOR_STREAM = "bench-audio"
STREAM_CHUNK = 160_000
"""Samples the detector path is fed at a time (10 s at 16 kHz): its memory stays that of a chunk."""


@dataclass(frozen=True)
class AudioBenchConfig:
    """Everything that decides the numbers; saved into ``audio.json``."""

    window: int | None = None
    """Window length in samples (None: the ``audio`` preset's, what the monitor runs)."""
    test_hop: int | None = None
    """Samples between window ends (None: the preset's hop when ``window`` is the preset's, else half the window)."""
    n_scales: int = 32
    image_size: int = 32
    top_fraction: float = 0.1
    knn_k: int = 5
    train_steps: int | None = None
    """Detector training steps (None: the audio preset's)."""
    device: str = "auto"
    score_chunk: int = 256
    seed: int = 0
    gain_normalise: bool = False
    """Scale every clip to unit RMS before anything sees it: what is left for a detector is the sound, not how
    loud it is (issue 10 asks the diffusion channel to hold on such input)."""

    def __post_init__(self) -> None:
        from models.detector import PRESETS

        audio = PRESETS["audio"].config
        if self.window is None:
            object.__setattr__(self, "window", audio.window)
            if self.test_hop is None:
                object.__setattr__(self, "test_hop", audio.hop)
        if self.test_hop is None:
            object.__setattr__(self, "test_hop", max(1, self.window // 2))
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
    """Mono samples in [-1, 1] and the sample rate, decoded as the monitor decodes audio (streamer.replay)."""
    from streamer.replay import ReplayError
    from streamer.replay import read_wav as read_source

    try:
        src = read_source(Path(path))
    except (ReplayError, OSError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    return src.mono().astype(np.float32), int(src.rate)


def windows_of(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(n, window) frames; a clip shorter than one window is an InputError."""
    if signal.size < window:
        raise InputError(f"clip of {signal.size} samples is shorter than one window ({window})")
    n = 1 + (signal.size - window) // hop
    idx = np.arange(window)[None, :] + hop * np.arange(n)[:, None]
    return signal[idx]


def unit_rms(signal: np.ndarray) -> np.ndarray:
    """The clip scaled to unit RMS (a silent clip stays as it is)."""
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))
    return (signal / rms).astype(signal.dtype) if rms > 0 else signal


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


def preset_options(name: str) -> dict[str, Any]:
    """Detector options of a product name: ``recon`` → the scorer, ``scalowatch:level_weight=0`` → that setting."""
    from benchmarks.detectors import split_spec
    from models.detector import preset

    base, options, _ = split_spec(name)
    if base != PRODUCT:
        options = {"scorer": base, **options}
    try:
        preset("audio", **options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: {exc}") from None
    return options


class ProductDetector:
    """The monitor's detector (``audio`` preset) fitted on the training clips as one stream's training part."""

    def __init__(self, name: str, config: AudioBenchConfig) -> None:
        from models.detector import preset

        options: dict[str, Any] = {"window": config.window, "hop": config.test_hop, "seed": config.seed}
        if config.train_steps is not None:
            options["steps"] = config.train_steps
        options.update(preset_options(name))
        self.name, self.config, self.options = name, config, options
        self.detector_config = preset("audio", **options)

    def fit(self, train_signal: np.ndarray) -> "ProductDetector":
        from models.detector import FittedDetector

        self.fitted = FittedDetector.fit(train_signal, self.detector_config, device=self.config.device,
                                         reference=False)  # the stream is scored from its first sample
        return self

    def score_stream(self, train_signal: np.ndarray, clips: list[np.ndarray],
                     progress: bool = False) -> dict[str, list[np.ndarray]]:
        """Per-window scores of each clip, the clips played back to back after the training part as one stream
        (what a monitor fed the same recordings does), for every ablation variant (the same channel values fused
        with all channels, without the diffusion channel, and with it alone): the detector's own
        :func:`~models.detector.score_series`, fed ten seconds at a time as a monitor feeds it."""
        from tqdm.auto import tqdm

        from models.detector.online import ablation_variants, score_series

        stream = np.concatenate([train_signal, *clips])
        with tqdm(total=stream.size, unit="sample", desc=f"scoring {self.name}", disable=not progress,
                  leave=False) as bar:
            out = score_series(self.fitted, stream, ablation_variants(self.fitted), chunk=STREAM_CHUNK,
                               progress=lambda done: bar.update(done - bar.n))
        bounds = clip_bounds(train_signal, clips)
        return {variant: per_clip(d.positions, d.scores, bounds) for variant, d in out.items()}

    def score_stream_via_monitor(self, train_signal: np.ndarray, clips: list[np.ndarray], rate: int,
                                 progress: bool = False) -> list[np.ndarray]:
        """The same stream — training clips, then the test clips — replayed as PCM chunks through the monitor's
        processing path (``--via monitor``), which fits its own detector on the training part: each clip's window
        scores as the store holds them."""
        import tempfile

        from scipy.io import wavfile

        from benchmarks.via_monitor import run_through_monitor
        from streamer.replay import read_wav as read_source

        signal = np.concatenate([train_signal, *clips]).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="scalowatch-audio-") as tmp:
            path = Path(tmp) / "stream.wav"
            wavfile.write(path, rate, signal)  # float32 PCM: the monitor decodes the bench's samples exactly
            source = read_source(path, stream=MONITOR_STREAM)
            stored = run_through_monitor([source], {MONITOR_STREAM: int(train_signal.size)}, preset="audio",
                                         options=self.options, sample_rate=rate, device=self.config.device,
                                         progress=progress)[MONITOR_STREAM]
        # A point carries its window's last sample's time (start + index·10⁹ // rate): back to sample indices.
        elapsed = stored.time_ns - source.first_ns()
        index = -((-elapsed * rate) // 1_000_000_000)
        return per_clip(index, stored.score, clip_bounds(train_signal, clips))


def clip_bounds(train_signal: np.ndarray, clips: list[np.ndarray]) -> np.ndarray:
    """Sample positions where each test clip starts in the stream, and where the last one ends."""
    return np.cumsum([train_signal.size, *(c.size for c in clips)])


def per_clip(positions: np.ndarray, scores: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    """The scores of the windows that end inside each clip (positions: a window's last sample in the stream)."""
    return [scores[(positions >= lo) & (positions < hi)] for lo, hi in zip(bounds[:-1], bounds[1:])]


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
    """Default: the baseline and the product; ``all`` = baseline + the product with every diffusion scorer."""
    if not names:
        return [BASELINE, PRODUCT]
    from benchmarks.detectors import split_spec

    known = (BASELINE, PRODUCT, *DIFFUSION_SCORERS)
    out: list[str] = []
    for name in names:
        for n in ((BASELINE, PRODUCT, *DIFFUSION_SCORERS[1:]) if name == "all" else (name,)):
            base, options, _ = split_spec(n)
            if base not in known or (options and base == BASELINE):
                raise InputError(f"unknown scorer {n!r}; choose from {', '.join(known)} or all "
                                 "(a scorer name is the product detector with that scorer; 'name:k=v,...' "
                                 "passes detector options, e.g. scalowatch:level_weight=0)")
            if options:
                preset_options(n)  # refuse unknown detector settings before anything is read
            if n not in out:
                out.append(n)
    if BASELINE not in out:
        out.insert(0, BASELINE)  # the baseline always runs beside the asked detectors
    return out


def run_audio(data: str | Path, names: list[str], config: AudioBenchConfig | None = None,
              progress: bool = True, via: str = "detector") -> AudioReport:
    """``via="monitor"``: the product's clips scored through the monitor's processing path instead of the
    detector's (the same numbers; no ablation — the monitor runs the product only)."""
    from tqdm.auto import tqdm

    if via not in VIAS:
        raise InputError(f"via must be one of {', '.join(VIAS)}, not {via!r}")
    config = config or AudioBenchConfig()
    torch.manual_seed(config.seed)
    split = split_clips(data)
    rates = set()
    signals: dict[Clip, np.ndarray] = {}
    for clip in tqdm(split.train + split.test, desc="reading clips", disable=not progress, leave=False):
        sig, rate = read_wav(clip.path)
        rates.add(rate)
        if config.gain_normalise:
            sig = unit_rms(sig)
        signals[clip] = sig
    if len(rates) != 1:
        raise InputError(f"clips have different sample rates: {sorted(rates)}")
    labels = np.array([c.label for c in split.test])
    train_signal = np.concatenate([signals[c] for c in split.train])
    n_train_windows = sum(len(windows_of(signals[c], config.window, config.window)) for c in split.train)
    test_windows = [windows_of(signals[c], config.window, config.test_hop) for c in split.test]

    runs: list[DetectorRun] = []
    for name in names:
        t0 = time.perf_counter()
        if name == BASELINE:
            det = BandEnergyKNN(config).fit(np.concatenate([windows_of(signals[c], config.window, config.window)
                                                            for c in split.train]))
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            per_clip = [det.score(w) for w in tqdm(test_windows, desc=f"scoring {name}", disable=not progress,
                                                   leave=False)]
            clips = np.array([clip_score(s, config.top_fraction) for s in per_clip])
            window_labels = np.repeat(labels, [len(s) for s in per_clip])
            details = {"window_auroc": roc_auc(window_labels, np.concatenate(per_clip)), "k": config.knn_k}
            runs.append(DetectorRun(name, clips, roc_auc(labels, clips), fit_s, time.perf_counter() - t0, details))
            log.info("%s: clip AUROC %.3f", name, runs[-1].auroc)
            continue
        if via == "monitor":
            prod = ProductDetector(name, config)
            streamed = prod.score_stream_via_monitor(train_signal, [signals[c] for c in split.test],
                                                     next(iter(rates)), progress=progress)
            clips = np.array([clip_score(scores, config.top_fraction) for scores in streamed])
            auc = roc_auc(labels, clips)
            log.info("%s via the monitor: clip AUROC %.3f", name, auc)
            runs.append(DetectorRun(name, clips, auc, 0.0, time.perf_counter() - t0,
                                    {"detector": prod.detector_config.to_dict(), "via": "monitor"}))
            continue
        prod = ProductDetector(name, config).fit(train_signal)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        streamed = prod.score_stream(train_signal, [signals[c] for c in split.test], progress=progress)
        variant_clips = {v: [clip_score(scores, config.top_fraction) for scores in streamed[v]] for v in VARIANTS}
        clips = np.array(variant_clips["product"])
        summary = prod.fitted.summary
        details = {
            "detector": prod.detector_config.to_dict(),
            "fit": {"window": summary.window, "hop": summary.hop, "train_windows": summary.train_windows,
                    "train_seconds": summary.train_seconds},
            "ablation_auroc": {v: roc_auc(labels, np.array(c)) for v, c in variant_clips.items()},
            "ablation_clip_scores": {v: [float(x) for x in c] for v, c in variant_clips.items()},
        }
        auc = roc_auc(labels, clips)
        log.info("%s: clip AUROC %.3f (without diffusion %.3f, diffusion alone %.3f)", name, auc,
                 details["ablation_auroc"]["without_diffusion"], details["ablation_auroc"]["diffusion_only"])
        runs.append(DetectorRun(name, clips, auc, fit_s, time.perf_counter() - t0, details))
    return AudioReport(Path(data), config, split, runs, rates.pop(), n_train_windows,
                       sum(len(w) for w in test_windows))


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
                       f"{report.sample_rate} Hz), hop {cfg.test_hop}",
            "product": "the monitor's detector (preset audio) fitted on the training clips joined end to end; the "
                       "test clips in the order above, back to back as that stream's continuation (what a monitor "
                       "fed them as one stream computes), one score per window end; " + (
                           "replayed as PCM chunks through the monitor's processing path, scores read from its store "
                           "(no ablation)" if any(r.details.get("via") == "monitor" for r in report.runs)
                           else "ablation variants from the same fit and channel values"),
            "clip_score": f"mean of the top {cfg.top_fraction:.0%} window scores",
            "metric": "ROC AUC over test clips (abnormal = 1)",
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

    from benchmarks.plots import save_figure
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
    return save_figure(fig, path, dpi=90)
