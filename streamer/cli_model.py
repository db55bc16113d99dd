"""CLI commands ``scalowatch train`` and ``scalowatch score`` (registered on the main `scalowatch` app).

One command pair for the three input kinds the product handles, so a user can try the model on a recording
without Kafka or a store:

* **series** — NAB-style ``timestamp,value`` CSV or a UCR-style TXT (one value per line, ``.txt``/``.txt.gz``);
* **audio** — a WAV file (downmixed to mono);
* **image** — a folder: MVTec layout (``train/good``, ``test/<type>``) or a plain folder of images.

Series and audio are cut into sliding windows; only windows lying entirely inside the training part
(``--train-end`` / ``--train-fraction``) train the :class:`~models.pipeline.ScalogramPipeline`, so the model
never sees what it later scores beyond that point. Scores are causal: a point takes the score of the latest
window ending at or before it. ``raw_score`` is the detector's window score (the diffusion score z-scored with
training statistics, or the window's level/scale distance from the training windows, whichever is larger — the
per-window normalised scalogram is blind to level shifts); ``score`` is the online, causal
:class:`~models.calibration.AnomalyLikelihood` of ``raw_score``, whose learning period is the training part
(capped at half of the scored input, so scoring a different, shorter recording still yields an opinion; the
likelihood then learns from that recording's own start).

Images use the feature-space diffusion scorer exactly as ``benchmarks.mvtec`` does (two CPU cores cannot train a
pixel-space U-Net on 224-px images).

What the model was trained on is written to ``DIR/cli_model.json`` so that ``score`` can refuse a model made for
another input kind or sample rate with a clear message instead of producing meaningless numbers.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

log = logging.getLogger(__name__)

META_FILE = "cli_model.json"
SERIES, AUDIO, IMAGE = "series", "audio", "image"
MAX_TRAIN_WINDOWS = 512
SCORE_CHUNK = 1024


# ---------------------------------------------------------------------------------------------------- errors
def _fail(message: str) -> typer.Exit:
    """Print a one-line error (no traceback) and return the exit to raise: bad input exits with status 2."""
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _input_errors() -> tuple[type[BaseException], ...]:
    from models.errors import CheckpointMismatchError, InputError, NotFittedError
    from streamer.replay import ReplayError

    return (InputError, ReplayError, CheckpointMismatchError, NotFittedError, ValueError, RuntimeError,
            FileNotFoundError, OSError)


# ---------------------------------------------------------------------------------------------------- inputs
def detect_kind(path: Path) -> str:
    """``series`` / ``audio`` / ``image`` from the path; BadParameter-style exit for anything else."""
    if not path.exists():
        raise _fail(f"{path}: no such file or folder")
    if path.is_dir():
        return IMAGE
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        return SERIES
    if name.endswith(".wav"):
        return AUDIO
    raise _fail(f"{path}: unknown input type (expected .csv, .txt, .txt.gz, .wav or a folder of images)")


@dataclass
class Series:
    """A loaded series or audio signal: values plus how to label each point in the output."""

    values: np.ndarray
    labels: list[str]  # per point: ISO timestamp (CSV) or index (TXT); unused for audio
    sample_rate: int | None = None  # audio only


def load_series(path: Path) -> Series:
    """CSV/TXT through the replay readers (same parsing and error messages as ``scalowatch replay``)."""
    from streamer.replay import read_nab_csv, read_ucr_txt

    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        src = read_nab_csv(path, windows_file=None)
        stamps = np.datetime_as_string(src.times_ns.astype("datetime64[ns]"), unit="s")
        labels = [str(s) for s in stamps]
    else:
        src = read_ucr_txt(path)
        labels = [str(i) for i in range(len(src.values))]
    return Series(np.asarray(src.values, dtype=np.float64), labels)


def load_audio(path: Path) -> Series:
    """WAV → mono float64 in [-1, 1] (int16 scaled; the replay reader already scales other integer PCM)."""
    from streamer.replay import read_wav

    src = read_wav(path)
    data = np.asarray(src.data)
    if data.dtype == np.int16:
        data = data.astype(np.float64) / 32768.0
    data = data.astype(np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if not np.isfinite(data).all():
        raise _fail(f"{path}: audio contains NaN or inf samples")
    return Series(data, [], sample_rate=int(src.rate))


def train_range(n: int, train_end: int | None, train_fraction: float) -> int:
    """End (exclusive) of the training part in samples, validated against the series length."""
    if train_end is not None:
        if not 1 <= train_end <= n:
            raise _fail(f"--train-end {train_end} is outside the series (1..{n} samples)")
        return train_end
    if not 0.0 < train_fraction <= 1.0:
        raise _fail(f"--train-fraction must be in (0, 1], got {train_fraction}")
    return max(1, int(round(n * train_fraction)))


def choose_window(train: np.ndarray, kind: str) -> int:
    """Series: the training part's dominant period in [32, 256] (the series detector's rule); audio: 1024."""
    if kind == AUDIO:
        return 1024
    from models.baselines.period import dominant_period

    upper = max(16, min(256, train.size // 3))
    w = dominant_period(train, min_period=16, max_period=None, default=64)
    return int(np.clip(w, min(32, upper), upper))


def window_ends(n: int, window: int, hop: int) -> np.ndarray:
    """Last sample of each scored window: a grid anchored at the series start (appending never moves it)."""
    return np.arange(window - 1, n, hop)


# ---------------------------------------------------------------------------------------------------- metadata
@dataclass
class ModelMeta:
    """What a model directory was trained on (``cli_model.json``); ``score`` checks it before scoring."""

    kind: str
    input: str
    scorer: str
    steps: int
    seed: int
    adversarial: bool
    window: int | None = None
    hop: int | None = None
    train_start: int = 0
    train_end: int | None = None
    train_windows: int | None = None
    sample_rate: int | None = None
    diffusion_mean: float = 0.0
    diffusion_std: float = 1.0
    image_size: int | None = None
    train_images: int | None = None
    train_seconds: float = 0.0
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        (directory / META_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "ModelMeta":
        path = directory / META_FILE
        if not directory.is_dir():
            raise _fail(f"model directory {directory} does not exist (train one with `scalowatch train`)")
        if not path.is_file():
            raise _fail(f"{directory} has no {META_FILE}: not a model made by `scalowatch train`")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise _fail(f"{path} is not a valid model description ({exc})") from None


# ---------------------------------------------------------------------------------------------------- train
def _series_pipeline(scorer: str, preset: str, steps: int, seed: int, device: str, adversarial: bool):
    from models.pipeline import ScalogramPipeline
    from models.scorers import create_scorer
    from models.training import TrainConfig
    from models.transforms.cwt import CWTConfig
    from models.unet import UNetConfig

    size = UNetConfig.preset(preset).sample_size
    train = TrainConfig(steps=steps, batch_size=32, lr=2e-3, seed=seed, warmup_steps=min(20, steps // 10))
    # lam=1.0: pixel term only — the scalogram needs no ImageNet CNN (the series detector's choice too).
    model = create_scorer(scorer, unet=preset, train=train, device=device, seed=1234 + seed, lam=1.0,
                          adversarial=adversarial, progress=True)
    return ScalogramPipeline(CWTConfig(n_scales=32, out_size=tuple(size)), model)


def _diffusion_z(pipe, windows: np.ndarray, meta: ModelMeta) -> tuple[np.ndarray, np.ndarray]:
    """(raw window score, diffusion z) for windows: max(diffusion z, |level_z|, |scale_z|)."""
    batch = pipe.score_windows(windows)
    z = (np.asarray(batch.scores, dtype=np.float64) - meta.diffusion_mean) / meta.diffusion_std
    stat = np.maximum(np.abs(np.asarray(batch.extras["level_z"], dtype=np.float64)),
                      np.abs(np.asarray(batch.extras["scale_z"], dtype=np.float64)))
    return np.maximum(z, stat), z


def train_signal(path: Path, kind: str, model_dir: Path, *, scorer: str, preset: str, device: str, steps: int,
                 seed: int, adversarial: bool, window: int | None, hop: int | None, train_end: int | None,
                 train_fraction: float) -> ModelMeta:
    """Series/audio: windows of the training part → fitted pipeline saved to ``model_dir`` + ``cli_model.json``."""
    import torch

    from models.series_detector import sliding_windows

    sig = load_series(path) if kind == SERIES else load_audio(path)
    n = sig.values.size
    end = train_range(n, train_end, train_fraction)
    train = sig.values[:end]
    w = window if window is not None else choose_window(train, kind)
    if w < 16:
        raise _fail(f"--window must be at least 16 samples, got {w}")
    if end < w + 1:
        raise _fail(f"the training part has {end} samples: too short for two windows of {w} "
                    f"(lower --window or raise --train-end/--train-fraction)")
    h = hop if hop is not None else (max(1, w // 2) if kind == AUDIO else 4)
    if h < 1:
        raise _fail(f"--hop must be >= 1, got {h}")
    n_windows = end - w + 1
    stride = max(1, math.ceil(n_windows / MAX_TRAIN_WINDOWS))
    ends = np.arange(w - 1, end, stride)
    windows = sliding_windows(train, w, ends).copy()
    torch.manual_seed(seed)
    started = time.perf_counter()
    pipe = _series_pipeline(scorer, preset, steps, seed, device, adversarial)
    pipe.fit_windows(windows)
    diff = np.asarray(pipe.score_windows(windows).scores, dtype=np.float64)
    seconds = time.perf_counter() - started
    version = pipe.save(model_dir)
    meta = ModelMeta(kind=kind, input=str(path), scorer=pipe.scorer_name, steps=steps, seed=seed,
                     adversarial=adversarial, window=w, hop=h, train_start=0, train_end=end,
                     train_windows=int(ends.size), sample_rate=sig.sample_rate,
                     diffusion_mean=float(diff.mean()), diffusion_std=float(max(diff.std(), 1e-6)),
                     train_seconds=round(seconds, 3), version=version, extra={"preset": preset})
    meta.save(model_dir)
    return meta


def _image_folders(root: Path) -> tuple[Path, list[Path]]:
    """(training folder, scoring files) for an MVTec category or a plain folder of images."""
    from models.transforms.image import image_files

    good = root / "train" / "good"
    test = root / "test"
    train_dir = good if good.is_dir() else root
    if test.is_dir():
        files = [f for d in sorted(p for p in test.iterdir() if p.is_dir()) for f in image_files(d)]
    elif good.is_dir():
        files = image_files(good)
    else:
        files = image_files(root)
    return train_dir, files


def train_images(root: Path, model_dir: Path, *, scorer: str, device: str, steps: int, seed: int,
                 adversarial: bool, image_size: int) -> ModelMeta:
    """Image folder: feature-space scorer on ``train/good`` (or the folder itself), as ``benchmarks.mvtec``."""
    import torch

    from benchmarks.mvtec import MVTecBenchConfig, diffusion_kwargs
    from models.scorers import create_scorer
    from models.transforms.image import ImageConfig, load_folder

    train_dir, _ = _image_folders(root)
    images = load_folder(train_dir, ImageConfig(size=image_size))
    if images.shape[0] < 2:
        raise _fail(f"{train_dir}: need at least 2 training images, found {images.shape[0]}")
    cfg = MVTecBenchConfig(image_size=image_size, device=device, train_steps=steps, seed=seed,
                           train_batch=min(16, images.shape[0]), calibration_samples=min(32, images.shape[0]))
    torch.manual_seed(seed)
    started = time.perf_counter()
    model = create_scorer(scorer, adversarial=adversarial, **diffusion_kwargs(cfg, progress=True))
    model.fit(images)
    seconds = time.perf_counter() - started
    model.save(model_dir / "scorer")
    meta = ModelMeta(kind=IMAGE, input=str(root), scorer=model.name, steps=steps, seed=seed,
                     adversarial=adversarial, image_size=image_size, train_images=int(images.shape[0]),
                     train_seconds=round(seconds, 3), extra={"train_dir": str(train_dir)})
    meta.save(model_dir)
    return meta


# ---------------------------------------------------------------------------------------------------- score
@dataclass
class Alert:
    """A run of consecutive points (or windows) whose calibrated score exceeds the threshold."""

    start: str
    end: str
    peak: float
    raw: float


def find_alerts(labels: list[str], score: np.ndarray, raw: np.ndarray, threshold: float) -> list[Alert]:
    """Contiguous runs above ``threshold``, highest peak first."""
    above = score > threshold
    out: list[Alert] = []
    i = 0
    while i < above.size:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < above.size and above[j + 1]:
            j += 1
        k = i + int(np.argmax(score[i : j + 1]))
        out.append(Alert(labels[i], labels[j], float(score[k]), float(raw[i : j + 1].max())))
        i = j + 1
    return sorted(out, key=lambda a: (-a.peak, -a.raw))


def _likelihood(raw: np.ndarray, learning: int) -> np.ndarray:
    from models.calibration import AnomalyLikelihood

    learning = max(1, min(learning, raw.size // 2))
    return AnomalyLikelihood(learning_period=learning, skip_first=learning // 2).transform(raw)


def score_signal(path: Path, kind: str, model_dir: Path, meta: ModelMeta, out: Path, device: str):
    """Series → per-point CSV; audio → per-window CSV (seconds). Returns (labels, score, raw) for alerts."""
    from tqdm.auto import tqdm

    from models.pipeline import ScalogramPipeline
    from models.series_detector import sliding_windows, spread_to_points

    sig = load_series(path) if kind == SERIES else load_audio(path)
    if kind == AUDIO and sig.sample_rate != meta.sample_rate:
        raise _fail(f"{path} is sampled at {sig.sample_rate} Hz; the model was trained at {meta.sample_rate} Hz")
    w, h = int(meta.window or 0), int(meta.hop or 1)
    n = sig.values.size
    if n < w:
        raise _fail(f"{path} has {n} samples: too short for one window of {w}")
    pipe = ScalogramPipeline.load(model_dir, device=device)
    ends = window_ends(n, w, h)
    raw_w = np.empty(ends.size)
    for i in tqdm(range(0, ends.size, SCORE_CHUNK), desc="score", leave=False):
        part = ends[i : i + SCORE_CHUNK]
        raw_w[i : i + part.size], _ = _diffusion_z(pipe, sliding_windows(sig.values, w, part).copy(), meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == SERIES:
        raw = spread_to_points(ends, raw_w, n)
        score = _likelihood(raw, int(meta.train_end or 0))
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "value", "raw_score", "score"])
            for row in zip(sig.labels, sig.values, raw, score):
                writer.writerow([row[0], repr(float(row[1])), f"{row[2]:.6g}", f"{row[3]:.6g}"])
        return sig.labels, score, raw
    rate = float(sig.sample_rate or 1)
    learning = int(np.searchsorted(ends, int(meta.train_end or 0)))  # windows inside the training part
    score = _likelihood(raw_w, learning)
    starts_s = (ends - w + 1) / rate
    ends_s = (ends + 1) / rate
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["start_s", "end_s", "raw_score", "score"])
        for a, b, r, s in zip(starts_s, ends_s, raw_w, score):
            writer.writerow([f"{a:.6f}", f"{b:.6f}", f"{r:.6g}", f"{s:.6g}"])
    return [f"{a:.3f}s" for a in starts_s], score, raw_w


def score_images(root: Path, model_dir: Path, meta: ModelMeta, out: Path, device: str,
                 maps_dir: Path | None) -> tuple[list[str], np.ndarray]:
    """Every test image (MVTec) or every image of the folder → ``path,score`` CSV (+ one .npy map each)."""
    from tqdm.auto import tqdm

    from models.scorers import load_scorer
    from models.transforms.image import ImageConfig, load_image

    _, files = _image_folders(root)
    if not files:
        raise _fail(f"{root}: no images to score")
    scorer = load_scorer(model_dir / "scorer", device=device)
    cfg = ImageConfig(size=int(meta.image_size or 224))
    rel = [str(f.relative_to(root)) for f in files]
    scores = np.empty(len(files))
    batch = 8
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    for i in tqdm(range(0, len(files), batch), desc="score", leave=False):
        x = torch.stack([load_image(f, cfg) for f in files[i : i + batch]])
        result = scorer.score(x)
        scores[i : i + x.shape[0]] = result.scores
        if maps_dir is not None:
            for name, m in zip(rel[i : i + batch], result.maps):
                target = (maps_dir / name).with_suffix(".npy")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, np.asarray(m, dtype=np.float32).squeeze())
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score"])
        for name, s in zip(rel, scores):
            writer.writerow([name, f"{s:.6g}"])
    return rel, scores


# ---------------------------------------------------------------------------------------------------- commands
def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

    @app.command("train")
    def train(
        input_path: Path = typer.Argument(..., metavar="INPUT",
                                          help="Series (.csv timestamp,value / .txt one value per line), .wav, "
                                               "or an image folder (MVTec train/good or plain)."),
        model_dir: Path = typer.Option(..., "--model-dir", help="Where the trained model is written."),
        scorer: str = typer.Option("recon", "--scorer", help="Scorer: recon, trend, kl, dynamic, adversarial."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        train_end: int = typer.Option(None, "--train-end", help="Series/audio: train on samples [0, N)."),
        train_fraction: float = typer.Option(0.15, "--train-fraction",
                                             help="Series/audio: train on this leading fraction (no --train-end)."),
        window: int = typer.Option(None, "--window", help="Window length in samples (default: series = dominant "
                                                          "period of the training part in [32, 256]; audio 1024)."),
        hop: int = typer.Option(None, "--hop", help="Scoring stride in samples (default: series 4, audio window/2)."),
        steps: int = typer.Option(300, "--steps", help="Training steps."),
        adversarial: bool = typer.Option(False, "--adversarial", help="Train with the ADDM adversarial loss."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        preset: str = typer.Option("tiny", "--preset", help="Series/audio U-Net preset (tiny, series, audio)."),
        image_size: int = typer.Option(224, "--image-size", help="Images: square side after resizing."),
    ) -> None:
        """Train a model on the normal (training) part of a series, a WAV file or an image folder."""
        from models.scorers import available_scorers

        kind = detect_kind(input_path)
        if scorer not in available_scorers():
            raise _fail(f"unknown scorer {scorer!r}; available: {', '.join(sorted(available_scorers()))}")
        if steps < 1:
            raise _fail(f"--steps must be >= 1, got {steps}")
        try:
            _check_device(device)
            model_dir.mkdir(parents=True, exist_ok=True)
            if kind == IMAGE:
                meta = train_images(input_path, model_dir, scorer=scorer, device=device, steps=steps, seed=seed,
                                    adversarial=adversarial, image_size=image_size)
                typer.echo(f"trained {meta.scorer} on {meta.train_images} images of {input_path} "
                           f"({image_size} px, {steps} steps) in {meta.train_seconds:.1f} s -> {model_dir}")
                return
            meta = train_signal(input_path, kind, model_dir, scorer=scorer, preset=preset, device=device,
                                steps=steps, seed=seed, adversarial=adversarial, window=window, hop=hop,
                                train_end=train_end, train_fraction=train_fraction)
        except typer.Exit:
            raise
        except _input_errors() as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"trained {meta.scorer} ({kind}) on {meta.train_windows} windows of {meta.window} from "
                   f"samples [0, {meta.train_end}) of {input_path} in {meta.train_seconds:.1f} s -> {model_dir} "
                   f"(version {meta.version})")

    @app.command("score")
    def score(
        input_path: Path = typer.Argument(..., metavar="INPUT", help="Same kind of input the model was trained on."),
        model_dir: Path = typer.Option(..., "--model-dir", help="A directory written by `scalowatch train`."),
        out: Path = typer.Option(Path("scores.csv"), "--out", help="CSV to write."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        threshold: float = typer.Option(0.99, "--threshold", help="Alert where the calibrated score exceeds this."),
        top: int = typer.Option(10, "--top", help="How many alerts (or highest images) to print."),
        maps_dir: Path = typer.Option(None, "--maps-dir", help="Images: also save each anomaly map as .npy here."),
    ) -> None:
        """Score INPUT with a trained model: per-point (series), per-window (audio) or per-image CSV."""
        kind = detect_kind(input_path)
        meta = ModelMeta.load(model_dir)
        if meta.kind != kind:
            raise _fail(f"{model_dir} holds a model for {meta.kind} input ({meta.input}); {input_path} is {kind}")
        if not 0.0 < threshold < 1.0:
            raise _fail(f"--threshold must be in (0, 1), got {threshold}")
        try:
            _check_device(device)
            if kind == IMAGE:
                names, scores = score_images(input_path, model_dir, meta, out, device, maps_dir)
                order = np.argsort(-scores)[:top]
                typer.echo(f"scored {len(names)} images with {meta.scorer} -> {out}")
                for i in order:
                    typer.echo(f"  {scores[i]:10.4f}  {names[i]}")
                return
            labels, calibrated, raw = score_signal(input_path, kind, model_dir, meta, out, device)
        except typer.Exit:
            raise
        except _input_errors() as exc:
            raise _fail(str(exc)) from None
        alerts = find_alerts(labels, calibrated, raw, threshold)
        unit = "points" if kind == SERIES else "windows"
        typer.echo(f"scored {len(labels)} {unit} with {meta.scorer} (window {meta.window}, hop {meta.hop}) -> {out}; "
                   f"{len(alerts)} alert(s) above {threshold}")
        for a in alerts[:top]:
            typer.echo(f"  alert {a.start} .. {a.end}  score {a.peak:.4f}  raw {a.raw:.3f}")


def _check_device(device: str) -> None:
    from models.device import resolve_device

    resolve_device(device)
