"""``scalowatch demo``: the whole monitor on bundled recordings, with no servers.

Three NAB series and a 3 s fan recording (2 s normal, then 1 s of a faulty fan; streamer/demo_data) are replayed
in process (streamer/sources/memory.py) through the same ingest, windowing, per-stream model training, scoring,
calibration, alerting and sink code as ``scalowatch monitor``, into an embedded SQLite store that the dashboard
reads. Each stream trains its own model on its first ``warmup_fraction`` of windows (warm-up) and scores the rest.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from models.calibration import LikelihoodConfig
from streamer.assemble import build_processor, stream_classes
from streamer.config import MonitorSettings
from streamer.ingest import ingest
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
    warmup_fraction: float = 0.15
    scorer: str = "recon"
    train_steps: int = 80
    sensor_window: int = 64
    sensor_hop: int = 4
    audio_window: int = 2048
    audio_hop: int = 512
    preset: str = "series"
    threshold: float = 0.999
    speed: float = 0.0
    fresh: bool = True
    """Delete models trained by an earlier demo run (otherwise they are reloaded and no training happens)."""


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
                 f"{sum(self.windows_scored.values())} windows scored, {len(self.alerts)} alert(s), "
                 f"{self.dead_letters} dead letter(s)", f"store: {self.store_path}"]
        for stream, n in sorted(self.windows_scored.items()):
            lines.append(f"  {stream}: {n} windows scored")
            for a in (a for a in self.alerts if a["stream"] == stream):
                lines.append(f"    ALERT {_fmt(a['start_ns'])} → {_fmt(a['end_ns']) if a['end_ns'] else 'open'} "
                             f"severity {a['severity']:.4f} ({a['state']})")
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
    return MonitorSettings(
        scorer=cfg.scorer, model_dir=cfg.out_dir / "models", sensor_window=cfg.sensor_window,
        sensor_hop=cfg.sensor_hop, audio_window=cfg.audio_window, audio_hop=cfg.audio_hop,
        max_gap_periods=30, model_mode="per_stream", train_steps=cfg.train_steps, train_batch_size=16,
        sensor_preset=cfg.preset, audio_preset=cfg.preset, batch_max_size=64, batch_max_wait_ms=0,
        alert_threshold=cfg.threshold, alert_hysteresis=0.05, alert_close_after=4, alert_cooldown_s=0,
    )


def _windows_in(source: ReplaySource, length: int, hop: int) -> int:
    n = len(source.data) if hasattr(source, "data") else len(source.times_ns)
    return max(1, (n - length) // hop + 1)


def run_demo(cfg: DemoConfig = DemoConfig(), *, progress: bool = True, model_factory=None,
             model_loader=None) -> DemoReport:
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
    classes = stream_classes(settings)
    warmup = {}
    for s in sources:
        spec = classes[AUDIO if s.stream_class == AUDIO else SENSOR].window
        warmup[s.stream] = max(2, math.ceil(cfg.warmup_fraction * _windows_in(s, spec.length, spec.hop)))
    processor = build_processor(
        settings, factory=model_factory, loader=model_loader, warmup_for=lambda cls, stream: warmup[stream],
        likelihood=LikelihoodConfig(learning_period=40, historic_window=1000, short_window=4),
    )
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
                    log.warning("dead letter %s@%d: %s %s", rec.topic, rec.offset, letter.reason, letter.detail)
                if records % 64 == 0:
                    processor.step()
                    processor.flush(sink)
                bar.update(1)
        # End of the recordings: let running trainings finish, then score everything still queued.
        while True:
            processor.registry.wait()
            processor.step(force=True)
            processor.flush(sink)
            if not processor.registry.training():
                break
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


def _tags(row) -> dict:
    return row["tags"] if isinstance(row, dict) else row.tags


def _fields(row) -> dict:
    return row["fields"] if isinstance(row, dict) else row.fields


def _time(row) -> int:
    return row["time_ns"] if isinstance(row, dict) else row.time_ns
