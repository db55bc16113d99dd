"""Kafka clients from settings, topic creation, dead-letter and alert records, against a real broker (Tansu)."""
from __future__ import annotations

import json
import uuid

import pytest
from kafka import TopicPartition
from kafka_read import read_topic

from streamer.config import Settings
from streamer.kafka_io import (
    AlertPublisher, DeadLetterProducer, KafkaOutputError, alert_record, client_config, ensure_topics, make_consumer,
    make_producer,
)
from streamer.messages import MessageError, decode_sensor
from streamer.points import ALERT, WINDOW_SCORE, Point

T0 = 1_700_000_000_000_000_000


def _settings(bootstrap: str, **kafka) -> Settings:
    return Settings(kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": 6000,
                           "heartbeat_interval_ms": 1000, **kafka})


def _read_all(settings: Settings, topic: str, expected: int) -> list:
    """Every record of a topic from the beginning (assign + seek: no group join needed)."""
    return read_topic(make_consumer(settings, group_id=None), topic, expected)


def test_client_config_carries_security_settings_without_leaking_into_repr():
    settings = Settings(kafka={"bootstrap_servers": "a:9093, b:9093", "security_protocol": "SASL_SSL",
                               "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc",
                               "sasl_password": "pw-SECRET", "ssl_cafile": "/etc/ca.pem"})
    config = client_config(settings)
    assert config["bootstrap_servers"] == ["a:9093", "b:9093"]
    assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("svc", "pw-SECRET")
    assert config["ssl_cafile"] == "/etc/ca.pem"
    plain = client_config(Settings())
    assert "sasl_mechanism" not in plain and plain["security_protocol"] == "PLAINTEXT"


def test_alert_record_shape():
    point = Point(ALERT, {"stream": "pump-1", "stream_class": "sensor"},
                  {"severity": 0.997, "end_ns": 0, "state": "open", "duration_s": 0.0, "model_version": "v1"}, T0)
    assert alert_record(point) == {"stream": "pump-1", "stream_class": "sensor", "start_ns": T0, "severity": 0.997,
                                   "end_ns": 0, "state": "open", "duration_s": 0.0, "model_version": "v1"}
    with pytest.raises(ValueError):
        alert_record(Point(WINDOW_SCORE, {"stream": "a"}, {"score": 1.0}, T0))


@pytest.mark.integration
def test_ensure_topics_creates_once_with_partition_count(kafka_broker):
    settings = _settings(kafka_broker)
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(settings, {name: 3}) == [name]
    assert ensure_topics(settings, {name: 3}) == []
    consumer = make_consumer(settings, group_id=None)
    try:
        assert consumer.partitions_for_topic(name) == {0, 1, 2}
    finally:
        consumer.close()


@pytest.mark.integration
def test_dead_letter_records_keep_original_and_carry_reason(kafka_broker):
    settings = _settings(kafka_broker, dead_letter_topic=f"dlq-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.kafka.dead_letter_topic: 1})
    bad = b'{"stream": "pump-1", "ts": 1, "value": NaN}'
    try:
        decode_sensor(bad, key=b"pump-1")
    except MessageError as exc:
        error = exc
    dlq = DeadLetterProducer(make_producer(settings), settings.kafka.dead_letter_topic)
    dlq.send(bad, key=b"pump-1", headers=[("trace", b"t-1")], reason=error.reason, detail=error.detail,
             topic="scalowatch.sensors", partition=2, offset=41)
    dlq.send(None, key=b"pump-2", reason="empty", topic="scalowatch.sensors", partition=0, offset=7)
    assert dlq.flush() == 2
    dlq.close()

    first, second = _read_all(settings, settings.kafka.dead_letter_topic, 2)
    assert first.value == bad and first.key == b"pump-1"
    headers = dict(first.headers)
    assert headers["trace"] == b"t-1"
    assert headers["dlq.reason"] == b"non_finite"
    assert b"NaN" in headers["dlq.detail"]
    assert (headers["dlq.topic"], headers["dlq.partition"], headers["dlq.offset"]) == (
        b"scalowatch.sensors", b"2", b"41")
    assert int(headers["dlq.at_ms"]) > 0
    assert second.value is None and dict(second.headers)["dlq.offset"] == b"7"


@pytest.mark.integration
def test_dead_letter_too_large_for_producer_keeps_evidence(kafka_broker):
    settings = _settings(kafka_broker, dead_letter_topic=f"dlq-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.kafka.dead_letter_topic: 1})
    dlq = DeadLetterProducer(make_producer(settings, max_request_size=4000), settings.kafka.dead_letter_topic)
    dlq.send(b"x" * 10_000, key=b"k", reason="too_large", topic="in", partition=0, offset=3)
    dlq.flush()
    dlq.close()
    (record,) = _read_all(settings, settings.kafka.dead_letter_topic, 1)
    assert record.value is None
    assert dict(record.headers)["dlq.dropped_value_bytes"] == b"10000"
    assert dict(record.headers)["dlq.reason"] == b"too_large"


@pytest.mark.integration
def test_alerts_published_as_json_keyed_by_stream(kafka_broker):
    settings = _settings(kafka_broker, alerts_topic=f"alerts-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.kafka.alerts_topic: 2})
    publisher = AlertPublisher(make_producer(settings), settings.kafka.alerts_topic)
    tags = {"stream": "fan-1", "stream_class": "audio"}
    publisher.publish(Point(ALERT, tags, {"severity": 0.99, "end_ns": 0, "state": "open"}, T0))
    publisher.publish(Point(ALERT, tags, {"severity": 0.999, "end_ns": T0 + 5, "state": "closed"}, T0))
    publisher.flush()
    publisher.close()
    records = _read_all(settings, settings.kafka.alerts_topic, 2)
    assert {r.key for r in records} == {b"fan-1"}
    assert [json.loads(r.value)["state"] for r in records] == ["open", "closed"]  # same key -> same partition
    assert json.loads(records[1].value)["start_ns"] == T0


@pytest.mark.integration
def test_failed_records_stay_pending_until_resent_after_outage():
    """A flush that failed must not be followed by a 'successful' flush that silently dropped the record — and the
    re-send must not duplicate it. The outage is the network path (a proxy stopped), the broker keeps its data."""
    from servers import TansuBroker, TansuProxy

    with TansuBroker() as broker, TansuProxy(broker) as proxy:
        settings = _settings(proxy.bootstrap, alerts_topic="alerts")
        ensure_topics(settings, {"alerts": 1})
        producer = make_producer(settings, request_timeout_ms=1500, max_block_ms=1500, enable_idempotence=False,
                                 retries=0, delivery_timeout_ms=3000, reconnect_backoff_max_ms=200)
        publisher = AlertPublisher(producer, "alerts")
        publisher.publish(Point(ALERT, {"stream": "a"}, {"state": "open"}, T0))
        assert publisher.flush() == 1
        proxy.stop()
        publisher.publish(Point(ALERT, {"stream": "a"}, {"state": "closed"}, T0))
        with pytest.raises(KafkaOutputError, match="alert a@"):
            publisher.flush(timeout_s=10)
        assert publisher.pending == 1
        proxy.start()
        confirmed = 0
        for _ in range(5):  # the re-sent record may need a reconnect or two
            try:
                confirmed = publisher.flush(timeout_s=10)
                break
            except KafkaOutputError:
                continue
        assert confirmed == 1 and publisher.pending == 0
        publisher.close(timeout_s=1)
        records = _read_all(settings, "alerts", 2)
        assert [json.loads(r.value)["state"] for r in records] == ["open", "closed"]  # nothing lost, nothing twice


@pytest.mark.integration
def test_group_consumer_manual_commit_resumes_after_last_commit(kafka_broker):
    topic = f"in-{uuid.uuid4().hex[:8]}"
    settings = _settings(kafka_broker, group_id=f"g-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {topic: 1})
    producer = make_producer(settings)
    for i in range(10):
        producer.send(topic, key=b"s", value=str(i).encode())
    producer.flush()
    producer.close()

    def consume(n: int) -> list[bytes]:
        consumer = make_consumer(settings, topic, consumer_timeout_ms=8000)
        got = []
        try:
            for record in consumer:
                got.append(record.value)
                if len(got) == n:
                    consumer.commit({TopicPartition(topic, record.partition): _offset(record.offset + 1)})
                    break
        finally:
            consumer.close()
        return got

    assert consume(4) == [b"0", b"1", b"2", b"3"]
    assert consume(6) == [str(i).encode() for i in range(4, 10)]


def _offset(offset: int):
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(offset, "", -1)


@pytest.mark.integration
def test_keyless_tombstone_and_keyless_oversized_record_are_dead_lettered(kafka_broker):
    """Issue 9 #2: Kafka refuses a record with neither key nor value; the dead letter must still get there (and
    the keyless too-large record's value-less form too) instead of raising out of the consumer loop."""
    settings = _settings(kafka_broker, dead_letter_topic=f"dlq-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.kafka.dead_letter_topic: 1})
    dlq = DeadLetterProducer(make_producer(settings, max_request_size=4000), settings.kafka.dead_letter_topic)
    dlq.send(None, key=None, reason="missing_key", topic="in", partition=0, offset=1)
    dlq.send(b"y" * 10_000, key=None, reason="too_large", topic="in", partition=0, offset=2)
    assert dlq.flush() == 2 and dlq.pending == 0
    dlq.close()
    tombstone, big = _read_all(settings, settings.kafka.dead_letter_topic, 2)
    assert tombstone.value == b"" and dict(tombstone.headers)["dlq.null_value"] == b"1"
    assert dict(tombstone.headers)["dlq.reason"] == b"missing_key"
    assert big.value == b"" and dict(big.headers)["dlq.dropped_value_bytes"] == b"10000"


@pytest.mark.integration
def test_dead_letter_survives_a_metadata_timeout_and_is_delivered_after_it():
    """Issue 9 #2: with the broker unreachable, ``send`` times out waiting for the topic's metadata. That must be
    a pending record (flush raises, so nothing is committed), not an exception out of the consumer loop."""
    from servers import TansuBroker, TansuProxy

    with TansuBroker() as broker, TansuProxy(broker) as proxy:
        settings = _settings(proxy.bootstrap)
        producer = make_producer(settings, request_timeout_ms=1500, max_block_ms=1000, retries=0,
                                 delivery_timeout_ms=3000, reconnect_backoff_max_ms=200, enable_idempotence=False)
        proxy.stop()  # the producer has never seen the dead-letter topic: send() must wait for its metadata
        dlq = DeadLetterProducer(producer, "dlq-meta")
        dlq.send(b"bad", key=b"k", reason="not_json", topic="in", partition=0, offset=5)
        assert dlq.pending == 1
        with pytest.raises(KafkaOutputError, match="in\\[0\\]@5"):
            dlq.flush(timeout_s=5)
        proxy.start()
        ensure_topics(settings, {"dlq-meta": 1})
        for _ in range(10):
            try:
                assert dlq.flush(timeout_s=10) == 1
                break
            except KafkaOutputError:
                continue
        assert dlq.pending == 0
        dlq.close(timeout_s=1)
        (record,) = _read_all(settings, "dlq-meta", 1)
        assert record.value == b"bad" and dict(record.headers)["dlq.reason"] == b"not_json"


class _BrokerRejects:
    """A producer whose broker answers later, refusing records with a value over ``limit`` bytes.

    Tansu accepts records of any size, so a broker-side MessageSizeTooLarge (which Apache Kafka sends when a
    record passes the producer's own size check but not the topic's ``max.message.bytes``) is played here: the
    point is how the tracked producer treats a failure that arrives after ``send`` returned.
    """

    def __init__(self, limit: int):
        from kafka.future import Future

        self.limit, self.sent, self._future = limit, [], Future
        self._open: list = []

    def send(self, topic, value=None, key=None, headers=None):
        future = self._future()
        self._open.append((future, value))
        return future

    def flush(self, timeout=None):
        from kafka.errors import MessageSizeTooLargeError

        for future, value in self._open:
            if value is not None and len(value) > self.limit:
                future.failure(MessageSizeTooLargeError("broker: record too large for the topic"))
            else:
                self.sent.append(value)
                future.success(None)
        self._open = []

    def close(self, timeout=None):
        pass


def test_a_dead_letter_the_broker_refuses_later_is_sent_once_without_its_value():
    """Issue 9 #3: a broker-side refusal (async) must not make every later flush re-send the same record for
    ever (which stops all commits): the value-less form is sent instead."""
    broker = _BrokerRejects(limit=100)
    dlq = DeadLetterProducer(broker, "dlq")
    dlq.send(b"z" * 500, key=b"k", reason="too_large", topic="in", partition=0, offset=9)
    with pytest.raises(KafkaOutputError, match="MessageSizeTooLarge"):
        dlq.flush()
    assert dlq.flush() == 1 and dlq.pending == 0
    assert broker.sent == [None]


def test_an_alert_the_broker_refuses_for_good_is_given_up_loudly_not_retried_for_ever(caplog):
    broker = _BrokerRejects(limit=10)
    publisher = AlertPublisher(broker, "alerts")
    publisher.publish(Point(ALERT, {"stream": "a"}, {"state": "open"}, T0))
    with pytest.raises(KafkaOutputError):
        publisher.flush()
    assert publisher.pending == 0 and publisher.undeliverable == 1
    assert "refused for good" in caplog.text
    assert publisher.flush() == 0
