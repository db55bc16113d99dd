"""In-process replay of recorded files, for the demo: no broker, the same records Kafka would carry.

The files are read and encoded by the Kafka replay's own sources (streamer/replay.py), and the records are
decoded again by the monitor's ingest step, so the demo exercises the exact decoding, windowing, model, alert
and sink code of the real monitor. Streams are interleaved by *relative* event time (time since each stream's own
first sample), so series recorded in different years progress side by side. ``speed`` paces the replay like the
Kafka replay's (0 = as fast as possible).
"""
from __future__ import annotations

import heapq
from typing import Iterator, Sequence

from streamer.ingest import InputRecord
from streamer.messages import AUDIO
from streamer.replay import Outgoing, Pacer, ReplaySource


class MemorySource:
    """Records of several replay sources; each stream gets its own pseudo-partition of ``topic``."""

    def __init__(self, sources: Sequence[ReplaySource], *, sensor_topic: str, audio_topic: str, speed: float = 0.0):
        self.sources = list(sources)
        self.sensor_topic = sensor_topic
        self.audio_topic = audio_topic
        self.pacer = Pacer(speed)

    def __len__(self) -> int:
        return sum(s.message_count() for s in self.sources)

    def _relative(self, part: int, source: ReplaySource) -> Iterator[tuple[int, int, Outgoing]]:
        t0 = source.first_ns() + source.offset_ns
        for out in source.messages():
            yield out.ts_ns - t0, part, out

    def records(self) -> Iterator[InputRecord]:
        offsets: dict[int, int] = {}
        merged = heapq.merge(*(self._relative(p, s) for p, s in enumerate(self.sources)), key=lambda x: x[0])
        for rel_ns, part, out in merged:
            self.pacer.wait_for(rel_ns)
            off = offsets.get(part, 0)
            offsets[part] = off + 1
            topic = self.audio_topic if out.stream_class == AUDIO else self.sensor_topic
            yield InputRecord(topic, part, off, out.stream.encode(), out.value, list(out.headers))
