"""Run metadata saved beside every benchmark result, so a number can always be traced to its run.

Records the command line, the git commit (and whether the tree had uncommitted changes, and which tracked files:
a batch of runs that copies its results into benchmarks/results/ leaves the later runs "dirty" with result files
only, and a reader must be able to tell that from changed code), the UTC date, the machine (CPU count and model,
GPU name if any) and the wall time.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MAX_CHANGED = 50  # changed paths listed in a run's metadata (the rest is flagged as truncated)


@dataclass(frozen=True)
class MachineInfo:
    cpu_count: int
    cpu_model: str
    gpu: str | None
    platform: str
    python: str


@dataclass
class RunInfo:
    command: list[str]
    git_commit: str | None
    git_dirty: bool | None
    started_utc: str
    machine: MachineInfo
    wall_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    git_changed: list[str] = field(default_factory=list)
    git_changed_truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip() if out.returncode == 0 else None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop a CPU benchmark
        return None
    return None


def machine_info() -> MachineInfo:
    return MachineInfo(
        cpu_count=os.cpu_count() or 0,
        cpu_model=cpu_model(),
        gpu=gpu_name(),
        platform=platform.platform(),
        python=sys.version.split()[0],
    )


def start_run(command: list[str] | None = None) -> tuple[RunInfo, float]:
    """RunInfo for a run starting now, plus the perf_counter start to pass to :func:`finish_run`."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    # NUL-separated names: renames and paths with spaces or quotes come through as they are.
    names = _git("diff", "--name-only", "-z", "HEAD")
    changed = [n for n in (names or "").split("\0") if n]
    info = RunInfo(
        command=list(command if command is not None else sys.argv),
        git_commit=git_commit(),
        git_dirty=None if status is None else bool(status),
        started_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=machine_info(),
        git_changed=changed[:MAX_CHANGED],
        git_changed_truncated=len(changed) > MAX_CHANGED,
    )
    return info, time.perf_counter()


def finish_run(info: RunInfo, started: float) -> RunInfo:
    info.wall_seconds = round(time.perf_counter() - started, 3)
    return info


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Pretty JSON, written atomically (a crash never leaves half a results file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
