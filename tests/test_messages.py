"""Wire formats: round trips through the encoders, and a clear MessageError for every kind of bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from streamer import messages as m
from streamer.messages import (
    AudioChunk, MessageError, SensorSample, decode, decode_audio, decode_sensor, encode_audio, encode_sensor,
    encode_sensor_batch, format_timestamp_ms, parse_timestamp, stream_class_for_topic,
)

T0_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


# ------------------------------------------------------------------------------------------------ timestamps
@pytest.mark.parametrize("raw,expected", [
    (1_700_000_000_000, T0_NS),
    (1_700_000_000_000.25, T0_NS + 250_000),
    ("1700000000000", T0_NS),
    ("1700000000000.123456", T0_NS + 123_456),
    ("2023-11-14T22:13:20Z", T0_NS),
    ("2023-11-14T22:13:20.123456789Z", T0_NS + 123_456_789),
    ("2023-11-14 22:13:20", T0_NS),  # NAB style, no offset -> UTC
    ("2023-11-14T23:13:20+01:00", T0_NS),
    ("2023-11-14T22:13:20,5Z", T0_NS + 500_000_000),
])
def test_parse_timestamp_forms(raw, expected):
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize("raw", [None, True, "yesterday", "2023-13-01T00:00:00Z", -5, float("nan"),
                                 float("inf"), "2023-11-14T22:13:20.1234567891Z", 10**20, [1], {"ms": 1}, ""])
def test_parse_timestamp_rejects(raw):
    with pytest.raises(MessageError) as err:
        parse_timestamp(raw)
    assert err.value.reason == m.BAD_TIMESTAMP


@pytest.mark.parametrize("ts_ns", [0, T0_NS, T0_NS + 1, T0_NS + 123_456_789, T0_NS + 999_999])
def test_wire_timestamp_round_trips_exactly(ts_ns):
    assert parse_timestamp(format_timestamp_ms(ts_ns)) == ts_ns
    assert parse_timestamp(json.loads(json.dumps(format_timestamp_ms(ts_ns)))) == ts_ns


# ------------------------------------------------------------------------------------------------ sensor
def test_sensor_single_and_batch_round_trip():
    assert decode_sensor(encode_sensor("pump-1", T0_NS + 5, 3.25), key=b"pump-1") == [
        SensorSample("pump-1", T0_NS + 5, 3.25)]
    pairs = [(T0_NS + i * 1_000_000, float(i) / 3) for i in range(50)]
    decoded = decode_sensor(encode_sensor_batch("pump-1", pairs))
    assert [(s.ts_ns, s.value) for s in decoded] == pairs
    assert {s.stream for s in decoded} == {"pump-1"}


def test_sensor_accepts_object_samples_iso_and_ints():
    raw = json.dumps({"stream": "s", "samples": [{"ts": "2023-11-14T22:13:20Z", "value": 1},
                                                 [1_700_000_000_001, -2.5]]}).encode()
    assert decode_sensor(raw) == [SensorSample("s", T0_NS, 1.0), SensorSample("s", T0_NS + 1_000_000, -2.5)]


@pytest.mark.parametrize("raw,reason", [
    (b"", m.MALFORMED_JSON),
    (b"{not json", m.MALFORMED_JSON),
    (b"\xff\xfe\x00", m.MALFORMED_JSON),
    (b"[1, 2]", m.BAD_TYPE),
    (b'"text"', m.BAD_TYPE),
    (b'{"ts": 1, "value": 1}', m.MISSING_FIELD),
    (b'{"stream": "s", "value": 1}', m.MISSING_FIELD),
    (b'{"stream": "s", "ts": 1}', m.MISSING_FIELD),
    (b'{"stream": "s", "ts": 1, "value": null}', m.MISSING_FIELD),
    (b'{"stream": "s", "ts": 1, "value": "1.5"}', m.BAD_TYPE),
    (b'{"stream": "s", "ts": 1, "value": true}', m.BAD_TYPE),
    (b'{"stream": "s", "ts": 1, "value": NaN}', m.NON_FINITE),
    (b'{"stream": "s", "ts": 1, "value": Infinity}', m.NON_FINITE),
    (b'{"stream": "s", "ts": 1, "value": -Infinity}', m.NON_FINITE),
    (b'{"stream": "s", "ts": 1, "value": 1e400}', m.NON_FINITE),
    (b'{"stream": "s", "ts": 1, "value": ' + b"9" * 400 + b"}", m.NON_FINITE),
    (b'{"stream": "s", "ts": 1, "value": 1e200}', m.NON_FINITE),  # finite, beyond what the model computes in
    (b'{"stream": "s", "ts": 1, "value": -3.5e38}', m.NON_FINITE),
    (b'{"stream": "s", "ts": "soon", "value": 1}', m.BAD_TIMESTAMP),
    (b'{"stream": "s", "ts": -1, "value": 1}', m.BAD_TIMESTAMP),
    (b'{"stream": 5, "ts": 1, "value": 1}', m.BAD_TYPE),
    (b'{"stream": "", "ts": 1, "value": 1}', m.BAD_STREAM),
    (b'{"stream": "a\\nb", "ts": 1, "value": 1}', m.BAD_STREAM),
    (json.dumps({"stream": "x" * 300, "ts": 1, "value": 1}).encode(), m.BAD_STREAM),
    (b'{"stream": "s", "samples": []}', m.EMPTY),
    (b'{"stream": "s", "samples": {"ts": 1}}', m.BAD_TYPE),
    (b'{"stream": "s", "samples": [[1, 2], [3]]}', m.BAD_TYPE),
    (b'{"stream": "s", "samples": [[1, 2], [3, NaN]]}', m.NON_FINITE),
    (b'{"stream": "s", "samples": [[1, 2], {"ts": 3}]}', m.MISSING_FIELD),
    (b"[" * 100_000 + b"]" * 100_000, m.MALFORMED_JSON),
])
def test_sensor_bad_inputs(raw, reason):
    with pytest.raises(MessageError) as err:
        decode_sensor(raw)
    assert err.value.reason == reason
    assert err.value.reason in str(err.value)


def test_the_largest_float32_values_are_accepted():
    assert [s.value for s in decode_sensor(b'{"stream": "s", "samples": [[1, 3.4e38], [2, -3.4e38]]}')] == [
        3.4e38, -3.4e38]


def test_sensor_error_names_the_bad_sample():
    with pytest.raises(MessageError, match=r"samples\[1\]"):
        decode_sensor(b'{"stream": "s", "samples": [[1, 2], [3, "x"]]}')


def test_sensor_key_must_match_stream_and_size_limit_applies_first():
    raw = encode_sensor("pump-1", T0_NS, 1.0)
    with pytest.raises(MessageError) as err:
        decode_sensor(raw, key=b"pump-2")
    assert err.value.reason == m.STREAM_MISMATCH
    with pytest.raises(MessageError) as err:
        decode_sensor(b"{" + b" " * 2000, max_bytes=1000)  # too large wins over malformed: nothing is parsed
    assert err.value.reason == m.TOO_LARGE
    assert decode_sensor(raw, max_bytes=len(raw))[0].value == 1.0
    with pytest.raises(MessageError) as err:
        decode_sensor(None)
    assert err.value.reason == m.EMPTY


# ------------------------------------------------------------------------------------------------ audio
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_audio_round_trip_mono(dtype):
    rng = np.random.default_rng(0)
    samples = (rng.uniform(-0.9, 0.9, 1000)).astype(np.float32)
    value, headers = encode_audio("fan-3", T0_NS + 250_000, samples, 16_000, dtype=dtype)
    chunk = decode_audio(value, headers, key="fan-3", expected_sample_rate=16_000)
    assert isinstance(chunk, AudioChunk)
    assert (chunk.stream, chunk.ts_ns, chunk.sample_rate) == ("fan-3", T0_NS + 250_000, 16_000)
    assert chunk.samples.dtype == np.float32 and chunk.samples.shape == (1000,)
    tolerance = 1 / 32768 if dtype == "int16" else 0
    np.testing.assert_allclose(chunk.samples, samples, atol=tolerance)
    assert chunk.end_ns == T0_NS + 250_000 + 1000 * 62_500


def test_audio_int16_scaling_and_stereo_downmix():
    stereo = np.array([[16384, -16384], [32767, 32767], [-32768, 0]], dtype=np.int16)
    value, headers = encode_audio("s", T0_NS, stereo, 8_000)
    assert dict(headers)["channels"] == b"2"
    chunk = decode_audio(value, headers)
    np.testing.assert_allclose(chunk.samples, [0.0, 32767 / 32768, -0.5])


def test_audio_headers_as_mapping_of_strings():
    value = np.array([0.5, -0.5], dtype="<f4").tobytes()
    chunk = decode_audio(value, {"stream": "s", "ts": "2023-11-14T22:13:20Z", "sample_rate": "48000",
                                 "channels": "1", "dtype": "float32"})
    assert chunk.ts_ns == T0_NS and chunk.sample_rate == 48_000
    np.testing.assert_array_equal(chunk.samples, [0.5, -0.5])


def _headers(**overrides):
    base = {"stream": "s", "ts": "1700000000000", "sample_rate": "16000", "channels": "1", "dtype": "int16"}
    base.update(overrides)
    return [(k, v.encode()) for k, v in base.items() if v is not None]


@pytest.mark.parametrize("value,headers,reason", [
    (b"\x00\x00" * 4, _headers(stream=None), m.MISSING_FIELD),
    (b"\x00\x00" * 4, _headers(ts=None), m.MISSING_FIELD),
    (b"\x00\x00" * 4, _headers(sample_rate=None), m.MISSING_FIELD),
    (b"\x00\x00" * 4, _headers(channels=None), m.MISSING_FIELD),
    (b"\x00\x00" * 4, _headers(dtype=None), m.MISSING_FIELD),
    (b"\x00\x00" * 4, _headers(dtype="int24"), m.BAD_DTYPE),
    (b"\x00\x00" * 4, _headers(dtype="float64"), m.BAD_DTYPE),
    (b"\x00\x00" * 4, _headers(sample_rate="0"), m.BAD_SAMPLE_RATE),
    (b"\x00\x00" * 4, _headers(sample_rate="-16000"), m.BAD_SAMPLE_RATE),
    (b"\x00\x00" * 4, _headers(sample_rate="16k"), m.BAD_SAMPLE_RATE),
    (b"\x00\x00" * 4, _headers(sample_rate="9999999"), m.BAD_SAMPLE_RATE),
    (b"\x00\x00" * 4, _headers(channels="0"), m.BAD_CHANNELS),
    (b"\x00\x00" * 4, _headers(channels="two"), m.BAD_CHANNELS),
    (b"\x00\x00" * 4, _headers(ts="later"), m.BAD_TIMESTAMP),
    (b"\x00\x00" * 4, _headers(stream=""), m.BAD_STREAM),
    (b"", _headers(), m.EMPTY),
    (b"\x00\x00\x00", _headers(), m.BAD_LENGTH),  # odd byte count for int16
    (b"\x00\x00" * 3, _headers(channels="2"), m.BAD_LENGTH),  # not whole frames
    (b"\x00" * 6, _headers(dtype="float32"), m.BAD_LENGTH),
    (np.array([1.0, np.nan], "<f4").tobytes(), _headers(dtype="float32"), m.NON_FINITE),
    (np.array([np.inf, 0], "<f4").tobytes(), _headers(dtype="float32"), m.NON_FINITE),
    (b"\x00\x00" * 4, [("stream", b"\xff\xfe")] + _headers(stream=None), m.BAD_TYPE),
])
def test_audio_bad_inputs(value, headers, reason):
    with pytest.raises(MessageError) as err:
        decode_audio(value, headers)
    assert err.value.reason == reason


def test_audio_expected_rate_key_and_size_limit():
    value, headers = encode_audio("s", T0_NS, np.zeros(100, np.float32), 44_100)
    with pytest.raises(MessageError) as err:
        decode_audio(value, headers, expected_sample_rate=16_000)
    assert err.value.reason == m.BAD_SAMPLE_RATE and "44100" in err.value.detail
    with pytest.raises(MessageError) as err:
        decode_audio(value, headers, key=b"other")
    assert err.value.reason == m.STREAM_MISMATCH
    with pytest.raises(MessageError) as err:
        decode_audio(value, headers, max_bytes=len(value) - 1)
    assert err.value.reason == m.TOO_LARGE


# ------------------------------------------------------------------------------------------------ dispatch
def test_decode_dispatch_and_unknown_class():
    assert decode("sensor", encode_sensor("a", T0_NS, 1.0))[0].value == 1.0
    value, headers = encode_audio("b", T0_NS, np.zeros(4, np.float32), 16_000)
    assert decode("audio", value, headers).samples.shape == (4,)
    with pytest.raises(MessageError) as err:
        decode("vibration", b"{}")
    assert err.value.reason == m.UNKNOWN_STREAM_CLASS
    assert stream_class_for_topic("t.audio", "t.sensors", "t.audio") == "audio"
    with pytest.raises(MessageError) as err:
        stream_class_for_topic("t.other", "t.sensors", "t.audio")
    assert err.value.reason == m.UNKNOWN_STREAM_CLASS


def test_encoders_refuse_what_decoders_would_reject():
    with pytest.raises(ValueError):
        encode_sensor("a", T0_NS, float("nan"))
    with pytest.raises(ValueError):
        encode_sensor_batch("a", [])
    with pytest.raises(ValueError):
        encode_audio("a", T0_NS, np.zeros(0), 16_000)
    with pytest.raises(ValueError):
        encode_audio("a", T0_NS, np.zeros(4), 16_000, dtype="int8")


@pytest.mark.parametrize("ts", [1e308, -1e308, "9" * 4300, 1.7e16])
def test_absurd_timestamps_are_bad_timestamp_not_a_processing_error(ts):
    """Issue 9 item 5: these escaped the decoder as processing_error with a traceback per record."""
    import json

    from streamer.messages import decode_sensor

    value = json.dumps({"stream": "s", "ts": ts, "value": 1.0}).encode()
    with pytest.raises(MessageError) as info:
        decode_sensor(value)
    assert info.value.reason == "bad_timestamp"
