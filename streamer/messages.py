"""Wire formats of the input streams: sensor samples as JSON, audio as binary PCM chunks (see docs/messages.md).

Decoding is strict on purpose: a message that cannot be read exactly is rejected with a :class:`MessageError`
whose ``reason`` is a short, stable code (the monitor copies it into the dead-letter record's headers), rather
than being guessed at. A message is decoded atomically: one bad sample in a batch rejects the whole message, so
the dead-letter record holds everything that was not processed.

Encoders for the replay side live here too, so the two directions cannot drift apart.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

SENSOR = "sensor"
AUDIO = "audio"
STREAM_CLASSES = (SENSOR, AUDIO)

AUDIO_DTYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}
MAX_STREAM_ID_CHARS = 256
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
_MAX_TS_NS = 2**63 - 1

# Reason codes (stable: dashboards and alerting on the dead-letter topic may count them).
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_STREAM = "bad_stream"
STREAM_MISMATCH = "stream_mismatch"
BAD_TIMESTAMP = "bad_timestamp"
NON_FINITE = "non_finite"
FLOAT32_MAX = float(np.finfo(np.float32).max)
EMPTY = "empty"
TOO_LARGE = "too_large"
BAD_DTYPE = "bad_dtype"
BAD_SAMPLE_RATE = "bad_sample_rate"
BAD_CHANNELS = "bad_channels"
BAD_LENGTH = "bad_length"
UNKNOWN_STREAM_CLASS = "unknown_stream_class"


class MessageError(ValueError):
    """A message that cannot be decoded. ``reason`` is a short code, ``detail`` says what exactly was wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SensorSample:
    stream: str
    ts_ns: int
    value: float


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """Mono float32 samples in [-1, 1] (int16 is scaled by 1/32768; channels are averaged)."""

    stream: str
    ts_ns: int
    sample_rate: int
    samples: np.ndarray

    @property
    def end_ns(self) -> int:
        """Timestamp one sample period after the last sample (= the next chunk's start if contiguous)."""
        return self.ts_ns + round(len(self.samples) * 1e9 / self.sample_rate)


# ---------------------------------------------------------------------------------------------------- timestamps
_ISO_FRACTION = re.compile(r"^(?P<head>[^.,]*)[.,](?P<frac>\d+)(?P<tail>.*)$")


def _check_ts_range(ts_ns: int, raw: object) -> int:
    if not 0 <= ts_ns <= _MAX_TS_NS:
        raise MessageError(BAD_TIMESTAMP, f"{raw!r} is outside 1970..2262")
    return ts_ns


def parse_timestamp(raw: object) -> int:
    """Epoch milliseconds (int/float, or a numeric string) or an ISO-8601 string -> ns since the epoch (UTC).

    ISO strings without an offset are taken as UTC; fractions keep nanosecond precision.
    """
    if isinstance(raw, bool) or raw is None:
        raise MessageError(BAD_TIMESTAMP, f"{raw!r} is not a timestamp")
    if isinstance(raw, int):
        return _check_ts_range(raw * 1_000_000, raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise MessageError(BAD_TIMESTAMP, f"{raw!r} is not finite")
        if not 0.0 <= raw <= _MAX_TS_NS / 1_000_000:  # before multiplying: 1e308 ms would overflow to inf
            raise MessageError(BAD_TIMESTAMP, f"{raw!r} is outside 1970..2262")
        text = repr(raw)  # the shortest decimal that round-trips: parse its digits, not the binary float
        if re.fullmatch(r"\d+\.\d*", text):
            return parse_timestamp(text)
        return _check_ts_range(round(raw * 1_000_000), raw)
    if not isinstance(raw, str):
        raise MessageError(BAD_TIMESTAMP, f"{type(raw).__name__} is not a timestamp")
    text = raw.strip()
    if len(text) > 64:  # no timestamp is this long; int() of a 4,300-digit string raises instead of answering
        raise MessageError(BAD_TIMESTAMP, f"a {len(text)}-character timestamp string")
    if re.fullmatch(r"\d+", text):
        return _check_ts_range(int(text) * 1_000_000, raw)
    if re.fullmatch(r"\d+\.\d*", text):
        whole, frac = text.split(".")
        frac_ns = int((frac + "000000")[:6]) if frac else 0  # ms fraction -> ns (6 digits)
        return _check_ts_range(int(whole) * 1_000_000 + frac_ns, raw)
    return _parse_iso(text, raw)


def _parse_iso(text: str, raw: object) -> int:
    frac_ns = 0
    match = _ISO_FRACTION.match(text)
    if match:  # datetime keeps only microseconds: take the fraction apart to keep nanoseconds
        digits = match.group("frac")
        if len(digits) > 9:
            raise MessageError(BAD_TIMESTAMP, f"{raw!r}: more than 9 fractional digits")
        frac_ns = int(digits.ljust(9, "0"))
        text = match.group("head") + match.group("tail")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise MessageError(BAD_TIMESTAMP, f"{raw!r} is neither epoch ms nor ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    seconds = (parsed - datetime(1970, 1, 1, tzinfo=timezone.utc)) // _SECOND
    return _check_ts_range(seconds * 1_000_000_000 + frac_ns, raw)


_SECOND = datetime(1970, 1, 1, 0, 0, 1) - datetime(1970, 1, 1)


def format_timestamp_ms(ts_ns: int) -> int | str:
    """ns -> wire timestamp: epoch ms as an int when exact, else an exact decimal string of ms ("…123.456789")."""
    if ts_ns % 1_000_000 == 0:
        return ts_ns // 1_000_000
    whole, frac = divmod(ts_ns, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0")


# ---------------------------------------------------------------------------------------------------- shared
def _check_size(value: bytes, max_bytes: int | None) -> None:
    if max_bytes is not None and len(value) > max_bytes:
        raise MessageError(TOO_LARGE, f"{len(value)} bytes > limit {max_bytes}")


def stream_of_key(key: bytes | str) -> str:
    """The stream id a record key names: UTF-8, undecodable bytes replaced (such a key still has a name)."""
    return key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key


def _check_stream(stream: object, key: bytes | str | None) -> str:
    if not isinstance(stream, str):
        raise MessageError(BAD_TYPE, f"stream must be a string, got {type(stream).__name__}")
    if not stream or len(stream) > MAX_STREAM_ID_CHARS:
        raise MessageError(BAD_STREAM, f"stream id must have 1..{MAX_STREAM_ID_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in stream):
        raise MessageError(BAD_STREAM, f"stream id {stream!r} contains control characters")
    if key is not None:
        key_text = stream_of_key(key)
        if key_text != stream:
            raise MessageError(STREAM_MISMATCH, f"record key {key_text!r} != stream {stream!r}")
    return stream


# ---------------------------------------------------------------------------------------------------- sensor
def _reject_constant(name: str):
    raise MessageError(NON_FINITE, f"JSON constant {name} is not a finite number")


def _sample_value(raw: object) -> float:
    if raw is None:
        raise MessageError(MISSING_FIELD, "value is null")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise MessageError(BAD_TYPE, f"value must be a number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:
        raise MessageError(NON_FINITE, "value overflows a float") from None
    if not math.isfinite(value):
        raise MessageError(NON_FINITE, f"value {raw!r} is not finite")
    if abs(value) > FLOAT32_MAX:
        # The detector computes in float32 (and squares raw values in float64): such a value would overflow there.
        raise MessageError(NON_FINITE, f"value {raw!r} is beyond ±{FLOAT32_MAX:.4g}, the float32 range the model "
                                       "computes in")
    return value


def _sample(stream: str, item: object, index: int | None) -> SensorSample:
    where = "" if index is None else f"samples[{index}]: "
    try:
        if isinstance(item, Mapping):
            if "ts" not in item:
                raise MessageError(MISSING_FIELD, "ts")
            if "value" not in item:
                raise MessageError(MISSING_FIELD, "value")
            raw_ts, raw_value = item["ts"], item["value"]
        elif isinstance(item, list) and len(item) == 2:
            raw_ts, raw_value = item
        else:
            raise MessageError(BAD_TYPE, "a sample is {\"ts\": .., \"value\": ..} or [ts, value]")
        return SensorSample(stream, parse_timestamp(raw_ts), _sample_value(raw_value))
    except MessageError as exc:
        raise MessageError(exc.reason, where + exc.detail) from None


def decode_sensor(value: bytes, key: bytes | str | None = None, *, max_bytes: int | None = None) -> list[SensorSample]:
    """One JSON sensor message -> its samples, in message order.

    Accepts ``{"stream", "ts", "value"}`` and ``{"stream", "samples": [{"ts", "value"} | [ts, value], ...]}``.
    ``key`` (the Kafka record key) must equal ``stream`` when given.
    """
    if value is None:
        raise MessageError(EMPTY, "no message value (tombstone)")
    _check_size(value, max_bytes)
    try:
        doc = json.loads(value, parse_constant=_reject_constant)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageError(MALFORMED_JSON, str(exc)[:200]) from None
    except RecursionError:
        raise MessageError(MALFORMED_JSON, "nested too deeply") from None
    if not isinstance(doc, dict):
        raise MessageError(BAD_TYPE, f"top level must be an object, got {type(doc).__name__}")
    if "stream" not in doc:
        raise MessageError(MISSING_FIELD, "stream")
    stream = _check_stream(doc["stream"], key)
    if "samples" in doc:
        items = doc["samples"]
        if not isinstance(items, list):
            raise MessageError(BAD_TYPE, "samples must be a list")
        if not items:
            raise MessageError(EMPTY, "samples is empty")
        return [_sample(stream, item, i) for i, item in enumerate(items)]
    return [_sample(stream, doc, None)]


def encode_sensor(stream: str, ts_ns: int, value: float) -> bytes:
    return json.dumps({"stream": stream, "ts": format_timestamp_ms(ts_ns), "value": float(value)},
                      allow_nan=False).encode()


def encode_sensor_batch(stream: str, samples: Iterable[tuple[int, float]]) -> bytes:
    """Several samples of one stream in one message (fewer, larger records for high-rate sensors)."""
    pairs = [[format_timestamp_ms(ts), float(v)] for ts, v in samples]
    if not pairs:
        raise ValueError("a batch needs at least one sample")
    return json.dumps({"stream": stream, "samples": pairs}, allow_nan=False).encode()


# ---------------------------------------------------------------------------------------------------- audio
Headers = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | str | None]


def _header_map(headers: Headers | None) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    out: dict[str, str] = {}
    for name, raw in items:
        if raw is None:
            continue
        try:
            out[name] = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)
        except UnicodeDecodeError:
            raise MessageError(BAD_TYPE, f"header {name!r} is not UTF-8") from None
    return out


def _int_header(headers: dict[str, str], name: str, reason: str, low: int, high: int) -> int:
    text = headers[name].strip()
    if not re.fullmatch(r"\d+", text):
        raise MessageError(reason, f"header {name}={text!r} is not a positive integer")
    number = int(text)
    if not low <= number <= high:
        raise MessageError(reason, f"header {name}={number} outside {low}..{high}")
    return number


def decode_audio(
    value: bytes,
    headers: Headers | None,
    key: bytes | str | None = None,
    *,
    max_bytes: int | None = None,
    expected_sample_rate: int | None = None,
) -> AudioChunk:
    """One PCM chunk (little-endian, interleaved channels) + its headers -> mono float32 :class:`AudioChunk`."""
    if value is None:
        raise MessageError(EMPTY, "no message value (tombstone)")
    _check_size(value, max_bytes)
    fields = _header_map(headers)
    for name in ("stream", "ts", "sample_rate", "channels", "dtype"):
        if name not in fields:
            raise MessageError(MISSING_FIELD, f"header {name}")
    stream = _check_stream(fields["stream"], key)
    ts_ns = parse_timestamp(fields["ts"])
    sample_rate = _int_header(fields, "sample_rate", BAD_SAMPLE_RATE, 1, MAX_SAMPLE_RATE)
    if expected_sample_rate is not None and sample_rate != expected_sample_rate:
        raise MessageError(BAD_SAMPLE_RATE, f"{sample_rate} Hz, expected {expected_sample_rate} Hz")
    channels = _int_header(fields, "channels", BAD_CHANNELS, 1, MAX_CHANNELS)
    dtype = AUDIO_DTYPES.get(fields["dtype"].strip())
    if dtype is None:
        raise MessageError(BAD_DTYPE, f"dtype {fields['dtype']!r}; expected one of {sorted(AUDIO_DTYPES)}")
    frame = dtype.itemsize * channels
    if len(value) == 0:
        raise MessageError(EMPTY, "no samples")
    if len(value) % frame:
        raise MessageError(BAD_LENGTH, f"{len(value)} bytes is not a multiple of {frame} "
                                       f"({channels} channel(s) of {fields['dtype']})")
    raw = np.frombuffer(value, dtype=dtype).reshape(-1, channels)
    if dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise MessageError(NON_FINITE, "PCM contains NaN or infinity")
        samples = raw.astype(np.float32)
    else:
        samples = raw.astype(np.float32) / np.float32(32768.0)
    mono = samples[:, 0].copy() if channels == 1 else samples.mean(axis=1, dtype=np.float32)
    return AudioChunk(stream=stream, ts_ns=ts_ns, sample_rate=sample_rate, samples=mono)


def encode_audio(
    stream: str, ts_ns: int, samples: np.ndarray, sample_rate: int, dtype: str = "int16"
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """PCM chunk -> (value, headers). ``samples`` is [n] or [n, channels], floats in [-1, 1] or int16."""
    if dtype not in AUDIO_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(AUDIO_DTYPES)}")
    array = np.asarray(samples)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError("samples must be [n] or [n, channels] with n > 0")
    if dtype == "int16":
        if array.dtype.kind == "f":
            array = np.clip(np.round(array * 32768.0), -32768, 32767)
        payload = array.astype("<i2").tobytes()
    else:
        if array.dtype == np.int16:
            array = array.astype(np.float32) / 32768.0
        payload = array.astype("<f4").tobytes()
    headers = [
        ("stream", stream.encode()),
        ("ts", str(format_timestamp_ms(ts_ns)).encode()),
        ("sample_rate", str(int(sample_rate)).encode()),
        ("channels", str(array.shape[1]).encode()),
        ("dtype", dtype.encode()),
    ]
    return payload, headers


# ---------------------------------------------------------------------------------------------------- dispatch
def decode(
    stream_class: str,
    value: bytes,
    headers: Headers | None = None,
    key: bytes | str | None = None,
    *,
    max_bytes: int | None = None,
    expected_sample_rate: int | None = None,
) -> list[SensorSample] | AudioChunk:
    """Decode a record of a known stream class (``sensor`` -> list of samples, ``audio`` -> one chunk)."""
    if stream_class == SENSOR:
        return decode_sensor(value, key, max_bytes=max_bytes)
    if stream_class == AUDIO:
        return decode_audio(value, headers, key, max_bytes=max_bytes, expected_sample_rate=expected_sample_rate)
    raise MessageError(UNKNOWN_STREAM_CLASS, f"{stream_class!r}; expected one of {STREAM_CLASSES}")


def stream_class_for_topic(topic: str, sensor_topic: str, audio_topic: str) -> str:
    """Which decoder a topic's records need; an unexpected topic is an error, not a guess."""
    if topic == sensor_topic:
        return SENSOR
    if topic == audio_topic:
        return AUDIO
    raise MessageError(UNKNOWN_STREAM_CLASS, f"topic {topic!r} is neither {sensor_topic!r} nor {audio_topic!r}")
