"""Read a topic back from the beginning in integration tests, patient enough for a broker that just (re)started.

Why a deadline loop rather than one ``consumer_timeout_ms`` pass: right after a topic is created (or a broker
restarts empty) the first metadata answer can list no partitions, and a consumer assigned to nothing returns no
records at once — a flaky "0 records" that says nothing about the code under test.
"""
from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def read_topic(consumer: KafkaConsumer, topic: str, expected: int, *, timeout_s: float = 30.0,
               quiet_ms: int = 1000) -> list[Any]:
    """Records of every partition of ``topic`` from offset 0: polled until at least ``expected`` arrived *and* the
    topic stayed quiet for ``quiet_ms`` (a surplus — a duplicate, an extra dead letter — stays visible to the
    caller; Tansu's ``end_offsets`` cannot be trusted for this), or until the deadline; closes ``consumer``."""
    deadline = time.monotonic() + timeout_s
    try:
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                time.sleep(0.2)  # partitions_for_topic fetches fresh metadata on each call while the topic is unknown
        if not partitions:
            raise AssertionError(f"topic {topic!r} has no partitions after {timeout_s:.0f} s")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        records: list[Any] = []
        while time.monotonic() < deadline:
            got = [r for batch in consumer.poll(timeout_ms=quiet_ms).values() for r in batch]
            records.extend(got)
            if len(records) >= expected and not got:  # one quiet poll after the last record: a surplus shows too
                break
        return records
    finally:
        consumer.close()
