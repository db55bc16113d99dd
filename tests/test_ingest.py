"""ingest(): every unusable record becomes a dead letter with a reason; usable ones reach the processor."""
from __future__ import annotations

import numpy as np

from streamer.ingest import PROCESSING_ERROR, InputRecord, ingest
from streamer.messages import encode_audio, encode_sensor, stream_class_for_topic
from streamer.assemble import build_processor
from streamer.config import MonitorSettings

S = 10**9


def processor(tmp_path):
    return build_processor(MonitorSettings(model_dir=tmp_path), background=False)


def class_of(topic):
    return stream_class_for_topic(topic, "sensors", "audio")


def rec(topic, value, key=b"s", headers=None, offset=0):
    return InputRecord(topic, 0, offset, key, value, headers or [])


def test_good_records_are_processed(tmp_path):
    p = processor(tmp_path)
    for i in range(20):
        assert ingest(p, rec("sensors", encode_sensor("s", i * S, float(i)), offset=i), class_of) is None
    pcm, headers = encode_audio("m", 0, np.zeros(320, np.float32), 16000)
    assert ingest(p, rec("audio", pcm, b"m", headers), class_of) is None
    assert p.stats.samples == 20 + 320 and p.stats.rejected == 0


def test_reasons(tmp_path):
    p = processor(tmp_path)
    cases = [
        (rec("sensors", b"{oops"), "malformed_json"),
        (rec("sensors", b'{"stream": "s", "ts": 1}'), "missing_field"),
        (rec("sensors", b'{"stream": "s", "ts": 1, "value": Infinity}'), "non_finite"),
        (rec("sensors", encode_sensor("other", 0, 1.0)), "stream_mismatch"),
        (rec("elsewhere", encode_sensor("s", 0, 1.0)), "unknown_stream_class"),
        (rec("sensors", b"x" * 100), "too_large"),
    ]
    for record, reason in cases:
        letter = ingest(p, record, class_of, max_bytes=64)
        assert letter is not None and letter.reason == reason, (record.value, letter)
        assert letter.record is record  # the original bytes travel with the reason
    pcm, headers = encode_audio("m", 0, np.zeros(320, np.float32), 8000)
    letter = ingest(p, rec("audio", pcm, b"m", headers), class_of)
    assert letter.reason == "bad_sample_rate"
    # Issue 9 item 9: keyless records would spread one stream over partitions (and tombstones have no value)
    for value in (encode_sensor("s", 0, 1.0), None):
        letter = ingest(p, InputRecord("sensors", 0, 9, None, value, []), class_of)
        assert letter is not None and letter.reason == "missing_key"


def test_unexpected_errors_become_processing_error_dead_letters(tmp_path):
    p = processor(tmp_path)
    assert ingest(p, rec("sensors", encode_sensor("s", 0, 1.0)), class_of) is None
    p._streams[("sensor", "s")].segments = None  # a bug inside the processor, simulated by corrupt state
    letter = ingest(p, rec("sensors", encode_sensor("s", S, 1.0), offset=1), class_of)
    assert letter is not None and letter.reason == PROCESSING_ERROR and "AttributeError" in letter.detail


def test_samples_a_stream_could_not_score_leave_as_records_that_decode_as_they_came(tmp_path):
    """The processor hands back the samples of a batch whose scoring raised (StreamProcessor._fail); they leave as
    ``scoring_failed`` dead letters at the place of the record they came from, in the input's wire format, so that
    they can be read and replayed like any record (a dead letter of its own bytes would be unreadable)."""
    from streamer.ingest import unscored_letters
    from streamer.messages import decode_audio, decode_sensor
    from streamer.pipeline import FailedSamples

    p = processor(tmp_path)
    stamp = 1_700_000_000_123_000_000
    pcm = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    ts = stamp + np.arange(800) * S // 16000
    p._unscored = [
        FailedSamples("sensor", "s", "sensor", np.array([5 * S, 6 * S + 1]), np.array([1.5, -2.25]),
                      (("sensors", 3), 41), None, None, "RuntimeError: boom"),
        FailedSamples("audio", "m", "audio", ts, pcm.astype(np.float64), (("audio", 0), 7), stamp, 16000,
                      "ValueError: bad"),
        FailedSamples("sensor", "s", "sensor", np.array([7 * S]), np.array([3.0]), None, None, None, "E: x"),
    ]
    sensor, audio, restored = unscored_letters(p)
    assert unscored_letters(p) == []  # taken once
    assert (sensor.reason, sensor.record.topic, sensor.record.partition, sensor.record.offset) == (
        "scoring_failed", "sensors", 3, 41)
    assert [(x.ts_ns, x.value) for x in decode_sensor(sensor.record.value, sensor.record.key)] == [
        (5 * S, 1.5), (6 * S + 1, -2.25)]
    assert "2 sample(s) of sensor/s" in sensor.detail and "RuntimeError: boom" in sensor.detail
    chunk = decode_audio(audio.record.value, audio.record.headers, audio.record.key)
    assert (chunk.stream, chunk.ts_ns, chunk.sample_rate) == ("m", stamp, 16000)
    np.testing.assert_array_equal(chunk.samples, pcm)
    assert (audio.record.topic, audio.record.offset) == ("audio", 7)
    # samples of a training part a checkpoint saved have no record of their own
    assert (restored.record.topic, restored.record.partition, restored.record.offset) == ("", -1, -1)
    assert "training part at a checkpoint" in restored.detail and "E: x" in restored.detail  # the letter says why
    assert "training part at a checkpoint" not in sensor.detail


def test_an_audio_letter_keeps_int16_samples_as_int16_and_a_trimmed_chunk_at_its_first_kept_sample(tmp_path):
    """A chunk that overlapped samples already received lost them before it was stored (its segment keeps the
    chunk's own stamp for skipping re-reads): its letter went out at that stamp, every sample shifted back by the
    overlap. And int16 input re-encoded as float32 doubled in size (past the dead-letter topic's limit for the
    largest chunks)."""
    from streamer.ingest import unscored_letters
    from streamer.messages import decode_audio
    from streamer.pipeline import FailedSamples

    p = processor(tmp_path)
    stamp = 1_700_000_000_000_000_000
    ints = np.arange(-2000, 2000, dtype=np.int16)
    pcm = ints.astype(np.float32) / np.float32(32768.0)  # what the decoder makes of int16
    ts = stamp + (np.arange(4000) + 1000) * S // 16000  # the first 1,000 samples of the chunk were trimmed
    p._unscored = [FailedSamples("audio", "m", "audio", ts, pcm.astype(np.float64), (("audio", 0), 9), stamp, 16000,
                                 "E: x")]
    (letter,) = unscored_letters(p)
    headers = dict(letter.record.headers)
    assert headers["dtype"] == b"int16" and len(letter.record.value) == 2 * 4000
    chunk = decode_audio(letter.record.value, letter.record.headers, letter.record.key)
    assert abs(chunk.ts_ns - int(ts[0])) < 1_000_000  # at its first kept sample (to the wire's resolution)
    np.testing.assert_array_equal(chunk.samples, pcm)
