"""In-process replay of recorded series and audio, for the demo: no broker, same records as Kafka would carry.

Records are encoded with the same encoders the Kafka replay uses (streamer.messages) and decoded again by the
monitor's ingest step, so the demo exercises the exact decoding, windowing, model, alert and sink code.
Streams are interleaved by *relative* stream time (each stream's time since its own first sample), so series
recorded in different years progress together. ``speed`` paces the replay: 0 = as fast as possible, x = x times
real time (relative to the stream's own clock).
"""
from __future__ import annotations

import csv
import heapq
import time
import wave
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from streamer.ingest import InputRecord
from streamer.messages import encode_audio, encode_sensor_batch

NS_PER_S = 1_000_000_000


def read_nab_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A NAB CSV (``timestamp,value``, UTC wall times) → (int64 ns timestamps, float64 values)."""
    times, values = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            dt = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=timezone.utc)
            times.append(int(dt.timestamp()) * NS_PER_S)
            values.append(float(row["value"]))
    return np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64)


def read_wav(path: str | Path) -> tuple[int, np.ndarray]:
    """A 16-bit PCM WAV → (sample rate, mono float32 samples in [-1, 1])."""
    with wave.open(str(path)) as fh:
        if fh.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        rate, channels = fh.getframerate(), fh.getnchannels()
        raw = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").reshape(-1, channels)
    return rate, (raw.astype(np.float32) / 32768.0).mean(axis=1)


@dataclass(frozen=True)
class SensorSeries:
    stream: str
    times_ns: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class AudioClip:
    stream: str
    start_ns: int
    sample_rate: int
    samples: np.ndarray


class MemorySource:
    """Yields :class:`InputRecord` s for sensor series and audio clips; one pseudo-partition per stream."""

    def __init__(
        self,
        sensors: list[SensorSeries],
        audio: list[AudioClip],
        *,
        sensor_topic: str,
        audio_topic: str,
        samples_per_record: int = 1,
        audio_chunk_s: float = 0.1,
        speed: float = 0.0,
    ):
        if samples_per_record < 1:
            raise ValueError("samples_per_record must be >= 1")
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")
        self.sensors = sensors
        self.audio = audio
        self.sensor_topic = sensor_topic
        self.audio_topic = audio_topic
        self.samples_per_record = samples_per_record
        self.audio_chunk_s = audio_chunk_s
        self.speed = speed

    def __len__(self) -> int:
        n = sum(-(-len(s.values) // self.samples_per_record) for s in self.sensors)
        for clip in self.audio:
            chunk = max(1, int(round(self.audio_chunk_s * clip.sample_rate)))
            n += -(-len(clip.samples) // chunk)
        return n

    def _sensor_records(self, part: int, s: SensorSeries) -> Iterator[tuple[int, InputRecord]]:
        t0 = int(s.times_ns[0]) if len(s.times_ns) else 0
        for off, i in enumerate(range(0, len(s.values), self.samples_per_record)):
            j = min(i + self.samples_per_record, len(s.values))
            value = encode_sensor_batch(s.stream, zip(s.times_ns[i:j].tolist(), s.values[i:j].tolist()))
            yield int(s.times_ns[j - 1]) - t0, InputRecord(self.sensor_topic, part, off, s.stream.encode(), value)

    def _audio_records(self, part: int, c: AudioClip) -> Iterator[tuple[int, InputRecord]]:
        chunk = max(1, int(round(self.audio_chunk_s * c.sample_rate)))
        for off, i in enumerate(range(0, len(c.samples), chunk)):
            ts = c.start_ns + (i * NS_PER_S) // c.sample_rate
            value, headers = encode_audio(c.stream, ts, c.samples[i:i + chunk], c.sample_rate)
            rel = ((i + len(c.samples[i:i + chunk])) * NS_PER_S) // c.sample_rate
            yield rel, InputRecord(self.audio_topic, part, off, c.stream.encode(), value, headers)

    def records(self) -> Iterator[InputRecord]:
        gens = [self._sensor_records(p, s) for p, s in enumerate(self.sensors)]
        gens += [self._audio_records(len(self.sensors) + p, c) for p, c in enumerate(self.audio)]
        started = time.monotonic()
        for rel_ns, rec in heapq.merge(*gens, key=lambda item: item[0]):
            if self.speed > 0:
                wait = rel_ns / NS_PER_S / self.speed - (time.monotonic() - started)
                if wait > 0:
                    time.sleep(wait)
            yield rec
