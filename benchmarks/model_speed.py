"""Model speed: forward windows/s per U-Net preset (bf16 vs fp32) and training time for the series preset.

    .venv/bin/python benchmarks/model_speed.py                 # CPU, all CPU-sized presets
    .venv/bin/python benchmarks/model_speed.py --device cuda   # adds the "gpu" preset

On a CPU shared with other jobs run it with ``OMP_WAIT_POLICY=passive`` (must be set before torch starts):
spinning OpenMP workers that lose their core make a 2-thread forward pass 3-5x slower under contention.

Prints one JSON line per measurement and writes ``benchmarks/results/model_speed.json`` (command, date, git commit, machine, load).
Numbers on a shared machine are noisy: the JSON records the load average before and after, and a note when
other processes were competing for the CPU. Per timing we report the best and the median repetition — the best
is the closest to what the hardware can do, the median what a busy box gave. On CPU we also report windows per
CPU-second and ``est_dedicated_windows_per_s`` (CPU time spread over the torch threads): an estimate of a
dedicated machine that contention barely moves. Training reports ``est_single_core_seconds`` from a one-thread
calibration run: a contention-robust upper bound for a dedicated machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.runinfo import cpu_model, git_commit  # noqa: E402
from models.device import autocast, autocast_dtype, cpu_supports_bf16, resolve_device  # noqa: E402
from models.scheduler import NoiseScheduler  # noqa: E402
from models.training import TrainConfig, train_diffusion  # noqa: E402
from models.unet import PRESETS, UNetConfig, WaveletPyramidUNet  # noqa: E402

log = logging.getLogger("model_speed")
DEFAULT_OUT = REPO / "benchmarks" / "results" / "model_speed.json"


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_busy_seconds() -> float | None:
    """Machine-wide busy CPU time (all processes) from /proc/stat, in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    model: torch.nn.Module, cfg: UNetConfig, batch: int, device: torch.device, amp: bool, min_seconds: float
) -> dict:
    """Windows/s of one ε̂ forward pass at ``batch`` (eval mode, no grad)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, *cfg.sample_size, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    times: list[float] = []
    cpu_times: list[float] = []
    with torch.inference_mode(), autocast(device, enabled=amp):
        model(x, t)  # warm-up: allocator, oneDNN primitive cache, cuDNN autotune
        _sync(device)
        total = 0.0
        while (total < min_seconds or len(times) < 2) and len(times) < 20:
            cpu_start, start = time.process_time(), time.perf_counter()
            model(x, t)
            _sync(device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            total += times[-1]
    row = {
        "batch": batch,
        "precision": str(autocast_dtype(device)).replace("torch.", "") if amp and autocast_dtype(device) else "fp32",
        "windows_per_s_best": round(batch / min(times), 1),
        "windows_per_s_median": round(batch / statistics.median(times), 1),
        "repetitions": len(times),
    }
    if device.type == "cpu":
        # Contention-robust view: CPU seconds the pass really used. With OMP_WAIT_POLICY=passive, idle
        # workers do not burn CPU, so windows per CPU-second x threads estimates a dedicated machine.
        per_cpu_s = batch / statistics.median(cpu_times)
        row["windows_per_cpu_second"] = round(per_cpu_s, 1)
        row["est_dedicated_windows_per_s"] = round(per_cpu_s * min(torch.get_num_threads(), os.cpu_count() or 1), 1)
    return row


def synthetic_scalograms(n: int, size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, str]:
    """Scalograms of synthetic sensor windows (sines with drifting period + noise + occasional spikes).

    Uses the project's CWT (models.transforms.cwt) when it is importable, so training is timed on the inputs
    the product really feeds the model.
    """
    rng = np.random.default_rng(seed)
    length = 256
    tt = np.arange(length)
    period = rng.uniform(8, 64, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    windows = np.sin(2 * np.pi * tt / period + phase) + 0.5 * np.sin(2 * np.pi * tt / (period * 2.7))
    windows += 0.2 * rng.standard_normal((n, length))
    try:
        from models.transforms.cwt import CWTConfig, Scalogram

        images = Scalogram(CWTConfig(n_scales=size[0], out_size=size))(windows)
        return images.float(), "models.transforms.cwt.Scalogram on synthetic sine windows (L=256)"
    except Exception as exc:  # noqa: BLE001 - fall back to a self-contained approximation
        log.warning("project CWT unavailable (%s); using pywt.cwt", exc)
        import pywt

        scales = np.geomspace(2, length / 4, size[0])
        coef, _ = pywt.cwt(windows, scales, "morl", axis=-1, method="fft")  # [S, N, L]
        mag = np.log(np.abs(coef).transpose(1, 0, 2) + 1e-3)
        img = torch.nn.functional.interpolate(
            torch.from_numpy(mag).float().unsqueeze(1), size=size, mode="area"
        )
        img = (img - img.mean(dim=(2, 3), keepdim=True)) / img.std(dim=(2, 3), keepdim=True)
        return img, "pywt.cwt morlet on synthetic sine windows (L=256)"


@torch.no_grad()
def heldout_loss(model, scheduler: NoiseScheduler, data: torch.Tensor, device: torch.device) -> float:
    """ε-MSE on held-out windows at fixed t and noise (the zero predictor scores ≈ 1.0)."""
    g = torch.Generator().manual_seed(123)
    t = torch.randint(0, scheduler.num_train_timesteps, (data.shape[0],), generator=g)
    noise = torch.randn(data.shape, generator=g)
    x_t = scheduler.add_noise(data, noise, t)
    model.eval()
    losses = []
    for i in range(0, data.shape[0], 256):
        eps = model(x_t[i : i + 256].to(device), t[i : i + 256].to(device)).float().cpu()
        losses.append(((eps - noise[i : i + 256]) ** 2).mean(dim=(1, 2, 3)))
    return float(torch.cat(losses).mean())


def time_training(args, device: torch.device) -> dict:
    cfg = UNetConfig.preset("series")
    data, source = synthetic_scalograms(args.train_windows + 256, cfg.sample_size)
    train, held = data[: args.train_windows], data[args.train_windows :]
    scheduler = NoiseScheduler()
    torch.manual_seed(0)
    model = WaveletPyramidUNet(cfg)
    tcfg = TrainConfig(steps=args.train_steps, batch_size=args.train_batch, amp=not args.no_amp_train)
    cpu_start = time.process_time()
    result = train_diffusion(model, scheduler, train, tcfg, device=device, progress=not args.no_progress)
    cpu_seconds = time.process_time() - cpu_start
    single_core = _single_core_step_seconds(train, scheduler, tcfg, device) if device.type == "cpu" else None
    tail = result.losses[-max(1, len(result.losses) // 10):]
    return {
        "preset": "series",
        "windows": args.train_windows,
        "data": source,
        "train_config": tcfg.to_dict(),
        "seconds": round(result.seconds, 2),
        "steps_per_s": round(tcfg.steps / result.seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "cpu_seconds_per_step_1_thread": round(single_core, 4) if single_core else None,
        "est_single_core_seconds": round(single_core * tcfg.steps, 1) if single_core else None,
        "epochs": round(tcfg.steps * min(tcfg.batch_size, args.train_windows) / args.train_windows, 2),
        "first_loss_mean10": round(float(np.mean(result.losses[:10])), 4),
        "final_train_loss_last10pct": round(float(np.mean(tail)), 4),
        "heldout_loss_ema": round(heldout_loss(result.model, scheduler, held, device), 4),
        "heldout_loss_zero_predictor": round(float((torch.randn(held.shape, generator=torch.Generator().manual_seed(123)) ** 2).mean()), 4),
    }


def _single_core_step_seconds(train: torch.Tensor, scheduler, tcfg: TrainConfig, device) -> float:
    """CPU seconds per training step with ONE torch thread (after a warm-up).

    With two threads on a contended box, thread hand-offs inflate CPU time 3x for the many small backward
    kernels; one thread has no hand-offs, so steps x this is a contention-robust upper bound on the
    training time of a dedicated machine (a second core only makes it faster).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = WaveletPyramidUNet(UNetConfig.preset("series"))
        short = TrainConfig.from_dict({**tcfg.to_dict(), "steps": 3})
        train_diffusion(model, scheduler, train[:256], short, device=device, progress=False)
        start = time.process_time()
        steps = 25
        train_diffusion(
            model, scheduler, train, TrainConfig.from_dict({**tcfg.to_dict(), "steps": steps}), device=device,
            progress=False,
        )
        return (time.process_time() - start) / steps
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--presets", nargs="*", default=None, help="default: all except 'gpu' on CPU")
    parser.add_argument("--batches", nargs="*", type=int, default=[64, 256])
    parser.add_argument("--min-seconds", type=float, default=1.5, help="time per measurement (at least 2 reps)")
    parser.add_argument("--train-windows", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--no-amp-train", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    device = resolve_device(args.device)
    presets = args.presets or [p for p in PRESETS if device.type == "cuda" or p != "gpu"]
    load_before = _loadavg()
    busy_start, own_start, wall_start = _cpu_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_model": cpu_model(),
            "cpu_bf16": cpu_supports_bf16(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "device": str(device),
            "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "load_average_before": load_before,
        "forward": [],
    }
    for name in presets:
        cfg = UNetConfig.preset(name)
        torch.manual_seed(0)
        model = WaveletPyramidUNet(cfg).to(device).eval()
        params = model.num_parameters()
        for batch in args.batches:
            for amp in (True, False):
                if amp and autocast_dtype(device) is None:
                    continue
                try:
                    row = time_forward(model, cfg, batch, device, amp, args.min_seconds)
                except RuntimeError as exc:  # out of memory on big presets
                    row = {"batch": batch, "precision": "bf16" if amp else "fp32", "error": str(exc)[:200]}
                row = {"preset": name, "sample_size": list(cfg.sample_size), "in_channels": cfg.in_channels,
                       "params": params, **row}
                report["forward"].append(row)
                print(json.dumps(row), flush=True)
        del model
    if not args.skip_train:
        report["training"] = time_training(args, device)
        print(json.dumps(report["training"]), flush=True)
    load_after = _loadavg()
    report["load_average_after"] = load_after
    cores = os.cpu_count() or 1
    wall = time.perf_counter() - wall_start
    busy_end = _cpu_busy_seconds()
    others = None
    if busy_start is not None and busy_end is not None:
        others = max(0.0, (busy_end - busy_start) - (_own_cpu_seconds() - own_start))
    report["other_processes_cpu_seconds"] = round(others, 1) if others is not None else None
    report["wall_seconds"] = round(wall, 1)
    share = others / (wall * cores) if others is not None and wall > 0 else 0.0
    report["note"] = (
        f"CPU shared with other processes: they used {share:.0%} of the {cores} cores' capacity during the "
        "run, so these timings are noisy lower bounds." if share > 0.05
        else "no significant competing CPU load during the run."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
