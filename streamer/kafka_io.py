"""Kafka plumbing shared by the monitor and the replay tool: clients built from the settings, topic creation,
the dead-letter producer and the alert publisher.

Why one place: security settings (SASL/SSL) and the consumer's at-least-once defaults (no auto-commit, start from
the earliest offset for a new group) must be identical everywhere a client is made.

Outputs are tracked, not fire-and-forget: ``flush()`` raises if any record was not acknowledged, so the monitor
can call it before committing offsets and never commits past a record that was neither processed nor
dead-lettered.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (
    InvalidRecordError, KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, TopicAlreadyExistsError,
    UnsupportedForMessageFormatError,
)
from kafka.future import Future

from streamer.points import ALERT, Point

log = logging.getLogger(__name__)

HEADROOM_BYTES = 64 * 1024  # record overhead + headers on top of the largest accepted value
DLQ_PREFIX = "dlq."


class KafkaOutputError(RuntimeError):
    """A dead-letter or alert record was not acknowledged by the broker."""


def _kafka(settings: Any):
    """Accept ``Settings`` or ``Settings().kafka``."""
    return getattr(settings, "kafka", settings)


def client_config(settings: Any) -> dict[str, Any]:
    """Connection and security options every kafka-python client takes."""
    kafka = _kafka(settings)
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL_"):
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    if kafka.ssl_cafile is not None:
        config["ssl_cafile"] = str(kafka.ssl_cafile)
    return config


def make_producer(settings: Any, **overrides: Any) -> KafkaProducer:
    """A producer that waits for all in-sync replicas (``acks='all'``) and is idempotent, so retries after a
    timeout cannot duplicate or reorder a stream's records."""
    kafka = _kafka(settings)
    config = {
        **client_config(kafka),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": max(1_048_576, kafka.max_message_bytes) + HEADROOM_BYTES,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(settings: Any, *topics: str, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A consumer-group member with manual commits (the monitor commits after the sink write) that starts from
    the earliest offset when its group has none. Subscribes to ``topics`` if given."""
    kafka = _kafka(settings)
    config = {
        **client_config(kafka),
        "group_id": group_id if group_id is not None else kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_records": kafka.max_poll_records,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "max_partition_fetch_bytes": max(1_048_576, kafka.max_message_bytes + HEADROOM_BYTES),
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def ensure_topics(settings: Any, topics: Mapping[str, int] | Iterable[str], *, partitions: int = 4,
                  replication_factor: int = 1, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics (name -> partition count, or names with ``partitions``); return the ones created.

    Partition count caps how many group members can share the work: one partition per worker at least.
    """
    wanted = dict(topics) if isinstance(topics, Mapping) else {name: partitions for name in topics}
    admin = KafkaAdminClient(**client_config(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = {name: count for name, count in wanted.items() if name not in existing}
        if not missing:
            return []
        spec = {name: {"num_partitions": count, "replication_factor": replication_factor}
                for name, count in missing.items()}
        try:
            admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
        except TopicAlreadyExistsError:  # another worker won the race
            log.debug("topics %s already existed", sorted(missing))
        log.info("created topics %s", {name: count for name, count in missing.items()})
        return sorted(missing)
    finally:
        admin.close()


def _header_list(headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes] | None) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value if value is not None else b"") for name, value in items]


# Errors that concern the record itself: sending the same bytes again can never succeed. Everything else (timeouts,
# leadership changes, authorisation, a topic that is missing for now) is re-sent until it succeeds, holding commits.
_REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError,
                     UnsupportedForMessageFormatError, ValueError, TypeError)


def _failed(exc: BaseException) -> Future:
    """A send that raised at once, as a failed future, so it is tracked (and re-sent) like any other failure."""
    return Future().failure(exc)


@dataclass
class _Sent:
    future: Any
    what: str
    resend: Callable[[], Any]
    fallback: Callable[[], Any] | None = None
    """A smaller form of the record (no value, the evidence in headers) for a record refused for good."""


class _TrackedProducer:
    """Keeps every sent record until the broker acknowledged it, so ``flush`` can prove delivery.

    A record whose send failed — at once or later, in the broker — is sent again by the next ``flush`` and stays
    pending until it succeeds: a caller that retries ``flush`` after a KafkaOutputError can never see success while
    a record is still missing. A record the broker refuses for good (too large, invalid) is not re-sent as it was:
    its fallback (the same record without its value) is sent instead; without one it is given up with an error
    log and counted in ``undeliverable``, because retrying it would stop every commit for ever.
    """

    def __init__(self, producer: KafkaProducer, topic: str):
        self.producer = producer
        self.topic = topic
        self.undeliverable = 0
        self._pending: list[_Sent] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    @staticmethod
    def _start(send: Callable[[], Any]) -> Any:
        try:
            return send()
        except Exception as exc:  # noqa: BLE001 - a metadata timeout, a closed producer, a record kafka refuses
            return _failed(exc)

    def _send(self, what: str, record: dict[str, Any], fallback: dict[str, Any] | None = None) -> Any:
        """Send ``record`` and track it until acknowledged; never raises."""
        def send(rec: dict[str, Any]) -> Callable[[], Any]:
            return lambda: self.producer.send(self.topic, **rec)

        sent = _Sent(None, what, send(record), send(fallback) if fallback is not None else None)
        sent.future = self._start(sent.resend)
        if _refused_for_good(sent.future) and sent.fallback is not None:
            self._use_fallback(sent)
        self._pending.append(sent)
        return sent.future

    def _use_fallback(self, sent: _Sent) -> None:
        log.warning("%s refused by the producer or broker (%r): sent without its value", sent.what,
                    sent.future.exception)
        assert sent.fallback is not None
        sent.resend, sent.fallback = sent.fallback, None
        sent.future = self._start(sent.resend)

    def flush(self, timeout_s: float | None = 30.0) -> int:
        """Wait for every record not yet acknowledged; re-send failed ones and raise KafkaOutputError if any
        failed (or the wait timed out). Returns how many records were confirmed."""
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise KafkaOutputError(f"{len(self._pending)} record(s) to {self.topic} unconfirmed: {exc!r}") from exc
        still: list[_Sent] = []
        failures: list[str] = []
        confirmed = 0
        for sent in self._pending:
            if not sent.future.is_done:
                still.append(sent)
                failures.append(f"{sent.what}: not acknowledged in time")
                continue
            if sent.future.succeeded():
                confirmed += 1
                continue
            failures.append(f"{sent.what}: {sent.future.exception!r}")
            if _refused_for_good(sent.future):
                if sent.fallback is None:
                    self.undeliverable += 1
                    log.error("%s to %s refused for good (%r) and has no smaller form: given up", sent.what,
                              self.topic, sent.future.exception)
                    continue
                self._use_fallback(sent)
            else:
                sent.future = self._start(sent.resend)
            still.append(sent)
        self._pending = still
        if failures:
            raise KafkaOutputError(f"{len(failures)} record(s) to {self.topic} failed (will be re-sent): "
                                   + "; ".join(failures[:5]))
        return confirmed

    def close(self, timeout_s: float = 10.0) -> None:
        if self._pending:
            log.warning("closing with %d unconfirmed record(s) to %s", len(self._pending), self.topic)
        self.producer.close(timeout=timeout_s)


class DeadLetterProducer(_TrackedProducer):
    """Copies rejected input records, unchanged, to the dead-letter topic with the reason in ``dlq.*`` headers.

    Key, value and the original headers are kept so the record can be inspected and replayed as it was. Two
    records cannot travel as they were: one too large for the dead-letter topic goes without its value
    (``dlq.dropped_value_bytes``), and a tombstone without a key (Kafka refuses a record with neither) goes with
    an empty value and ``dlq.null_value``.
    """

    def send(self, original_value: bytes | None, *, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes] | None = None,
             reason: str, detail: str = "", topic: str = "", partition: int = -1, offset: int = -1) -> Any:
        """Queue one dead-letter record; returns its future. Call ``flush()`` before committing offsets."""
        dlq_headers = [
            (DLQ_PREFIX + "reason", reason.encode()),
            (DLQ_PREFIX + "detail", detail[:1000].encode("utf-8", errors="replace")),
            (DLQ_PREFIX + "topic", topic.encode()),
            (DLQ_PREFIX + "partition", str(partition).encode()),
            (DLQ_PREFIX + "offset", str(offset).encode()),
            (DLQ_PREFIX + "at_ms", str(int(time.time() * 1000)).encode()),
        ]
        original = [h for h in _header_list(headers) if not h[0].startswith(DLQ_PREFIX)]
        what = f"{topic}[{partition}]@{offset}"
        evidence = original + dlq_headers
        if original_value is None and key is None:
            record = {"value": b"", "key": None, "headers": evidence + [(DLQ_PREFIX + "null_value", b"1")]}
        else:
            record = {"value": original_value, "key": key, "headers": evidence}
        fallback = None
        if original_value:
            dropped = [(DLQ_PREFIX + "dropped_value_bytes", str(len(original_value)).encode())]
            fallback = {"value": None if key is not None else b"", "key": key, "headers": evidence + dropped}
        log.info("dead-lettered %s: %s %s", what, reason, detail)
        return self._send(what, record, fallback)


def _refused_for_good(future: Any) -> bool:
    return bool(future.is_done and future.failed() and isinstance(future.exception, _REFUSED_FOR_GOOD))


def alert_record(point: Point) -> dict[str, Any]:
    """An ``alert`` point (docs/store-schema.md) as the alerts topic's JSON document."""
    if point.measurement != ALERT:
        raise ValueError(f"expected an {ALERT!r} point, got {point.measurement!r}")
    return {**point.tags, "start_ns": int(point.time_ns), **point.fields}


class AlertPublisher(_TrackedProducer):
    """Publishes alert opens/updates/closes as JSON (key = stream id) for downstream paging/ticketing."""

    def publish(self, point: Point) -> Any:
        record = alert_record(point)
        stream = str(record.get("stream", ""))
        value = json.dumps(record, default=_json_default, allow_nan=False).encode()
        return self._send(f"alert {stream}@{record['start_ns']}", {"value": value, "key": stream.encode() or None})


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
