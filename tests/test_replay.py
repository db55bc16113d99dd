"""Replay: file readers, labels, planning/interleaving, pacing, and end-to-end through a real broker."""
from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka_read import read_topic
from scipy.io import wavfile
from typer.testing import CliRunner

from streamer.config import Settings
from streamer.kafka_io import make_consumer, make_producer
from streamer.messages import decode_audio, decode_sensor, parse_timestamp
from streamer.points import LABEL_WINDOW
from streamer.replay import (
    DEFAULT_START_NS, Pacer, ReplayError, columns_in_none, interleave, open_sources, plan, read_nab_csv,
    read_sensor_log, read_ucr_txt, read_wav, replay, replay_files, shared_streams,
)
from streamer.sinks.sqlite import SQLiteSink


def write_nab(root: Path, category: str = "realTest", name: str = "machine", rows: int = 30,
              windows: list[list[str]] | None = None) -> Path:
    """A tiny NAB-layout corpus: data/<category>/<name>.csv and labels/combined_windows.json."""
    data = root / "data" / category
    data.mkdir(parents=True)
    path = data / f"{name}.csv"
    lines = ["timestamp,value"] + [f"2015-01-01 00:{i:02d}:00,{i * 1.5}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(
        {f"{category}/{name}.csv": windows if windows is not None else
         [["2015-01-01 00:10:00.000000", "2015-01-01 00:14:00.000000"]]}))
    return path


# -------------------------------------------------------------------------------------------- readers
def test_nab_reader_values_times_stream_and_windows(tmp_path):
    path = write_nab(tmp_path)
    (source,) = open_sources(path)
    assert source.stream == "realTest/machine" and source.stream_class == "sensor"
    messages = list(source.messages())
    assert len(messages) == 30
    first = decode_sensor(messages[0].value, key=messages[0].stream.encode())
    assert first[0].ts_ns == parse_timestamp("2015-01-01T00:00:00Z") and first[0].value == 0.0
    assert decode_sensor(messages[7].value)[0].value == pytest.approx(10.5)
    (window,) = source.label_windows()
    assert (window.start_ns, window.end_ns) == (parse_timestamp("2015-01-01 00:10:00"),
                                                parse_timestamp("2015-01-01 00:14:00"))
    assert window.source == "nab:realTest/machine.csv"
    point = window.to_point()
    assert point.measurement == LABEL_WINDOW and point.tags == {"stream": "realTest/machine"}


def test_nab_reader_batches_samples(tmp_path):
    source = read_nab_csv(write_nab(tmp_path, rows=25), batch=10)
    messages = list(source.messages())
    assert [m.samples for m in messages] == [10, 10, 5]
    values = [s.value for m in messages for s in decode_sensor(m.value)]
    assert values == pytest.approx([i * 1.5 for i in range(25)])


@pytest.mark.parametrize("content,match", [
    ("time,val\n2015-01-01 00:00:00,1\n", "header"),
    ("timestamp,value\n2015-01-01 00:00:00,1\nnot-a-time,2\n", ":3"),
    ("timestamp,value\n2015-01-01 00:00:00,abc\n", ":2"),
    ("timestamp,value\n2015-01-01 00:00:00,nan\n", "not finite"),
    ("timestamp,value\n", "no samples"),
])
def test_nab_reader_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ReplayError, match=match):
        read_nab_csv(path)


def write_test_bed(root: Path, delimiter: str = ";") -> Path:
    """A pump test bed's log in SKAB's layout: ``<rig>/<run>.csv``, time first, sensors, 0/1 label columns."""
    path = root / "valve1" / "0.csv"
    path.parent.mkdir(parents=True)
    rows = [["datetime", "Current", "Pressure", "Dead", "anomaly", "changepoint"]]
    for i in range(12):
        current = "" if i == 3 else repr(0.5 + i / 10)  # one reading missing
        anomaly = "1.0" if i in (5, 6, 7, 10) else "0.0"
        rows.append([f"2020-03-09 10:14:{30 + i:02d}", current, repr(float(i * 2)), "", anomaly,
                     "1" if i == 5 else "0"])
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("delimiter", [";", ",", "\t"])
def test_sensor_csv_one_stream_per_column_missing_readings_and_label_columns(tmp_path, caplog, delimiter):
    path = write_test_bed(tmp_path, delimiter)
    with caplog.at_level("WARNING", logger="streamer.replay"):
        sources = open_sources(path, label_columns=["anomaly", "changepoint"])
    assert [s.stream for s in sources] == ["valve1/0/Current", "valve1/0/Pressure"]
    assert "'Dead' has no readings" in caplog.text  # a dead sensor is left out, not a failed replay
    current, pressure = sources
    t0 = parse_timestamp("2020-03-09T10:14:30Z")
    assert pressure.times_ns.tolist() == [t0 + i * 1_000_000_000 for i in range(12)]
    assert pressure.values.tolist() == [i * 2.0 for i in range(12)]
    assert current.times_ns.tolist() == [t for i, t in enumerate(pressure.times_ns.tolist()) if i != 3]
    assert current.values.tolist() == pytest.approx([0.5 + i / 10 for i in range(12) if i != 3])
    samples = [x for m in current.messages() for x in decode_sensor(m.value, key=m.stream.encode())]
    assert len(samples) == 11 and samples[0].stream == "valve1/0/Current"
    for source in sources:  # runs of rows flagged by either label column, on every stream of the file
        assert [(w.start_ns - t0, w.end_ns - t0) for w in source.label_windows()] == [
            (5_000_000_000, 7_000_000_000), (10_000_000_000, 10_000_000_000)]
        assert {w.source for w in source.label_windows()} == {"csv:valve1/0:anomaly,changepoint"}


def test_sensor_csv_column_choice_stream_prefix_and_time_order(tmp_path):
    path = tmp_path / "bed.csv"
    path.write_text("time\ta\tstate\tb\n1000\t1\tRUN\t2\n3000\t3\tRUN\t4\n2000\t5\tSTOP\t6\n")
    (b,) = open_sources(path, columns=["b"], stream="pump7")  # a text column is fine when not chosen
    assert b.stream == "pump7/b" and b.label_windows() == []
    assert b.times_ns.tolist() == [1_000_000_000, 2_000_000_000, 3_000_000_000]  # epoch ms, sorted by time
    assert b.values.tolist() == [2.0, 6.0, 4.0]
    with pytest.raises(ReplayError, match=r"'state'.*'RUN' is not a number \(leave such a column out, or name"):
        open_sources(path)
    assert [s.stream for s in open_sources(path, skip_columns=["state"])] == [f"{tmp_path.name}/bed/a",
                                                                               f"{tmp_path.name}/bed/b"]
    # a label or skipped column this file lacks is passed over (a folder's other files may have it; a name no file
    # has is refused by whoever reads the folder: columns_in_none)
    assert [s.stream for s in open_sources(path, skip_columns=["state", "mode"], stream="p")] == ["p/a", "p/b"]
    with pytest.raises(ReplayError, match=r"no column\(s\) \['c'\]; the value columns are \['a', 'state', 'b'\]"):
        open_sources(path, columns=["c"])
    with pytest.raises(ReplayError, match="both as a sensor and as a label"):
        open_sources(path, columns=["a"], label_columns=["a"])
    with pytest.raises(ReplayError, match="both as a sensor and as a column to skip"):
        open_sources(path, columns=["a"], skip_columns=["a"])
    assert len(open_sources(path, columns=["b", "b"])) == 1  # a column named twice is one stream, not two
    nab = write_nab(tmp_path / "nab")
    (value,) = open_sources(nab, columns=["value"])  # chosen columns read a NAB file as a log of sensors
    assert value.stream == "realTest/machine/value" and value.label_windows() == []


def test_a_log_without_the_label_columns_is_unlabelled_and_a_name_in_no_file_is_a_typo(tmp_path, caplog):
    """SKAB's folder holds ``anomaly-free/anomaly-free.csv`` without its ``anomaly`` and ``changepoint`` columns: with
    ``--label-column anomaly --skip-column changepoint`` for the folder, that log is read as unlabelled (a warning),
    not refused; a name that no file of the set has is the user's typo and is refused."""
    labelled = write_test_bed(tmp_path / "bed")
    free = tmp_path / "bed" / "anomaly-free" / "anomaly-free.csv"
    free.parent.mkdir(parents=True)
    free.write_text("datetime;Current;Pressure\n2020-03-09 10:00:00;0.5;1\n2020-03-09 10:00:01;0.6;2\n")
    with caplog.at_level("WARNING", logger="streamer.replay"):
        log = read_sensor_log(free, label_columns=["anomaly"], skip_columns=["changepoint"])
    assert not log.flagged.any() and [s.stream for s in log.sources] == [
        "anomaly-free/anomaly-free/Current", "anomaly-free/anomaly-free/Pressure"]
    assert all(s.label_windows() == [] for s in log.sources)
    assert "has no label column 'anomaly': its rows are read as unlabelled" in caplog.text
    assert read_sensor_log(labelled, label_columns=["anomaly"], skip_columns=["changepoint"]).flagged.any()
    assert columns_in_none([labelled, free], ["anomaly", "changepoint"]) == []
    assert columns_in_none([free], ["anomaly", "changepoint"]) == ["anomaly", "changepoint"]
    assert columns_in_none([labelled, free, tmp_path / "x.wav"], ["anomaly", "anomoly"]) == ["anomoly"]
    assert columns_in_none([tmp_path / "x.wav"], ["anomaly"]) == []  # no CSV: other readers refuse column options
    unreadable = tmp_path / "unreadable.csv"
    unreadable.write_bytes(b"\xff\xfe\x00")
    assert columns_in_none([unreadable], []) == []  # nothing asked: no header read
    # a file with only some of the label columns is labelled by those, and says which it lacks
    caplog.clear()
    with caplog.at_level("WARNING", logger="streamer.replay"):
        log = read_sensor_log(labelled, label_columns=["anomaly", "fault"])
    assert log.flagged.any() and "has no label column 'fault': its rows are labelled by 'anomaly' only" in caplog.text
    # a NAB file among the logs stays NAB's one stream with its own windows
    nab = write_nab(tmp_path / "nab")
    (source,) = open_sources(nab, label_columns=["anomaly"], skip_columns=["changepoint"])
    assert source.stream == "realTest/machine" and len(source.label_windows()) == 1


def test_a_folder_replays_every_file_a_reader_takes(tmp_path):
    """``scalowatch replay SKAB/data`` or ``nab/data``: the folder's readable files at any depth, in name order."""
    root = tmp_path / "skab"
    labelled = write_test_bed(root)
    (root / "other").mkdir()
    second = root / "other" / "11 (2).csv"
    second.write_text(labelled.read_text())
    (root / "README.md").write_text("not data")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "0-checkpoint.csv").write_text(labelled.read_text())
    (root / "README.txt").write_text("SKAB: a pump test bed\n")  # a .txt in a folder is a series only if UCR-named
    ucr = root / "001_UCR_Anomaly_DISTORTED1sddb40_35000_52000_52620.txt"
    ucr.write_text("1\n2\n")
    loose = tmp_path / "x.txt"
    assert replay_files([root, loose]) == [ucr, second, labelled, loose]  # a file is taken as given (checked later)
    assert replay_files([root / "valve1", labelled, root]) == [labelled, ucr, second]  # each file once
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ReplayError, match="a folder without .csv, .wav or UCR-named .txt"):
        replay_files([tmp_path / "empty"])
    # label and skipped columns mean nothing to a UCR file of the folder; sensor columns are refused there
    (series,) = open_sources(ucr, label_columns=["anomaly"], skip_columns=["changepoint"])
    assert series.stream_class == "sensor" and series.values.tolist() == [1.0, 2.0]
    with pytest.raises(ReplayError, match="sensor columns can be chosen in a CSV file only"):
        open_sources(ucr, columns=["Current"])


def test_files_that_would_merge_into_one_stream_are_found(tmp_path):
    """Two runs' ``pump/log.csv`` are both stream prefix ``pump/log``: the replay refuses unless --stream asks for
    one stream; a ``timestamp,value`` log outside NAB's layout stays a sensor log when label columns are named."""
    a, b = tmp_path / "a" / "pump" / "log.csv", tmp_path / "b" / "pump" / "log.csv"
    for path, gap in ((a, ""), (b, "1")):
        path.parent.mkdir(parents=True)
        path.write_text(f"timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,{gap}\n")
    sources = [s for p in (a, b) for s in open_sources(p, label_columns=["anomaly"])]
    assert [s.stream for s in sources] == ["pump/log/value", "pump/log/value"]  # sensor logs: a cell may be empty
    assert shared_streams(sources) == {"pump/log/value": [a, b]}
    from scalowatch.cli import app

    b.write_text("timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,2\n")
    a.write_text(b.read_text())
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap",
                                      "127.0.0.1:1", "--no-progress"])
    assert result.exit_code == 1 and "would be one stream 'pump/log'" in result.output, result.output


def test_sensor_csv_pump_layout_index_column_text_states_and_odd_cells(tmp_path, caplog):
    """A wide pump log as pandas writes it: an unnamed index column first, the time column second, empty and
    NaN-spelled cells, a text state column used as labels (NORMAL is normal, BROKEN / RECOVERING are not)."""
    path = tmp_path / "pump" / "sensor.csv.gz"
    path.parent.mkdir()
    lines = [",timestamp,sensor_00,sensor_01,machine_status,"]  # a trailing delimiter
    states = ["NORMAL", "NORMAL", "BROKEN", "RECOVERING", "NORMAL", "NORMAL"]
    cells = ["1.5", "-nan", "Nan", "", "2.5", "NULL"]
    for i, (state, cell) in enumerate(zip(states, cells)):
        lines.append(f"{i},2018-04-01 00:0{i}:00,{cell},{i},{state}")
    # a byte-order mark, blank lines before the header
    path.write_bytes(gzip.compress(("\ufeff\n\n" + "\n".join(lines) + "\n").encode()))
    s00, s01 = open_sources(path, label_columns=["machine_status"])
    assert (s00.stream, s01.stream) == ("pump/sensor/sensor_00", "pump/sensor/sensor_01")
    assert s00.values.tolist() == [1.5, 2.5] and s01.values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    t0 = parse_timestamp("2018-04-01T00:00:00Z")
    assert [(w.start_ns - t0, w.end_ns - t0) for w in s01.label_windows()] == [(120_000_000_000, 180_000_000_000)]
    with pytest.raises(ReplayError, match="'machine_status'.*'NORMAL' is not a number"):
        open_sources(path)
    epoch = tmp_path / "epoch.csv"
    epoch.write_text("time\tTemp, C\tFlow, l/min\n1583748873\t1\t2\n1583748874\t3\t4\n")  # commas in names
    with caplog.at_level("WARNING", logger="streamer.replay"):
        temp, flow = open_sources(epoch)
    assert (temp.stream.rsplit("/", 1)[1], flow.values.tolist()) == ("Temp, C", [2.0, 4.0])
    assert "starts in 1970-01-19" in caplog.text and "epoch seconds" in caplog.text
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ReplayError, match="cannot read"):
        open_sources(broken)


def test_nab_file_with_more_columns_bom_or_trailing_delimiters_is_still_one_stream(tmp_path, caplog):
    path = tmp_path / "data" / "realTest" / "extra.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\ufefftimestamp,value,anomaly_score,\n2015-01-01 00:00:00,1,0.5,\n2015-01-01 00:01:00,2,0.1\n")
    with caplog.at_level("WARNING", logger="streamer.replay"):
        (source,) = open_sources(path)
    assert source.stream == "realTest/extra" and source.values.tolist() == [1.0, 2.0]
    assert "['anomaly_score'] after timestamp,value are ignored" in caplog.text


@pytest.mark.parametrize("content,match", [
    ("time;a\n2020-01-01 00:00:00;1\n2020-01-01 00:00:01;inf\n", ":3: value 'inf' of column 'a' is not finite"),
    ("time;a;b\n2020-01-01 00:00:00;1\n", ":2: 2 field"),
    ("time;a\nyesterday;1\n", ":2: bad timestamp"),
    ("time;a;a\n2020-01-01 00:00:00;1;2\n", "unique"),
    ("time;a\n", "no samples"),
    ("time;a\n2020-01-01 00:00:00;\n", "has a reading"),
    ("", "empty file"),
])
def test_sensor_csv_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ReplayError, match=match):
        open_sources(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_ucr_reader_synthetic_clock_and_label_from_name(tmp_path, compressed):
    values = np.sin(np.arange(300) / 5)
    text = "\n".join(repr(float(v)) for v in values) + "\n"
    name = "042_UCR_Anomaly_TestSeries_100_150_160.txt"
    path = tmp_path / (name + (".gz" if compressed else ""))
    if compressed:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    source = read_ucr_txt(path, sample_period_ms=4.0, batch=100)
    assert source.stream == "042_UCR_Anomaly_TestSeries_100_150_160"
    samples = [s for m in source.messages() for s in decode_sensor(m.value)]
    assert [s.value for s in samples] == pytest.approx(values.tolist())
    assert samples[1].ts_ns - samples[0].ts_ns == 4_000_000 and samples[0].ts_ns == DEFAULT_START_NS
    (window,) = source.label_windows()
    assert window.start_ns == DEFAULT_START_NS + 150 * 4_000_000
    assert window.end_ns == DEFAULT_START_NS + 159 * 4_000_000
    assert window.source == "ucr:042_UCR_Anomaly_TestSeries_100_150_160"


def test_ucr_file_with_every_value_on_one_line(tmp_path):
    """Some of the archive's original files (204-208, 225, 226, 242, 243: not in the shared 49, so in a held-out set)
    hold all values on one line, separated by runs of spaces: the same series as one value per line."""
    values = np.sin(np.arange(50) / 3)
    one_line = tmp_path / "204_UCR_Anomaly_CHARISfive_10_20_30.txt"
    one_line.write_text("".join(f"  {v:.7e}" for v in values) + "\n")
    per_line = tmp_path / "per_line" / one_line.name
    per_line.parent.mkdir()
    per_line.write_text("".join(f"{v:.7e}\n" for v in values))
    np.testing.assert_array_equal(read_ucr_txt(one_line).values, read_ucr_txt(per_line).values)
    assert read_ucr_txt(one_line).values.size == 50 and len(read_ucr_txt(one_line).label_windows()) == 1


def test_ucr_reader_plain_name_has_no_label_and_bad_file_is_an_error(tmp_path):
    plain = tmp_path / "series.txt"
    plain.write_text("1\n2\n3\n")
    assert read_ucr_txt(plain).label_windows() == []
    broken = tmp_path / "broken.txt"
    broken.write_text("1\nx\n")
    with pytest.raises(ReplayError, match="broken.txt"):
        read_ucr_txt(broken)


def test_wav_reader_chunks_round_trip_with_downmix(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (rng.uniform(-0.5, 0.5, (1000, 2)) * 32767).astype(np.int16)
    path = tmp_path / "normal" / "clip.wav"
    path.parent.mkdir()
    wavfile.write(path, 8000, stereo)
    source = read_wav(path, chunk_samples=300)
    assert source.stream == "normal/clip" and source.stream_class == "audio"
    chunks = [decode_audio(m.value, m.headers, key=m.stream) for m in source.messages()]
    assert [len(c.samples) for c in chunks] == [300, 300, 300, 100]
    assert [c.ts_ns - DEFAULT_START_NS for c in chunks] == [0, 37_500_000, 75_000_000, 112_500_000]
    assert all(a.end_ns == b.ts_ns for a, b in zip(chunks, chunks[1:]))
    expected = stereo.astype(np.float32).mean(axis=1) / 32768
    np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), expected, atol=1e-6)


def test_eight_channel_extensible_wav_as_mimii_records_it(tmp_path):
    """MIMII's original clips are 8-microphone WAVE_FORMAT_EXTENSIBLE files (the shared set keeps channel 0 only): a
    held-out fan recorded that way replays whole, the monitor's downmix the mean of the eight, and the offline
    readers (``bench audio``, ``scalowatch score``) see the same samples."""
    import struct

    from benchmarks.audio import read_wav as bench_read_wav

    rng = np.random.default_rng(2)
    pcm = rng.normal(0, 3000, (2000, 8)).astype("<i2")
    fmt = (struct.pack("<HHIIHH", 0xFFFE, 8, 16000, 16000 * 16, 16, 16) + struct.pack("<HHI", 22, 16, 0xFF)
           + bytes.fromhex("0100000000001000800000aa00389b71"))  # KSDATAFORMAT_SUBTYPE_PCM
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", pcm.nbytes) + pcm.tobytes()
    path = tmp_path / "id_02" / "normal" / "00000000.wav"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    source = read_wav(path, chunk_samples=512)
    assert source.rate == 16000 and source.data.shape == (2000, 8) and source.dtype == "int16"
    streamed = np.concatenate([decode_audio(m.value, m.headers, key=m.stream).samples for m in source.messages()])
    expected = pcm.astype(np.float64).mean(axis=1) / 32768
    np.testing.assert_allclose(streamed, expected, atol=1e-6)
    signal, rate = bench_read_wav(path)
    assert rate == 16000
    np.testing.assert_allclose(signal, expected, atol=1e-6)


def test_unknown_or_missing_files(tmp_path):
    other = tmp_path / "x.parquet"
    other.write_bytes(b"x")
    with pytest.raises(ReplayError, match="unknown file type"):
        open_sources(other)
    with pytest.raises(ReplayError, match="no such file"):
        open_sources(tmp_path / "missing.csv")
    fake_wav = tmp_path / "fake.wav"
    fake_wav.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ReplayError, match="WAV"):
        open_sources(fake_wav)


# -------------------------------------------------------------------------------------------- planning
def _series(tmp_path: Path, name: str, n: int, period_ms: float, stream: str | None = None):
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(str(i) for i in range(n)))
    return read_ucr_txt(path, sample_period_ms=period_ms, stream=stream)


def test_interleave_orders_by_event_time_across_files(tmp_path):
    fast, slow = _series(tmp_path, "fast", 10, 1.0), _series(tmp_path, "slow", 4, 3.0)
    merged = list(interleave(plan([fast, slow])))
    times = [m.ts_ns for m in merged]
    assert times == sorted(times)
    assert [m.stream for m in merged][:3] == ["fast", "slow", "fast"]  # tie at t0 keeps the file order
    assert len(merged) == 14


def test_same_stream_files_play_back_to_back_and_rebase(tmp_path):
    first = _series(tmp_path, "a", 5, 2.0, stream="s")
    second = _series(tmp_path, "b", 3, 2.0, stream="s")
    plan([first, second], rebase_to_ns=5_000_000_000)
    times = [m.ts_ns for m in interleave([first, second])]
    assert times == [5_000_000_000 + i * 2_000_000 for i in range(8)]
    assert first.label_windows() == []


def test_rotated_logs_of_one_stream_play_in_time_order_not_name_order(tmp_path):
    """``replay logs/ --stream pump``: ``day10.csv`` sorts before ``day2.csv`` by name but follows it in time."""
    day2 = write_nab(tmp_path / "x", name="day2", rows=3)
    day10 = tmp_path / "x" / "data" / "realTest" / "day10.csv"
    day10.write_text("timestamp,value\n2015-01-02 00:00:00,7\n2015-01-02 00:01:00,8\n")
    sources = [read_nab_csv(p, stream="pump", windows_file=None) for p in sorted([day2, day10])]
    assert [s.path.name for s in sources] == ["day10.csv", "day2.csv"]
    values = [decode_sensor(m.value)[0].value for m in interleave(plan(sources))]
    assert values == [0.0, 1.5, 3.0, 7.0, 8.0]  # day2's three samples, then day10's


def test_pacer_sleeps_by_event_time_over_speed():
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    pacer = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    for ts_s in (0, 1, 2, 2, 5):
        pacer.wait_for(ts_s * 1_000_000_000)
    assert sleeps == pytest.approx([0.1, 0.1, 0.3])
    unpaced = Pacer(0.0, clock=lambda: now[0], sleep=sleep)
    unpaced.wait_for(0)
    unpaced.wait_for(10**12)
    assert len(sleeps) == 3
    with pytest.raises(ValueError):
        Pacer(-1)


def test_shared_nab_file_finds_official_windows(shared_data):
    (source,) = open_sources(shared_data / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv")
    assert source.stream == "realKnownCause/nyc_taxi"
    assert source.message_count() == 10320
    assert len(source.label_windows()) == 5


def test_shared_ucr_and_mimii_files(shared_data):
    (ucr,) = open_sources(shared_data / "ucr" / "006_UCR_Anomaly_DISTORTEDCIMIS44AirTemperature2_4000_5703_5727.txt",
                      sample_period_ms=60_000.0, batch=100)
    (window,) = ucr.label_windows()
    assert window.start_ns == DEFAULT_START_NS + 5703 * 60_000_000_000
    assert window.end_ns == DEFAULT_START_NS + 5726 * 60_000_000_000
    (wav,) = open_sources(shared_data / "audio" / "mimii_fan_id00" / "abnormal" / "00000000.wav", chunk_samples=16_000)
    assert (wav.stream, wav.rate, wav.message_count()) == ("abnormal/00000000", 16_000, 10)
    first = next(wav.messages())
    assert decode_audio(first.value, first.headers, expected_sample_rate=16_000).samples.shape == (16_000,)


# -------------------------------------------------------------------------------------------- end to end
def _consume(settings: Settings, topic: str, expected: int) -> list:
    return read_topic(make_consumer(settings, group_id=None), topic, expected)


@pytest.mark.integration
def test_replay_nab_and_wav_into_broker_and_read_back(kafka_broker, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(kafka={"bootstrap_servers": kafka_broker, "sensor_topic": f"sensors-{suffix}",
                               "audio_topic": f"audio-{suffix}"})
    (nab,) = open_sources(write_nab(tmp_path / "nab", rows=40))
    wav_path = tmp_path / "fan.wav"
    wavfile.write(wav_path, 16000, (np.sin(np.arange(5000) / 7) * 8000).astype(np.int16))
    (wav,) = open_sources(wav_path, chunk_samples=1024)
    sink = SQLiteSink(tmp_path / "store.sqlite")
    producer = make_producer(settings)
    stats = replay([nab, wav], producer, sensor_topic=settings.kafka.sensor_topic,
                   audio_topic=settings.kafka.audio_topic, sink=sink, progress=False)
    producer.close()
    assert (stats.records, stats.samples, stats.label_windows) == (45, 5040, 1)

    records = _consume(settings, settings.kafka.sensor_topic, 40)
    assert {r.key for r in records} == {b"realTest/machine"}
    assert len({r.partition for r in records}) == 1  # one key -> one partition -> order kept
    samples = [s for r in records for s in decode_sensor(r.value, key=r.key)]
    assert [s.value for s in samples] == pytest.approx([i * 1.5 for i in range(40)])
    assert [s.ts_ns for s in samples] == nab.times_ns.tolist()

    chunks = [decode_audio(r.value, r.headers, key=r.key) for r in _consume(settings, settings.kafka.audio_topic, 5)]
    assert sum(len(c.samples) for c in chunks) == 5000
    assert [p.fields["source"] for p in sink.read(LABEL_WINDOW)] == ["nab:realTest/machine.csv"]
    sink.close()


@pytest.mark.integration
def test_replay_command_with_rebase_and_labels_to_sqlite(kafka_broker, tmp_path, monkeypatch):
    from scalowatch.cli import app

    for name in ("SCALOWATCH_CONFIG", "SCALOWATCH_STORE__KIND"):
        monkeypatch.delenv(name, raising=False)
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    path = write_nab(tmp_path / "nab", rows=12)
    store = tmp_path / "labels.sqlite"
    before_ns = __import__("time").time_ns()
    result = CliRunner().invoke(app, [
        "replay", str(path), "--bootstrap", kafka_broker, "--topic", topic, "--rebase", "--batch", "5",
        "--labels-to-store", "--store", "sqlite", "--sqlite-path", str(store), "--no-progress", "--partitions", "2"])
    assert result.exit_code == 0, result.output
    assert "replayed 3 records (12 samples)" in result.output
    settings = Settings(kafka={"bootstrap_servers": kafka_broker})
    samples = [s for r in _consume(settings, topic, 3) for s in decode_sensor(r.value)]
    assert len(samples) == 12
    assert samples[0].ts_ns >= before_ns  # rebased to "now"
    assert samples[1].ts_ns - samples[0].ts_ns == 60_000_000_000  # spacing kept
    (label,) = SQLiteSink(store).read(LABEL_WINDOW)
    assert label.time_ns == samples[10].ts_ns  # the window moved with the data


def test_replay_command_reports_bad_file(tmp_path):
    from scalowatch.cli import app

    bad = tmp_path / "bad.csv"
    bad.write_text("nope\n")
    result = CliRunner().invoke(app, ["replay", str(bad), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "header" in result.output
    result = CliRunner().invoke(app, ["replay", str(bad), "--store", "postgres", "--labels-to-store"])
    assert result.exit_code == 1
    assert "--store must be influx or sqlite" in result.output


@pytest.mark.integration
def test_replay_command_sends_a_test_bed_csv_as_one_stream_per_sensor(kafka_broker, tmp_path, monkeypatch):
    from scalowatch.cli import app

    for name in ("SCALOWATCH_CONFIG", "SCALOWATCH_STORE__KIND"):
        monkeypatch.delenv(name, raising=False)
    topic = f"bed-{uuid.uuid4().hex[:8]}"
    path = write_test_bed(tmp_path / "skab")
    store = tmp_path / "labels.sqlite"
    assert path.parent.parent == tmp_path / "skab"
    result = CliRunner().invoke(app, [  # the rig's folder: its one log
        "replay", str(tmp_path / "skab"), "--bootstrap", kafka_broker, "--topic", topic, "--batch", "4",
        "--label-column", "anomaly", "--label-column", "changepoint", "--labels-to-store", "--store", "sqlite",
        "--sqlite-path", str(store), "--no-progress", "--partitions", "2"])
    assert result.exit_code == 0, result.output
    assert "replayed 6 records (23 samples) of 2 stream(s)" in result.output  # 11 + 12 readings, 4 a record
    settings = Settings(kafka={"bootstrap_servers": kafka_broker})
    by_stream: dict[str, list] = {}
    for r in _consume(settings, topic, 6):
        for s in decode_sensor(r.value, key=r.key):
            by_stream.setdefault(s.stream, []).append(s.value)
    assert by_stream["valve1/0/Pressure"] == [i * 2.0 for i in range(12)]
    assert by_stream["valve1/0/Current"] == pytest.approx([0.5 + i / 10 for i in range(12) if i != 3])
    labels = SQLiteSink(store).read(LABEL_WINDOW)
    assert sorted(p.tags["stream"] for p in labels) == ["valve1/0/Current"] * 2 + ["valve1/0/Pressure"] * 2


def test_replay_command_refuses_bad_column_choices_before_connecting(tmp_path):
    """Column options are checked when the files are read, before any broker is contacted (none runs here)."""
    from scalowatch.cli import app

    path = write_test_bed(tmp_path)
    for extra, message in ((["--column", "Flow"], "no column(s) ['Flow']"),
                           (["--label-column", "status"], "no file has the column(s) ['status']"),
                           (["--skip-column", "Mode"], "no file has the column(s) ['Mode']"),
                           (["--column", "Current", "--skip-column", "Current"], "as a column to skip")):
        result = CliRunner().invoke(app, ["replay", str(path), "--bootstrap", "127.0.0.1:1", "--no-progress",
                                          *extra])
        assert result.exit_code == 1 and message in result.output, result.output


def test_upper_case_ucr_names_are_series_too(tmp_path):
    """A UCR copy from a case-insensitive file system (``…_52620.TXT``, ``….TXT.GZ``): the folder replay, the reader
    and ``bench ucr``'s file finder take it like the lower-case name (it was left out of a folder replay, and a
    gzipped one was read as text)."""
    import gzip

    from benchmarks.ucr import find_ucr_files

    plain = tmp_path / "001_UCR_Anomaly_Small_1_1_2.TXT"
    plain.write_text("1\n2\n3\n")
    packed = tmp_path / "002_UCR_Anomaly_Other_10_20_30.TXT.GZ"
    with gzip.open(packed, "wt") as f:
        f.write("4\n5\n")
    assert replay_files([tmp_path]) == [plain, packed]
    assert find_ucr_files(tmp_path) == [plain, packed]
    (first,) = open_sources(plain)
    (second,) = open_sources(packed)
    assert first.stream == "001_UCR_Anomaly_Small_1_1_2"
    assert first.values.tolist() == [1.0, 2.0, 3.0] and second.values.tolist() == [4.0, 5.0]
    assert len(first.label_ranges) == 1 and second.label_ranges == []  # the name's labels (30 > 2 samples: none)
