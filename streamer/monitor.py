"""The Kafka consumer loop: thin on purpose; the work is in StreamProcessor (streamer/pipeline.py).

One iteration: poll → ingest each record (or dead-letter it) → score what is due → write finished points →
flush the dead-letter and alert producers → checkpoint stream states (when due) → commit, per partition, the
lowest offset still held by an unscored or unwritten sample or by one whose stream state is not saved yet
(streamer/offsets.py). That order is the at-least-once guarantee: a crash anywhere re-reads from the last commit,
each stream resumes from a state that has seen everything before it, and the idempotent writes make the replay
harmless.

Back-pressure: while the store is down the loop pauses every assigned partition, keeps calling ``poll`` (so
the group keeps us — ``max.poll.interval.ms`` counts time between polls), retries the write with exponential
back-off and commits nothing until it succeeds. The same pause happens when too many samples wait to be scored.
Fitting runs in a background thread (streamer/model_registry.py).

Shutdown (SIGINT/SIGTERM set ``stop``): finish the batch in flight, score what can be scored within
``shutdown_scoring_s``, write, flush, save the stream states, commit, close. Why a limit: a supervisor kills a
worker that outlives its grace period (Kubernetes: 30 s, Docker: 10 s), and a large backlog (up to
``max_backlog_samples``, minutes of scoring) would be cut off before the write, the checkpoint and the commit —
losing nothing, but redoing everything since the previous commit. Scored in small steps until the limit, what is
scored is written and committed; the rest stays uncommitted and is scored after the restart.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Hashable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from kafka import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from streamer.health import WorkerSnapshot
from streamer.ingest import DeadLetter, InputRecord, ingest, unscored_letters
from streamer.messages import stream_of_key
from streamer.offsets import OffsetTracker
from streamer.pipeline import StreamProcessor
from streamer.sinks.base import SinkUnavailable

log = logging.getLogger(__name__)

STEP_SAMPLES = 10_000
"""Samples scored per processor step (about two seconds of one core's work with the ``nab`` preset): a round
scores its share in such steps and looks at the stop signal between them, and the shutdown checks its time limit
between them. A round's share is up to ``max_samples_per_round`` (200,000 by default: half a minute of scoring)."""


@dataclass
class MonitorStats:
    records: int = 0
    dead_letters: int = 0
    points_written: int = 0
    commits: int = 0
    sink_failures: int = 0
    paused_polls: int = 0
    checkpoints: int = 0
    deferred_records: int = 0
    loop_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOOP_PHASES, 0.0))
    """Where the loop's time went, per phase (:data:`LOOP_PHASES`): the first thing to read when latency rises."""


LOOP_PHASES = ("poll", "ingest", "score", "write", "checkpoint", "commit", "other")
"""``poll``: waiting for and fetching records; ``ingest``: decoding them into streams (dead letters included);
``score``: the detector; ``write``: the store; ``checkpoint``: copying stream states for the background writer;
``commit``: confirming dead letters and alerts, and the offset commit; ``other``: the rest of the loop — the
paused input's short sleeps, settling a rebalance, deciding the pause, publishing health and the status line — so
that the phases add up to the loop's time and their shares are of it."""


@dataclass
class _Retake:
    """A kept partition read again after a rebalance dropped streams that needed its records (see
    :meth:`Monitor._drop`). Up to ``until`` (the highest offset read before) a record is taken again only if its stream
    is in ``streams`` and its offset is at or past that stream's mark; marks move past what is taken, so a second
    seek back never takes a record twice."""

    next: int
    """The next offset to read: where a seek puts the partition, and what its commit is held at meanwhile."""
    until: int
    streams: dict[tuple[str, str], int]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, monitor: "Monitor"):
        self.monitor = monitor

    def on_partitions_revoked(self, revoked):
        self.monitor._on_revoked([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned):
        self.monitor._on_assigned([TopicPartition(tp.topic, tp.partition) for tp in assigned])


class Monitor:
    def __init__(
        self,
        consumer: Any,
        processor: StreamProcessor,
        sink: Any,
        *,
        topics: list[str],
        class_of_topic: Callable[[str], str],
        dead_letters: Any | None,
        alerts: Any | None = None,
        max_bytes: int | None = None,
        poll_timeout_ms: int = 200,
        max_poll_records: int = 500,
        commit_interval_s: float = 1.0,
        state_checkpoint_s: float = 0.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        max_backlog_samples: int = 1_000_000,
        max_unconfirmed_outputs: int = 10_000,
        output_flush_timeout_s: float = 5.0,
        status_every_s: float = 60.0,
        max_samples_per_round: int = 200_000,
        probe_consumer: Callable[[], Any] | None = None,
        poll_stall_s: float = 10.0,
        poll_stall_exit_s: float = 360.0,
        on_wedged: Callable[[], None] | None = None,
        on_snapshot: Callable[[WorkerSnapshot], None] | None = None,
        shutdown_scoring_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.consumer = consumer
        self.processor = processor
        self.sink = sink
        self.topics = topics
        self.class_of_topic = class_of_topic
        self.dead_letters = dead_letters
        self.alerts = alerts
        self.max_bytes = max_bytes
        self.poll_timeout_ms = poll_timeout_ms
        self.max_poll_records = max_poll_records
        self.commit_interval_s = commit_interval_s
        self.state_checkpoint_s = state_checkpoint_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_backlog_samples = max_backlog_samples
        # While the dead-letter or alerts topic cannot be written, the commit waits (a record neither processed
        # nor dead-lettered must not be committed), each attempt waits at most this long instead of the producer's
        # 30 s (the loop goes on scoring), and input pauses once this many records are unconfirmed (they are kept
        # in memory until the broker acknowledges them).
        self.max_unconfirmed_outputs = max_unconfirmed_outputs
        self.output_flush_timeout_s = output_flush_timeout_s
        # A long-running worker says how it is doing without being stopped (the stats were only logged at the end).
        self.status_every_s = status_every_s
        self.max_samples_per_round = max_samples_per_round
        self.probe_consumer = probe_consumer
        self.poll_stall_s = poll_stall_s
        self.poll_stall_exit_s = poll_stall_exit_s
        self.on_wedged = on_wedged
        # Receives the loop's counters at most once a second (streamer/health.py serves them over HTTP).
        self.on_snapshot = on_snapshot
        self._last_snapshot: float | None = None
        self._poll_started: float | None = None
        """Makes a group-less consumer with the same connection settings (see :meth:`_skip_unreadable`)."""
        self.shutdown_scoring_s = shutdown_scoring_s
        self.clock = clock
        self.tracker = OffsetTracker()
        self.stats = MonitorStats()
        self._paused = False
        self._sink_down_until: float | None = None
        self._backoff = retry_initial_s
        self._last_commit = clock()
        self._last_checkpoint = clock()
        self._last_status = clock()
        self._status_seconds: dict[str, float] = {}  # loop_seconds at the last status line
        self._dirty = False  # something was read or written since the last commit
        self._revoked: set[TopicPartition] = set()  # revoked by a rebalance that has not settled yet
        self._retake: dict[Hashable, _Retake] = {}  # kept partitions read again for dropped streams (see _drop)
        self._stop: threading.Event | None = None  # run()'s stop signal, looked at between a round's steps

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> MonitorStats:
        """Consume until ``stop`` is set (or, with ``idle_exit_s``, until nothing arrived for that long)."""
        self._stop = stop
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        last_data = self.clock()
        self._publish(last_data)  # the loop has started: from now on a round that never ends is a stall
        done = threading.Event()
        threading.Thread(target=self._watch_poll, args=(done,), name="poll-watchdog", daemon=True).start()
        try:
            while not stop.is_set():
                started, counted = time.monotonic(), sum(self.stats.loop_seconds.values())
                got = self.run_once()
                now = self.clock()
                self._publish(now)
                if now - self._last_status >= self.status_every_s:
                    self._last_status = now
                    self.log_status()
                seconds = self.stats.loop_seconds
                seconds["other"] += max(0.0, time.monotonic() - started - (sum(seconds.values()) - counted))
                if got or not self.consumer.assignment():  # idle time counts only once partitions are ours
                    last_data = now
                elif idle_exit_s is not None and now - last_data >= idle_exit_s and self.processor.idle():
                    log.info("no input for %.1f s: stopping", idle_exit_s)
                    break
        finally:
            done.set()
            self.shutdown()
        return self.stats

    def _publish(self, now: float) -> None:
        """Hand ``on_snapshot`` the loop's counters, at most once a second."""
        if self.on_snapshot is not None and (self._last_snapshot is None or now - self._last_snapshot >= 1.0):
            self._last_snapshot = now
            self.on_snapshot(self.snapshot())

    def snapshot(self) -> WorkerSnapshot:
        """The loop's counters and state now (call from the loop's thread: it reads the processor's streams)."""
        s, p = self.stats, self.processor.stats
        return WorkerSnapshot(
            taken=time.monotonic(), records=s.records, samples_scored=p.scored, points_written=s.points_written,
            dead_letters=s.dead_letters, commits=s.commits, checkpoints=s.checkpoints, sink_failures=s.sink_failures,
            live_streams=self.processor.stream_count(), held_streams=len(self.processor.held_streams()),
            backlog_samples=self.processor.backlog(), assigned_partitions=len(self.consumer.assignment()),
            input_paused=self._paused, sink_down=self._sink_down_until is not None,
            stream_cap=self.processor.max_streams, stream_cap_used=self.processor.stream_cap_used(),
            loop_seconds=dict(s.loop_seconds))

    def log_status(self) -> None:
        """One line on how the worker is doing; a warning while streams are quarantined after scoring failures."""
        snap = self.snapshot()
        held = self.processor.held_streams()
        spent = {k: v - self._status_seconds.get(k, 0.0) for k, v in snap.loop_seconds.items()}
        self._status_seconds = dict(snap.loop_seconds)
        total = sum(spent.values()) or 1.0
        shares = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]))
        log.log(logging.WARNING if held else logging.INFO,
                "status: %d records read, %d samples scored, %d points written, %d dead letters, %d commits, "
                "%d live streams, backlog %d samples, input %s, time since the last status: %s%s", snap.records,
                snap.samples_scored, snap.points_written, snap.dead_letters, snap.commits, snap.live_streams,
                snap.backlog_samples, "paused" if snap.input_paused else "flowing", shares,
                f"; {len(held)} stream(s) quarantined after repeated scoring failures until a restart: "
                f"{', '.join(held[:5])}"
                if held else "")

    def _watch_poll(self, done: threading.Event) -> None:
        """Unstick a ``poll`` that does not return.

        kafka-python 3.0.12 can lose the wake-up of its IO thread: ``poll`` then waits for ever although its
        timeout passed (seen once in the fault suite, after a member restart). A ``poll`` running for
        ``poll_stall_s`` gets the IO loop woken; one still running after ``poll_stall_exit_s`` (longer than any
        legitimate group join, which may take ``max.poll.interval.ms``) is reported to ``on_wedged`` (the CLI exits
        the process, so its supervisor restarts it from the last commit — nothing is lost, the writes are
        idempotent).
        """
        nudged = False
        while not done.wait(1.0):
            started = self._poll_started
            if started is None:
                nudged = False
                continue
            stalled = time.monotonic() - started
            if stalled >= self.poll_stall_s and not nudged:
                log.warning("poll has not returned for %.0f s: waking the Kafka client's IO loop", stalled)
                try:
                    self.consumer._client.wakeup()  # noqa: SLF001 - no public way to wake it
                except Exception:  # noqa: BLE001
                    log.debug("waking the Kafka client failed", exc_info=True)
                nudged = True
            if stalled >= self.poll_stall_exit_s:
                log.critical("poll has not returned for %.0f s: the Kafka client is wedged", stalled)
                if self.on_wedged is not None:
                    self.on_wedged()
                return

    def run_once(self) -> int:
        """One poll/process/write/commit round; returns the number of records read."""
        self._update_pause()
        self._poll_started = time.monotonic()
        try:
            batch = self.consumer.poll(timeout_ms=0 if self._paused else self.poll_timeout_ms,
                                       max_records=self.max_poll_records)
        except CorruptRecordError as exc:  # e.g. a header key that is not UTF-8: the client cannot parse it
            self._skip_unreadable(exc)
            return 0
        finally:
            self.stats.loop_seconds["poll"] += time.monotonic() - self._poll_started
            self._poll_started = None
        if self._revoked:  # a cooperative rebalance may revoke without assigning anything
            sought = self._settle_rebalance(set(self.consumer.assignment()), final=False)
            if sought:  # fetched before the seek: the broker sends these partitions again from where they were sought
                batch = {tp: recs for tp, recs in batch.items() if (tp.topic, tp.partition) not in sought}
        if self._paused:
            self.stats.paused_polls += 1
            if not batch:
                time.sleep(min(0.05, self.poll_timeout_ms / 1000))
        n = 0
        first_samples = self.processor.stats.samples
        full = False
        with self._phase("ingest"):
            for tp, records in batch.items():
                for rec in records:
                    if full:  # over this round's sample budget: read again from here next round
                        self.consumer.seek(TopicPartition(rec.topic, rec.partition), rec.offset)
                        self.stats.deferred_records += 1
                        break
                    n += 1
                    self._handle(InputRecord(rec.topic, rec.partition, rec.offset, rec.key, rec.value,
                                             list(rec.headers or []), rec.timestamp))
                    full = self.processor.stats.samples - first_samples >= self.max_samples_per_round
        with self._phase("score"):
            self._score_round()
        self._write_and_commit(force_commit=False)
        return n

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.stats.loop_seconds[name] += time.monotonic() - start

    def _score_round(self) -> None:
        """Score up to ``max_samples_per_round``, stopping early on a stop signal: a SIGTERM during a round with a
        large backlog would otherwise wait for the whole round before the shutdown and its time limit began, and
        the supervisor's grace period could run out before the commit."""
        self._score_in_steps(self.max_samples_per_round, lambda: self._stop is not None and self._stop.is_set())

    def _score_in_steps(self, budget: float, enough: Callable[[], bool]) -> bool:
        """Score up to ``budget`` samples in steps of ``STEP_SAMPLES``, until nothing is left or ``enough()``
        between two steps. Returns whether ready samples are left unscored."""
        while True:
            step = max(1, int(min(budget, STEP_SAMPLES, self.max_samples_per_round)))  # 1 still takes a stream
            budget -= self.processor.step(max_samples=step)
            for letter in unscored_letters(self.processor):
                self._dead_letter(letter)
            if not self.processor.scoring_left:
                return False
            if budget <= 0 or enough():
                return True

    def _handle(self, record: InputRecord) -> None:
        again = self._retake.get(record.partition_key)
        if again is not None:
            if record.offset >= again.until:
                del self._retake[record.partition_key]
            if record.offset <= again.until:
                again.next = max(again.next, record.offset + 1)
                stream = self._stream_of(record)
                mark = again.streams.get(stream)
                if mark is None or record.offset < mark:
                    return  # read again only for a dropped stream: this record was taken the first time
                again.streams[stream] = record.offset + 1
        self.stats.records += 1
        self._dirty = True
        dead = ingest(self.processor, record, self.class_of_topic, max_bytes=self.max_bytes)
        if dead is not None:
            self._dead_letter(dead)
        # Only now: if anything above raised, the final commit of shutdown() must not pass this record.
        self.tracker.seen(record.partition_key, record.offset)

    def _stream_of(self, record: InputRecord) -> tuple[str, str] | None:
        """(class, id) of a record read again after a rebalance (see :meth:`_drop`), as ``ingest`` would find it;
        None for one it could not place (it was dead-lettered the first time)."""
        try:
            stream_class = self.class_of_topic(record.topic)
        except Exception:  # noqa: BLE001
            return None
        if record.key is None:
            return None
        return (stream_class, stream_of_key(record.key))

    def _dead_letter(self, dead: DeadLetter) -> None:
        self.stats.dead_letters += 1
        r = dead.record
        if self.dead_letters is None:
            # No dead-letter topic configured (tests, tools): log loudly with the start of its bytes.
            log.error("rejected %s[%d]@%d (%s: %s): %r", r.topic, r.partition, r.offset, dead.reason, dead.detail,
                      (r.value or b"")[:200])
            return
        self.dead_letters.send(r.value, key=r.key, headers=r.headers, reason=dead.reason, detail=dead.detail,
                               topic=r.topic, partition=r.partition, offset=r.offset)

    def _skip_unreadable(self, exc: Exception) -> None:
        """Dead-letter a record the Kafka client cannot parse, and read on after it.

        kafka-python raises such a record (a header key that is not UTF-8, a corrupt batch) from ``poll`` without
        saying where it is; its position stays on the record, the error comes back after every restart, and
        (kafka-python 3.0.12) the next ``poll`` before a seek past it blocks for good. The record is the next one
        of some assigned partition, so a separate, group-less consumer reads each partition at this consumer's
        position until one raises; that position is the record. Its bytes cannot be read, so the dead letter
        carries where it was and why (``unreadable_record``), without a value, and this consumer seeks past it.
        """
        if self.probe_consumer is None:
            raise exc
        found: tuple[TopicPartition, int] | None = None
        for attempt in range(3):
            found = self._find_unreadable()
            if found is not None:
                break
            log.warning("could not locate the record the Kafka client failed to parse (try %d of 3)", attempt + 1)
        if found is None:
            raise exc  # polling on would block for ever; a restart tries again
        tp, offset = found
        self.stats.records += 1
        self._dirty = True
        self._dead_letter(DeadLetter(InputRecord(tp.topic, tp.partition, offset, None, None, [], None),
                                     "unreadable_record", f"the Kafka client cannot parse it: {exc}"))
        self.consumer.seek(tp, offset + 1)
        self.tracker.seen((tp.topic, tp.partition), offset)
        log.error("record %s[%d]@%d cannot be parsed by the Kafka client (%s): dead-lettered, reading on",
                  tp.topic, tp.partition, offset, exc)

    def _find_unreadable(self) -> tuple[TopicPartition, int] | None:
        for tp in sorted(self.consumer.assignment()):
            position = self.consumer.position(tp)
            probe = self.probe_consumer()
            try:
                probe.assign([tp])
                probe.seek(tp, position)
                for _ in range(4):  # a fetch may need more than one poll to arrive
                    if probe.poll(timeout_ms=500, max_records=1):
                        break
            except CorruptRecordError:
                return tp, position
            finally:
                try:
                    probe.close(autocommit=False)
                except Exception:  # noqa: BLE001 - a probe that fails to close costs nothing but a log line
                    log.debug("closing the probe consumer failed", exc_info=True)
        return None

    # -- writing and committing -------------------------------------------------------------------------------
    def _write(self) -> bool:
        """Write finished points (with back-off while the store is down). True when nothing is left unwritten."""
        now = self.clock()
        if self._sink_down_until is not None and now < self._sink_down_until:
            return False
        try:
            result = self.processor.flush(self.sink)
        except SinkUnavailable as exc:
            self.stats.sink_failures += 1
            self._sink_down_until = now + self._backoff
            log.warning("store unavailable (%s): pausing input, retrying in %.1f s, committing nothing", exc,
                        self._backoff)
            self._backoff = min(self._backoff * 2, self.retry_max_s)
            return False
        if self._sink_down_until is not None:
            log.info("store is back: catching up")
        self._sink_down_until = None
        self._backoff = self.retry_initial_s
        self.stats.points_written += result.points
        if result.points:
            self._dirty = True
        if self.alerts is not None:
            for p in result.alert_points:
                self.alerts.publish(p)
        return True

    def _write_and_commit(self, force_commit: bool) -> None:
        with self._phase("write"):
            written = self._write()
        if not written:
            return
        now = self.clock()
        if not force_commit and (not self._dirty or now - self._last_commit < self.commit_interval_s):
            return
        with self._phase("commit"):
            confirmed = self._confirm_outputs()
        if not confirmed:
            return
        with self._phase("checkpoint"):
            self._checkpoint_states(now, force=force_commit)
        with self._phase("commit"):
            self._commit(now)

    def _confirm_outputs(self) -> bool:
        """Dead letters and alerts acknowledged: a record neither processed nor dead-lettered must not be
        committed."""
        try:
            if self.dead_letters is not None:
                self.dead_letters.flush(timeout_s=self.output_flush_timeout_s)
            if self.alerts is not None:
                self.alerts.flush(timeout_s=self.output_flush_timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever the producer raises, the commit waits
            log.warning("dead-letter/alert records not acknowledged (%s): not committing yet", exc)
            return False
        return True

    def _commit(self, now: float) -> None:
        retake = {key: again.next for key, again in self._retake.items()}  # not yet read again: still needed
        positions = self.tracker.positions([*self.processor.holds(), retake])
        self._last_commit = now
        # A checkpoint still being written holds what it saves: commit again once it is whole, new input or not
        # (else a stream that goes quiet leaves its last rounds uncommitted, and a restart reads them again).
        self._dirty = self.processor.checkpoint_in_flight
        if not positions:
            return
        offsets = {TopicPartition(*part): OffsetAndMetadata(pos, "", -1) for part, pos in positions.items()}
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # e.g. a rebalance in progress: the next round commits again
            log.warning("commit failed (%s); will retry", exc)
            self._dirty = True
            return
        self.tracker.committed(positions)
        self.stats.commits += 1
        log.debug("committed %s", {f"{t}[{p}]": o for (t, p), o in positions.items()})

    def _checkpoint_states(self, now: float, force: bool = False) -> None:
        """Save every stream's detector/alert state *before* a commit, when nothing scored is unwritten.

        The processor holds the offsets of samples scored since a stream's last save, so the commit never passes
        what the saved state has not seen: after a crash each stream restores its state and re-reads from the
        commit, skipping the samples it had already scored. ``state_checkpoint_s`` trades how far the commit
        may lag (and how much is re-read) against how often states are written.
        """
        if not force and (self.state_checkpoint_s <= 0 or now - self._last_checkpoint < self.state_checkpoint_s):
            return
        if self.processor.outbox_points:
            return
        try:
            saved = self.processor.save_states(wait=force)
        except OSError as exc:  # a full or read-only disk delays commits, never loses a sample
            log.warning("could not checkpoint detector/alert state: %s", exc)
            return
        self._last_checkpoint = now
        self.stats.checkpoints += 1
        log.debug("checkpointed detector/alert state of %d stream(s)", saved)

    def _update_pause(self) -> None:
        """Pause every assigned partition while the store is down, the backlog is too long or too many dead-letter
        and alert records are unconfirmed; else resume.

        The consumer's own paused set is the truth (a partition kept across a rebalance keeps its paused flag).
        """
        unconfirmed = sum(out.pending for out in (self.dead_letters, self.alerts) if out is not None)
        want = (self._sink_down_until is not None or self.processor.backlog() > self.max_backlog_samples
                or unconfirmed > self.max_unconfirmed_outputs)
        assigned = set(self.consumer.assignment())
        paused = set(self.consumer.paused())
        if want and assigned - paused:
            self.consumer.pause(*(assigned - paused))
            if not self._paused:
                log.info("paused %d partition(s) (store down, or a backlog of %d samples, or %d unconfirmed "
                         "dead-letter/alert records)", len(assigned), self.processor.backlog(), unconfirmed)
        elif not want and paused:
            self.consumer.resume(*paused)
            log.info("resumed input")
        self._paused = want and bool(assigned)

    # -- rebalance and shutdown -------------------------------------------------------------------------------
    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Note the revocation; do no work here.

        kafka-python 3 calls the rebalance listener on its IO thread, where a blocking commit raises
        (``Cannot block on net.run() from the IO thread``) and where scoring or writing would stall heartbeats for
        the whole group. So nothing is scored, written or committed in the listener. Which streams to forget is
        decided once the new assignment is known (:meth:`_settle_rebalance`): partitions that come back keep their
        streams and read on; the others go to a new owner that resumes from the last commit.
        """
        self._revoked |= set(revoked)
        log.info("revoked %s", sorted((tp.topic, tp.partition) for tp in revoked))

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self._settle_rebalance(set(self.consumer.assignment()) | set(assigned))

    def _settle_rebalance(self, assignment: set[TopicPartition], final: bool = True) -> set[Hashable]:
        """Forget the streams of partitions that went to another member; keep reading the ones we kept.

        ``final``: the new assignment is known (the assigned listener). Between rounds (``final=False``) only a
        revoked partition that has already left the client's assignment is settled (lost); one still listed stays
        pending. Why: under the eager protocol (kafka-python's default assignors) the client announces the
        revocation of its *whole* assignment before it rejoins but keeps listing those partitions until the join
        completes, and a poll can return in between. Settling then would count every revoked partition as kept and
        forget the revocation, so the streams of partitions that then went to another member were never dropped:
        two owners scoring, alerting and checkpointing the same streams. Under the cooperative protocol the client
        replaces the assignment before it announces a revocation, so the lost partitions settle at the next round.

        A lost partition's streams, buffers and unwritten points are dropped without a commit. That is consistent
        by construction: a commit never passes a sample whose stream state is unsaved, and a state is saved only
        when everything it scored is in the store, so the new owner — restoring the last saved state and reading
        from the last commit — redoes exactly what this member had not made durable (idempotent writes).
        A partition we keep is sought to where this member stopped reading, so its streams continue seamlessly
        whether or not the client kept the fetch position across the rebalance — or, when a dropped stream also had
        records there, back to the first of them (:meth:`_drop`). Returns the partitions sought.
        """
        kept = self._revoked & assignment if final else set()
        lost = self._revoked - assignment
        self._revoked = set() if final else self._revoked & assignment
        sought: set[Hashable] = set()
        while True:
            changed = self._drop(lost) if lost else set()
            kept -= lost
            refused = set()
            for tp in kept | {tp for tp in assignment - lost if (tp.topic, tp.partition) in changed}:
                key = (tp.topic, tp.partition)
                top = self.tracker.highest_read(key)
                if top is not None:
                    again = self._retake.get(key)
                    try:
                        self.consumer.seek(tp, again.next if again is not None else top + 1)
                        sought.add(key)
                    except ValueError:  # not assigned after all: treat as lost
                        refused.add(tp)
            if not refused:
                return sought
            lost = refused

    def _drop(self, lost: set[TopicPartition]) -> set[Hashable]:
        """Forget what the lost partitions brought; returns the kept partitions to read again.

        A forgotten stream that also needed records of a partition we keep (one stream id in two partitions) has
        them read again: the partition is sought back to the first of them and held there, and up to where this
        member had read only such streams' records are taken again, each from its own first needed offset (the
        others' were taken the first time)."""
        keys = [(tp.topic, tp.partition) for tp in lost]
        dropped = self.processor.drop_partitions(keys)
        self.tracker.forget(keys)
        for key in keys:
            self._retake.pop(key, None)
        changed: set[Hashable] = set()
        for key, needed in dropped.rewind.items():
            top = self.tracker.highest_read(key)
            needed = {stream: off for stream, off in needed.items() if top is not None and off <= top}
            if top is None or not needed:
                continue
            again = self._retake.setdefault(key, _Retake(min(needed.values()), top, {}))
            again.streams.update(needed)  # a stream dropped again starts over from what it needs now
            again.next = min(again.next, *needed.values())
            again.until = max(again.until, top)
            changed.add(key)
        log.info("%d partition(s) went to another member: dropped %d stream(s); their new owner resumes from the "
                 "last commit%s", len(keys), dropped.count,
                 f"; {len(changed)} kept partition(s) read again for streams that also had records there"
                 if changed else "")
        return changed

    def _score_before_exit(self) -> None:
        """Score what is pending, until done or ``shutdown_scoring_s``."""
        deadline = self.clock() + self.shutdown_scoring_s
        if self._score_in_steps(math.inf, lambda: self.clock() >= deadline):
            log.warning("shutdown: stopped scoring after %.0f s with %d sample(s) unscored; they stay uncommitted "
                        "and are scored after the restart", self.shutdown_scoring_s, self.processor.backlog())

    def shutdown(self) -> None:
        """Finish what is in flight, write, commit, close. A store that is still down means no commit."""
        log.info("shutting down: scoring buffered windows (at most %.0f s), writing, committing",
                 self.shutdown_scoring_s)
        try:
            self._score_before_exit()
            self._sink_down_until = None
            self._write_and_commit(force_commit=True)
        except Exception:
            log.exception("final write/commit failed; the next start re-reads from the last commit")
        finally:
            try:
                self.consumer.close(autocommit=False)
            except Exception:
                log.exception("closing the consumer failed")
            for closable in (self.dead_letters, self.alerts, self.sink):
                if closable is not None and hasattr(closable, "close"):
                    try:
                        closable.close()
                    except Exception:
                        log.exception("closing %s failed", type(closable).__name__)
            self.processor.registry.close()
