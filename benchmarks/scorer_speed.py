"""Windows per second of every scorer through ScalogramPipeline (CWT + model), default series config.

    .venv/bin/python benchmarks/scorer_speed.py [--windows 1024] [--length 256] [--repeats 3] [--device cpu]

What is measured: ``pipeline.score_windows`` on a batch of windows of the streamer's default length, i.e. the
whole per-window cost the streamer pays (validation, CWT, normalisation, model passes, map reduction), with
the "series" U-Net preset and the default ``CWTConfig`` (32 scales → 32×32). Weights come from a few training
steps only: throughput does not depend on how well a model is trained. The CWT alone is timed as well, so the
model's share is visible. Best of ``--repeats`` after one warm-up (the machine is shared; best-of is the least
noisy estimate of what the code can do, and the noise is why this is not asserted anywhere).

Results: ``benchmarks/results/scorer_speed.json`` with command, date, commit and machine.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.runinfo import REPO, finish_run, start_run, write_json
from models.device import autocast_dtype, resolve_device
from models.pipeline import ScalogramPipeline
from models.scorers import available_scorers, create_scorer
from models.training import TrainConfig
from models.transforms.cwt import CWTConfig, Scalogram

log = logging.getLogger(__name__)

RESULTS = REPO / "benchmarks" / "results" / "scorer_speed.json"
TARGET_WINDOWS_PER_S = 1000.0
SINGLE_PASS = ("recon", "adversarial")

# (label, scorer name, scorer options). recon appears twice: the streamer runs it with lam=1.0 (pixel term
# only), the paper's default mixes in the EfficientNet perceptual term.
VARIANTS: list[tuple[str, str, dict]] = [
    ("recon (lam=1.0, streamer default)", "recon", {"lam": 1.0}),
    ("recon (lam=0.5, with CNN features)", "recon", {}),
    ("adversarial (lam=1.0)", "adversarial", {"lam": 1.0}),
    ("kl", "kl", {}),
    ("kl (lam=1.0)", "kl", {"lam": 1.0}),
    ("dynamic", "dynamic", {}),
    ("trend", "trend", {}),
]
# Rows on a smaller grid: 16 scales x 16 time bins and the "tiny" U-Net — what the target costs in resolution.
SMALL_VARIANTS: list[tuple[str, str, dict]] = [
    ("recon (lam=1.0) tiny U-Net, 16x16 scalograms", "recon", {"lam": 1.0}),
]


def synthetic_windows(n: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    periods = rng.uniform(10, 40, size=(n, 1))
    return np.sin(2 * np.pi * t / periods + rng.uniform(0, 6.3, size=(n, 1))) + 0.1 * rng.standard_normal((n, length))


def measure(fn, n: int, repeats: int) -> dict:
    """Best wall-clock rate, plus the CPU-time view of the same runs.

    On a shared machine the wall clock counts other people's work; the process's CPU seconds do not. Windows
    per CPU-second × threads estimates a dedicated machine (an upper bound: it assumes both threads stay busy).
    """
    fn()  # warm-up: filter banks, lazy CNN loading, allocator
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    per_cpu_s = n / min(cpus)
    return {
        "windows_per_s": round(n / min(walls), 1),
        "windows_per_cpu_second": round(per_cpu_s, 1),
        "est_dedicated_windows_per_s": round(per_cpu_s * min(torch.get_num_threads(), os.cpu_count() or 1), 1),
    }


def run(windows: int, length: int, repeats: int, device: str, train_windows: int = 256,
        only: list[str] | None = None, small: bool = True) -> dict:
    dev = resolve_device(device)
    cwt = CWTConfig()
    train = synthetic_windows(train_windows, length, seed=1)
    test = synthetic_windows(windows, length, seed=2)
    results: dict = {
        "device": str(dev),
        "autocast": str(autocast_dtype(dev)),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": list(os.getloadavg()),
        "windows": windows,
        "window_length": length,
        "cwt": cwt.to_dict(),
        "unet_preset": "series",
        "target_windows_per_s": TARGET_WINDOWS_PER_S,
    }
    transform = Scalogram(cwt)
    x = torch.as_tensor(test, dtype=torch.float32, device=dev)
    results["cwt_only"] = measure(lambda: transform(x), windows, repeats)
    log.info("CWT only: %s", results["cwt_only"])

    base = None
    rows = []
    for label, name, options in VARIANTS:
        if name not in available_scorers() or (only and name not in only):
            continue
        # calibration_samples only sets how many training windows estimate the term statistics at fit time;
        # it has no effect on scoring speed, so keep fitting cheap.
        scorer = create_scorer(name, unet="series", device=dev, calibration_samples=64,
                               train=TrainConfig(steps=2, batch_size=32), **options)
        pipe = ScalogramPipeline(cwt, scorer)
        # Same network for every row (only the scoring differs, and speed does not depend on the weights).
        pipe.fit_windows(train, reuse=base)
        base = base or scorer
        m = measure(lambda: pipe.score_windows(test), windows, repeats)
        row = {
            "label": label,
            "scorer": name,
            "options": options,
            **m,
            "ms_per_window": round(1000.0 / m["windows_per_s"], 3),
            "single_pass": name in SINGLE_PASS,
            "meets_target_measured": m["windows_per_s"] >= TARGET_WINDOWS_PER_S,
            "meets_target_est_dedicated": m["est_dedicated_windows_per_s"] >= TARGET_WINDOWS_PER_S,
        }
        log.info("%-40s %s", label, m)
        rows.append(row)
    results["scorers"] = rows
    if small:
        results["small_grid"] = run_small(test, train, repeats, dev)
    return results


def run_small(test: np.ndarray, train: np.ndarray, repeats: int, dev: torch.device) -> list[dict]:
    cwt = CWTConfig(n_scales=16, out_size=(16, 16))
    rows = []
    for label, name, options in SMALL_VARIANTS:
        scorer = create_scorer(name, unet="tiny", device=dev, calibration_samples=64,
                               train=TrainConfig(steps=2, batch_size=32), **options)
        pipe = ScalogramPipeline(cwt, scorer).fit_windows(train)
        m = measure(lambda: pipe.score_windows(test), len(test), repeats)
        rows.append({"label": label, "scorer": name, "options": options, "unet_preset": "tiny",
                     "cwt": cwt.to_dict(), **m})
        log.info("%-40s %s", label, m)
    return rows


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=1024)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto; 'all' = cpu and cuda if present")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", help="scorer names to time (default: all)")
    parser.add_argument("--no-small", action="store_true", help="skip the tiny-U-Net 16x16 row")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info, started = start_run()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    runs = [run(args.windows, args.length, args.repeats, d, only=args.only, small=not args.no_small)
            for d in devices]
    finish_run(info, started)
    payload = {"run": info.to_dict(), "results": runs,
               "note": "timings on a shared machine are noisy; best of repeats after a warm-up"}
    write_json(args.out, payload)
    log.info("wrote %s", args.out)
    return args.out


if __name__ == "__main__":
    main()
