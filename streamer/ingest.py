"""One input record → the processor, or a dead letter. Shared by the Kafka monitor and the in-process demo.

Every way a record can be unusable ends here as a :class:`DeadLetter` with a reason code and the original bytes:
undecodable or invalid messages (``streamer.messages`` reason codes: malformed_json, missing_field, non_finite,
bad_dtype, bad_sample_rate, too_large, …), records on a topic of no known stream class
(``unknown_stream_class``), records without a key (``missing_key``), samples older than their stream's newest
(``late``) or too far ahead (``bad_timestamp``), and — so that a bug can never crash the consumer or lose a
record silently — any unexpected exception (``processing_error``, logged with its trace). Samples a stream took
in but could not score (its scoring raised) come back from the processor and leave as ``scoring_failed`` letters
(:func:`unscored_letters`), re-encoded in the input's wire format so that they can be inspected and replayed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numpy as np

from streamer.messages import (AUDIO, SENSOR, UNKNOWN_STREAM_CLASS, MessageError, decode, encode_audio,
                               encode_sensor_batch)
from streamer.pipeline import SCORING_FAILED, FailedSamples, StreamProcessor

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"
MISSING_KEY = "missing_key"


@dataclass(frozen=True)
class InputRecord:
    """The parts of a Kafka ConsumerRecord the monitor uses (the demo builds them in memory)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_ms: int | None = None

    @property
    def partition_key(self) -> Hashable:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class DeadLetter:
    record: InputRecord
    reason: str
    detail: str


def ingest(
    processor: StreamProcessor,
    record: InputRecord,
    class_of_topic: Callable[[str], str],
    *,
    max_bytes: int | None = None,
    audio_sample_rate: int | None = None,
) -> DeadLetter | None:
    """Decode ``record`` and feed it to ``processor``; return a dead letter when it cannot be (fully) used."""
    origin = (record.partition_key, record.offset)
    try:
        stream_class = class_of_topic(record.topic)
        cfg = processor.classes.get(stream_class)
        if cfg is None:
            raise MessageError(UNKNOWN_STREAM_CLASS, f"stream class {stream_class!r} is not configured")
        kind = SENSOR if cfg.kind == "sensor" else AUDIO
        if record.key is None:
            # Kafka spreads keyless records over partitions: one stream's samples would arrive out of order and be
            # owned by several consumers at once.
            raise MessageError(MISSING_KEY, "records need the stream id as their key")
        decoded = decode(kind, record.value, record.headers, record.key, max_bytes=max_bytes,
                         expected_sample_rate=cfg.sample_rate if kind == AUDIO else audio_sample_rate)
        if kind == SENSOR:
            rejection = processor.add_sensor(stream_class, decoded, origin)
        else:
            rejection = processor.add_audio(stream_class, decoded, origin)
    except MessageError as exc:
        return DeadLetter(record, exc.reason, exc.detail)
    except Exception as exc:  # never let one record stop the consumer; keep the record and the trace
        log.exception("unexpected error processing %s[%d]@%d", record.topic, record.partition, record.offset)
        return DeadLetter(record, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"[:500])
    if rejection is not None:
        return DeadLetter(record, rejection.reason, rejection.detail)
    return None


def drain(processor: StreamProcessor, sink) -> list[DeadLetter]:
    """At the end of an in-process replay (the demo, the benchmarks' monitor path): let running fits finish and
    score everything still pending, in the monitor's bounded rounds, writing each round's points to ``sink``;
    returns the dead letters of samples whose scoring failed. Bounded, not one unbounded step: that built the
    points of every pending sample at once (about 9 GB for the 3.5 M samples of the UCR series)."""
    letters: list[DeadLetter] = []
    while True:
        processor.registry.wait()
        processor.step()
        letters.extend(unscored_letters(processor))
        processor.flush(sink)
        if processor.idle():
            return letters


def unscored_letters(processor: StreamProcessor) -> list[DeadLetter]:
    """Dead letters for the samples the processor gave up after scoring failures since the last call (see
    ``StreamProcessor._fail``): one per input record they came from, at that record's place."""
    return [_unscored_letter(failed) for failed in processor.take_unscored()]


def _unscored_letter(failed: FailedSamples) -> DeadLetter:
    headers: list[tuple[str, bytes | None]] = []
    if failed.kind == "audio":
        first = int(failed.ts_ns[0])
        # The chunk's own stamp, unless the chunk lost samples already received (an overlap): then its first kept
        # sample's time. A millisecond is how far a producer's stamp may sit from the sample count's time.
        stamp = failed.stamp if failed.stamp is not None and abs(failed.stamp - first) <= 1_000_000 else first
        pcm = failed.values * 32768.0
        exact16 = bool(np.all(pcm == np.round(pcm)) and pcm.min() >= -32768 and pcm.max() <= 32767)  # int16 input
        value, headers = encode_audio(failed.stream, stamp, failed.values.astype("float32"), failed.sample_rate or 1,
                                      dtype="int16" if exact16 else "float32")
    else:
        value = encode_sensor_batch(failed.stream, zip(failed.ts_ns.tolist(), failed.values.tolist()))
    topic, partition, offset = "", -1, -1
    if failed.origin is not None:  # None: samples of a training part a checkpoint saved (no record holds them)
        part, offset = failed.origin
        topic, partition = part if isinstance(part, tuple) else ("", int(part))
    record = InputRecord(topic, partition, offset, failed.stream.encode(), value, list(headers))
    source = "" if failed.origin is not None else (
        " (saved with the stream's training part at a checkpoint, after which their records were committed: the "
        "letter has no source offset)")
    detail = (f"{failed.values.size} sample(s) of {failed.stream_class}/{failed.stream} could not be scored{source}: "
              f"{failed.error}")
    return DeadLetter(record, SCORING_FAILED, detail[:500])
