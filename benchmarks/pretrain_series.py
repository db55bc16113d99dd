"""Pretrain a preset's scalogram U-Net once on many normal windows, and ship it (``models/pretrained/``).

    .venv/bin/python benchmarks/pretrain_series.py --preset ucr --name ucr-series \
        --ucr ../shared/data/ucr --nab ../shared/data/nab/data --steps 3000

What it trains on: the *training parts* only (never anything after them) of every UCR file (rows before the file
name's trainEnd) and NAB file (its probationary part) in the folders given, plus synthetic normal signals (sines,
square and sawtooth waves, random walks, with noise). Each source is cut into windows exactly as a fitted detector
of the preset cuts them (its window choice, its scalogram settings: :func:`models.detector.fitted.new_pipeline`),
at most ``--per-source`` windows each. The U-Net is the preset's, trained with the detector's optimiser settings
for ``--steps`` steps; the EMA weights are saved with a JSON that says how they were made.

A detector then starts from it with ``init_model=<name>`` and fine-tunes for its own ``steps`` on the stream's
training part. Evaluating on the same folders' test parts is allowed by the protocol (only training parts were
seen); held-out series are the honest check.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.runinfo import finish_run, start_run  # noqa: E402
from models.detector import preset  # noqa: E402
from models.detector.fitted import choose_window, new_pipeline, sliding_windows  # noqa: E402
from models.discord import fixed_standardisation  # noqa: E402
from models.pretrained import FOLDER, save_pretrained  # noqa: E402
from models.training import TrainConfig, train_diffusion  # noqa: E402
from models.unet import WaveletPyramidUNet  # noqa: E402

log = logging.getLogger("benchmarks.pretrain_series")


def training_parts(ucr: Path | None, nab: Path | None) -> dict[str, np.ndarray]:
    """Name → the training part of every UCR and NAB file found (nothing after it)."""
    from models.metrics.nab import probationary_length
    from models.metrics.ucr import parse_ucr_name
    from streamer.replay import read_nab_csv, read_ucr_txt

    parts: dict[str, np.ndarray] = {}
    if ucr is not None:
        for path in sorted(p for p in ucr.iterdir() if p.name.endswith((".txt", ".txt.gz"))):
            values = read_ucr_txt(path).values
            parts[f"ucr/{path.name}"] = values[:parse_ucr_name(path.name).train_end]
    if nab is not None:
        for path in sorted(nab.rglob("*.csv")):
            values = read_nab_csv(path).values
            parts[f"nab/{path.relative_to(nab)}"] = values[:probationary_length(values.size)]
    return parts


def synthetic_parts(n: int, rng: np.random.Generator, length: int = 3000) -> dict[str, np.ndarray]:
    """Normal-looking signals of many periods and shapes (the detector sees periods of 16–256 points)."""
    out = {}
    t = np.arange(length)
    for i in range(n):
        period = rng.uniform(12, 300)
        phase = 2 * np.pi * (t / period + rng.uniform())
        kind = i % 4
        if kind == 0:
            x = np.sin(phase) + 0.4 * rng.uniform() * np.sin(2 * phase + rng.uniform(0, 6))
        elif kind == 1:
            x = np.sign(np.sin(phase))
        elif kind == 2:
            x = (phase / (2 * np.pi)) % 1.0
        else:
            x = np.cumsum(rng.standard_normal(length)) * 0.1
        out[f"synthetic/{i:03d}"] = x + rng.uniform(0.01, 0.2) * rng.standard_normal(length)
    return out


def windows_of(train: np.ndarray, config, per_source: int) -> np.ndarray:
    """Model-input windows of one training part, cut as a detector fitted on it would cut them."""
    w = choose_window(config, train)
    if train.size < w + 1:
        return np.zeros((0, w))
    x = train
    if config.scalogram_normalise == "training":
        centre, scale = fixed_standardisation(train)
        x = (train - centre) / scale
    ends = np.arange(w - 1, x.size)
    ends = ends[:: max(1, int(np.ceil(ends.size / per_source)))]
    return sliding_windows(x, w, ends)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ucr", help="The detector preset whose U-Net and scalograms to pretrain.")
    p.add_argument("--name", required=True, help="Checkpoint name (models/pretrained/<name>.pt).")
    p.add_argument("--ucr", type=Path, default=None, help="Folder of UCR .txt files (their training parts).")
    p.add_argument("--nab", type=Path, default=None, help="NAB data/ folder (the probationary parts).")
    p.add_argument("--synthetic", type=int, default=200, help="Synthetic normal series to add.")
    p.add_argument("--per-source", type=int, default=256, help="At most this many windows per series.")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    p.add_argument("--folder", type=Path, default=FOLDER)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    info, started = start_run([sys.executable, *sys.argv] if argv is None else ["benchmarks/pretrain_series.py",
                                                                                 *argv])
    config = preset(args.preset)
    rng = np.random.default_rng(args.seed)
    sources = {**training_parts(args.ucr, args.nab), **synthetic_parts(args.synthetic, rng)}
    pipe = new_pipeline(config)
    images, counts = [], {}
    for name, train in sources.items():
        if train.size < 48 or not np.all(np.isfinite(train)):
            continue
        windows = windows_of(np.asarray(train, dtype=np.float64), config, args.per_source)
        if windows.shape[0]:
            images.append(pipe.scalograms(windows.astype(np.float32))[0])
            counts[name.split("/")[0]] = counts.get(name.split("/")[0], 0) + windows.shape[0]
    data = torch.cat(images)
    log.info("pretraining on %d windows %s from %d series", data.shape[0], counts, len(sources))
    scorer = pipe.scorer
    unet = scorer.unet_config  # type: ignore[attr-defined]
    torch.manual_seed(args.seed)
    model = WaveletPyramidUNet(unet)
    t0 = time.perf_counter()
    train = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, warmup_steps=100)
    result = train_diffusion(model, scorer.scheduler, data, train, "cpu", progress=True)  # type: ignore[attr-defined]
    info = finish_run(info, started)
    about = {"run": info.to_dict(), "preset": args.preset, "windows": counts, "series": len(sources),
             "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
             "train_seconds": round(time.perf_counter() - t0, 1),
             "final_loss": float(np.mean(result.losses[-50:])),
             "data": {"ucr": str(args.ucr), "nab": str(args.nab), "synthetic": args.synthetic}}
    path = save_pretrained(args.name, result.model, unet.to_dict(),
                           {"scalogram_normalise": config.scalogram_normalise, "n_scales": config.n_scales},
                           about, args.folder)
    print(f"saved {path} ({data.shape[0]} windows, final loss {about['final_loss']:.4f}, "
          f"{about['train_seconds']:.0f} s)")
    return path


if __name__ == "__main__":
    main()
