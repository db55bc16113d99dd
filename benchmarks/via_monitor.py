"""``bench nab|ucr|audio --via monitor``: replay the benchmark files through the monitor's own processing path.

Why: a benchmark number is only worth publishing if it is what a user who runs ``scalowatch monitor`` gets. This
replays every file as sensor records (the same JSON the Kafka replay sends; audio as PCM chunks) through the
in-process source → ingest → :class:`~streamer.pipeline.StreamProcessor` (fitting, online detector, alert rule) →
the embedded SQLite store, with the monitor's settings for the preset, then reads the stored points back. The only
thing the benchmark decides is each stream's training part (NAB's probationary part, UCR's ``trainEnd``, the
training clips of ``bench audio``), which it passes the way ``scalowatch demo`` does.
"""
from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from benchmarks.parallel import map_files
from models.detector import FittedDetector
from streamer.assemble import build_processor
from streamer.config import MonitorSettings
from streamer.ingest import drain, ingest, unscored_letters
from streamer.messages import AUDIO, SENSOR
from streamer.points import WINDOW_SCORE
from streamer.replay import ReplaySource
from streamer.sinks.sqlite import SQLiteSink
from streamer.sources.memory import MemorySource

log = logging.getLogger(__name__)

TOPIC = "bench.sensors"
AUDIO_TOPIC = "bench.audio"


@dataclass(frozen=True)
class StoredScores:
    """What the store holds for one stream, in time order."""

    time_ns: np.ndarray
    score: np.ndarray
    alert: np.ndarray
    decided_by: tuple[str, ...]
    window: int
    """The fitted detector's window (UCR predicts the centre of the highest-scoring window)."""


def run_through_monitor(sources: Sequence[ReplaySource], train_samples: dict[str, int], *, preset: str,
                        options: dict[str, Any] | None = None, work_dir: Path | None = None,
                        step_every: int = 4096, progress: bool = True,
                        sample_rate: int | None = None, device: str = "auto",
                        jobs: int | None = None) -> dict[str, StoredScores]:
    """Replay ``sources`` (one stream each, all sensor or all audio) through the monitor path; the stored scores
    per stream. Audio streams are scored with ``preset`` as the monitor's audio preset at ``sample_rate``;
    ``device``: where the monitor fits and scores (the detector path's own device, so both compute alike).

    ``jobs=None``: one monitor in this process, with the caller's torch threads (``bench audio --threads``). A
    number: that many monitors side by side, as the members of a consumer group share a topic's partitions, each
    replaying its share of the streams (shares balanced by messages) into a store of its own with one thread per
    numeric pool (:mod:`benchmarks.parallel`; ``1``: one monitor in this process). A stream's scores depend on its
    own records only, not on which streams share its micro-batches, so the stored scores are the same for any
    number."""
    classes = {s.stream_class for s in sources}
    if len(classes) > 1:
        raise ValueError("run_through_monitor replays sensor or audio sources, not both at once")
    if jobs is not None:
        shares = _shares(sources, jobs)
        tasks = [_Member(share, {s.stream: train_samples[s.stream] for s in share}, preset, dict(options or {}),
                         None if work_dir is None else Path(work_dir) / f"member-{i}", step_every, sample_rate,
                         device, progress, i, len(shares)) for i, share in enumerate(shares)]
        out: dict[str, StoredScores] = {}
        for got in map_files(_run_member, tasks, len(tasks)):
            out.update(got)
        return {s.stream: out[s.stream] for s in sources}
    return _replay(sources, train_samples, preset=preset, options=options, work_dir=work_dir,
                   step_every=step_every, progress=progress, sample_rate=sample_rate, device=device,
                   stream_class=classes.pop() if classes else SENSOR)


@dataclass(frozen=True)
class _Member:
    sources: list[ReplaySource]
    train_samples: dict[str, int]
    preset: str
    options: dict[str, Any]
    work_dir: Path | None
    step_every: int
    sample_rate: int | None
    device: str
    progress: bool
    index: int
    members: int


def _run_member(m: _Member) -> dict[str, StoredScores]:
    """One member's replay, in a worker of :func:`benchmarks.parallel.map_files` (its progress bar on its own line
    of the terminal)."""
    return _replay(m.sources, m.train_samples, preset=m.preset, options=m.options, work_dir=m.work_dir,
                   step_every=m.step_every, progress=m.progress, sample_rate=m.sample_rate, device=m.device,
                   stream_class=m.sources[0].stream_class,
                   member=(m.index, m.members) if m.members > 1 else None)


def _shares(sources: Sequence[ReplaySource], jobs: int) -> list[list[ReplaySource]]:
    """At most ``jobs`` non-empty shares of the streams, the longest first into the share with the fewest messages
    so far (each share in the sources' order)."""
    shares: list[list[int]] = [[] for _ in range(max(1, min(jobs, len(sources))))]
    load = [0] * len(shares)
    for i in sorted(range(len(sources)), key=lambda i: -sources[i].message_count()):
        k = load.index(min(load))
        shares[k].append(i)
        load[k] += sources[i].message_count()
    return [[sources[i] for i in sorted(share)] for share in shares if share]


def _replay(sources: Sequence[ReplaySource], train_samples: dict[str, int], *, preset: str,
            options: dict[str, Any] | None, work_dir: Path | None, step_every: int, progress: bool,
            sample_rate: int | None, device: str, stream_class: str,
            member: tuple[int, int] | None = None) -> dict[str, StoredScores]:
    """One monitor: every record of ``sources`` through ingest and one processor into one embedded store.
    ``member``: (index, count) of the members replaying side by side, for the progress bar."""
    with tempfile.TemporaryDirectory(prefix="scalowatch-via-monitor-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        chosen = ({"audio_preset": preset, "audio_detector_options": dict(options or {})} if stream_class == AUDIO
                  else {"sensor_preset": preset, "sensor_detector_options": dict(options or {})})
        if sample_rate is not None:
            chosen["audio_sample_rate"] = sample_rate
        settings = MonitorSettings(model_dir=root / "models", snapshots=False, device=device, **chosen)
        processor = build_processor(settings, train_samples_for=lambda cls, stream: train_samples[stream])
        sink = SQLiteSink(root / "scalowatch.sqlite")
        source = MemorySource(sources, sensor_topic=TOPIC, audio_topic=AUDIO_TOPIC)
        dead = 0
        try:
            label = f"monitor ({preset})" if member is None else f"monitor {member[0] + 1}/{member[1]} ({preset})"
            with tqdm(total=len(source), unit="rec", desc=label, disable=not progress,
                      position=None if member is None else member[0] + 1) as bar:
                for i, rec in enumerate(source.records(), start=1):
                    if ingest(processor, rec, lambda topic: AUDIO if topic == AUDIO_TOPIC else SENSOR) is not None:
                        dead += 1
                    if i % step_every == 0:
                        processor.step()
                        dead += len(unscored_letters(processor))
                        processor.flush(sink)
                    bar.update(1)
            dead += len(drain(processor, sink))
        finally:
            processor.registry.close()
        if dead:
            log.warning("%d record(s) were dead-lettered during the replay", dead)
        columns: dict[str, tuple[list, list, list, list]] = {}
        for row in sink.iter_points(WINDOW_SCORE):  # one pass: the store holds every stream's points
            times, scores, alerts, deciders = columns.setdefault(row.tags["stream"], ([], [], [], []))
            times.append(row.time_ns)
            scores.append(float(row.fields["score"]))
            alerts.append(int(row.fields["alert"]))
            deciders.append(sys.intern(str(row.fields.get("decided_by", ""))))
        out = {}
        for s in sources:
            times, scores, alerts, deciders = columns.get(s.stream, ([], [], [], []))
            key = processor.registry.key_for(stream_class, s.stream)
            fitted = FittedDetector.load(processor.registry.directory(key), device="cpu")
            out[s.stream] = StoredScores(time_ns=np.array(times, dtype=np.int64), score=np.array(scores),
                                         alert=np.array(alerts), decided_by=tuple(deciders), window=fitted.window)
        sink.close()
    return out


def at_times(stored: StoredScores, times_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row takes the latest stored value at or before its time (0 before the first)."""
    return latest_at(stored.time_ns, times_ns, values)


def latest_at(sample_times_ns: np.ndarray, row_times_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values given at ``sample_times_ns`` (sorted) seen on rows: each row takes the latest value at or before its
    time, 0 before the first (a row a stream skipped keeps its previous value, as a dashboard shows it)."""
    idx = np.searchsorted(sample_times_ns, row_times_ns, side="right") - 1
    out = np.zeros(row_times_ns.size)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out
