"""The processing step shared by the Kafka monitor and the demo: samples → windows → scores → points.

No Kafka and no store in here: callers feed decoded samples with their origin (partition, offset), call
:meth:`StreamProcessor.step` to score what is due, and :meth:`StreamProcessor.flush` to write the finished
points to a :class:`~streamer.sinks.base.Sink`. :meth:`StreamProcessor.holds` says which offsets are not yet
durable, so the caller commits only below them (streamer/offsets.py).

Order of work for one window: windower (streamer/windowing.py) → model registry (warm-up / training, or a
ready model) → micro-batcher (per model) → ``model.score_windows`` on the batch → per-stream calibration
(AnomalyLikelihood) → alert state machine → points in the outbox → sink.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from models.calibration import AnomalyLikelihood, LikelihoodConfig
from streamer.alerts import AlertMachine, AlertPolicy, AlertState
from streamer.batcher import MicroBatcher
from streamer.model_registry import ModelKey, ModelRegistry, ModelStatus, safe_name
from streamer.point_builders import alert_point, snapshot_payload, snapshot_point, window_score_point
from streamer.points import ALERT, Point
from streamer.sinks.base import SinkRejected
from streamer.windowing import AudioWindower, Holds, Origin, SensorWindower, Window, WindowSpec

log = logging.getLogger(__name__)

LATE = "late"


@dataclass(frozen=True)
class StreamClassConfig:
    """How streams of one class are windowed. ``kind`` picks the windower (scalar samples or PCM chunks)."""

    name: str
    kind: Literal["sensor", "audio"]
    window: WindowSpec
    sample_rate: int | None = None
    """Audio: the only accepted rate (chunks at other rates are rejected before they get here)."""


@dataclass(frozen=True)
class Rejection:
    """Input the processor refuses; the caller dead-letters the original record with this reason."""

    reason: str
    detail: str


@dataclass
class _Stream:
    name: str
    stream_class: str
    windower: SensorWindower | AudioWindower
    calibrator: AnomalyLikelihood
    alerts: AlertMachine
    level_calibrator: AnomalyLikelihood | None = None
    model_version: str | None = None
    last_end_ns: int | None = None
    """End of the last window scored (restored after a graceful restart: older windows were already written)."""
    partitions: set[Hashable] = field(default_factory=set)


@dataclass
class _Written:
    points: list[Point]
    holds: list[Holds]


@dataclass(frozen=True)
class FlushResult:
    points: int
    alert_points: list[Point]
    """``alert`` points (opened or closed) in the written batch, for the alerts topic."""


@dataclass
class ProcessorStats:
    samples: int = 0
    windows: int = 0
    scored: int = 0
    rejected: int = 0
    resets: int = 0
    score_errors: int = 0
    alerts_opened: int = 0


class StreamProcessor:
    def __init__(
        self,
        classes: Mapping[str, StreamClassConfig],
        registry: ModelRegistry,
        *,
        policy: AlertPolicy = AlertPolicy(),
        likelihood: LikelihoodConfig = LikelihoodConfig(),
        max_batch: int = 64,
        max_wait_s: float = 0.2,
        snapshots: bool = True,
        level_shift: bool = True,
        state_dir: str | Path | None = None,
        scorer_name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.classes = dict(classes)
        self.registry = registry
        self.policy = policy
        self.likelihood = likelihood
        self.snapshots = snapshots
        self.level_shift = level_shift
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.scorer_name = scorer_name
        self.clock = clock
        self.batcher: MicroBatcher[Window] = MicroBatcher(max_batch, max_wait_s)
        self.stats = ProcessorStats()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._outbox: list[_Written] = []

    # -- input ------------------------------------------------------------------------------------------------
    def add_sensor(self, stream_class: str, samples: Sequence, origin: Origin) -> Rejection | None:
        """Samples of one record (objects with ``stream``, ``ts_ns``, ``value``), all with the record's origin.

        Late samples (older than the window being built) reject the *whole* record's remaining late part: the
        record is dead-lettered with reason ``late`` and the indexes; its in-time samples are still used.
        """
        late: list[int] = []
        for i, s in enumerate(samples):
            st = self._stream(stream_class, s.stream, "sensor")
            st.partitions.add(origin[0])
            r = st.windower.add(s.ts_ns, s.value, origin)
            self.stats.samples += 1
            if r.late:
                late.append(i)
            self._after_add(st, r)
        if late:
            self.stats.rejected += 1
            return Rejection(LATE, f"sample(s) {late} older than the window being built")
        return None

    def add_audio(self, stream_class: str, chunk, origin: Origin) -> Rejection | None:
        """One PCM chunk (``stream``, ``ts_ns``, ``sample_rate``, ``samples`` float32 mono)."""
        st = self._stream(stream_class, chunk.stream, "audio")
        st.partitions.add(origin[0])
        r = st.windower.add_chunk(chunk.ts_ns, chunk.sample_rate, chunk.samples, origin)
        self.stats.samples += len(chunk.samples)
        self._after_add(st, r)
        if r.late:
            self.stats.rejected += 1
            return Rejection(LATE, "chunk overlaps samples already received")
        return None

    def _stream(self, stream_class: str, stream: str, kind: str) -> _Stream:
        key = (stream_class, stream)
        st = self._streams.get(key)
        if st is None:
            cfg = self.classes.get(stream_class)
            if cfg is None or cfg.kind != kind:
                raise KeyError(f"no {kind} stream class {stream_class!r} configured")
            if kind == "sensor":
                windower: SensorWindower | AudioWindower = SensorWindower(stream, stream_class, cfg.window)
            else:
                windower = AudioWindower(stream, stream_class, cfg.window, cfg.sample_rate)
            st = self._streams[key] = _Stream(stream, stream_class, windower, AnomalyLikelihood(self.likelihood),
                                              AlertMachine(stream, self.policy), AnomalyLikelihood(self.likelihood))
            self._restore(st)
        return st

    # -- calibration/alert state across graceful restarts -----------------------------------------------------
    def _state_path(self, stream_class: str, stream: str) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / safe_name(stream_class) / f"{safe_name(stream)}.json"

    def _restore(self, st: _Stream) -> None:
        """Load the state a graceful shutdown, a rebalance or the last checkpoint left for this stream.

        The file stays: it is overwritten at the next checkpoint, and after a crash before that it is still the
        best state there is — never newer than the store (it is written only when everything scored has been
        written), at worst older than the commit, in which case the windows in between are missing from the
        calibration history rather than counted twice.
        """
        path = self._state_path(st.stream_class, st.name)
        if path is None or not path.is_file():
            return
        try:
            state = json.loads(path.read_text())
            st.calibrator.load_state_dict(state["calibrator"])
            if st.level_calibrator is not None and state.get("level_calibrator"):
                st.level_calibrator.load_state_dict(state["level_calibrator"])
            st.alerts.load_state_dict(state["alerts"])
            st.model_version = state.get("model_version")
            st.last_end_ns = state.get("last_end_ns")
            log.info("stream %s/%s: calibration and alert state restored", st.stream_class, st.name)
        except Exception:  # unreadable state costs calibration history, never the stream
            log.exception("ignoring unreadable stream state %s", path)
            path.unlink(missing_ok=True)

    def save_states(self, partitions: Iterable[Hashable] | None = None) -> int:
        """Write the calibration and alert state of every stream (or of the streams of ``partitions``).

        Call only when everything scored has been written (``outbox_points == 0``): a restored stream skips
        windows up to the last one it scored, trusting they are in the store.
        """
        if self.state_dir is None:
            return 0
        parts = set(partitions) if partitions is not None else None
        n = 0
        for st in self._streams.values():
            if st.last_end_ns is None or (parts is not None and not st.partitions & parts):
                continue
            path = self._state_path(st.stream_class, st.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {
                "calibrator": st.calibrator.state_dict(),
                "level_calibrator": st.level_calibrator.state_dict() if st.level_calibrator else None,
                "alerts": st.alerts.state_dict(), "model_version": st.model_version, "last_end_ns": st.last_end_ns,
            }
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(path)
            n += 1
        return n

    def _after_add(self, st: _Stream, result) -> None:
        if result.reset:
            self.stats.resets += 1
            log.debug("stream %s/%s: buffer reset after a gap (%d buffered grid samples dropped)",
                        st.stream_class, st.name, result.dropped)
        for w in result.windows:
            self._route(w)

    def _route(self, window: Window) -> None:
        self.stats.windows += 1
        key = self.registry.key_for(window.stream_class, window.stream)
        if self.registry.ensure(window.stream_class, window.stream) is ModelStatus.READY:
            self.batcher.add(key, window, self.clock())
            return
        start = self.registry.starting_point(window.stream_class)
        if start is not None:  # scored by the shared model now, and kept as training data for the stream's own
            self.registry.collect(window)
            self.batcher.add(start, window, self.clock())
        else:
            self.registry.offer(window)

    # -- scoring ----------------------------------------------------------------------------------------------
    def step(self, force: bool = False) -> int:
        """Move finished models' queues to the batcher and score every due batch. Returns windows scored."""
        now = self.clock()
        for key, waiting in self.registry.poll():
            for w in waiting:
                self.batcher.add(key, w, now)
        scored = 0
        for key, windows in self.batcher.take_ready(now, force=force):
            scored += self._score(key, windows)
        return scored

    def _score(self, key: ModelKey, windows: list[Window]) -> int:
        model = self.registry.model(key)
        try:
            batch = model.score_windows(np.stack([w.values for w in windows]))
            results = [(w, batch, i) for i, w in enumerate(windows)]
        except Exception:
            log.exception("scoring a batch of %d windows for %s/%s failed; retrying one by one", len(windows), *key)
            results = []
            for w in windows:
                try:
                    results.append((w, model.score_windows(w.values[None, :]), 0))
                except Exception as exc:
                    self.stats.score_errors += 1
                    log.error("window %s/%s ending %d cannot be scored (%s: %s); skipped", w.stream_class,
                              w.stream, w.end_ns, type(exc).__name__, exc)
        version = str(getattr(model, "version", ""))
        scorer = str(getattr(model, "scorer_name", None) or getattr(getattr(model, "scorer", None), "name", None)
                     or self.scorer_name)
        out = _Written([], [])
        for w, batch, i in results:
            st = self._streams.get((w.stream_class, w.stream))
            if st is None:  # dropped by a rebalance while queued
                continue
            if st.last_end_ns is not None and w.end_ns <= st.last_end_ns:
                continue  # scored and written before a graceful restart (its state says so)
            st.last_end_ns = w.end_ns
            raw = float(batch.scores[i])
            if not math.isfinite(raw):
                self.stats.score_errors += 1
                log.error("non-finite raw score for %s/%s at %d; window skipped", w.stream_class, w.stream, w.end_ns)
                continue
            if st.model_version != version:
                if st.model_version is not None:  # another model (e.g. own after shared): another score scale
                    st.calibrator.reset()
                    if st.level_calibrator is not None:
                        st.level_calibrator.reset()
                st.model_version = version
            score = st.calibrator.update(raw)
            shift = _level_shift(batch, i) if self.level_shift else None
            if shift is not None and st.level_calibrator is not None:
                # The scalogram is normalised per window, so the model cannot see a window that is only shifted
                # or rescaled as a whole; the pipeline reports that as level_z/scale_z. Calibrated on its own
                # history like the model's score, the larger of the two likelihoods is the stream's score.
                score = max(score, st.level_calibrator.update(shift))
            decision = st.alerts.update(w.end_ns, score, raw, version)
            out.points.append(window_score_point(w, raw, score, self.policy.threshold, decision.in_alert, scorer,
                                                 version))
            if decision.changed is not None:
                out.points.append(alert_point(decision.changed, w.stream_class))
                if decision.changed.state is AlertState.OPEN:
                    self.stats.alerts_opened += 1
            if self.snapshots and (decision.in_alert or decision.changed is not None):
                out.points.append(snapshot_point(w, self._payload(w, batch, i)))
            self.stats.scored += 1
        # Windows that failed to score are released with the rest: they were logged as errors, not lost silently.
        out.holds = [w.holds for w in windows]
        self._outbox.append(out)
        return len(results)

    @staticmethod
    def _payload(w: Window, batch, i: int) -> str:
        scal = batch.extras.get("scalogram") if batch.extras else None
        recon = batch.reconstructions[i] if batch.reconstructions is not None else None
        anomaly_map = batch.maps[i]
        return snapshot_payload(scal[i] if scal is not None else np.zeros_like(anomaly_map), recon, anomaly_map,
                                w.values, w.sample_rate)

    # -- output -----------------------------------------------------------------------------------------------
    def flush(self, sink) -> FlushResult:
        """Write every finished point in one ``sink.write``; on success release their offsets.

        Raises whatever the sink raises (``SinkUnavailable`` when the store is down): nothing is released then,
        and the next call writes the same points again.
        """
        if not self._outbox:
            return FlushResult(0, [])
        points = [p for item in self._outbox for p in item.points]
        if points:
            try:
                sink.write(points)
            except SinkRejected as exc:
                # One bad point must not block the rest forever: write one by one, log what the store refuses.
                log.error("the store rejected a batch (%s); writing its %d points one by one", exc, len(points))
                kept = []
                for p in points:
                    try:
                        sink.write([p])
                        kept.append(p)
                    except SinkRejected as one:
                        self.stats.score_errors += 1
                        log.error("point %s at %d rejected by the store: %s", p.series_key(), p.time_ns, one)
                points = kept
        self._outbox = []
        return FlushResult(len(points), [p for p in points if p.measurement == ALERT])

    @property
    def outbox_points(self) -> int:
        return sum(len(item.points) for item in self._outbox)

    def backlog(self) -> int:
        """Windows waiting to be scored: in the batcher or queued behind a training model (not warm-up data)."""
        return len(self.batcher) + self.registry.queued_windows()

    def holds(self) -> Iterator[Holds]:
        """Lowest offsets (per partition) of everything not yet durably written."""
        for st in self._streams.values():
            yield st.windower.holds()
        for w in self.batcher.pending():
            yield w.holds
        yield from self.registry.holds()
        for item in self._outbox:
            yield from item.holds

    def drop_partitions(self, partitions: Iterable[Hashable]) -> int:
        """Forget the streams of revoked partitions (buffers, queued windows, unwritten points).

        Their new owner re-reads everything from the last committed offset, so nothing is lost.
        Returns the number of streams dropped.
        """
        parts = set(partitions)
        gone = {k for k, st in self._streams.items() if st.partitions & parts}
        names = {k[1] for k in gone}
        for k in gone:
            del self._streams[k]
        keep = []
        for w in list(self.batcher.pending()):
            if (w.stream_class, w.stream) not in gone:
                keep.append(w)
        if len(keep) != len(self.batcher):
            old = self.batcher
            self.batcher = MicroBatcher(old.max_batch, old.max_wait_s)
            now = self.clock()
            for w in keep:
                self.batcher.add(self.registry.key_for(w.stream_class, w.stream), w, now)
        self.registry.drop_streams(names)
        for item in self._outbox:
            item.holds = [h for h in item.holds if not (set(h) & parts)]
        return len(gone)

    def stream_count(self) -> int:
        return len(self._streams)


def _level_shift(batch, i: int) -> float | None:
    """max(|level_z|, |scale_z|) of window ``i`` when the model reports them (ScalogramPipeline does)."""
    extras = batch.extras or {}
    if "level_z" not in extras or "scale_z" not in extras:
        return None
    value = max(abs(float(extras["level_z"][i])), abs(float(extras["scale_z"][i])))
    return value if math.isfinite(value) else None
