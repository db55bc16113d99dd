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
from kafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

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


@dataclass
class _Sent:
    future: Any
    what: str
    resend: Callable[[], Any]


class _TrackedProducer:
    """Keeps every sent record until the broker acknowledged it, so ``flush`` can prove delivery.

    A record whose send failed is sent again by the next ``flush`` and stays pending until it succeeds: a caller
    that retries ``flush`` after a KafkaOutputError can never see success while a record is still missing.
    """

    def __init__(self, producer: KafkaProducer, topic: str):
        self.producer = producer
        self.topic = topic
        self._pending: list[_Sent] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _send(self, what: str, record: dict[str, Any], future: Any = None) -> Any:
        """Send ``record`` (unless ``future`` is its already-started send) and track it until acknowledged."""
        def resend() -> Any:
            return self.producer.send(self.topic, **record)

        if future is None:
            future = resend()
        self._pending.append(_Sent(future, what, resend))
        return future

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
            try:
                sent.future = sent.resend()
            except Exception as exc:  # noqa: BLE001 - keep the old failed future; retried at the next flush
                log.debug("re-sending %s failed at once: %r", sent.what, exc)
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

    Key, value and the original headers are kept so the record can be inspected and replayed as it was.
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
        record = {"value": original_value, "key": key, "headers": original + dlq_headers}
        future = None
        try:
            future = self.producer.send(self.topic, **record)
            too_large = _rejected_as_too_large(future)
        except MessageSizeTooLargeError:
            too_large = True
        if too_large:
            future = None
            # Too big even for the dead-letter topic: keep the evidence (where it was, how big) without the value.
            size = len(original_value or b"")
            log.warning("dead-letter record for %s too large (%d bytes): sent without its value", what, size)
            record = {"value": None, "key": key,
                      "headers": original + dlq_headers + [(DLQ_PREFIX + "dropped_value_bytes", str(size).encode())]}
        log.info("dead-lettered %s: %s %s", what, reason, detail)
        return self._send(what, record, future)


def _rejected_as_too_large(future: Any) -> bool:
    """kafka-python reports an oversized record through an already-failed future (or raises)."""
    return bool(future.is_done and isinstance(future.exception, MessageSizeTooLargeError))


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
