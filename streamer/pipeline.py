"""The processing step shared by the Kafka monitor, the demo and ``bench --via monitor``: samples → detector → points.

No Kafka and no store in here: callers feed decoded samples with their origin (partition, offset), call
:meth:`StreamProcessor.step` to score what is due, and :meth:`StreamProcessor.flush` to write the finished points
to a :class:`~streamer.sinks.base.Sink`. :meth:`StreamProcessor.holds` says which offsets are not yet durable, so
the caller commits only below them (streamer/offsets.py).

What happens to a stream (the same detector the benchmarks measure, :mod:`models.detector`):

1. **Training part.** Its first ``train_samples`` samples (the class's preset says how many) are collected.
2. **Fit.** The class's detector is fitted on them in the background (:mod:`streamer.model_registry`), or a
   fitted one is loaded from disk.
3. **Score everything.** Every sample the stream sent — the training part included — goes through the stream's
   :class:`~models.detector.online.DetectorState`; the diffusion windows of all ready streams that share a
   model are scored in one forward pass per step. Each scored sample (audio: each window end) becomes a
   ``window_score`` point that says which channel decided it.
4. **Alert.** One rule (:class:`~streamer.alerts.AlertMachine`) turns scores into alerts.

Ordering: a sensor stream's samples must arrive in timestamp order; an older timestamp is ``late``
(dead-lettered) — unless the stream was restored from a checkpoint and the sample is one it already scored (a
re-read after a restart), which is skipped. A repeated timestamp is scored like any sample; the store keeps one
point per timestamp, the last. Audio is indexed by sample count from the stream's first
chunk (no rounded periods, so 44.1 kHz does not drift). A chunk's place is its timestamp: one that starts within
a millisecond of the next expected sample continues the stream (producers stamp in milliseconds; at 44.1 kHz that
is ±22 samples); one that starts later leaves a gap (its samples keep their true times; the detector sees them
after the earlier ones); one that overlaps samples already received loses the overlap, and one that lies wholly
before the next expected sample is ``late`` — unless the stream was restored and it is a re-read.
"""
from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from models.detector import (MIN_TRAIN_SAMPLES, DetectorConfig, DetectorState, FittedDetector, WindowScores,
                             window_scores_together)
from models.detector.online import Detections
from models.errors import CheckpointMismatchError
from streamer.alerts import AlertMachine, AlertPolicy, AlertState
from streamer.memory import fitted_weight
from streamer.model_registry import DetectorRegistry, ModelKey, safe_name
from streamer.offsets import Holds, Origin, merge_holds
from streamer.pending import PendingRecords, Record, Taken
from streamer.point_builders import alert_point, snapshot_payload, snapshot_point, score_point
from streamer.points import ALERT, Point
from streamer.sinks.base import SinkRejected
from streamer.state_files import StateFiles, decode_samples, encode_samples

log = logging.getLogger(__name__)

LATE = "late"
BAD_TIMESTAMP = "bad_timestamp"
TOO_MANY_STREAMS = "too_many_streams"
STREAM_FAILED = "stream_failed"
SCORING_FAILED = "scoring_failed"
MAX_CONSECUTIVE_FAILURES = 3
"""Scoring failures in a row (nothing of the stream scored in between), one of them on a new detector state,
after which a stream is quarantined."""
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class StreamClassConfig:
    """One stream class: which kind of input, which detector configuration, which alert rule."""

    name: str
    kind: Literal["sensor", "audio"]
    detector: DetectorConfig
    policy: AlertPolicy = AlertPolicy()
    sample_rate: int | None = None
    """Audio: the only accepted rate (chunks at other rates are rejected before they get here)."""


@dataclass(frozen=True)
class Rejection:
    """Input the processor refuses; the caller dead-letters the original record with this reason."""

    reason: str
    detail: str


@dataclass(frozen=True)
class FailedSamples:
    """The samples of one input record that their stream could not score (see :meth:`StreamProcessor._fail`):
    the caller dead-letters them (``scoring_failed``), in the input's own wire format, before the commit passes
    ``origin``."""

    stream_class: str
    stream: str
    kind: str
    ts_ns: np.ndarray
    values: np.ndarray
    origin: Origin | None
    stamp: int | None
    """Audio: the timestamp its chunk carried."""
    sample_rate: int | None
    error: str


@dataclass
class _Stream:
    stream_class: str
    name: str
    kind: str
    alerts: AlertMachine
    segments: PendingRecords = field(default_factory=PendingRecords)
    """Its unscored samples, record by record (a restored stream skips re-read audio chunks by their stamps)."""
    state: DetectorState | None = None
    received: int = 0
    """Samples accepted so far."""
    audio_index: int = 0
    """Audio: the time index (samples since the stream's first chunk) of the next expected sample; ahead of
    ``received`` by the gaps."""
    last_ts: int | None = None
    """Sensor: the newest sample's time. Audio: the newest accepted chunk's own timestamp."""
    skip_until_ts: int | None = None
    """Restored from a checkpoint: samples (audio: chunks, by their own timestamps) at or before this were scored
    and written, or saved with the state, before the restart."""
    jump_ts: int | None = None
    """Sensor: a sample refused for jumping more than the skew past the newest; a next one close after it (not at
    the same time: a stray delivered twice) confirms the jump (a stream that resumes after a long silence), any
    in-order one forgets it (a stray sample)."""
    scored_stamp: int | None = None
    """Audio: the largest own timestamp of a chunk whose samples are all scored (see :meth:`_audio_fields`)."""
    audio_start_ns: int | None = None
    audio_rate: int | None = None
    partitions: set = field(default_factory=set)
    saving: bool = False
    """A checkpoint with this stream's state is being written in the background."""
    changed: bool = False
    """Scored since its state was last saved (a checkpoint skips the streams that did not change)."""
    on_disk: bool = False
    """A state file exists for it (restored from one, or a checkpoint wrote one)."""
    touched: int = 0
    """When the stream last received input (the processor's input counter): the eviction order."""
    unsaved: Holds = field(default_factory=dict)
    """Offsets of samples scored since the stream's state was last saved: the commit must not pass them, or a
    crash would resume from a state that has not seen samples the broker no longer re-delivers."""
    failed: str | None = None
    """Why scoring this stream kept raising: it is quarantined (see :meth:`StreamProcessor._fail`), not scored or
    saved again until a restart."""
    careful: bool = False
    """Its last batch failed: its pending samples are scored again in runs of records, down to one (see
    :meth:`StreamProcessor._fail`)."""
    failures: int = 0
    """Scoring failures in a row (a batch, or a run of records, scored resets it; a failed run does not count)."""
    fresh: bool = False
    """Its state was replaced by a new one of its detector (not a saved one) since the failures in a row began."""
    lineage: int = 0
    """Which detector state this is (a new number whenever ``state`` is replaced): its saved history is journaled
    as a continuation only of the same lineage's (streamer/state_files.py)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.stream_class, self.name)

    def pending(self) -> int:
        return self.segments.samples

    def holds(self) -> Holds:
        return self.segments.holds()


@dataclass(frozen=True)
class DroppedStreams:
    """What :meth:`StreamProcessor.drop_partitions` forgot."""

    count: int
    rewind: dict[Hashable, dict[tuple[str, str], int]]
    """For partitions that were *not* revoked: per forgotten stream (class, id) that had records there too, the
    lowest offset it still needed there. Read those records again."""


@dataclass
class _Written:
    points: list[Point]
    holds: list[Holds]
    stream: tuple[str, str]
    alerts_opened: int = 0
    """Counted into the stats when the points are booked, not when built: a batch that fails after building some
    is built again."""


@dataclass(frozen=True)
class FlushResult:
    points: int
    alert_points: list[Point]
    """``alert`` points (opened or closed) in the written batch, for the alerts topic."""


@dataclass
class ProcessorStats:
    samples: int = 0
    scored: int = 0
    rejected: int = 0
    replayed: int = 0
    fit_failures: int = 0
    alerts_opened: int = 0
    audio_gaps: int = 0
    audio_overlap_samples: int = 0
    scoring_failures: int = 0
    evicted: int = 0


class StreamProcessor:
    def __init__(
        self,
        classes: Mapping[str, StreamClassConfig],
        registry: DetectorRegistry,
        *,
        snapshots: bool = True,
        state_dir: str | Path | None = None,
        train_samples_for: Callable[[str, str], int] | None = None,
        max_step_samples: int | None = None,
        max_skew_s: float = 30 * 86_400,
        max_streams: int = 10_000,
        training_weights: Mapping[str, int] | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ):
        self.classes = dict(classes)
        self.registry = registry
        self.snapshots = snapshots
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.train_samples_for = train_samples_for
        # Samples one step scores at most (None: all); at least one stream's are always scored.
        self.max_step_samples = max_step_samples
        self._step_from: tuple[str, str] | None = None  # the stream a bounded step stopped at: the next starts there
        self.max_skew_ns = int(max_skew_s * NS_PER_S)
        self.wall_clock_ns = wall_clock_ns
        self.max_streams = max_streams
        # Per class: how many of the cap's units a stream takes while it collects its training part
        # (streamer.memory.training_weight); 1 where not given.
        self.training_weights = dict(training_weights or {})
        self._inputs = 0
        self.stats = ProcessorStats()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._outbox: list[_Written] = []
        self._saver: ThreadPoolExecutor | None = None
        self._save_job: _SaveJob | None = None
        self._state_files = StateFiles()
        self._in_record: Mapping[tuple[str, str], Any] = {}  # streams with samples of the record being taken in
        self._unscored: list[FailedSamples] = []  # given up after a scoring failure, until the caller takes them

    # -- input ------------------------------------------------------------------------------------------------
    def add_sensor(self, stream_class: str, samples: Sequence, origin: Origin) -> Rejection | None:
        """Samples of one record (objects with ``stream``, ``ts_ns``, ``value``), all with the record's origin.

        Samples older than the stream's newest are ``late``: the record is dead-lettered with their indexes; its
        in-order samples are still used. A sample with the *same* timestamp as the newest is a reading too: it is
        scored, and its point replaces the earlier one at that time in the store (one point per timestamp).
        """
        late: list[int] = []
        future: list[int] = []
        refused: list[int] = []
        failed: list[int] = []
        batches: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self._in_record = batches  # at the cap, a stream this record has samples for is not evicted for the next
        try:
            self._take_sensor(stream_class, samples, origin, batches, late, future, refused, failed)
        finally:
            self._in_record = {}
        for key, (ts_list, values) in batches.items():
            st = self._streams[key]
            self._append(st, np.asarray(ts_list, dtype=np.int64), np.asarray(values, dtype=np.float64), origin)
        return self._sensor_rejection(late, future, refused, failed)

    def _take_sensor(self, stream_class: str, samples: Sequence, origin: Origin,
                     batches: dict[tuple[str, str], tuple[list[int], list[float]]], late: list[int],
                     future: list[int], refused: list[int], failed: list[int]) -> None:
        """Sort one record's samples into per-stream batches and the lists of refused ones (see add_sensor)."""
        horizon = self.wall_clock_ns() + self.max_skew_ns
        for i, s in enumerate(samples):
            st = self._stream(stream_class, s.stream, "sensor")
            if st is None:
                refused.append(i)
                continue
            if st.failed is not None:  # quarantined until a restart (see _fail): buffering on would only fill memory
                failed.append(i)
                continue
            st.partitions.add(origin[0])
            self.stats.samples += 1
            ts = int(s.ts_ns)
            # One sample from the year 2255 must not make every later sample "late"; nor may one years after the
            # rest of a replayed recording, or one stamped with the clock in a replay. A jump past the skew is
            # taken only when the next sample confirms it: a stream silent for longer than the skew resumes (its
            # first sample dead-lettered), where before it was refused for ever.
            if ts > horizon:
                future.append(i)
                continue
            if st.last_ts is not None and ts > st.last_ts + self.max_skew_ns:
                confirmed = st.jump_ts is not None and st.jump_ts < ts <= st.jump_ts + self.max_skew_ns
                st.jump_ts = None if confirmed else ts
                if not confirmed:
                    future.append(i)
                    continue
            if st.skip_until_ts is not None and ts <= st.skip_until_ts:
                self.stats.replayed += 1  # scored and written before the restart
                continue
            if st.last_ts is not None and ts < st.last_ts:
                late.append(i)
                continue
            st.last_ts, st.jump_ts = ts, None
            ts_list, values = batches.setdefault(st.key, ([], []))
            ts_list.append(ts)
            values.append(float(s.value))

    def _sensor_rejection(self, late: list[int], future: list[int], refused: list[int],
                          failed: list[int]) -> Rejection | None:
        if failed:
            self.stats.rejected += 1
            return Rejection(STREAM_FAILED, f"sample(s) {failed}: scoring their stream failed "
                                            f"{MAX_CONSECUTIVE_FAILURES} times in a row; it is quarantined until a "
                                            "restart")
        if refused:
            self.stats.rejected += 1
            return Rejection(TOO_MANY_STREAMS, f"sample(s) {refused}: the stream cap ({self.max_streams}) is full "
                                               "and too few streams can be evicted (the others hold samples not yet "
                                               "durable)")
        if future:
            self.stats.rejected += 1
            detail = f"sample(s) {future} more than {self.max_skew_ns / NS_PER_S:g} s ahead of the stream's newest " \
                     "sample or of the clock"
            return Rejection(BAD_TIMESTAMP, detail + (f"; sample(s) {late} older than the newest" if late else ""))
        if late:
            self.stats.rejected += 1
            return Rejection(LATE, f"sample(s) {late} older than the stream's newest sample")
        return None

    def add_audio(self, stream_class: str, chunk, origin: Origin) -> Rejection | None:
        """One PCM chunk (``stream``, ``ts_ns``, ``sample_rate``, ``samples`` float32 mono)."""
        st = self._stream(stream_class, chunk.stream, "audio")
        if st is None:
            self.stats.rejected += 1
            return Rejection(TOO_MANY_STREAMS, f"the stream cap ({self.max_streams}) is full and too few streams can "
                                               "be evicted (an audio stream collecting its training part counts as "
                                               f"{self.training_weights.get(stream_class, 1)})")
        if st.failed is not None:
            self.stats.rejected += 1
            return Rejection(STREAM_FAILED, f"scoring this stream failed {MAX_CONSECUTIVE_FAILURES} times in a row; "
                                            "it is quarantined until a restart")
        st.partitions.add(origin[0])
        values = np.asarray(chunk.samples, dtype=np.float64).ravel()
        rate = int(chunk.sample_rate)
        self.stats.samples += values.size
        if values.size == 0:
            return None
        expected = (st.audio_start_ns + (st.audio_index * NS_PER_S) // rate if st.audio_start_ns is not None
                    else self.wall_clock_ns())
        if int(chunk.ts_ns) > max(expected, self.wall_clock_ns()) + self.max_skew_ns:
            self.stats.rejected += 1
            return Rejection(BAD_TIMESTAMP, f"chunk more than {self.max_skew_ns / NS_PER_S:g} s ahead of the "
                                            "stream's next sample and of the clock")
        if st.audio_start_ns is None:
            st.audio_start_ns, st.audio_rate = int(chunk.ts_ns), rate
        if rate != st.audio_rate:
            self.stats.rejected += 1
            return Rejection("bad_sample_rate", f"chunk at {rate} Hz in a stream at {st.audio_rate} Hz")
        stamp = int(chunk.ts_ns)
        # Index by sample count: the chunk's first sample is sample `first` of the stream (see the module docstring).
        first = audio_index(stamp, st.audio_start_ns, rate)
        nxt = st.audio_index
        tolerance = rate // 1000 + 1  # a millisecond: the resolution producers stamp with
        # Restored: a chunk stamped at or before the skip mark was read before the restart. One that ends within
        # the restored samples is a re-read (skipped); one that runs past them (a re-sent, longer range) keeps
        # its new part — the stamp alone cannot say that nothing of it is new.
        replay = st.skip_until_ts is not None and stamp <= st.skip_until_ts
        if replay and first + values.size <= nxt + tolerance:
            self.stats.replayed += values.size
            return None
        if abs(first - nxt) <= tolerance:
            first = nxt
        elif first + values.size <= nxt + tolerance:
            self.stats.rejected += 1
            return Rejection(LATE, f"chunk of {values.size} samples starts at sample {first}, before the "
                                   f"{nxt} already received")
        elif first < nxt:
            if replay:
                self.stats.replayed += nxt - first
            else:
                self.stats.audio_overlap_samples += nxt - first
                log.debug("stream %s/%s: chunk overlaps %d received samples", stream_class, chunk.stream,
                          nxt - first)
            values, first = values[nxt - first:], nxt
        else:
            # A gap: the samples keep their true times; the detector scores them after the earlier ones.
            self.stats.audio_gaps += 1
            log.debug("stream %s/%s: audio gap of %d samples", stream_class, chunk.stream, first - nxt)
        # start + idx·10⁹ // rate, split into whole seconds and the rest: idx·10⁹ leaves int64 after 9.2e9 samples
        # (2.2 days of a stream at 48 kHz, 6.7 at 16 kHz), and the times went backwards.
        seconds, rest = np.divmod(np.arange(first, first + values.size, dtype=np.int64), rate)
        ts = st.audio_start_ns + seconds * NS_PER_S + (rest * NS_PER_S) // rate
        self._append(st, ts, values, origin, stamp)
        st.audio_index = first + values.size
        st.last_ts = stamp if st.last_ts is None else max(st.last_ts, stamp)
        return None

    def _append(self, st: _Stream, ts: np.ndarray, values: np.ndarray, origin: Origin,
                stamp: int | None = None) -> None:
        st.segments.append(ts, values, origin, stamp)
        st.received += values.size

    def _stream(self, stream_class: str, stream: str, kind: str) -> _Stream | None:
        """The live stream (restored from its saved state if it has one); None when the cap leaves no room."""
        key = (stream_class, stream)
        self._inputs += 1
        st = self._streams.get(key)
        if st is None:
            cfg = self.classes.get(stream_class)
            if cfg is None or cfg.kind != kind:
                raise KeyError(f"no {kind} stream class {stream_class!r} configured")
            st = self._streams[key] = _Stream(stream_class, stream, kind, AlertMachine(stream, cfg.policy))
            # Restored first: a stream that comes back fitted takes one unit of the cap, not its training weight.
            self._restore(st)
            if not self._make_room(key):
                self._forget_streams([key])  # nothing of it is only in memory: it has taken in no sample yet
                return None
        st.touched = self._inputs
        return st

    def _weight(self, st: _Stream) -> int:
        """A stream in the cap's units: one — more where its own fitted detector is larger than a ``nab`` stream's
        (a ``ucr`` detector's discord windows: :func:`streamer.memory.fitted_weight`) —, or its class's training
        weight while it collects its training part (an audio stream's 100 s of samples,
        :func:`streamer.memory.training_weight`, or the detector a long training part will be fitted into:
        :func:`streamer.assemble.build_processor`). With a shared model a stream
        collects only until its class's detector is ready (in memory, or published on disk by any member, looked
        at as :meth:`DetectorRegistry.detector` throttles it); from then on it gets its state at the next step, what
        it holds is scored over the next rounds, and it counts as one."""
        if st.state is not None:
            return fitted_weight(st.state.fitted.nbytes, per_stream_models=not self.registry.shared)
        if self.registry.shared and self.registry.detector(
                self.registry.key_for(st.stream_class, st.name)) is not None:
            return 1
        return self.training_weights.get(st.stream_class, 1)

    def _make_room(self, new: tuple[str, str]) -> bool:
        """Evict the least recently active streams that lose nothing by it (everything they received is in their
        saved state, or they have no state and no samples; each is restored from that state if it sends again)
        until the live streams, ``new`` among them, fit the cap. Chosen before any is evicted: when they cannot
        free enough room, none is evicted. A stream alone is always let in, whatever its weight."""
        over = self.stream_cap_used() - self.max_streams
        if over <= 0:
            return True
        if self.state_dir is None:
            return False
        durable = sorted((st for st in self._streams.values()
                          if st.key != new and not st.unsaved and not st.changed and not st.saving
                          and st.key not in self._in_record
                          and st.failed is None  # quarantined until a restart, not until the stream is evicted
                          and not st.segments.held()
                          and (st.received == 0 or st.on_disk)), key=lambda st: st.touched)
        victims, freed = [], 0
        for st in durable:
            if freed >= over:
                break
            victims.append(st)
            freed += self._weight(st)
        if freed < over and len(victims) < len(self._streams) - 1:
            return False
        self._forget_streams([st.key for st in victims])
        self.stats.evicted += len(victims)
        log.debug("evicted %d stream(s) for %s/%s (cap of %d)", len(victims), *new, self.max_streams)
        return True

    def _forget_streams(self, keys: list[tuple[str, str]]) -> None:
        """Take streams out of memory with what only they used: a detector no live stream shares, what the
        state files remember of their journals."""
        models = {self.registry.key_for(*k) for k in keys}
        for k in keys:
            del self._streams[k]
            if self.state_dir is not None:
                self._state_files.forget(self._state_path(*k))  # type: ignore[arg-type]
        self._release_unused(models)

    def _release_unused(self, models: set[ModelKey]) -> None:
        """Drop from memory those of ``models`` that no live stream uses (loaded again when one comes back)."""
        for key in models - {self.registry.key_for(st.stream_class, st.name) for st in self._streams.values()}:
            self.registry.release(key)

    # -- state across restarts and rebalances -----------------------------------------------------------------
    def _state_path(self, stream_class: str, stream: str) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / safe_name(stream_class) / f"{safe_name(stream)}.json"

    def _restore(self, st: _Stream) -> None:
        """Load the state a graceful shutdown, a rebalance or the last checkpoint left for this stream.

        The file stays: it is overwritten at the next checkpoint, and after a crash before that it is still the
        best state there is — never newer than the store (it is written only when everything scored has been
        written), at worst older than the commit, in which case the samples in between are missing from the
        detector's history rather than counted twice. A stream still collecting its training part gets its
        collected samples back.
        """
        path = self._state_path(st.stream_class, st.name)
        if path is None:
            return
        job = self._save_job
        if job is not None and any(other.key == st.key for other in job.streams):
            # A checkpoint is still writing this stream's files (it was dropped by a rebalance and came back at
            # once): read them once that write is whole.
            self._reap_save(block=True)
        if not path.is_file():
            return
        try:
            state = self._state_files.read(path)
            if state.get("detector") is not None:
                fitted = self._restored_detector(self.registry.key_for(st.stream_class, st.name))
                if fitted is None:
                    raise CheckpointMismatchError("its detector is gone")
                detector = fitted.new_state()
                detector.load_state_dict(state["detector"])
                st.state, st.lineage = detector, next(_LINEAGES)
            st.alerts.load_state_dict(state["alerts"])
            st.received = int(state["received"])
            st.last_ts = st.skip_until_ts = state["last_ts"]
            if st.kind == "audio":
                # Chunks are skipped by their own stamps. A state from before that has none: its re-read chunks are
                # placed by index instead (a few may be dead-lettered as late once; none is skipped unscored).
                st.last_ts = st.skip_until_ts = st.scored_stamp = state.get("audio_skip_until")
            st.audio_start_ns, st.audio_rate = state.get("audio_start_ns"), state.get("audio_rate")
            st.audio_index = int(state.get("audio_index", st.received))  # states from before gaps were kept
            if state.get("training") is not None:
                ts, values = decode_samples(state["training"])
                st.segments.append(ts, values, None)
            st.on_disk = True
            log.info("stream %s/%s: %s restored at sample %d", st.stream_class, st.name,
                     "detector and alert state" if st.state is not None else "training part", st.received)
        except Exception as exc:  # unreadable state costs the stream's history, never the stream
            log.exception("ignoring unreadable stream state %s", path)
            st.state, st.segments, st.received, st.last_ts, st.skip_until_ts = None, PendingRecords(), 0, None, None
            st.audio_start_ns, st.audio_rate, st.audio_index = None, None, 0
            if not isinstance(exc, OSError):  # a disk error may pass; the next save replaces the file anyway
                self._state_files.remove(path)

    def _restored_detector(self, key: ModelKey) -> FittedDetector | None:
        """The detector a restored state belongs to. An evicted or revoked stream's detector left memory with it,
        so a stream's return loads it from disk; a load that fails while the folder is there (too many open
        files, a moment without memory) is tried twice more before the stream's state is given up."""
        fitted = self.registry.detector(key, fresh=True)
        for pause in RELOAD_PAUSES_S:
            if fitted is not None or not self.registry.directory(key).is_dir():
                break
            time.sleep(pause)
            fitted = self.registry.detector(key, fresh=True, retry_failed=True)
        return fitted

    def save_states(self, partitions: Iterable[Hashable] | None = None, *, wait: bool = True) -> int:
        """Write the state of every stream (or of the streams of ``partitions``); returns how many.

        A scoring stream saves its detector and alert state. Call only when everything scored has been written
        (``outbox_points == 0``): a restored stream skips samples up to the last one it scored, trusting they are
        in the store. With a state folder, the commit never passes a sample whose effect on the state is not
        saved yet (:meth:`holds`), so the saved state is never older than the commit: a crash resumes exactly.

        A stream still collecting its training part (fewer samples than it needs) saves the samples collected so
        far, which then stop holding the commit. Without that, a stream that sent a few samples and fell silent
        would pin its partition's commit for ever, and every restart would re-read everything since.

        The states are copied here (cheap) and encoded and written by one background thread unless ``wait``
        (:class:`~streamer.state_files.StateFiles`: the histories are appended to a journal, the rest replaces
        the JSON), so that a checkpoint of many streams does not stall scoring. Until the files are durable their
        offsets stay held; a checkpoint that finds the previous one still writing is skipped (returns 0). With
        ``wait`` it returns after the files are written and raises ``OSError`` if they could not be.
        """
        if self.state_dir is None:
            return 0
        self._reap_save(block=wait)
        if self._save_job is not None:
            return 0  # the previous checkpoint is still being written
        parts = set(partitions) if partitions is not None else None
        files: list[tuple[Path, dict, int]] = []
        held: list[Holds] = []
        streams: list[_Stream] = []
        for st in self._streams.values():
            if (parts is not None and not st.partitions & parts) or st.failed is not None:
                continue  # a failed stream's state may be half updated: its last saved one stands
            training = st.state is None
            if training and ((not st.segments.held() and not st.unsaved)
                             or st.received >= self._train_samples(st)):
                # Nothing new since the last save (and no failed save to write again: its offsets came back into
                # ``unsaved``); or the training part is complete and its fit due: then its records stay held, so
                # that after a restart they are read again and bring the stream back (a stream is restored when it
                # receives a sample; one whose samples were all saved and committed would never be).
                continue
            if training:
                state = {"detector": None, "alerts": st.alerts.state_dict(), "received": st.received,
                         "last_ts": st.last_ts,
                         "training": encode_samples(st.segments.timestamps(), st.segments.values()),
                         **self._audio_fields(st, all_saved=True)}
                held_here = merge_holds(dict(st.unsaved), st.holds().items())
                st.segments.release_origins()
            elif not st.changed:
                continue  # idle since its last save: the file already holds this state
            elif st.segments.held() < len(st.segments):
                # Part of a saved training part is still to be scored (a failed batch scored again in runs of
                # records): those samples hold no offset, only the file holds them, which must stay until they
                # are scored. What was scored since stays held (unsaved).
                continue
            else:
                last_ts = int(st.segments.timestamps()[0]) - 1 if st.segments else st.last_ts
                state = {"detector": st.state.state_dict(), "alerts": st.alerts.state_dict(),
                         "received": st.received - st.pending(), "last_ts": last_ts,
                         **self._audio_fields(st, all_saved=False)}
                held_here = st.unsaved
            held.append(held_here)
            st.unsaved = {}
            st.changed = False
            st.saving = True
            streams.append(st)
            files.append((self._state_path(st.stream_class, st.name), state, st.lineage))  # type: ignore[arg-type]
        if not files:
            return 0
        if self._saver is None:
            self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-save")
        self._save_job = _SaveJob(self._saver.submit(self._state_files.write, files), held, streams)
        if wait:
            self._reap_save(block=True, raise_errors=True)
        return len(files)

    def _reap_save(self, *, block: bool, raise_errors: bool = False) -> None:
        """Release the offsets of a finished background save; after a failure, hold them again until a later
        save succeeds."""
        job = self._save_job
        if job is None or (not block and not job.future.done()):
            return
        self._save_job = None
        error = job.future.exception()
        for st in job.streams:
            st.saving = False
            st.on_disk = st.on_disk or error is None
        if error is not None:
            for st, holds in zip(job.streams, job.held):
                if self._streams.get(st.key) is st and st.failed is None:  # a quarantined stream holds nothing
                    merge_holds(st.unsaved, holds.items())
                    st.changed = True
            log.warning("could not checkpoint stream states: %s", error)
            if raise_errors:
                raise error

    # -- scoring ----------------------------------------------------------------------------------------------
    def _train_samples(self, st: _Stream) -> int:
        """How many of the stream's first samples its detector fits on. A per-stream hook (the demo's and the
        benchmarks' training parts) that asks for fewer than a detector can fit on is refused: lengthening it would
        train on samples the caller counts as the test part."""
        if self.train_samples_for is None:
            return self.classes[st.stream_class].detector.train_samples
        need = int(self.train_samples_for(st.stream_class, st.name))
        if need < MIN_TRAIN_SAMPLES:
            raise ValueError(f"stream {st.stream_class}/{st.name}: a training part of {need} samples is too short "
                             f"(the detector needs at least {MIN_TRAIN_SAMPLES})")
        return need

    def step(self, max_samples: int | None = None) -> int:
        """Start fits that are due, take finished ones, score ready streams' pending samples: up to ``max_samples``
        (default ``max_step_samples``; None there: all of them; a replay's end drains in bounded steps,
        :func:`streamer.ingest.drain`), a stream's records in order, as many whole records of the last stream as the
        budget leaves (at least one). Returns the number
        of samples it took to score (a budget's measure: audio scores one point per window, not per sample);
        :attr:`scoring_left` says whether the budget left some.

        Why bounded: the loop polls only between steps, and the group drops a member that has not polled for
        ``max.poll.interval.ms``. When a shared detector becomes ready, every stream waiting for it brings its whole
        training part at once (10,000 streams x 750 samples is 25 minutes of scoring on one core); a bounded step
        scores them over many rounds, starting each where the last one stopped. Why within a stream too: one
        stream's backlog (up to ``max_backlog_samples`` after a restart, or a replayed file) scored whole built a
        point per sample at once — about 2 KB each, gigabytes for a million samples."""
        ready, failed = self.registry.poll()
        self.stats.fit_failures += len(failed)
        jobs: dict[ModelKey, list[tuple[_Stream, Taken]]] = {}
        cut: _Stream | None = None
        streams = list(self._streams.values())
        if ready:  # a fit that finished after its streams left (a rebalance) is not kept in memory for nothing
            self._release_unused(set(ready))
        start = 0
        budget = self.max_step_samples if max_samples is None else max_samples
        if self._step_from in self._streams:
            start = list(self._streams).index(self._step_from)
        self._step_from = None
        taken = 0
        # A stream scoring a failed batch again goes first: it holds its samples (and their partition's commit)
        # until it is through, over several steps where the budget is short.
        for st in sorted(streams[start:] + streams[:start], key=lambda st: not st.careful):
            if not st.segments or st.failed is not None:
                continue
            key = self.registry.key_for(st.stream_class, st.name)
            fitted = None
            if st.state is None:
                fitted = self.registry.detector(key)
                if fitted is None:  # fits are started whatever the budget: they run in the background
                    need = self._train_samples(st)
                    if st.received >= need and self.registry.fit_due(key):
                        train = st.segments.values()[:need].copy()
                        self.registry.fit(key, train)
                    continue
            if budget is not None and taken >= budget:
                if self._step_from is None:
                    self._step_from = st.key  # the next step starts with the first stream left
                continue
            if st.careful:  # (it has a state: it failed with one)
                taken += self._score_carefully(st, None if budget is None else budget - taken)
                continue
            if st.state is None:
                assert fitted is not None
                st.state = self._state_for(fitted, pending=st.segments.values())
                st.lineage = next(_LINEAGES)
            batch = st.segments.take(st.segments.count_within(None if budget is None else budget - taken))
            if batch.records < len(st.segments):
                cut = st
            taken += batch.values.size
            jobs.setdefault(key, []).append((st, batch))
        if cut is not None and self._step_from is None:
            self._step_from = cut.key  # the last stream of the rotation kept records: the next step starts there
        for key, items in jobs.items():
            fitted = items[0][0].state.fitted  # type: ignore[union-attr]
            try:
                parts = window_scores_together(fitted, [(st.state, b.values) for st, b in items])  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - find the stream that fails alone; the others score on
                parts = []
                for st, batch in items:
                    try:
                        alone = window_scores_together(fitted, [(st.state, batch.values)])  # type: ignore[list-item]
                        parts.extend(alone)
                    except Exception as exc:  # noqa: BLE001
                        self._fail(st, exc)
                        parts.append(None)
            for (st, batch), part in zip(items, parts):
                if part is not None:
                    self._finish(st, batch, part, fitted)
        return taken

    @staticmethod
    def _audio_fields(st: _Stream, all_saved: bool) -> dict[str, Any]:
        """An audio stream's placement in its saved state (nothing for a sensor stream).

        ``all_saved``: the state holds every accepted sample (a training part); else only the scored ones, and the
        pending chunks are read again after a restart. ``audio_index``: the index of the first sample the state
        does not hold. ``audio_skip_until``: the stamp up to which re-read chunks are skipped — every chunk stamped
        at or before it is in the state — kept below the pending chunks' stamps, which a producer re-sending a
        longer range can put before the scored ones'.
        """
        if st.kind != "audio":
            return {}
        if all_saved:
            index, mark = st.audio_index, st.last_ts
        else:
            index = st.audio_index
            if st.segments and st.audio_start_ns is not None:
                index = audio_index(int(st.segments.timestamps()[0]), st.audio_start_ns, int(st.audio_rate or 1))
            mark = st.scored_stamp if st.scored_stamp is not None else st.skip_until_ts
            pending = st.segments.stamps()
            if mark is not None and pending.size:
                mark = min(mark, int(pending.min()) - 1)
        return {"audio_start_ns": st.audio_start_ns, "audio_rate": st.audio_rate, "audio_index": index,
                "audio_skip_until": mark}

    def _state_for(self, fitted: FittedDetector, *, pending: np.ndarray | None = None,
                   start: int | None = None) -> DetectorState:
        """A detector state for a stream that has none, or whose state is replaced after failures: a fresh one
        (:meth:`FittedDetector.new_state`) where the samples it scores next are its training part, else the state
        its detector had right after the training part (:meth:`FittedDetector.resumed_state`), so that live
        samples are judged rather than learnt as the stream's reference (with the audio preset's likelihoods,
        which keep their reference, a fault under way became the machine's normal).

        ``pending``: the stream's pending samples, which say by their content whether they begin with the training
        part (:meth:`FittedDetector.begins_training_part`: right after a fit, or a restart that re-reads from the
        stream's start — or a state that is lost: unreadable, never saved, a fit published elsewhere meanwhile).
        ``start``: where the replaced state's failed samples begin. In ``shared`` mode always a fresh state: the
        detector's reference is another stream's (its level, range and histories would raise false alarms here),
        and a stream of a shared detector learns its own reference from its first samples."""
        if self.registry.shared:
            return fitted.new_state()
        if start is not None:
            return fitted.new_state() if start < fitted.train_points else fitted.resumed_state()
        begins = pending is not None and fitted.begins_training_part(pending)
        return fitted.new_state() if begins else fitted.resumed_state()

    def _fail(self, st: _Stream, exc: Exception, alerts: dict | None = None, start: int | None = None) -> None:
        """A stream whose scoring raised: a bug, or an input no check foresaw. It must cost neither the worker (the
        other streams score on) nor a sample, and it must not stall its partitions.

        ``alerts`` None: the model failed, before anything changed, and the state stands. Else the failure came
        after the detector state took the samples, which may have left it half updated: it is replaced — after a
        first failure by the stream's last saved state, after a second one in a row by a new state of its fitted
        detector (:meth:`_state_for`; the saved state's tail of samples may hold what the scoring cannot take: a
        window reaches back over earlier samples) — and the alert state goes back to ``alerts``, the one from before
        the batch. A replaced state misses the samples scored since its last checkpoint (their points are written): a
        gap in the detector's history, as after a crash. Either way the batch is scored again in runs of records
        (:meth:`_score_carefully`): a record that fails again is dead-lettered alone.

        Before, a failed stream was held — its samples uncommitted until a restart, which re-read its partitions
        and, the failure being deterministic more often than not, failed again at the same sample. A stream that
        fails :data:`MAX_CONSECUTIVE_FAILURES` times in a row, a new state among the tries, is quarantined
        instead of retried for ever (not evicted at the cap either: until a restart, or until a rebalance moves
        it)."""
        if self._failed_again(st):
            self._quarantine(st, exc)
            return
        replaced = ""
        fitted = st.state.fitted  # type: ignore[union-attr]
        if st.failures > 1 or alerts is not None:  # after a second failure the state's tail may be the cause
            saved = self._saved_state(st, fitted) if st.failures == 1 else None
            where = st.state.position if start is None else start  # type: ignore[union-attr]
            st.state = saved or self._state_for(fitted, start=where)
            st.lineage, st.fresh = next(_LINEAGES), saved is None
            st.changed = True  # the file may hold what failed: the next checkpoint replaces it, eviction waits
            replaced = f"its state is replaced by {'a new one' if saved is None else 'its last saved one'}; "
        if alerts is not None:
            st.alerts.load_state_dict(alerts)
        st.careful = True
        log.error("scoring stream %s/%s failed; %sits %d pending sample(s) are scored again in runs of records (a "
                  "record that fails again is dead-lettered as %s): %s", st.stream_class, st.name, replaced,
                  st.pending(), SCORING_FAILED, _error(exc), exc_info=exc)

    def _failed_again(self, st: _Stream) -> bool:
        """Count one more scoring failure in a row; True when the stream is to be quarantined (a new state among
        the tries)."""
        st.failures += 1
        self.stats.scoring_failures += 1
        return st.failures >= MAX_CONSECUTIVE_FAILURES and st.fresh

    def _saved_state(self, st: _Stream, fitted: FittedDetector) -> DetectorState | None:
        """The stream's last saved detector state; None when its file holds none (or cannot be read)."""
        path = self._state_path(st.stream_class, st.name)
        if path is None or not path.is_file():
            return None
        try:
            state = self._state_files.read(path)
            if state.get("detector") is None:  # a training part only: what it holds is pending again anyway
                return None
            restored = fitted.new_state()
            restored.load_state_dict(state["detector"])
            return restored
        except Exception:  # noqa: BLE001 - an unreadable file costs the history, not the stream
            log.exception("ignoring unreadable stream state %s", path)
            return None

    def _score_carefully(self, st: _Stream, limit: int | None) -> int:
        """Score a stream's pending samples again after a failure so that only a record that fails on its own is
        dead-lettered, and the state goes back to where it was before it; up to ``limit`` samples (None: all; at
        least one record), the rest at the next step. Returns the samples it took (scored or given up).

        The records are scored in runs, each from a copy of the state before it (copies of ~1 MB: only after a
        failure): a run that fails goes back and is halved, one that succeeds doubles the next, and a single record
        that fails is given up. Scores do not depend on how samples fall into runs (to float rounding, as with
        micro-batches). One record at a time, as before, cost a state copy per record and a padded model pass per
        record that completes a window — 5 to 18 times the batched cost with one-sample records, so that a round's
        200,000 such samples could outlast ``max.poll.interval.ms`` and the group would drop the worker. A run costs
        one copy and one model pass; a failed run is work the step's budget does not count. With one poisoned
        record that is about two batched passes and a copy per halving; with poisoned records every few dozen,
        more passes than single records took (at most about 2·log₂ of their spacing per poisoned record), still
        fewer copies.

        A second failure in a row, or in the same pass, also replaces the state by a new one (see :meth:`_fail`;
        successes in between do not clear the state's tail: a record without a window end of its own never reaches
        the model); a third in a row, with a new state tried, quarantines the stream. Only single records count
        as failures: a failed run says only that one of its records fails."""
        assert st.state is not None
        fitted = st.state.fitted
        failed_here = taken = 0
        run = max(1, len(st.segments) // 2)  # the whole batch has just failed
        while st.segments:
            if limit is not None and taken >= limit:
                return taken
            # whole records while the run lasts and the budget has room (the record that reaches it is the last)
            k = st.segments.count_within(None if limit is None else limit - taken, run, reach=True)
            batch = st.segments.take(k)
            n = batch.values.size
            before, alerts = st.state.state_dict(), st.alerts.state_dict()
            try:
                part = window_scores_together(fitted, [(st.state, batch.values)])[0]
                out, scored = self._points(st, batch, part, fitted)
            except Exception as exc:  # noqa: BLE001 - a run is halved; a record alone is given up
                st.state.load_state_dict(before)
                st.alerts.load_state_dict(alerts)
                if k > 1:
                    run = k // 2
                    continue
                failed_here += 1
                if self._failed_again(st):
                    self._quarantine(st, exc)
                    return taken + n
                fresh = st.failures > 1 or failed_here > 1  # not this record alone: the state's tail (see _fail)
                if fresh:
                    st.state, st.fresh = self._state_for(fitted, start=st.state.position), True
                st.lineage, st.changed = next(_LINEAGES), True
                self._give_up(st, st.segments.records(1), exc)
                st.segments.pop(1)
                log.error("scoring stream %s/%s failed again; %d sample(s) of one record dead-lettered (%s)%s: %s",
                          st.stream_class, st.name, n, SCORING_FAILED,
                          ", its state replaced by a new one" if fresh else "", _error(exc), exc_info=exc)
                taken, run = taken + n, 1
                continue
            st.segments.pop(k)
            self._scored(st, batch, out, scored)
            taken, run = taken + n, run * 2
        st.careful = False
        return taken

    def _give_up(self, st: _Stream, records: list[Record], exc: Exception) -> None:
        """Hand ``records`` to the caller to be dead-lettered (:meth:`take_unscored`); until then they hold the
        commit."""
        rate = int(st.audio_rate) if st.audio_rate is not None else None
        self._unscored.extend(FailedSamples(st.stream_class, st.name, st.kind, rec.ts_ns.copy(), rec.values.copy(),
                                            rec.origin, rec.stamp, rate, _error(exc)) for rec in records)

    def _quarantine(self, st: _Stream, exc: Exception) -> None:
        """Stop scoring a stream that keeps failing until a restart: its pending samples are dead-lettered
        (``scoring_failed``), its later records too (``stream_failed``), and it holds nothing — the samples scored
        since its last checkpoint are written, and a restart resumes it from that checkpoint."""
        self._give_up(st, st.segments.records(), exc)
        log.error("scoring stream %s/%s failed %d times in a row; %d sample(s) dead-lettered, the stream is "
                  "quarantined (its records dead-lettered) until a restart: %s", st.stream_class, st.name,
                  st.failures, st.pending(), _error(exc), exc_info=exc)
        st.segments, st.failed, st.state, st.unsaved, st.changed, st.careful = PendingRecords(), _error(exc), None, \
            {}, False, False

    def take_unscored(self) -> list[FailedSamples]:
        """The samples given up after scoring failures since the last call: dead-letter them before the next commit
        (until taken, they hold the commit)."""
        out, self._unscored = self._unscored, []
        return out

    def _finish(self, st: _Stream, batch: Taken, scores: WindowScores, fitted: FittedDetector) -> None:
        """Book the scores of ``batch``, the stream's oldest pending records."""
        assert st.state is not None
        alerts = st.alerts.state_dict()  # a few numbers: the alert rule's state before this batch
        start = st.state.position
        try:
            out, n = self._points(st, batch, scores, fitted)
        except Exception as exc:  # noqa: BLE001 - see _fail
            self._fail(st, exc, alerts, start)
            return
        st.segments.pop(batch.records)
        self._scored(st, batch, out, n)

    def _scored(self, st: _Stream, batch: Taken, out: "_Written", n: int) -> None:
        """Book ``batch`` as scored into ``out``'s points."""
        st.failures, st.fresh = 0, False
        if batch.last_stamp is not None:
            st.scored_stamp = batch.last_stamp if st.scored_stamp is None else max(st.scored_stamp, batch.last_stamp)
        out.holds.append(batch.holds)
        if self.state_dir is not None:
            merge_holds(st.unsaved, batch.holds.items())
        st.changed = True
        self.stats.scored += n
        self.stats.alerts_opened += out.alerts_opened
        self._outbox.append(out)

    def _points(self, st: _Stream, batch: Taken, scores: WindowScores,
                fitted: FittedDetector) -> tuple[_Written, int]:
        """Score the stream's pending samples: update its detector state and alert machine, build the points
        (and count the scored rows). Only when this returns does anything leave the stream (see :meth:`_finish`)."""
        assert st.state is not None
        ts, values = batch.ts_ns, batch.values
        first = st.state.position
        extended = st.state.channels.extended(values)
        detections = st.state.update(values, scores)
        cfg = self.classes[st.stream_class]
        out = _Written([], [], st.key)
        rows = detections.positions - first
        scorer = fitted.config.scorer
        for i, row in enumerate(rows.tolist()):
            score = float(detections.scores[i])
            decided = detections.decided_by[i]
            channel_value = detections.channel_value(i)
            t = int(ts[row])
            value = float(values[row]) if st.kind == "sensor" else _rms(extended, first + row, fitted.hop)
            decision = st.alerts.update(t, score, channel_value, fitted.version, decided)
            out.points.append(score_point(st.stream_class, st.name, t, value, score, decided, channel_value,
                                          cfg.policy.threshold, decision.in_alert, scorer, fitted.version))
            if decision.changed is not None:
                out.points.append(alert_point(decision.changed, st.stream_class))
                if decision.changed.state is AlertState.OPEN:
                    out.alerts_opened += 1
                    if self.snapshots:
                        snap = self._snapshot(st, extended, first + row, fitted, t)
                        if snap is not None:
                            out.points.append(snap)
        return out, len(rows)

    def _snapshot(self, st: _Stream, extended: tuple[np.ndarray, int], position: int, fitted: FittedDetector,
                  t: int) -> Point | None:
        """The window inspector's picture of the diffusion window behind an opening alert."""
        try:
            x, base = extended
            if position < fitted.window - 1:
                return None
            end = fitted.window - 1 + ((position - (fitted.window - 1)) // fitted.hop) * fitted.hop
            lo = end - fitted.window + 1 - base
            if lo < 0:
                return None
            window = fitted.model_input(x[lo:lo + fitted.window]).astype(np.float32)
            batch = fitted.inspect(window)
            scal = batch.extras.get("scalogram")
            recon = batch.reconstructions[0] if batch.reconstructions is not None else None
            rate = float(st.audio_rate or 1.0)
            payload = snapshot_payload(scal[0] if scal is not None else np.zeros_like(batch.maps[0]), recon,
                                       batch.maps[0], window, rate)
            return snapshot_point(st.name, t, payload)
        except Exception:  # a picture for people must never cost a score
            log.exception("snapshot of %s/%s at %d failed", st.stream_class, st.name, t)
            return None

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
                        log.error("point %s at %d rejected by the store: %s", p.series_key(), p.time_ns, one)
                points = kept
        self._outbox = []
        return FlushResult(len(points), [p for p in points if p.measurement == ALERT])

    @property
    def outbox_points(self) -> int:
        return sum(len(item.points) for item in self._outbox)

    def backlog(self) -> int:
        """Samples waiting to be scored beyond every stream's training part (a stream that still collects its
        training part needs more input, so those samples must never pause it)."""
        return sum(st.pending() if st.state is not None else max(0, st.pending() - self._train_samples(st))
                   for st in self._streams.values())

    def idle(self) -> bool:
        """Nothing left that another ``step`` could score and no fit running."""
        return not self.registry.training() and all(
            st.state is None and self.registry.detector(self.registry.key_for(st.stream_class, st.name)) is None
            for st in self._streams.values() if st.segments and st.failed is None)

    @property
    def checkpoint_in_flight(self) -> bool:
        """A background checkpoint is being written: the offsets it holds are released once it is whole."""
        return self._save_job is not None

    def holds(self) -> Iterator[Holds]:
        """Lowest offsets (per partition) of everything not yet durably written."""
        self._reap_save(block=False)
        if self._save_job is not None:
            yield from self._save_job.held
        for st in self._streams.values():
            yield st.holds()
            yield st.unsaved
        for item in self._outbox:
            yield from item.holds
        yield merge_holds({}, (u.origin for u in self._unscored if u.origin is not None))

    def drop_partitions(self, partitions: Iterable[Hashable]) -> DroppedStreams:
        """Forget the streams of revoked partitions: buffers, states, and their points not yet written.

        Their new owner re-reads everything from the last committed offset and re-scores what these points
        held, so nothing is lost and nothing reaches the store (or the alerts topic) from two owners.

        A stream that also received records from a partition this member keeps (one stream id in two partitions)
        is forgotten whole, so what it still needed there — samples unscored, unwritten or not yet in its saved
        state — must be read again from that partition: :attr:`DroppedStreams.rewind` says from where. Before, they
        were dropped and nothing held the kept partition's commit at them: lost.
        """
        parts = set(partitions)
        gone = [k for k, st in self._streams.items() if st.partitions & parts]
        dropped = set(gone)
        rewind: dict[Hashable, dict[tuple[str, str], int]] = {}

        def needs(stream: tuple[str, str], origins: Iterable[Origin]) -> None:
            for part, off in origins:
                if part not in parts:
                    per = rewind.setdefault(part, {})
                    per[stream] = min(off, per.get(stream, off))

        for key in gone:
            st = self._streams[key]
            needs(key, st.unsaved.items())
            needs(key, st.holds().items())
        job = self._save_job
        if job is not None:  # a checkpoint still writing (it may fail, and its offsets would come back to no one)
            for st, held in zip(job.streams, job.held):
                if st.key in dropped and self._streams.get(st.key) is st:
                    needs(st.key, held.items())
        self._forget_streams(gone)
        kept_items = []
        for item in self._outbox:  # an item with a revoked partition's offset is a dropped stream's
            if item.stream in dropped:
                needs(item.stream, (o for h in item.holds for o in h.items()))  # scored again after the re-read
            else:
                kept_items.append(item)
        self._outbox = kept_items
        self._unscored = [u for u in self._unscored if u.origin is None or u.origin[0] not in parts]
        return DroppedStreams(len(gone), rewind)

    @property
    def scoring_left(self) -> bool:
        """The last step stopped at its budget with ready streams' samples still unscored, or left a failed batch
        to be scored again (:meth:`_fail`)."""
        return self._step_from is not None or any(st.careful for st in self._streams.values())

    def stream_count(self) -> int:
        return len(self._streams)

    def stream_cap_used(self) -> int:
        """The live streams in the stream cap's units (see :meth:`_weight`); a processor built without training
        weights (by hand, in tests) counts streams."""
        if not self.training_weights:
            return len(self._streams)
        return sum(self._weight(st) for st in self._streams.values())

    def held_streams(self) -> list[str]:
        """``class/stream`` of the streams quarantined after repeated scoring failures (see :meth:`_fail`)."""
        return [f"{st.stream_class}/{st.name}" for st in list(self._streams.values()) if st.failed is not None]

    def partitions(self) -> set[Hashable]:
        """The partitions whose streams this processor holds (a member must hold none it was not assigned)."""
        return {p for st in list(self._streams.values()) for p in st.partitions}

    def detections_of(self, stream_class: str, stream: str) -> DetectorState | None:
        st = self._streams.get((stream_class, stream))
        return None if st is None else st.state


_LINEAGES = itertools.count(1)
RELOAD_PAUSES_S = (0.2, 1.0)


@dataclass
class _SaveJob:
    future: Future
    held: list[Holds]
    """Per stream of ``streams``: the offsets its written state covers, held until the file is durable."""
    streams: list[_Stream]


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def audio_index(ts_ns: int, start_ns: int, rate: int) -> int:
    """The sample index of an audio time: the inverse of ``start_ns + index * 1e9 // rate`` (exact: the floor
    loses under a nanosecond, far less than a sample)."""
    return (2 * (int(ts_ns) - int(start_ns)) * int(rate) + NS_PER_S) // (2 * NS_PER_S)  # rounded; Python ints: exact


def _rms(extended: tuple[np.ndarray, int], position: int, hop: int) -> float:
    """Audio's ``value``: RMS of the hop that ends at ``position`` (what the stream sounded like just then)."""
    x, base = extended
    i = position - base
    tail = x[max(0, i - hop + 1): i + 1]
    return float(np.sqrt(np.mean(tail * tail))) if tail.size else 0.0


__all__ = ["BAD_TIMESTAMP", "Detections", "FailedSamples", "FlushResult", "LATE", "SCORING_FAILED",
           "STREAM_FAILED", "TOO_MANY_STREAMS", "ProcessorStats", "Rejection", "StreamClassConfig",
           "StreamProcessor"]
