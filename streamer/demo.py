"""``scalowatch demo``: the whole monitor on bundled recordings, with no servers.

Three NAB series and a 3 s fan recording (2 s normal, then 1 s of a faulty fan; streamer/demo_data) are replayed
in process (streamer/sources/memory.py) through the same ingest, detector fitting, scoring, alerting and sink code
as ``scalowatch monitor``, with the monitor's default presets, into an embedded SQLite store that the dashboard
reads. Each stream fits its own detector on its training part (NAB's probationary part; the fan's normal first
2 s) and then every sample it sent is scored — the NAB streams exactly as ``bench nab`` scores those files.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from models.detector import describe_channel
from streamer.assemble import build_processor
from streamer.config import MonitorSettings
from streamer.ingest import drain, ingest, unscored_letters
from streamer.messages import AUDIO, SENSOR
from streamer.points import ALERT, WINDOW_SCORE
from streamer.replay import ReplaySource, read_nab_csv, read_wav
from streamer.sources.memory import MemorySource

log = logging.getLogger(__name__)

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
NAB_FILES = (
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realTraffic/speed_7578.csv",
)
WAV_FILE = "fan_id00_normal2s_abnormal1s.wav"
SENSOR_TOPIC, AUDIO_TOPIC = "demo.sensors", "demo.audio"


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = Path("demo-output")
    speed: float = 0.0
    fresh: bool = True
    """Delete models fitted by an earlier demo run (otherwise they are reloaded and no fitting happens)."""
    audio_train_s: float = 2.0
    """The fan recording's training part: its first 2 s are the normal fan."""


@dataclass
class DemoReport:
    store_path: Path
    seconds: float
    records: int
    dead_letters: int
    windows_scored: dict[str, int] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"demo finished in {self.seconds:.0f} s: {self.records} records, "
                 f"{sum(self.windows_scored.values())} points scored, {len(self.alerts)} alert(s), "
                 f"{self.dead_letters} dead letter(s)", f"store: {self.store_path}"]
        for stream, n in sorted(self.windows_scored.items()):
            lines.append(f"  {stream}: {n} points scored")
            for a in (a for a in self.alerts if a["stream"] == stream):
                lines.append(f"    ALERT {_fmt(a['start_ns'])} → {_fmt(a['end_ns']) if a['end_ns'] else 'open'} "
                             f"severity {a['severity']:.4f} ({a['state']}; {describe_channel(a.get('decided_by', ''))})")
            for lab in (x for x in self.labels if x["stream"] == stream):
                lines.append(f"    label {_fmt(lab['start_ns'])} → {_fmt(lab['end_ns'])} (NAB window)")
        return "\n".join(lines)


def _fmt(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def demo_sources() -> list[ReplaySource]:
    nab = [read_nab_csv(DEMO_DATA / "nab" / "data" / name, windows_file=DEMO_DATA / "nab" / "labels" /
                        "combined_windows.json") for name in NAB_FILES]
    wav = read_wav(DEMO_DATA / WAV_FILE, stream="fan/id00", chunk_samples=1600)
    return [*nab, wav]


def demo_settings(cfg: DemoConfig) -> MonitorSettings:
    """The monitor's own defaults (the ``nab`` preset for sensors, ``audio`` for audio, the presets' alert
    thresholds); only where models go differs."""
    return MonitorSettings(model_dir=cfg.out_dir / "models")


def train_samples_for(sources: list[ReplaySource], cfg: DemoConfig):
    """Each stream's training part: NAB's probationary part for the NAB series (what ``bench nab`` fits on),
    the normal first seconds for the fan."""
    from models.metrics.nab import probationary_length

    sizes = {}
    for s in sources:
        if s.stream_class == AUDIO:
            sizes[s.stream] = int(cfg.audio_train_s * s.rate)
        else:
            sizes[s.stream] = probationary_length(len(s.values))
    return lambda stream_class, stream: sizes[stream]


def run_demo(cfg: DemoConfig = DemoConfig(), *, progress: bool = True, fitter=None) -> DemoReport:
    """Replay the bundled data through the monitor's processing into ``cfg.out_dir/scalowatch.sqlite``."""
    import shutil

    from tqdm import tqdm

    from streamer.sinks.sqlite import SQLiteSink

    started = time.monotonic()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.fresh:
        shutil.rmtree(cfg.out_dir / "models", ignore_errors=True)
    store_path = cfg.out_dir / "scalowatch.sqlite"
    store_path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(store_path) + suffix).unlink(missing_ok=True)
    settings = demo_settings(cfg)
    sources = demo_sources()
    processor = build_processor(settings, train_samples_for=train_samples_for(sources, cfg), fitter=fitter)
    sink = SQLiteSink(store_path)
    labels = [w for s in sources for w in s.label_windows()]
    if labels:
        sink.write([w.to_point() for w in labels])
    source = MemorySource(sources, sensor_topic=SENSOR_TOPIC, audio_topic=AUDIO_TOPIC, speed=cfg.speed)
    class_of = {SENSOR_TOPIC: SENSOR, AUDIO_TOPIC: AUDIO}.__getitem__
    records = dead = 0
    try:
        with tqdm(total=len(source), unit="rec", desc="demo replay", disable=not progress) as bar:
            for rec in source.records():
                records += 1
                letter = ingest(processor, rec, class_of)
                if letter is not None:
                    dead += 1
                    _log_letter(letter)
                if records % 64 == 0:
                    processor.step()
                    dead += _log_unscored(processor)
                    processor.flush(sink)
                bar.update(1)
        for letter in drain(processor, sink):  # the end of the recordings: score what is still pending
            dead += 1
            _log_letter(letter)
    finally:
        processor.registry.close()
    rows = {m: sink.read(m) for m in (WINDOW_SCORE, ALERT)}
    sink.close()
    scored: dict[str, int] = {}
    for row in rows[WINDOW_SCORE]:
        stream = _tags(row)["stream"]
        scored[stream] = scored.get(stream, 0) + 1
    alerts = [{"stream": _tags(r)["stream"], "start_ns": _time(r), **_fields(r)} for r in rows[ALERT]]
    report = DemoReport(store_path, time.monotonic() - started, records, dead, scored, alerts,
                        [{"stream": w.stream, "start_ns": w.start_ns, "end_ns": w.end_ns} for w in labels])
    return report


def _log_unscored(processor) -> int:
    letters = unscored_letters(processor)
    for letter in letters:
        _log_letter(letter)
    return len(letters)


def _log_letter(letter) -> None:
    log.warning("dead letter %s@%d: %s %s", letter.record.topic, letter.record.offset, letter.reason, letter.detail)


def _tags(row) -> dict:
    return row["tags"] if isinstance(row, dict) else row.tags


def _fields(row) -> dict:
    return row["fields"] if isinstance(row, dict) else row.fields


def _time(row) -> int:
    return row["time_ns"] if isinstance(row, dict) else row.time_ns
