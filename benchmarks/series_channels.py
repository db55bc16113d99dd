"""Score the channels of one diffusion series-detector run separately: what does the diffusion model itself add?

The detector fuses a diffusion channel with statistical (level/scale, windowed Gaussian, spatial rule) and
nearest-neighbour discord channels (see ``models.series_detector``). A run with ``SCALOWATCH_SERIES_DUMP_DIR`` set
dumps every series' channels; this module re-applies the *same* code path (``spread_to_points`` → the detector's
own ``calibrated`` → NAB scoring, or argmax − lag for UCR) to each channel group alone, to the detector, and to
the detector without the diffusion channel. No model is retrained and nothing is tuned: the channels are exactly
the run's (the model-free ``gaussian``/``spatial`` channels are recomputed from the values by the detector's own
``online_channels``).

    python -m benchmarks.series_channels nab DUMP_DIR/recon --out benchmarks/results/nab_diffusion_recon_channels.json
    python -m benchmarks.series_channels ucr DUMP_DIR/recon --out benchmarks/results/ucr_diffusion_recon_channels.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.cli import DEFAULT_NAB, DEFAULT_UCR
from benchmarks.nab import PROFILES
from benchmarks.nab_files import NabCorpus
from benchmarks.ucr import find_ucr_files, load_ucr_series
from models.metrics import nab as nab_metrics
from models.metrics.ucr import is_hit, parse_ucr_name, ucr_accuracy
from models.series_detector import DISCORD_PREFIXES, DiffusionDetectorConfig, DiffusionSeriesDetector, spread_to_points

Selector = Callable[[list[str]], list[str]]  # a file's channel names -> the ones an ablation row keeps


def _both_kinds(names: list[str]) -> list[str]:
    kinds = {n.split("@")[0] for n in names if n.startswith(DISCORD_PREFIXES)}
    return [n for n in names if n.startswith(DISCORD_PREFIXES)] if len(kinds) == 2 else []


# One table of ablation rows for both benchmarks. UCR scores a row as the max of its channels' z, NAB through the
# detector's own calibration (where ``spatial`` is the override); rows whose channels a run did not configure are
# left out.
GROUPS: dict[str, Selector] = {
    "diffusion (pure)": lambda names: [n for n in names if n == "diffusion"],
    "statistical (level/scale only)": lambda names: [n for n in names if n in ("level", "scale")],
    "discord (nearest neighbour only)": lambda names: [n for n in names if n.startswith("discord@")],
    "value discords (level-keeping nearest neighbour only)": lambda names: [n for n in names if n.startswith("value@")],
    "all discords (shape and value)": _both_kinds,
    "windowed Gaussian channel only": lambda names: [n for n in names if n == "gaussian"],
    "spatial rule only": lambda names: [n for n in names if n == "spatial"],
}
DETECTOR = "the detector"
WITHOUT_DIFFUSION = "the detector without the diffusion channel"


def detector_of(z: dict) -> DiffusionSeriesDetector:
    """An unfitted detector with the run's own configuration (stored in the dump), so the fusion rules applied
    here are the detector's code, not a copy of them."""
    if "config" not in z:
        raise SystemExit("this dump has no detector configuration (written before dumps carried one): "
                         "re-run the benchmark with SCALOWATCH_SERIES_DUMP_DIR set")
    config = json.loads(str(z["config"]))
    config.pop("dump_dir", None)
    return DiffusionSeriesDetector(DiffusionDetectorConfig(**config))


def point_channels(z: dict) -> dict[str, np.ndarray]:
    """A dump's window channels spread to points exactly as the detector does; discord channels carry their own
    grid as ``<name>_ends`` (older dumps scored them on the diffusion grid)."""
    n = int(z["n"])
    out = {}
    for name in ("diffusion", "level", "scale", *(k for k in z if k.startswith(DISCORD_PREFIXES) and
                                                   not k.endswith("_ends"))):
        out[name] = spread_to_points(z.get(f"{name}_ends", z["ends"]), z[name], n)
    return out


def without_diffusion(points: dict) -> dict:
    """The same channels with the diffusion channel silenced (it can then never win a max)."""
    return {**points, "diffusion": np.full_like(points["diffusion"], -np.inf)}


def series_key(values: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(values, dtype=np.float64)).tobytes()).hexdigest()[:16]


def nab_rows(points: dict, detector: DiffusionSeriesDetector) -> dict[str, list[str]]:
    """One file's NAB ablation rows: label -> the channel names ``calibrated`` uses. Per file, because a file whose
    training part is short may lack a long value discord."""
    every = detector.fused_channels(points) + (["spatial"] if "spatial" in points else [])
    rows = {label: select(every) for label, select in GROUPS.items()}
    rows[DETECTOR] = every
    rows[WITHOUT_DIFFUSION] = [n for n in every if n != "diffusion"]
    return {label: names for label, names in rows.items() if names}


def nab_channels(dump: Path, data: Path) -> dict:
    """Each channel group alone, the detector, and the detector without the diffusion channel, through the
    detector's own calibration and the NAB runner's scorer."""
    corpus = NabCorpus(data)
    windows, profiles = corpus.windows(), corpus.profiles()
    keys, layouts, points = [], [], []
    detector: DiffusionSeriesDetector | None = None
    for key in corpus.keys():
        s = corpus.read(key)
        f = dump / f"{series_key(s.values)}.npz"
        if not f.exists():
            raise SystemExit(f"{f} missing: the dump does not cover {key}")
        keys.append(key)
        layouts.append(nab_metrics.build_layout(key, s.timestamps, windows.get(key, [])))
        z = dict(np.load(f))
        detector = detector or detector_of(z)
        p = point_channels(z)
        p.update(detector.online_channels(s.values))
        points.append(p)
    if detector is None:
        raise SystemExit(f"no NAB files under {data}")
    n_windows = sum(len(windows.get(k, [])) for k in keys)
    rows = [nab_rows(p, detector) for p in points]
    out = {}
    for label in rows[0]:
        if not all(label in r for r in rows):  # a row must describe every file to be a corpus score
            continue
        scores = [detector.calibrated(p, nab_metrics.probationary_length(p["diffusion"].size), r[label])
                  for p, r in zip(points, rows)]
        res = nab_metrics.score_all_profiles(layouts, scores, n_windows, profiles)
        out[label] = {prof: round(res[prof].normalized, 3) for prof in PROFILES if prof in res}
    return {"benchmark": "nab", "n_files": len(keys), "dump": str(dump), "detector_config": detector.config.to_dict(),
            "scores": out}


def ucr_channels(dump: Path, data: Path) -> dict:
    """Each channel alone, the detector (its own ``combine``) and the detector without the diffusion channel."""
    files = find_ucr_files(data)
    out = {}
    dumps = []
    for path in files:
        spec = parse_ucr_name(path.name)
        values = load_ucr_series(path)
        f = dump / f"{series_key(values)}.npz"
        if not f.exists():
            raise SystemExit(f"{f} missing: the dump does not cover {path.name}")
        z = dict(np.load(f))
        dumps.append((spec, point_channels(z), int(z["window"]), detector_of(z)))
    variants: dict[str, Callable[[dict, DiffusionSeriesDetector], np.ndarray]] = {
        **{label: (lambda p, det, pick=select: np.max([p[n] for n in pick(list(p))], axis=0))
           for label, select in GROUPS.items() if all(select(list(p)) for _, p, _, _ in dumps)},
        DETECTOR: lambda p, det: det.combine(p),
        WITHOUT_DIFFUSION: lambda p, det: det.combine(without_diffusion(p)),
    }
    for name, score in variants.items():
        preds = []
        for spec, p, window, det in dumps:
            s = score(p, det)
            peak = spec.train_end + int(np.argmax(s[spec.train_end:]))
            preds.append((spec, int(min(max(peak - (window - 1) // 2, 0), s.size - 1))))
        acc = ucr_accuracy(preds)
        out[name] = {**acc.to_dict(), "hits_by_file": {sp.stem: bool(is_hit(sp, p)) for sp, p in preds}}
    return {"benchmark": "ucr", "n_series": len(dumps), "dump": str(dump), "accuracy": out}


def plot_channels(result: dict, baselines: Path | None, path: Path) -> Path:
    """The channels beside the baselines of a ``bench`` run, so the diffusion model's share is seen at a glance."""
    from benchmarks.plots import plot_accuracy_bars, plot_scoreboard

    base = json.loads(baselines.read_text()) if baselines else {}
    if result["benchmark"] == "nab":
        table = {**base.get("scores", {}), **result["scores"]}
        return plot_scoreboard(table, path, "NAB: diffusion detector channels vs. baselines")
    table = {**base.get("accuracy", {}), **{k: v for k, v in result["accuracy"].items()}}
    return plot_accuracy_bars(table, path, "UCR top-1: diffusion detector channels vs. baselines")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("benchmark", choices=("nab", "ucr"))
    ap.add_argument("dump", type=Path)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--baselines", type=Path, default=None,
                    help="a bench nab/ucr JSON whose detectors are drawn beside the channels")
    ap.add_argument("--plot", type=Path, default=None, help="PNG: scoreboard (NAB) or accuracy bars (UCR)")
    args = ap.parse_args()
    if args.benchmark == "nab":
        result = nab_channels(args.dump, args.data or DEFAULT_NAB)
    else:
        result = ucr_channels(args.dump, args.data or DEFAULT_UCR)
    if args.plot:
        plot_channels(result, args.baselines, args.plot)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(json.dumps({k: v for k, v in result.items() if k in ("scores", "accuracy")}, default=str)[:2000])


if __name__ == "__main__":
    main()
