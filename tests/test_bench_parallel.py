"""The series benchmarks fit files side by side (`--jobs`): the same figures for any worker count, one torch thread
per file wherever it runs, and a worker's error reaches the command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.parallel import map_files
from models.errors import InputError
from nab_corpus import write_tiny_nab_corpus
from scalowatch.cli import app
from testbed_data import make_testbed
from ucr_folder import write_ucr_folder

RUNNER = CliRunner()
FAST = "scalowatch:steps=3,max_train_windows=32"


def _threads_and_square(x: int) -> tuple[int, int]:
    if x < 0:
        raise InputError(f"negative item {x}")
    return torch.get_num_threads(), x * x


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_back_in_the_items_order_each_computed_with_one_thread(jobs):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        got = map_files(_threads_and_square, [3, 1, 2, 5], jobs, lambda i, r: seen.append(i))
        assert got == [(1, 9), (1, 1), (1, 4), (1, 25)]
        assert sorted(seen) == [0, 1, 2, 3]
        assert torch.get_num_threads() == 2  # this process's setting is given back
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_error_in_one_item_is_raised_to_the_caller(jobs):
    with pytest.raises(InputError, match="negative item -4"):
        map_files(_threads_and_square, [1, -4, 2], jobs)


def test_bench_ucr_ablation_predicts_the_same_with_one_or_two_workers(tmp_path):
    data = write_ucr_folder(tmp_path / "ucr", (1500, 1700, 1300), seed=3)
    runs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        res = RUNNER.invoke(app, ["bench", "ucr", "--data", str(data), "--out", str(out), "--scorer", FAST,
                                  "--ablate", "--examples", "0", "--jobs", jobs, "--no-progress"])
        assert res.exit_code == 0, res.output
        runs[jobs] = json.loads((out / "predictions.json").read_text())["predictions"]
        meta = json.loads((out / "ucr.json").read_text())
        assert meta["run"]["extra"] == {"jobs": int(jobs), "threads_per_file": 1}
    assert set(runs["1"]) == {"product", "without_diffusion", "diffusion_only"}
    assert runs["2"] == runs["1"]


def _nab_result_files(tmp_path, *options: str) -> dict[str, dict[str, str]]:
    """Every result file of ``bench nab`` on the tiny corpus by relative path, for ``--jobs`` 1 and 2."""
    root = tmp_path / "nab"
    write_tiny_nab_corpus(root)
    runs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        res = RUNNER.invoke(app, ["bench", "nab", "--data", str(root), "--out", str(out), "--scorer", FAST, *options,
                                  "--jobs", jobs, "--no-progress"])
        assert res.exit_code == 0, res.output
        runs[jobs] = {path.relative_to(out).as_posix(): path.read_text() for path in sorted(out.rglob("*.csv"))}
    return runs


def test_bench_nab_scores_every_row_the_same_with_one_or_two_workers(tmp_path):
    runs = _nab_result_files(tmp_path, "--ablate")
    assert len([name for name in runs["1"] if name.startswith("diffusion_only/")]) == 2
    assert runs["2"] == runs["1"]  # every result file byte for byte


def test_bench_testbed_writes_the_same_rows_with_one_or_two_workers(tmp_path):
    root = make_testbed(tmp_path / "bed", runs=2, rows=700, fault=(500, 560))
    runs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly",
                                  "--skip-column", "changepoint", "--out", str(out), "--scorer", FAST, "--ablate",
                                  "--jobs", jobs, "--no-progress"])
        assert res.exit_code == 0, res.output
        runs[jobs] = {path.relative_to(out).as_posix(): path.read_text() for path in sorted(out.rglob("*.csv"))}
    assert len([name for name in runs["1"] if name.startswith("diffusion_only/")]) == 2
    assert runs["2"] == runs["1"]


def test_bench_nab_via_monitor_stores_the_same_with_one_or_two_monitors(tmp_path):
    runs = _nab_result_files(tmp_path, "--via", "monitor")
    label = "scalowatch_steps-3_max_train_windows-32"
    assert {name.split("/")[0] for name in runs["1"]} == {label, f"{label}-alerts"} and len(runs["1"]) == 4
    assert runs["2"] == runs["1"]  # the scores and the alerts of every file, byte for byte


def test_the_streams_are_shared_among_monitors_by_their_length():
    from benchmarks.via_monitor import _shares
    from streamer.replay import SeriesSource

    sources = [SeriesSource(Path(f"{n}.csv"), f"s{n}", np.arange(n), np.zeros(n)) for n in (10, 50, 20, 30, 40)]
    shares = _shares(sources, 2)
    # the longest first, each into the lighter share (a tie: the first): 50 | 40, 30 | 20, 10 -> 80 and 70 samples
    assert [[s.stream for s in share] for share in shares] == [["s10", "s50", "s20"], ["s30", "s40"]]
    assert len(_shares(sources, 9)) == 5 and len(_shares(sources[:1], 2)) == 1


def test_workers_end_when_the_command_is_killed(tmp_path):
    """`kill -9` of a benchmark command must not leave its workers fitting on without it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    pids.mkdir()
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from benchmarks.parallel import map_files\n"
              "from test_bench_parallel import _record_pid_and_wait\n"
              f"map_files(_record_pid_and_wait, [{str(pids)!r}] * 2, 2)\n")
    command = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2:
            assert time.monotonic() < deadline and command.poll() is None, "the workers did not start"
            time.sleep(0.2)
        workers = [int(p.name) for p in pids.iterdir()]
        command.send_signal(signal.SIGKILL)
        command.wait()
        deadline = time.monotonic() + 60  # a liveness bound, not a timing: the watch looks once a second
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived the command"
            time.sleep(0.2)
    finally:
        command.kill()


def _record_pid_and_wait(folder: str) -> None:
    import os
    import time

    (Path(folder) / str(os.getpid())).touch()
    time.sleep(600)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its new parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
