"""CLI commands ``scalowatch train`` and ``scalowatch score`` (registered on the main `scalowatch` app).

One command pair for the three input kinds the product handles, so a user can try the model on a recording
without Kafka or a store:

* **series** — NAB-style ``timestamp,value`` CSV or a UCR-style TXT (one value per line, ``.txt``/``.txt.gz``);
* **audio** — a WAV file (downmixed to mono);
* **image** — a folder: MVTec layout (``train/good``, ``test/<type>``) or a plain folder of images.

Series and audio go through the product's detector (:mod:`models.detector`), the same one the monitor and
``bench nab|ucr`` run: ``train`` fits it on the training part (``--train-end`` / ``--train-fraction``) with a
preset (``nab`` for series, ``audio`` for WAV by default) and saves it; ``score`` scores every sample (audio: every
window end) from the start of the input, exactly as the monitor scores a stream whose training part this was, and
prints the alerts of the monitor's alert rule at the preset's threshold (``--threshold`` to change it).

Images use the product's image detector (:mod:`models.image_detector`: a feature-space diffusion channel fused
with a patch-kNN channel), the one ``bench mvtec`` measures by default, with the same configuration.

What the model was trained on is written to ``DIR/cli_model.json`` so that ``score`` can refuse a model made for
another input kind or sample rate with a clear message instead of producing meaningless numbers.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer

if TYPE_CHECKING:
    from streamer.sinks.base import Sink

log = logging.getLogger(__name__)

META_FILE = "cli_model.json"
SERIES, AUDIO, IMAGE = "series", "audio", "image"
IMAGE_DETECTOR_DIR = "image_detector"
IMAGE_DETECTOR_NAME = "scalowatch-image"
#: Samples fed to the detector at a time by ``scalowatch score`` (65 s of 16 kHz audio): the scoring temporaries stay
#: within a chunk, so memory grows with the file and its output rows only.
SCORE_CHUNK = 1 << 20


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
    column: str | None = None  # the sensor column of a CSV of several sensors


def load_series(path: Path, column: str | None = None) -> Series:
    """CSV/TXT through the replay readers (same parsing and error messages as ``scalowatch replay``). A CSV of
    several sensors needs ``column`` (one model per sensor, as the monitor keeps one stream per sensor; a NAB file's
    is ``value``); rows where that sensor has no reading are left out, as a replay leaves them out of its stream."""
    from streamer.replay import ColumnChoiceError, read_csv_series, read_ucr_txt

    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        try:
            src, column = read_csv_series(path, column)
        except ColumnChoiceError as exc:
            raise _fail(f"{exc} with --column") from None
        stamps = np.datetime_as_string(src.times_ns.astype("datetime64[ns]"), unit="s")
        labels = [str(s) for s in stamps]
    else:
        if column is not None:
            raise _fail(f"--column chooses a column of a CSV file; {path} is a one-value-per-line series")
        src = read_ucr_txt(path)
        labels = [str(i) for i in range(len(src.values))]
    return Series(np.asarray(src.values, dtype=np.float64), labels, column=column)


def load_audio(path: Path) -> Series:
    """WAV → mono float64 in [-1, 1], decoded exactly as the monitor decodes audio chunks."""
    from streamer.replay import read_wav

    src = read_wav(path)
    data = src.mono()
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
    preset: str = ""
    window: int | None = None
    hop: int | None = None
    train_end: int | None = None
    sample_rate: int | None = None
    image_size: int | None = None
    train_images: int | None = None
    train_seconds: float = 0.0
    version: str = ""
    column: str | None = None  # the sensor column of a CSV of several sensors
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
def detector_config(kind: str, preset: str | None, *, scorer: str, steps: int | None, seed: int, adversarial: bool,
                    window: int | None, hop: int | None, unet: str | None):
    """The preset's configuration (``nab`` for series, ``audio`` for WAV unless named) with the options given."""
    from models.detector import preset as preset_config

    name = preset or ("audio" if kind == AUDIO else "nab")
    options: dict[str, Any] = {"scorer": scorer, "seed": seed}
    if steps is not None:
        options["steps"] = steps
    if window is not None:
        options["window"] = window
    if hop is not None:
        options.update(hop=hop, hop_fraction=0.0)
    if unet is not None:
        options["unet"] = unet
    if adversarial:
        from models.scorers.diffusion import ADDM_WEIGHT  # noqa: PLC0415 - torch loads only when a command runs

        options["adversarial_weight"] = ADDM_WEIGHT
    try:
        return name, preset_config(name, **options)
    except ValueError as exc:
        if scorer in _scorers_of(name):
            raise
        # The config's own message names fields (scalogram_waveform, channel_errors) this command does not set.
        raise _fail(f"--scorer {scorer} does not run on the {name} preset, which runs "
                    f"{', '.join(_scorers_of(name))} (the preset's configuration: {exc})") from None


def _scorers_of(preset_name: str) -> list[str]:
    """The scorers a preset's configuration accepts, asked of the configuration itself (not a list kept here)."""
    from models.detector import SCORERS, preset as preset_config

    accepted = []
    for name in SCORERS:
        try:
            preset_config(preset_name, scorer=name)
        except ValueError:
            continue
        accepted.append(name)
    return accepted


def train_signal(path: Path, kind: str, model_dir: Path, *, preset: str | None, scorer: str, steps: int | None,
                 seed: int, adversarial: bool, device: str, window: int | None, hop: int | None, unet: str | None,
                 train_end: int | None, train_fraction: float,
                 column: str | None = None) -> tuple[ModelMeta, Any]:
    """Series/audio: fit the detector on the training part and save it to ``model_dir`` (+ ``cli_model.json``)."""
    from models.detector import FittedDetector

    name, config = detector_config(kind, preset, scorer=scorer, steps=steps, seed=seed, adversarial=adversarial,
                                   window=window, hop=hop, unet=unet)  # before the input is read: a typo fails fast
    sig = load_series(path, column) if kind == SERIES else load_audio(path)
    end = train_range(sig.values.size, train_end, train_fraction)
    if end < 48:
        raise _fail(f"the training part has {end} samples; the detector needs at least 48 "
                    "(raise --train-end/--train-fraction)")
    fitted = FittedDetector.fit(sig.values[:end], config, device=device)
    version = fitted.save(model_dir)
    meta = ModelMeta(kind=kind, input=str(path), scorer=config.scorer, steps=config.steps, seed=seed,
                     adversarial=adversarial, preset=name, window=fitted.window, hop=fitted.hop, train_end=end,
                     sample_rate=sig.sample_rate, train_seconds=fitted.summary.train_seconds, version=version,
                     column=sig.column)
    meta.save(model_dir)
    return meta, fitted


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


def train_images(root: Path, model_dir: Path, *, device: str, steps: int | None, seed: int,
                 image_size: int) -> ModelMeta:
    """Image folder: the product's image detector (:mod:`models.image_detector`) on ``train/good`` (or the folder
    itself), with the configuration ``bench mvtec`` measures."""
    from models.image_detector import ImageDetector, ImageDetectorConfig
    from models.transforms.image import ImageConfig, load_folder

    train_dir, _ = _image_folders(root)
    images = load_folder(train_dir, ImageConfig(size=image_size))
    if images.shape[0] < 2:
        raise _fail(f"{train_dir}: need at least 2 training images, found {images.shape[0]}")
    # The configuration bench mvtec measures (MVTecBenchConfig.detector_config); fit() adapts the batch and the
    # calibration subset to a small training folder.
    cfg = ImageDetectorConfig(image_size=image_size, seed=seed, train_steps=steps or ImageDetectorConfig().train_steps)
    started = time.perf_counter()
    detector = ImageDetector(cfg, device=device, progress=True).fit(images)
    seconds = time.perf_counter() - started
    detector.save(model_dir / IMAGE_DETECTOR_DIR)
    meta = ModelMeta(kind=IMAGE, input=str(root), scorer=IMAGE_DETECTOR_NAME, steps=cfg.train_steps, seed=seed,
                     adversarial=False, image_size=image_size, train_images=int(images.shape[0]),
                     train_seconds=round(seconds, 3), extra={"train_dir": str(train_dir)})
    meta.save(model_dir)
    return meta


# ---------------------------------------------------------------------------------------------------- score
@dataclass
class SignalScores:
    labels: list[str]
    """Per scored row: timestamp (CSV), index (TXT) or start second (audio)."""
    scores: np.ndarray
    decided_by: tuple[str, ...]
    channel_values: np.ndarray
    alerts: list


def score_signal(path: Path, kind: str, model_dir: Path, meta: ModelMeta, out: Path, device: str,
                 threshold: float | None, column: str | None = None) -> SignalScores:
    """Series → per-point CSV; audio → per-window CSV (seconds); alerts by the monitor's alert rule."""
    from models.detector import PRESETS, FittedDetector, describe_channel, score_series
    from streamer.alerts import AlertMachine, AlertPolicy, AlertState

    sig = load_series(path, column or meta.column) if kind == SERIES else load_audio(path)
    if kind == AUDIO and sig.sample_rate != meta.sample_rate:
        raise _fail(f"{path} is sampled at {sig.sample_rate} Hz; the model was trained at {meta.sample_rate} Hz")
    fitted = FittedDetector.load(model_dir, device=device)
    if sig.values.size < fitted.window:
        raise _fail(f"{path} has {sig.values.size} samples: too short for one window of {fitted.window}")
    from tqdm.auto import tqdm

    with tqdm(total=int(sig.values.size), desc="score", unit="sample", unit_scale=True, leave=False) as bar:
        det = score_series(fitted, sig.values, chunk=SCORE_CHUNK,
                           progress=lambda done: bar.update(done - bar.n))["product"]
    rows = det.positions
    values = np.array([det.channel_value(i) for i in range(len(det))])
    limit = threshold if threshold is not None else PRESETS[meta.preset].alert_threshold
    machine = AlertMachine(str(path), AlertPolicy(threshold=limit, hysteresis=0.0, close_after=1))
    rate = float(sig.sample_rate or 1)
    labels = [sig.labels[r] for r in rows] if kind == SERIES else [f"{(r - fitted.window + 1) / rate:.3f}s"
                                                                  for r in rows]
    alerts = []
    for i, r in enumerate(rows.tolist()):
        change = machine.update(int(r), float(det.scores[i]), float(values[i]), fitted.version, det.decided_by[i])
        if change.changed is not None and change.changed.state is AlertState.OPEN:
            alerts.append((labels[i], float(det.scores[i]), describe_channel(det.decided_by[i])))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if kind == SERIES:
            writer.writerow(["timestamp", "value", "score", "decided_by", "channel_value"])
            for i, r in enumerate(rows.tolist()):
                writer.writerow([sig.labels[r], repr(float(sig.values[r])), f"{det.scores[i]:.9g}",
                                 det.decided_by[i], f"{values[i]:.6g}"])
        else:
            writer.writerow(["start_s", "end_s", "score", "decided_by", "channel_value"])
            for i, r in enumerate(rows.tolist()):
                writer.writerow([f"{(r - fitted.window + 1) / rate:.6f}", f"{(r + 1) / rate:.6f}",
                                 f"{det.scores[i]:.9g}", det.decided_by[i], f"{values[i]:.6g}"])
    return SignalScores(labels, det.scores, det.decided_by, values, alerts)


def map_files(maps_dir: Path, names: list[str]) -> list[Path]:
    """Where each image's map goes: ``<name without its type>.npy``, or ``<name>.npy`` for images that would share
    a file (``a.png`` and ``a.jpg`` in one folder: the second map overwrote the first). Full names never clash
    with each other; one may clash with another image's short name (``a.png.tif``), which then takes its full
    name too, until no two images share a file."""
    full: set[str] = set()
    while True:
        targets = [n + ".npy" if n in full else str(Path(n).with_suffix(".npy")) for n in names]
        shared = {t for t, k in Counter(targets).items() if k > 1}
        clashing = {n for n, t in zip(names, targets) if t in shared} - full
        if not clashing:
            return [maps_dir / t for t in targets]
        full |= clashing


def score_images(root: Path, model_dir: Path, meta: ModelMeta, out: Path, device: str,
                 maps_dir: Path | None, sink: Sink | None = None) -> tuple[list[str], np.ndarray]:
    """Every test image (MVTec) or every image of the folder → ``path,score`` CSV; with ``maps_dir`` one .npy map
    each and ``maps_dir/image_results.csv``, which the dashboard's Images page opens (the picture, the map over it,
    the ground-truth mask of an MVTec category); with ``sink`` the same results as ``image_result`` points in the
    store, where the page finds them too."""
    from tqdm.auto import tqdm

    from models.image_detector import ImageDetector
    from models.transforms.image import ImageConfig, load_image

    _, files = _image_folders(root)
    if not files:
        raise _fail(f"{root}: no images to score")
    if not (model_dir / IMAGE_DETECTOR_DIR).is_dir():
        raise _fail(f"{model_dir} holds no image detector (an image model from an older version? retrain it with "
                    f"`scalowatch train {root} --model-dir {model_dir}`)")
    scorer = ImageDetector.load(model_dir / IMAGE_DETECTOR_DIR, device=device)
    cfg = ImageConfig(size=int(meta.image_size or 224))
    rel = [str(f.relative_to(root)) for f in files]
    scores = np.empty(len(files))
    batch = 8
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    targets = map_files(maps_dir, rel) if maps_dir is not None else []
    for i in tqdm(range(0, len(files), batch), desc="score", leave=False):
        x = torch.stack([load_image(f, cfg) for f in files[i : i + batch]])
        result = scorer.score(x)
        scores[i : i + x.shape[0]] = result.scores
        if maps_dir is not None:
            for target, m in zip(targets[i : i + batch], result.maps):
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, np.asarray(m, dtype=np.float32).squeeze())
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score"])
        for name, s in zip(rel, scores):
            writer.writerow([name, f"{s:.6g}"])
    if maps_dir is not None or sink is not None:
        from models.transforms.image import mask_file
        from streamer.image_results import ImageResult, image_result_points, write_image_results

        mvtec = (root / "test").is_dir()  # then the files are test/<defect>/<image> (_image_folders)
        results = []
        maps: list[Path | None] = list(targets) if targets else [None] * len(files)
        for f, target, s in zip(files, maps, scores):
            defect = f.parent.name if mvtec else ""
            mask = mask_file(root, defect, f) if mvtec and defect != "good" else None
            results.append(ImageResult(root.resolve().name, defect, f, float(s), target,
                                       mask if mask is not None and mask.is_file() else None, scorer.version))
        if maps_dir is not None:
            write_image_results(maps_dir, results)
        if sink is not None:
            sink.write(image_result_points(results, time.time_ns()))
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
        scorer: str = typer.Option("recon", "--scorer", help="Scorer: recon, trend, kl, adversarial, dynamic "
                                                                "(series presets: not dynamic; ucr: recon only)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        train_end: int = typer.Option(None, "--train-end", help="Series/audio: train on samples [0, N)."),
        train_fraction: float = typer.Option(0.15, "--train-fraction",
                                             help="Series/audio: train on this leading fraction (no --train-end)."),
        window: int = typer.Option(None, "--window", help="Series/audio: window length in samples (default: "
                                                          "the preset's; nab/rig/ucr: the training part's period)."),
        hop: int = typer.Option(None, "--hop", help="Series/audio: diffusion window stride (default: the preset's)."),
        steps: int = typer.Option(None, "--steps", help="Training steps (default: the preset's; images: the image detector's)."),
        adversarial: bool = typer.Option(False, "--adversarial", help="Train with the ADDM adversarial loss, for any "
                                                                     "scorer (series and audio)."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        preset: str = typer.Option(None, "--preset", help="Series/audio detector preset: nab, rig, ucr or audio "
                                                          "(default: nab for series, audio for WAV)."),
        unet: str = typer.Option(None, "--unet", help="Series/audio: U-Net preset (default: the preset's, tiny)."),
        image_size: int = typer.Option(224, "--image-size", help="Images: square side after resizing."),
        column: str = typer.Option(None, "--column", help="Series: the sensor column of a CSV of several sensors "
                                                          "(one model per sensor)."),
    ) -> None:
        """Train a model on the normal (training) part of a series, a WAV file or an image folder."""
        from models.scorers import available_scorers

        kind = detect_kind(input_path)
        _check_column(column, kind, input_path)
        if scorer not in available_scorers():
            raise _fail(f"unknown scorer {scorer!r}; available: {', '.join(sorted(available_scorers()))}")
        if steps is not None and steps < 1:
            raise _fail(f"--steps must be >= 1, got {steps}")
        try:
            _check_device(device)
            model_dir.mkdir(parents=True, exist_ok=True)
            if kind == IMAGE:
                if scorer != "recon" or adversarial:
                    raise _fail("images are scored by the product's image detector (context-conditioned diffusion "
                                "fused with patch kNN, models/image_detector.py): --scorer and --adversarial apply to "
                                "series and audio only; `scalowatch bench mvtec --scorer ...` compares the other "
                                "scorers")
                meta = train_images(input_path, model_dir, device=device, steps=steps, seed=seed,
                                    image_size=image_size)
                typer.echo(f"trained the image detector on {meta.train_images} images of {input_path} "
                           f"({image_size} px, {meta.steps} steps) in {meta.train_seconds:.1f} s -> {model_dir}")
                return
            meta, fitted = train_signal(input_path, kind, model_dir, preset=preset, scorer=scorer, steps=steps,
                                        seed=seed, adversarial=adversarial, device=device, window=window, hop=hop,
                                        unet=unet, train_end=train_end, train_fraction=train_fraction,
                                        column=column)
        except typer.Exit:
            raise
        except _input_errors() as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"fitted the {meta.preset} detector ({meta.scorer}, {kind}) on samples [0, {meta.train_end}) of "
                   f"{input_path}: window {meta.window}, {fitted.summary.train_windows} training windows, "
                   f"{meta.train_seconds:.1f} s -> {model_dir} (version {meta.version})")

    @app.command("score")
    def score(
        input_path: Path = typer.Argument(..., metavar="INPUT", help="Same kind of input the model was trained on."),
        model_dir: Path = typer.Option(..., "--model-dir", help="A directory written by `scalowatch train`."),
        out: Path = typer.Option(Path("scores.csv"), "--out", help="CSV to write."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        threshold: float = typer.Option(None, "--threshold", help="Series/audio: alert threshold (default: the "
                                                                  "preset's, the one its benchmark found)."),
        top: int = typer.Option(10, "--top", help="How many alerts (or highest images) to print."),
        maps_dir: Path = typer.Option(None, "--maps-dir", help="Images: also save each anomaly map as .npy here."),
        column: str = typer.Option(None, "--column", help="Series: the sensor column of a CSV of several sensors "
                                                          "(default: the one the model was trained on)."),
        store: str = typer.Option(None, "--store", help="Images: also write the results as image_result points to "
                                                        "this store, influx or sqlite (the dashboard's Images page "
                                                        "reads them); settings as for the monitor."),
        sqlite_path: Path = typer.Option(None, "--sqlite-path", help="SQLite store file (with --store sqlite)."),
    ) -> None:
        """Score INPUT with a trained model: per-point (series), per-window (audio) or per-image CSV."""
        kind = detect_kind(input_path)
        _check_column(column, kind, input_path)
        if store is not None and kind != IMAGE:
            raise _fail(f"--store writes image results; {input_path} is {kind} (a monitor writes the scores of "
                        "streams: `scalowatch replay` the file into it)")
        if store is not None and store not in ("influx", "sqlite"):
            raise _fail(f"--store must be influx or sqlite, not {store!r}")
        if sqlite_path is not None and store != "sqlite":
            raise _fail("--sqlite-path names the file of --store sqlite")
        meta = ModelMeta.load(model_dir)
        if meta.kind != kind:
            raise _fail(f"{model_dir} holds a model for {meta.kind} input ({meta.input}); {input_path} is {kind}")
        if threshold is not None and not threshold > 0.0:
            raise _fail(f"--threshold must be > 0, got {threshold}")
        try:
            _check_device(device)
            if kind == IMAGE:
                sink = _store_sink(store, sqlite_path) if store is not None else None
                try:
                    names, scores = score_images(input_path, model_dir, meta, out, device, maps_dir, sink)
                finally:
                    if sink is not None:
                        sink.close()
                order = np.argsort(-scores)[:top]
                typer.echo(f"scored {len(names)} images with {meta.scorer} -> {out}")
                for i in order:
                    typer.echo(f"  {scores[i]:10.4f}  {names[i]}")
                return
            result = score_signal(input_path, kind, model_dir, meta, out, device, threshold, column)
        except typer.Exit:
            raise
        except _input_errors() as exc:
            raise _fail(str(exc)) from None
        unit = "points" if kind == SERIES else "windows"
        typer.echo(f"scored {len(result.labels)} {unit} with the {meta.preset} detector ({meta.scorer}, window "
                   f"{meta.window}) -> {out}; {len(result.alerts)} alert(s)")
        for label, peak, why in result.alerts[:top]:
            typer.echo(f"  alert at {label}  score {peak:.6f}  ({why})")


def _store_sink(kind: str, sqlite_path: Path | None) -> Sink:
    """The store writer of the runtime settings (environment, config file), with the kind and file asked for."""
    from streamer.config import Settings
    from streamer.sinks.factory import make_sink

    try:
        settings = Settings()
    except (ValueError, FileNotFoundError) as exc:  # pydantic's ValidationError is a ValueError
        raise _fail(f"invalid settings: {exc}") from None
    update = {k: v for k, v in {"kind": kind, "sqlite_path": sqlite_path}.items() if v}
    sink = make_sink(settings.model_copy(update={"store": settings.store.model_copy(update=update)}))
    ping = getattr(sink, "ping", None)
    if ping is not None and not ping():  # say so before the scoring, not after it
        sink.close()
        raise _fail(f"the store does not answer: {sink!r} (SCALOWATCH_INFLUX__URL and friends)")
    return sink


def _check_column(column: str | None, kind: str, path: Path) -> None:
    if column is not None and kind != SERIES:
        raise _fail(f"--column chooses a sensor column of a CSV file; {path} is {kind}")


def _check_device(device: str) -> None:
    from models.device import resolve_device

    resolve_device(device)
