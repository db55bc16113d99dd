"""What a state checkpoint costs per round: the journal (streamer/state_files.py) against rewriting every state whole.

    .venv/bin/python benchmarks/state_checkpoint.py                      # 100 streams, 50 new samples each round
    .venv/bin/python benchmarks/state_checkpoint.py --streams 1000 --new 1

One stream of the ``nab`` preset is scored until its histories are full (art_daily_jumpsup, bundled, repeated to
9,000 samples past its training part); its state
is cloned into ``--streams`` streams, and each round every stream scores ``--new`` more samples and is
checkpointed twice into two folders: by :class:`~streamer.state_files.StateFiles` (what the monitor does) and, as
the baseline of the same run, by the previous format (the whole state as one JSON, fsynced and renamed). Prints
and saves (``benchmarks/results/state_checkpoint.json``) the bytes written and seconds per round, medians over
the rounds; the first round (a journal's first generation is written whole) is reported apart.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.runinfo import finish_run, start_run, write_json  # noqa: E402
from models.detector import preset  # noqa: E402
from models.detector.fitted import FittedDetector  # noqa: E402
from streamer.durable import sync_directory  # noqa: E402
from models.detector.state_json import pack_state, unpack_state  # noqa: E402
from streamer.state_files import StateFiles  # noqa: E402

SERIES = REPO / "streamer" / "demo_data" / "nab" / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"


def _feed(fitted, state, x: np.ndarray) -> None:
    _, windows = state.windows_for(x)
    state.update(x, fitted.score_windows(windows))


def _whole(folder: Path, states: list[dict]) -> None:
    """The format before the journal: every state whole, one JSON each (the old ``_write_states``)."""
    for i, state in enumerate(states):
        path, tmp = folder / f"s{i}.json", folder / f"s{i}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(pack_state(state)))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    sync_directory(folder)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--new", type=int, default=50, help="Samples each stream scores between two checkpoints.")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "state_checkpoint.json")
    args = p.parse_args(argv)
    info, started = start_run()
    cfg = preset("nab")
    one = pd.read_csv(SERIES)["value"].to_numpy(np.float64)
    warm = cfg.train_samples + 9_000  # the likelihood histories (8,640 each) are full
    x = np.tile(one, -(-(warm + args.new * args.rounds) // one.size))
    fitted = FittedDetector.fit(x[:cfg.train_samples], cfg, reference=False)
    seed = fitted.new_state()
    _feed(fitted, seed, x[:warm])
    saved = unpack_state(json.loads(json.dumps(pack_state(seed.state_dict()))))
    streams = []
    for _ in range(args.streams):
        state = fitted.new_state()
        state.load_state_dict(saved)
        streams.append(state)
    rows = []
    files = StateFiles()
    with tempfile.TemporaryDirectory() as tmp:
        journal_dir, whole_dir = Path(tmp, "journal"), Path(tmp, "whole")
        journal_dir.mkdir()
        whole_dir.mkdir()
        for r in range(args.rounds):
            chunk = x[warm + r * args.new: warm + (r + 1) * args.new]
            for state in streams:
                _feed(fitted, state, chunk)
            states = [s.state_dict() for s in streams]
            w0, t0 = _written(), time.perf_counter()
            files.write([(journal_dir / f"s{i}.json", st, i) for i, st in enumerate(states)])
            w1, t1 = _written(), time.perf_counter()
            _whole(whole_dir, states)
            w2, t2 = _written(), time.perf_counter()
            rows.append({"round": r, "journal_s": t1 - t0, "whole_s": t2 - t1, "journal_bytes": w1 - w0,
                         "whole_bytes": w2 - w1, "journal_folder_bytes": _size(journal_dir),
                         "whole_folder_bytes": _size(whole_dir)})
            print(json.dumps(rows[-1]))
    steady = rows[1:] or rows
    summary = {k: statistics.median(r[k] for r in steady) for k in ("journal_s", "whole_s", "journal_bytes",
                                                                   "whole_bytes")}
    summary["first_round"] = {k: rows[0][k] for k in ("journal_s", "whole_s", "journal_bytes", "whole_bytes")}
    summary["bytes_ratio"] = summary["whole_bytes"] / max(summary["journal_bytes"], 1)
    summary["time_ratio"] = summary["whole_s"] / max(summary["journal_s"], 1e-9)
    payload = {"run": finish_run(info, started).to_dict(), "streams": args.streams, "new_samples": args.new,
               "rounds": rows, "median_after_first_round": summary}
    write_json(args.out, payload)
    print(f"{args.streams} streams, {args.new} new samples each per checkpoint: journal "
          f"{summary['journal_bytes'] / 1e6:.2f} MB in {summary['journal_s']:.2f} s, whole states "
          f"{summary['whole_bytes'] / 1e6:.1f} MB in {summary['whole_s']:.2f} s per checkpoint "
          f"(x{summary['bytes_ratio']:.0f} bytes, x{summary['time_ratio']:.1f} time) -> {args.out}")
    return payload


def _written() -> int:
    """Bytes this process has handed to write() so far (Linux /proc/self/io ``wchar``): what a checkpoint wrote,
    whatever files it touched."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


if __name__ == "__main__":
    main()
