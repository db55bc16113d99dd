"""Replay recorded streams into Kafka: NAB CSV, CSV files of several sensors, UCR TXT (plain or .gz) and WAV files.

Why: the monitor is tested and demonstrated on labelled public recordings. Replaying them through the same topics
and wire formats as live sensors (streamer/messages.py) exercises the real path end to end, and the known anomaly
windows can be written to the store (``label_window`` points) so the dashboard shows them next to the alerts.

Timing: records carry their event time in the message (``ts``), never as the Kafka record timestamp (old NAB
timestamps would make Kafka's time-based retention delete the segments at once). ``speed`` paces sending against
event time (1 = real time, 1000 = a thousand times faster, 0 = as fast as possible). ``rebase`` shifts all event
times by one offset so the earliest record is "now". Several files are interleaved by event time; files given the
same stream id are played back to back.
"""
from __future__ import annotations

import csv
import gzip
import heapq
import io
import json
import logging
import math
import time
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer.messages import (
    AUDIO, SENSOR, MessageError, encode_audio, encode_sensor, encode_sensor_batch, parse_timestamp,
)
from streamer.points import LabelWindow

log = logging.getLogger(__name__)

DEFAULT_START_NS = 1_609_459_200_000_000_000  # 2021-01-01T00:00:00Z: synthetic clocks (UCR, WAV) start here
NAB_WINDOWS_RELATIVE = Path("labels") / "combined_windows.json"


class ReplayError(ValueError):
    """A file cannot be replayed (unknown type, unreadable row, ...), or records were not delivered."""


class ColumnChoiceError(ReplayError):
    """A tool that takes one series was given a log of several sensors without naming one."""


@dataclass(frozen=True)
class Outgoing:
    """One Kafka record to send (timestamps already shifted)."""

    ts_ns: int
    stream: str
    stream_class: str
    value: bytes
    headers: list[tuple[str, bytes]]
    samples: int


class ReplaySource:
    """One file as a time-ordered sequence of messages of one stream. ``offset_ns`` shifts every timestamp."""

    stream_class: str = SENSOR

    def __init__(self, path: Path, stream: str):
        self.path = Path(path)
        self.stream = stream
        self.offset_ns = 0

    # Subclasses provide the raw (unshifted) data.
    def first_ns(self) -> int:
        raise NotImplementedError

    def end_ns(self) -> int:
        """Unshifted time just after the last sample (where a following file would start)."""
        raise NotImplementedError

    def message_count(self) -> int:
        raise NotImplementedError

    def messages(self) -> Iterator[Outgoing]:
        raise NotImplementedError

    def label_windows(self) -> list[LabelWindow]:
        return []


class SeriesSource(ReplaySource):
    """Scalar samples (NAB, UCR, a sensor column of a log) sent as sensor JSON, ``batch`` samples per message."""

    def __init__(self, path: Path, stream: str, times_ns: np.ndarray, values: np.ndarray, *, batch: int = 1,
                 label_source: str = "", label_ranges: Sequence[tuple[int, int]] = ()):
        super().__init__(path, stream)
        if len(times_ns) == 0:
            raise ReplayError(f"{path}: no samples")
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.times_ns = np.asarray(times_ns, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float64)
        self.batch = batch
        self.label_source = label_source
        self.label_ranges = list(label_ranges)  # unshifted [start_ns, end_ns]

    def first_ns(self) -> int:
        return int(self.times_ns[0])

    def end_ns(self) -> int:
        step = int(np.median(np.diff(self.times_ns))) if len(self.times_ns) > 1 else 1_000_000_000
        return int(self.times_ns[-1]) + max(step, 1)

    def message_count(self) -> int:
        return math.ceil(len(self.times_ns) / self.batch)

    def messages(self) -> Iterator[Outgoing]:
        times = self.times_ns + self.offset_ns
        for start in range(0, len(times), self.batch):
            ts = times[start:start + self.batch].tolist()
            vals = self.values[start:start + self.batch].tolist()
            if self.batch == 1:
                value = encode_sensor(self.stream, ts[0], vals[0])
            else:
                value = encode_sensor_batch(self.stream, zip(ts, vals))
            yield Outgoing(ts[0], self.stream, SENSOR, value, [], len(ts))

    def label_windows(self) -> list[LabelWindow]:
        return [LabelWindow(self.stream, start + self.offset_ns, end + self.offset_ns, self.label_source)
                for start, end in self.label_ranges]


class WavSource(ReplaySource):
    """PCM chunks of ``chunk_samples`` frames (all channels kept; the monitor downmixes)."""

    stream_class = AUDIO

    def __init__(self, path: Path, stream: str, *, chunk_samples: int = 4096, start_ns: int = DEFAULT_START_NS):
        super().__init__(path, stream)
        from scipy.io import wavfile

        try:
            with warnings.catch_warnings():  # unknown non-data chunks (LIST, bext, ...) are fine to skip
                warnings.simplefilter("ignore", wavfile.WavFileWarning)
                rate, data = wavfile.read(self.path)
        except (ValueError, OSError) as exc:
            raise ReplayError(f"{path}: not a readable WAV file ({exc})") from exc
        if data.size == 0:
            raise ReplayError(f"{path}: no samples")
        if chunk_samples < 1:
            raise ValueError("chunk_samples must be >= 1")
        if data.dtype == np.int16:
            self.dtype = "int16"
        elif data.dtype.kind == "f":
            self.dtype = "float32"
            data = data.astype(np.float32)
        elif data.dtype.kind in "iu":  # 8/24/32-bit integer PCM -> float32 in [-1, 1]
            info = np.iinfo(data.dtype)
            data = ((data.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2))
            data = data.astype(np.float32)
            self.dtype = "float32"
        else:
            raise ReplayError(f"{path}: unsupported WAV sample type {data.dtype}")
        self.rate = int(rate)
        self.data = data
        self.chunk_samples = chunk_samples
        self.start_ns = start_ns

    def mono(self) -> np.ndarray:
        """The samples as the monitor decodes them (streamer.messages): float in [-1, 1] (int16 / 32768),
        channels averaged. Offline users (``scalowatch score``, ``bench audio``) read WAVs through this too."""
        data = np.asarray(self.data)
        x = data.astype(np.float64) / 32768.0 if data.dtype == np.int16 else data.astype(np.float64)
        return x.mean(axis=1) if x.ndim == 2 else x

    def _time_of(self, frame: int) -> int:
        return self.start_ns + (frame * 1_000_000_000) // self.rate

    def first_ns(self) -> int:
        return self.start_ns

    def end_ns(self) -> int:
        return self._time_of(len(self.data))

    def message_count(self) -> int:
        return math.ceil(len(self.data) / self.chunk_samples)

    def messages(self) -> Iterator[Outgoing]:
        for start in range(0, len(self.data), self.chunk_samples):
            chunk = self.data[start:start + self.chunk_samples]
            ts = self._time_of(start) + self.offset_ns
            value, headers = encode_audio(self.stream, ts, chunk, self.rate, dtype=self.dtype)
            yield Outgoing(ts, self.stream, AUDIO, value, headers, len(chunk))


# ---------------------------------------------------------------------------------------------------- readers
def _open_text(path: Path) -> io.TextIOBase:
    """UTF-8 text, plain or gzipped; a byte-order mark (as spreadsheet programs write) is not part of the text."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def file_stem(name: str) -> str:
    """A recorded file's name without its type: ``.csv``, ``.csv.gz`` (any case), or the last suffix."""
    lowered = name.lower()
    for suffix in (".csv.gz", ".csv"):
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def stream_prefix(path: Path) -> str:
    """The stream id a recorded file gets by default: ``<folder>/<name without .csv/.csv.gz/.txt/.wav>``, so that
    same-named files of different folders stay apart (a sensor CSV's streams are ``<prefix>/<column>``)."""
    path = Path(path)
    stem = file_stem(path.name)
    return f"{path.parent.name}/{stem}" if path.parent.name else stem


def _nab_stream_and_key(path: Path) -> tuple[str, str]:
    """("realKnownCause/nyc_taxi", "realKnownCause/nyc_taxi.csv") for a file in NAB's data/<category>/ layout."""
    category = path.parent.name
    return stream_prefix(path), (f"{category}/{path.name}" if category else path.name)


def find_nab_windows(path: Path) -> Path | None:
    """NAB's labels/combined_windows.json next to data/ (data/<category>/<file>.csv), if present."""
    candidate = path.resolve().parents[2] / NAB_WINDOWS_RELATIVE if len(path.resolve().parents) > 2 else None
    return candidate if candidate is not None and candidate.is_file() else None


TIME_COLUMNS = ("timestamp", "datetime", "time", "date", "ts")
_MISSING = {"", "null", "na", "n/a", "none"}  # besides any spelling of NaN
_NORMAL_LABELS = {"", "0", "false", "normal", "ok", "no"}
_PLAUSIBLE_FROM_NS = 631_152_000_000_000_000  # 1990-01-01: earlier times are more likely an index or epoch seconds


@dataclass(frozen=True)
class CsvTable:
    """A CSV file of readings, parsed once: a time column and one column per sensor, rows in the file's order.

    ``values`` is (rows, columns) with NaN where a cell is empty (a sensor that did not report in that row);
    ``flags`` holds each label column as booleans (row flagged anomalous).
    """

    path: Path
    time_column: str
    names: list[str]
    times_ns: np.ndarray
    values: np.ndarray
    flags: dict[str, np.ndarray]

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


@dataclass(frozen=True)
class CsvHeader:
    """Where a CSV file's time and value columns are: ``fields`` as written, ``time`` the time column's index,
    ``names`` the value columns (every other named column; an unnamed one is a row index a spreadsheet or pandas
    wrote, not a sensor)."""

    delimiter: str
    fields: list[str]
    time: int
    names: list[str]
    line: int = 1


def _delimiter(header_line: str) -> str:
    """TAB or ``;`` when the header has one (a column name may hold a comma, rarely either of those), else ``,``."""
    return "\t" if "\t" in header_line else ";" if ";" in header_line else ","


def _parse_header(handle, path: Path) -> CsvHeader:
    first, line = "", 0
    for line, first in enumerate(handle, start=1):  # blank lines before the header are not the header
        if first.strip():
            break
    if not first.strip():
        raise ReplayError(f"{path}: empty file (expected a header such as 'timestamp,value')")
    delimiter = _delimiter(first)
    fields = [h.strip() for h in next(csv.reader([first], delimiter=delimiter))]
    while len(fields) > 2 and not fields[-1]:  # a trailing delimiter
        fields.pop()
    lowered = [f.lower() for f in fields]
    time = next((i for i, f in enumerate(lowered) if f in TIME_COLUMNS), 0)
    names = [f for i, f in enumerate(fields) if i != time and f]
    if len(fields) < 2 or not names:
        raise ReplayError(f"{path}: expected a header with a time column and at least one value column "
                          f"(delimited by ',', ';' or TAB), got {fields!r}")
    if len(set(names)) != len(names):
        raise ReplayError(f"{path}: value column names must be unique, got {names!r}")
    return CsvHeader(delimiter, fields, time, names, line)


def csv_header(path: Path) -> CsvHeader:
    """The layout of a CSV file's header; ReplayError when it is not a valid one."""
    try:
        with _open_text(Path(path)) as handle:
            return _parse_header(handle, Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(f"{path}: cannot read ({exc})") from exc


def _is_flagged(cell: str) -> bool:
    """A label cell: a non-zero number, or a word other than normal/ok/false/no (NORMAL vs BROKEN, RECOVERING); an
    empty or missing cell (NaN, NA, null) is not a label."""
    try:
        value = float(cell)
    except ValueError:
        return cell.lower() not in _NORMAL_LABELS and cell.lower() not in _MISSING
    return value == value and value != 0.0  # NaN: not flagged


def read_csv_table(path: Path, *, columns: Sequence[str], label_columns: Sequence[str] = (),
                   missing_ok: bool = True) -> CsvTable:
    """Parse a CSV of readings: the one parser of CSV files (NAB's ``timestamp,value`` is its one-column case).

    The header is required. The time column is the first one named timestamp, datetime, time, date or ts (any
    case), else the first column; its cells are ISO-8601 or epoch milliseconds, as in sensor messages
    (:func:`streamer.messages.parse_timestamp`). ``columns``: the value columns to parse as numbers (the others
    may hold anything, such as text states). ``label_columns``: columns flagging anomalous rows
    (:func:`_is_flagged`). ``missing_ok``: an empty or NaN cell is a missing reading (NaN) rather than an error.
    Infinite values are always an error: no sensor reads infinity.
    """
    path = Path(path)
    try:
        with _open_text(path) as handle:
            header = _parse_header(handle, path)
            wanted = list(dict.fromkeys(columns))
            unknown = [c for c in [*wanted, *label_columns] if c not in header.names]
            if unknown:
                raise ReplayError(f"{path}: no column(s) {unknown!r}; the value columns are {header.names!r}")
            index = [header.fields.index(c) for c in wanted]
            flag_index = [header.fields.index(c) for c in label_columns]
            width = len(header.fields)
            times: list[int] = []
            flat = array("d")  # 8 bytes a cell: a test bed's 50 sensors × 200,000 rows stay 80 MB, not a list's 400
            flags: list[list[bool]] = []
            for line_no, row in enumerate(csv.reader(handle, delimiter=header.delimiter), start=header.line + 1):
                if not row or not "".join(row).strip():
                    continue
                while len(row) > width and not row[-1].strip():  # a trailing delimiter
                    row.pop()
                if len(row) < width:
                    raise ReplayError(f"{path}:{line_no}: {len(row)} field(s), the header has {width}")
                try:
                    ts = parse_timestamp(row[header.time].strip())
                except MessageError as exc:
                    raise ReplayError(f"{path}:{line_no}: bad timestamp {row[header.time]!r} ({exc})") from None
                for i in index:
                    cell = row[i].strip()
                    try:
                        value = float(cell) if cell.lower() not in _MISSING else math.nan
                    except ValueError:
                        raise ReplayError(f"{path}:{line_no}: column {header.fields[i]!r}: {row[i]!r} is not a "
                                          "number (leave such a column out, or name it as a label column if it flags "
                                          "anomalies)") from None
                    if math.isinf(value):
                        raise ReplayError(f"{path}:{line_no}: value {row[i]!r} of column {header.fields[i]!r} is "
                                          "not finite")
                    if value != value and not missing_ok:
                        raise ReplayError(f"{path}:{line_no}: value {row[i]!r} of column {header.fields[i]!r} is "
                                          + ("not finite" if cell else "missing"))
                    flat.append(value)
                if flag_index:
                    flags.append([_is_flagged(row[i].strip()) for i in flag_index])
                times.append(ts)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(f"{path}: cannot read ({exc})") from exc
    values = np.frombuffer(flat, dtype=np.float64).reshape(len(times), len(index))
    flag_array = np.asarray(flags, dtype=bool).reshape(len(times), len(flag_index))
    return CsvTable(path, header.fields[header.time], wanted, np.asarray(times, dtype=np.int64), values,
                    {name: flag_array[:, k] for k, name in enumerate(label_columns)})


def _time_order(table: CsvTable, sort: bool) -> np.ndarray:
    """Row order to send: by time (a replay sends in time order), stable; ``sort=False`` keeps the file's."""
    if sort and len(table.times_ns) > 1 and np.any(np.diff(table.times_ns) < 0):
        log.warning("%s: timestamps out of order; sorting them", table.path)
        return np.argsort(table.times_ns, kind="stable")
    return np.arange(len(table.times_ns))


def is_nab_header(path: Path) -> bool:
    """Whether a CSV file starts with NAB's ``timestamp,value`` header: read as one stream, as before sensor CSVs
    were (further columns ignored) unless columns are chosen explicitly."""
    return _is_nab(csv_header(path))


def _is_nab(header: CsvHeader) -> bool:
    return [f.lower() for f in header.fields[:2]] == ["timestamp", "value"]


def read_nab_csv(path: Path, *, stream: str | None = None, batch: int = 1,
                 windows_file: Path | None = None, labels: bool = True, sort: bool = True) -> SeriesSource:
    """``timestamp,value`` CSV (NAB), one stream: replay, demo, model CLI and benchmarks read it here (further
    columns, such as NAB's result files' scores, are ignored). Every row needs a finite value (NAB scores every
    row). Label windows come from combined_windows.json (found automatically in the NAB layout, or given;
    ``labels=False``: none). Rows out of time order are sorted (a replay sends them in time order); ``sort=False``
    keeps the file's row order (NAB scores rows as the file lists them)."""
    path = Path(path)
    default_stream, label_key = _nab_stream_and_key(path)
    header = csv_header(path)
    fields = header.fields
    if not _is_nab(header):
        raise ReplayError(f"{path}: expected a 'timestamp,value' header, got {fields!r}")
    if len(fields) > 2:
        log.warning("%s: columns %r after timestamp,value are ignored (a NAB file is one stream; choose its "
                    "columns to read it as a log of several sensors)", path, fields[2:])
    table = read_csv_table(path, columns=[fields[1]], missing_ok=False)
    order = _time_order(table, sort)
    times_ns, values = table.times_ns[order], table.values[order, 0]
    windows_file = windows_file or (find_nab_windows(path) if labels else None)
    ranges: list[tuple[int, int]] = []
    if windows_file is not None:
        try:
            windows = json.loads(Path(windows_file).read_text())
        except (OSError, ValueError) as exc:
            raise ReplayError(f"{windows_file}: cannot read NAB windows ({exc})") from exc
        ranges = [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows.get(label_key, [])]
    return SeriesSource(path, stream or default_stream, times_ns, values, batch=batch,
                        label_source=f"nab:{label_key}", label_ranges=ranges)


def flag_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True in a row mask (labelled rows, alerting rows)."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


@dataclass(frozen=True)
class SensorLog:
    """A log of several sensors as read: every row's time (time order), whether a label column flags it, and one
    source per sensor that has readings. The benchmark of test beds judges rows; the replay sends ``sources``."""

    times_ns: np.ndarray
    flagged: np.ndarray
    sources: list[SeriesSource]


def read_sensor_log(path: Path, *, stream: str | None = None, batch: int = 1, columns: Sequence[str] | None = None,
                    label_columns: Sequence[str] = (), skip_columns: Sequence[str] = ()) -> SensorLog:
    """A CSV of several sensors (a test bed's log: a time column and one column per sensor, delimited by ``,``
    ``;`` or TAB): one stream per value column, named ``<stream>/<column>`` (``stream`` defaults to
    :func:`stream_prefix`).

    ``columns``: the sensor columns (default: every column that is neither a label column nor one of
    ``skip_columns``, such as a text column of machine states). ``label_columns``: columns flagging anomalous rows
    — a non-zero number, or a word other than normal/ok/false/no (NORMAL / BROKEN / RECOVERING) —; each run of rows
    flagged by any of them becomes a label window of every stream of the file. Label and skipped columns the file
    lacks are passed over (a file without any label column is unlabelled, with a warning); whoever reads several
    files checks that each name is in one of them (:func:`columns_in_none`). A missing cell is a reading that
    sensor did not send: that stream skips the row. A column with no reading at all is left out with a warning (a
    dead sensor must not stop the replay of the others).
    """
    path = Path(path)
    prefix = stream or stream_prefix(path)
    names = csv_header(path).names
    # A folder of logs may hold files without some label or skipped columns (SKAB's anomaly-free log has no
    # ``anomaly`` column): such a file's rows are unlabelled. A name no file has is a typo: see columns_in_none.
    requested = list(dict.fromkeys(label_columns))
    label_columns = [c for c in requested if c in names]
    skip_columns = [c for c in skip_columns if c in names]
    if requested and not label_columns:
        log.warning("%s has no label column %s: its rows are read as unlabelled (normal)", path,
                    " or ".join(repr(c) for c in requested))
    elif len(label_columns) < len(requested):
        log.warning("%s has no label column %s: its rows are labelled by %s only", path,
                    " or ".join(repr(c) for c in requested if c not in label_columns),
                    ", ".join(repr(c) for c in label_columns))
    if columns is None:
        columns = [n for n in names if n not in label_columns and n not in skip_columns]
    columns = list(dict.fromkeys(columns))
    for other, role in ((label_columns, "a label column"), (skip_columns, "a column to skip")):
        overlap = sorted(set(columns) & set(other))
        if overlap:
            raise ReplayError(f"{path}: column(s) {overlap!r} named both as a sensor and as {role}")
    if not columns:
        raise ReplayError(f"{path}: no sensor column left")
    table = read_csv_table(path, columns=columns, label_columns=label_columns)
    if not len(table.times_ns):
        raise ReplayError(f"{path}: no samples")
    if table.times_ns.min() < _PLAUSIBLE_FROM_NS:
        log.warning("%s: the time column %r starts in %s; times are read as ISO-8601 or epoch *milliseconds* — is "
                    "it a row index or epoch seconds?", path, table.time_column,
                    np.datetime_as_string(np.datetime64(int(table.times_ns.min()), "ns"), unit="s"))
    order = _time_order(table, sort=True)
    times_ns = table.times_ns[order]
    flagged = np.zeros(len(times_ns), dtype=bool)
    for name in label_columns:  # a row is anomalous when any label column flags it (one window per run)
        flagged |= table.flags[name][order]
    ranges = [(int(times_ns[a]), int(times_ns[b - 1])) for a, b in flag_runs(flagged)]
    sources = []
    for name in columns:
        values = table.column(name)[order]
        present = ~np.isnan(values)
        if not present.any():
            log.warning("%s: column %r has no readings; it is left out", path, name)
            continue
        if not present.all():
            log.info("%s: column %r misses %d of %d readings; its stream skips those rows", path, name,
                     int((~present).sum()), values.size)
        sources.append(SeriesSource(path, f"{prefix}/{name}", times_ns[present], values[present], batch=batch,
                                    label_source=f"csv:{prefix}" + (f":{','.join(label_columns)}"
                                                                     if label_columns else ""),
                                    label_ranges=ranges))
    if not sources:
        raise ReplayError(f"{path}: none of the columns {list(columns)!r} has a reading")
    return SensorLog(times_ns, flagged, sources)


def columns_in_none(paths: Sequence[Path], names: Sequence[str]) -> list[str]:
    """Of ``names`` (label or skipped columns chosen for a set of files), those that none of the CSV files among
    ``paths`` has: a misspelt name, which :func:`read_sensor_log` alone cannot tell from a file without labels."""
    if not names:
        return []
    headers = [set(csv_header(p).names) for p in paths
               if Path(p).is_file() and Path(p).name.lower().endswith((".csv", ".csv.gz"))]
    return [n for n in dict.fromkeys(names) if headers and not any(n in h for h in headers)]


def read_csv_series(path: Path, column: str | None = None) -> tuple[SeriesSource, str | None]:
    """One series of a CSV file, for tools that take one (``scalowatch train``/``score``): a NAB file's values, or
    ``column`` of a log of several sensors (``None``: its only sensor); returns it with the column read (``None``
    for a NAB file)."""
    if column is None and is_nab_header(path):
        return read_nab_csv(path, windows_file=None), None
    if column is None:
        sensors = csv_header(path).names
        if len(sensors) != 1:
            raise ColumnChoiceError(f"{path} has {len(sensors)} value columns ({', '.join(sensors)}): name one")
        column = sensors[0]
    (source,) = read_sensor_log(path, columns=[column]).sources
    return source, column


def read_ucr_txt(path: Path, *, stream: str | None = None, batch: int = 1, sample_period_ms: float = 10.0,
                 start_ns: int = DEFAULT_START_NS) -> SeriesSource:
    """One value per line (UCR archive; .txt or .txt.gz). Timestamps are synthetic: ``start_ns + i * period``.
    The anomaly range ``[begin, end)`` comes from the UCR file name when it follows the archive's convention."""
    from models.errors import InputError
    from models.metrics.ucr import parse_ucr_name, ucr_stem

    path = Path(path)
    if sample_period_ms <= 0:
        raise ValueError("sample_period_ms must be > 0")
    try:
        with _open_text(path) as handle:
            values = np.loadtxt(handle, dtype=np.float64, ndmin=1)
    except (ValueError, OSError, EOFError) as exc:
        raise ReplayError(f"{path}: cannot read values ({exc})") from exc
    if values.ndim != 1:
        values = values.ravel()
    if not np.isfinite(values).all():
        raise ReplayError(f"{path}: {int((~np.isfinite(values)).sum())} non-finite value(s)")
    period_ns = int(round(sample_period_ms * 1_000_000))
    times_ns = start_ns + np.arange(len(values), dtype=np.int64) * period_ns
    stem = ucr_stem(path.name)
    ranges: list[tuple[int, int]] = []
    label_source = f"ucr:{stem}"
    try:
        spec = parse_ucr_name(path.name)
    except InputError:
        spec = None
    if spec is not None and spec.end <= len(values):
        # [begin, end) in samples -> [start of begin, start of the last anomalous sample]
        ranges = [(int(times_ns[spec.begin]), int(times_ns[max(spec.end - 1, spec.begin)]))]
    return SeriesSource(path, stream or stem, times_ns, values, batch=batch, label_source=label_source,
                        label_ranges=ranges)


def read_wav(path: Path, *, stream: str | None = None, chunk_samples: int = 4096,
             start_ns: int = DEFAULT_START_NS) -> WavSource:
    path = Path(path)
    return WavSource(path, stream or stream_prefix(path), chunk_samples=chunk_samples, start_ns=start_ns)


REPLAY_SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz", ".wav")


def replay_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to replay: a file as given; a folder's files that a reader takes, below it at any depth, in name
    order — ``.csv(.gz)``, ``.wav``, and ``.txt(.gz)`` named as UCR's archive names its series (a README.txt is no
    series) —, hidden files and folders left out. A folder holding none is an error, not an empty replay; a file
    reached twice (a folder and a file in it) is replayed once."""
    from models.errors import InputError
    from models.metrics.ucr import parse_ucr_name

    def taken(f: Path) -> bool:
        name = f.name.lower()
        if name.endswith((".txt", ".txt.gz")):
            try:
                parse_ucr_name(f.name)
            except InputError:
                return False
        return name.endswith(REPLAY_SUFFIXES)

    out: dict[Path, Path] = {}
    for p in map(Path, paths):
        if not p.is_dir():
            found = [p]
        else:
            found = sorted(f for f in p.rglob("*") if f.is_file() and taken(f)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise ReplayError(f"{p}: a folder without .csv, .wav or UCR-named .txt(.gz) files")
        for f in found:
            if f.resolve() in out:
                log.warning("%s is named twice (as %s too): replayed once", f, out[f.resolve()])
            else:
                out[f.resolve()] = f
    return list(out.values())


def open_sources(path: str | Path, *, stream: str | None = None, batch: int = 1, chunk_samples: int = 4096,
                 sample_period_ms: float = 10.0, nab_windows: Path | None = None, start_ns: int = DEFAULT_START_NS,
                 columns: Sequence[str] | None = None, label_columns: Sequence[str] = (),
                 skip_columns: Sequence[str] = ()) -> list[ReplaySource]:
    """The streams of one file, the reader picked from its name: ``.csv`` with NAB's ``timestamp,value`` header
    one stream (``nab_windows`` its labels), any other ``.csv`` — or any with ``columns``/``label_columns``/
    ``skip_columns`` — one stream per sensor column (:func:`read_sensor_log`), ``.txt``/``.txt.gz`` UCR, ``.wav``
    audio. Files of a folder share its options: a NAB file in NAB's layout (its ``combined_windows.json`` found, or
    ``nab_windows`` given) without the label or skipped columns stays NAB's one stream with its windows, and label
    or skipped columns mean nothing to a UCR or WAV file; sensor columns (``columns``) are for CSV files only."""
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    name = path.name.lower()
    is_csv = name.endswith(".csv") or name.endswith(".csv.gz")
    if columns and not is_csv:
        raise ReplayError(f"{path}: sensor columns can be chosen in a CSV file only")
    if is_csv:
        header, named = csv_header(path), {*label_columns, *skip_columns}
        nab = _is_nab(header) and not columns and (
            not named or (not set(header.names) & named
                          and (nab_windows is not None or find_nab_windows(path) is not None)))
        if nab:
            return [read_nab_csv(path, stream=stream, batch=batch, windows_file=nab_windows)]
        return list(read_sensor_log(path, stream=stream, batch=batch, columns=columns, label_columns=label_columns,
                                    skip_columns=skip_columns).sources)
    if name.endswith(".txt") or name.endswith(".txt.gz"):
        return [read_ucr_txt(path, stream=stream, batch=batch, sample_period_ms=sample_period_ms, start_ns=start_ns)]
    if name.endswith(".wav"):
        return [read_wav(path, stream=stream, chunk_samples=chunk_samples, start_ns=start_ns)]
    raise ReplayError(f"{path}: unknown file type (expected .csv, .txt, .txt.gz or .wav)")


# ---------------------------------------------------------------------------------------------------- planning
def shared_streams(sources: Sequence[ReplaySource]) -> dict[str, list[Path]]:
    """Stream ids that come from more than one file (``runs/a/pump/log.csv`` and ``runs/b/pump/log.csv`` are both
    ``pump/log``): :func:`plan` would play them back to back as one stream, which is what ``--stream`` asks for and
    a surprise otherwise."""
    files: dict[str, list[Path]] = {}
    for s in sources:
        if s.path not in files.setdefault(s.stream, []):
            files[s.stream].append(s.path)
    return {name: paths for name, paths in files.items() if len(paths) > 1}


def plan(sources: Sequence[ReplaySource], *, rebase_to_ns: int | None = None) -> list[ReplaySource]:
    """Set each source's ``offset_ns``: files sharing a stream id play back to back in the order of their first
    timestamps (rotated logs of one sensor: ``day2`` before ``day10``, whatever the names say; files without own
    times, such as UCR's, all start alike and keep the given order), then everything is shifted so the earliest
    record lands on ``rebase_to_ns`` (if given)."""
    by_stream: dict[str, list[ReplaySource]] = {}
    for source in sources:
        by_stream.setdefault(source.stream, []).append(source)
    for chain in by_stream.values():
        chain.sort(key=lambda s: s.first_ns())  # stable: ties keep the given order
        chain[0].offset_ns = 0
        for previous, current in zip(chain, chain[1:]):
            current.offset_ns = previous.end_ns() + previous.offset_ns - current.first_ns()
    if rebase_to_ns is not None and sources:
        earliest = min(s.first_ns() + s.offset_ns for s in sources)
        for source in sources:
            source.offset_ns += rebase_to_ns - earliest
    return list(sources)


def interleave(sources: Iterable[ReplaySource]) -> Iterator[Outgoing]:
    """All sources' messages merged by event time (stable: ties keep the source order)."""
    return heapq.merge(*(s.messages() for s in sources), key=lambda out: out.ts_ns)


# ---------------------------------------------------------------------------------------------------- sending
@dataclass
class ReplayStats:
    records: int = 0
    samples: int = 0
    bytes: int = 0
    label_windows: int = 0
    streams: list[str] = field(default_factory=list)
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    seconds: float = 0.0


class Pacer:
    """Sleeps so that event time advances ``speed`` times faster than wall time (0 = never sleeps)."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if speed < 0 or not math.isfinite(speed):
            raise ValueError("speed must be a finite number >= 0")
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._origin: tuple[float, int] | None = None

    def wait_for(self, ts_ns: int) -> None:
        if self.speed == 0:
            return
        if self._origin is None:
            self._origin = (self.clock(), ts_ns)
            return
        wall0, ts0 = self._origin
        delay = wall0 + (ts_ns - ts0) / 1e9 / self.speed - self.clock()
        if delay > 0:
            self.sleep(delay)


def replay(
    sources: Sequence[ReplaySource],
    producer,
    *,
    sensor_topic: str,
    audio_topic: str,
    speed: float = 0.0,
    rebase_to_ns: int | None = None,
    sink=None,
    progress: bool = True,
    pacer: Pacer | None = None,
) -> ReplayStats:
    """Send every source's messages to Kafka (key = stream id), interleaved by event time.

    ``sink`` (a streamer.sinks Sink) receives the label windows before sending starts. Raises ReplayError if
    any record was not acknowledged; returns counts otherwise.
    """
    from tqdm import tqdm

    started = time.monotonic()
    plan(sources, rebase_to_ns=rebase_to_ns)
    stats = ReplayStats(streams=sorted({s.stream for s in sources}))
    if sink is not None:
        windows = [w.to_point() for s in sources for w in s.label_windows()]
        if windows:
            sink.write(windows)
        stats.label_windows = len(windows)
    pacer = pacer or Pacer(speed)
    failures: list[BaseException] = []
    topics = {SENSOR: sensor_topic, AUDIO: audio_topic}
    total = sum(s.message_count() for s in sources)
    with tqdm(total=total, unit="rec", desc="replay", disable=not progress) as bar:
        for out in interleave(sources):
            pacer.wait_for(out.ts_ns)
            future = producer.send(topics[out.stream_class], key=out.stream.encode(), value=out.value,
                                   headers=out.headers or None)
            future.add_errback(failures.append)
            stats.records += 1
            stats.samples += out.samples
            stats.bytes += len(out.value)
            stats.first_ts_ns = out.ts_ns if stats.first_ts_ns is None else stats.first_ts_ns
            stats.last_ts_ns = out.ts_ns
            bar.update(1)
            if failures:
                break
    producer.flush()
    stats.seconds = time.monotonic() - started
    if failures:
        raise ReplayError(f"{len(failures)} record(s) not delivered, first: {failures[0]!r}")
    log.info("replayed %d records (%d samples) of %d stream(s) in %.1fs", stats.records, stats.samples,
             len(stats.streams), stats.seconds)
    return stats
