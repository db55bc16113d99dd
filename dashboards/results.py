"""Read whatever the benchmarks left in ``benchmarks/results/`` for the Scoreboard page.

Why so tolerant: the benchmark writers (NAB, UCR, MVTec, throughput) each choose their own JSON layout, and a
results folder grows over time; the page shows every JSON file as the most table-like thing it can be and every
PNG as a picture, and a file it cannot read becomes a warning, not a failure.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS_DIR_ENV = "SCALOWATCH_DASHBOARD_RESULTS_DIR"
DEFAULT_RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
METADATA_KEYS = ("run", "machine", "command", "protocol")
MAX_COLUMNS = 30


def run_summary(data: Any) -> str:
    """One line about how a result was produced (the benchmarks' ``run`` block), or ''."""
    run = data.get("run") if isinstance(data, dict) else None
    if not isinstance(run, dict):
        return ""
    parts = []
    if run.get("started_utc"):
        parts.append(f"run {run['started_utc']}")
    if run.get("git_commit"):
        parts.append(f"commit {str(run['git_commit'])[:10]}" + (" (dirty)" if run.get("git_dirty") else ""))
    if isinstance(run.get("wall_seconds"), (int, float)):
        parts.append(f"{run['wall_seconds']:.0f} s")
    machine = run.get("machine")
    if isinstance(machine, dict):
        parts.append(f"{machine.get('cpu_count', '?')} CPU" + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""))
    command = run.get("command")
    if isinstance(command, list) and command:
        parts.append("`" + " ".join(str(c) for c in command[1:4]) + (" …`" if len(command) > 4 else "`"))
    return " · ".join(parts)


@dataclass(frozen=True)
class ResultFile:
    path: Path
    title: str
    tables: list[tuple[str, pd.DataFrame]]  # empty: not table-like, show `data` as JSON
    data: Any
    error: str = ""


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_DIR_ENV) or DEFAULT_RESULTS_DIR)


def title_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return " / ".join(part.replace("_", " ").replace("-", " ") for part in rel.parts)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _names_first(frame: pd.DataFrame) -> pd.DataFrame:
    """Identifying columns (name, label, category, detector...) first, the numbers after them."""
    ident = [c for c in frame.columns
             if any(word in str(c).lower() for word in ("name", "label", "category", "detector", "file"))]
    return frame[ident + [c for c in frame.columns if c not in ident]]


def _dict_of_records(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def _records_table(value: Any) -> pd.DataFrame | None:
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        return _names_first(pd.json_normalize(value, sep=" "))
    if _dict_of_records(value):
        rows = [{"name": name, **pd.json_normalize(body, sep=" ").iloc[0].to_dict()} for name, body in value.items()]
        return _names_first(pd.DataFrame(rows))
    return None


def as_tables(data: Any) -> list[tuple[str, pd.DataFrame]]:
    """Every table-like part of a JSON value, as (label, table): the value itself if it is a list of records
    or a mapping name -> record, else each such member of a top-level object (run metadata excluded), else
    the object's scalar members as one row. Empty if nothing is table-like."""
    whole = _records_table(data)
    if whole is not None and not (isinstance(data, dict) and any(k in data for k in METADATA_KEYS)):
        return [("", whole)]
    if not isinstance(data, dict):
        return []
    tables = []
    for key, value in data.items():
        if key in METADATA_KEYS:
            continue
        table = _records_table(value)
        if table is not None:
            tables.append((str(key), table))
    if not tables:
        scalars = {k: v for k, v in data.items() if _is_scalar(v) and k not in METADATA_KEYS}
        if scalars:
            tables.append(("", pd.DataFrame([scalars])))
    return tables


def as_table(data: Any) -> pd.DataFrame | None:
    """The first table of :func:`as_tables`, or None."""
    tables = as_tables(data)
    return tables[0][1] if tables else None


def read_result_file(path: Path, root: Path) -> ResultFile:
    title = title_of(path, root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return ResultFile(path, title, [], None, error=f"cannot read {path.name}: {exc}")
    try:
        tables = as_tables(data)
    except Exception as exc:  # noqa: BLE001 - odd shapes fall back to the JSON view
        return ResultFile(path, title, [], data, error=f"shown as JSON ({exc})")
    return ResultFile(path, title, tables, data)


def scan(root: Path | None = None) -> tuple[list[ResultFile], list[Path]]:
    """(JSON result files, PNG plots) under ``root``, sorted by path."""
    root = Path(root or results_dir())
    if not root.is_dir():
        return [], []
    jsons = [read_result_file(p, root) for p in sorted(root.rglob("*.json")) if p.is_file()]
    pngs = [p for p in sorted(root.rglob("*.png")) if p.is_file()]
    return jsons, pngs
