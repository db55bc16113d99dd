"""Read a topic back from the beginning in integration tests, patient enough for a broker that just (re)started.

Why a deadline loop rather than one ``consumer_timeout_ms`` pass: right after a topic is created (or a broker
restarts empty) the first metadata answer can list no partitions, and a consumer assigned to nothing returns no
records at once — a flaky "0 records" that says nothing about the code under test.
"""
from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def read_topic(consumer: KafkaConsumer, topic: str, expected: int, *, timeout_s: float = 30.0) -> list[Any]:
    """Records of every partition of ``topic`` from offset 0, polled until ``expected`` arrived or the deadline
    (a batch may carry more than ``expected``: duplicates stay visible to the caller); closes ``consumer``."""
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
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
