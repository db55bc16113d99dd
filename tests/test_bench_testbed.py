"""`bench testbed`: a test bed's logs, one stream per sensor, the rig judged by its highest sensor; the monitor's
path gives the detector's rows; the metrics are what they say."""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.testbed import BedLog, RigScores, load_testbed_file, metrics
from scalowatch.cli import app
from testbed_data import SENSORS, make_testbed

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest

RUNNER = CliRunner()
FAST = "scalowatch:steps=3,max_train_windows=32"
LABEL = "scalowatch_steps-3_max_train_windows-32"


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_a_log_is_one_stream_per_sensor_with_row_labels_and_a_training_part_before_them(tmp_path):
    root = make_testbed(tmp_path / "bed", runs=1, rows=900, fault=(600, 680))
    f = load_testbed_file(root / "valve1" / "0.csv", root, ["anomaly", "changepoint"])
    assert [s.stream for s in f.sensors] == [f"valve1/0/{name}" for name in SENSORS]
    assert f.times_ns.size == 900 and f.flagged.sum() == 80 and np.flatnonzero(f.flagged)[0] == 600
    assert f.train_rows == 135  # NAB's probation, 0.15 n
    early = load_testbed_file(make_testbed(tmp_path / "early", runs=1, rows=900, fault=(100, 150)) / "valve1" /
                              "0.csv", tmp_path / "early", ["anomaly"])
    assert early.train_rows == 100  # never past the first labelled row


def test_metrics_of_a_hand_built_rig():
    times = np.arange(20, dtype=np.int64)
    flagged = np.zeros(20, dtype=bool)
    flagged[8:12] = True   # run 1: rows 8-11
    flagged[15:17] = True  # run 2: rows 15-16, never alerted
    f = BedLog("x", Path("x.csv"), times, flagged, [], train_rows=4)
    alerts = np.zeros(20, dtype=bool)
    alerts[10:13] = True   # rows 10, 11 hit run 1 two rows late; row 12 is a false row of the same alert run
    alerts[5] = True       # a false alert run
    scores = flagged.astype(float) * 0.9 + alerts * 0.05
    m = metrics([f], [RigScores(scores, alerts)])
    assert (m.rows, m.events, m.false_alert_runs) == (16, 2, 1)
    assert m.precision == pytest.approx(2 / 4) and m.recall == pytest.approx(2 / 6)
    assert m.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert m.far == pytest.approx(2 / 10) and m.mar == pytest.approx(4 / 6)
    assert m.event_recall == 0.5 and m.mean_delay_rows == 2.0
    assert m.roc_auc == pytest.approx(1.0)


def test_via_monitor_gives_the_detectors_rows_and_alerts(tmp_path):
    root = make_testbed(tmp_path / "bed", runs=2, rows=700, fault=(500, 560))
    runs = {}
    for via in ("detector", "monitor"):
        out = tmp_path / via
        res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly",
                                  "--skip-column", "changepoint", "--out", str(out), "--scorer", FAST, "--via", via,
                                  "--no-progress"])
        assert res.exit_code == 0, res.output
        runs[via] = out
    for name in ("0", "1"):
        det, mon = (_rows(runs[via] / LABEL / "valve1" / f"{name}.csv") for via in ("detector", "monitor"))
        assert [r["time"] for r in det] == [r["time"] for r in mon] and len(det) == 700
        np.testing.assert_allclose([float(r["score"]) for r in mon], [float(r["score"]) for r in det], atol=1e-9)
        assert [r["alert"] for r in mon] == [r["alert"] for r in det]
        assert sum(int(r["label"]) for r in det) == 60 and sum(int(r["in_training"]) for r in det) == 105
    reports = {via: json.loads((runs[via] / "testbed.json").read_text()) for via in runs}
    assert reports["monitor"]["metrics"] == reports["detector"]["metrics"]
    assert reports["detector"]["files"][0]["sensors"] == [f"valve1/0/{s}" for s in SENSORS]


def test_ablate_and_baselines_from_one_command(tmp_path):
    root = make_testbed(tmp_path / "bed", runs=1, rows=600, fault=(400, 460))
    out = tmp_path / "abl"
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly",
                              "--skip-column", "changepoint", "--out", str(out), "--scorer", FAST, "--ablate",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "testbed.json").read_text())
    assert set(report["metrics"]) == {"product", "without_diffusion", "diffusion_only"}
    plain = tmp_path / "plain"
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly",
                              "--skip-column", "changepoint", "--out", str(plain), "--scorer", FAST, "--scorer",
                              "windowed_gaussian", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert _rows(out / "product" / "valve1" / "0.csv") == _rows(plain / LABEL / "valve1" / "0.csv")
    baseline = json.loads((plain / "testbed.json").read_text())["metrics"]["windowed_gaussian"]
    assert baseline["events"] == 1 and baseline["rows"] == 510
    assert (plain / "plots" / "testbed.png").is_file() and (plain / "plots" / "rig_valve1_0.png").is_file()


def test_clear_errors(tmp_path):
    root = make_testbed(tmp_path / "bed", runs=1, rows=300, fault=(20, 40))
    base = ["bench", "testbed", "--data", str(root), "--out", str(tmp_path / "o"), "--no-progress"]
    res = RUNNER.invoke(app, [*base, "--label-column", "fault"])
    assert res.exit_code == 2 and "has the column(s) ['fault']" in res.output
    res = RUNNER.invoke(app, [*base, "--label-column", "anomaly", "--scorer", FAST])
    assert res.exit_code == 2 and "training part under 48 readings" in res.output
    assert "valve1/0/Current (20)" in res.output
    res = RUNNER.invoke(app, [*base, "--label-column", "anomaly", "--scorer", "windowed_gaussian", "--ablate"])
    assert res.exit_code == 2 and "product detector only" in res.output
    res = RUNNER.invoke(app, [*base, "--label-column", "anomaly", "--scorer", FAST, "--ablate", "--via", "monitor"])
    assert res.exit_code == 2 and "--ablate needs --via detector" in res.output
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(tmp_path / "none"), "--label-column", "a"])
    assert res.exit_code == 2 and "not a folder" in res.output


def _log(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["time;A;B;anomaly", *rows]) + "\n")
    return path


def _stamp(i: int) -> str:
    return f"2020-03-09 10:{i // 60:02d}:{i % 60:02d}"


def test_rows_without_readings_count_and_odd_logs_are_refused_or_left_out(tmp_path, caplog):
    rows = [f"{_stamp(i)};{i % 7};{i % 5};0" for i in range(400)]
    rows[80] = f"{_stamp(80)};;;1"  # a labelled row where no sensor reports: it counts, and training stops there
    root = tmp_path / "bed"
    f = load_testbed_file(_log(root / "a" / "x.csv", rows), root, ["anomaly"])
    assert (f.times_ns.size, int(f.flagged.sum()), f.train_rows) == (400, 1, 60)  # probation of 400 rows is 60
    assert [s.values.size for s in f.sensors] == [399, 399]
    na = load_testbed_file(_log(root / "b" / "na.csv", [r.replace(";0", ";NA") for r in rows]), root, ["anomaly"])
    assert int(na.flagged.sum()) == 1  # NA, null, NaN and empty cells are no label
    quiet = [f"{_stamp(i)};{i % 7};{i % 5 if i < 50 else ''};0" for i in range(400)]
    with caplog.at_level("WARNING", logger="benchmarks.testbed"):
        q = load_testbed_file(_log(root / "c" / "quiet.csv", quiet), root, ["anomaly"])
    assert [s.stream for s in q.sensors] == ["c/quiet/A"] and "c/quiet/B has no reading after" in caplog.text

    twins = tmp_path / "twins"
    _log(twins / "x.csv", rows)
    (twins / "x.csv.gz").write_bytes(gzip.compress((twins / "x.csv").read_bytes()))
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(twins), "--label-column", "anomaly", "--out",
                              str(tmp_path / "o"), "--scorer", "windowed_gaussian", "--no-progress"])
    assert res.exit_code == 2 and "would share the stream names x/" in res.output

    late = [f"{_stamp(i)};{i % 7};{i % 5 if i >= 30 else ''};{int(200 <= i < 220)}" for i in range(400)]
    for via, scorer in (("detector", "windowed_gaussian"), ("monitor", FAST)):  # refused before any fit
        res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(_log(tmp_path / "late" / "l.csv", late).parent),
                                  "--label-column", "anomaly", "--out", str(tmp_path / "o"), "--scorer", scorer,
                                  "--via", via, "--no-progress"])
        assert res.exit_code == 2 and "l/B (30)" in res.output, res.output


def test_logs_without_labels_read_as_n_a_and_the_output_folder_is_not_data(tmp_path):
    root = tmp_path / "bed"
    _log(root / "x.csv", [f"{_stamp(i)};{i % 7};{i % 5};0" for i in range(400)])
    out = root / "results"
    for _ in range(2):  # the second run must not read the first run's row files as logs
        res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly", "--out",
                                  str(out), "--scorer", "windowed_gaussian", "--no-progress"])
        assert res.exit_code == 0, res.output
    assert "AUC n/a F1 n/a runs alerted n/a" in res.output
    report = json.loads((out / "testbed.json").read_text())
    row = report["metrics"]["windowed_gaussian"]
    assert (row["events"], row["event_recall"], row["recall"], row["roc_auc"]) == (0, None, None, None)
    assert report["n_files"] == 1 and report["complete"] is True


def test_skabs_layout_with_its_unlabelled_anomaly_free_log(tmp_path):
    """SKAB's data folder: labelled runs beside ``anomaly-free/anomaly-free.csv``, which has no ``anomaly`` or
    ``changepoint`` column. The documented command runs on the whole folder; that log's rows count as normal."""
    root = make_testbed(tmp_path / "bed", runs=1, rows=600, fault=(400, 460))
    free = root / "anomaly-free" / "anomaly-free.csv"
    free.parent.mkdir()
    rng = np.random.default_rng(3)
    free.write_text("\n".join(["datetime;" + ";".join(SENSORS), *(
        f"{_stamp(i)};" + ";".join(f"{v:.5f}" for v in rng.normal([0.2, 1.5, 0.8, 70.0], 0.01)) for i in range(500))])
        + "\n")
    out = tmp_path / "out"
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly", "--skip-column",
                              "changepoint", "--out", str(out), "--scorer", "windowed_gaussian", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "testbed.json").read_text())
    files = {f["file"]: f for f in report["files"]}
    assert set(files) == {"anomaly-free/anomaly-free", "valve1/0"}
    assert files["anomaly-free/anomaly-free"]["labelled_rows"] == 0
    assert files["valve1/0"]["labelled_rows"] == 60
    judged = {name: f["rows"] - f["train_rows"] for name, f in files.items()}
    assert report["metrics"]["windowed_gaussian"]["rows"] == sum(judged.values())  # the normal log's rows count
    rows = _rows(out / "windowed_gaussian" / "anomaly-free" / "anomaly-free.csv")
    assert len(rows) == 500 and {r["label"] for r in rows} == {"0"}
    policy = report["alert_policy"]["windowed_gaussian"]  # a baseline has no preset, only the threshold of one
    assert policy["preset"] is None and policy["threshold_of_preset"] == "nab"
    # --limit 1 takes the unlabelled log only; the label column is still known from the folder's other logs
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly", "--skip-column",
                              "changepoint", "--out", str(out), "--scorer", "windowed_gaussian", "--no-progress",
                              "--limit", "1"])
    assert res.exit_code == 0, res.output
    limited = json.loads((out / "testbed.json").read_text())
    assert limited["n_files"] == 1 and limited["complete"] is False
    res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly", "--skip-column",
                              "change_point", "--out", str(out), "--scorer", "windowed_gaussian", "--no-progress"])
    assert res.exit_code == 2 and "has the column(s) ['change_point']" in res.output  # a typo, not a missing label


def test_the_rig_preset_keeps_an_alert_open_while_a_fault_lasts(tmp_path):
    """``bench testbed`` runs the ``rig`` preset by default (what docs/streaming.md tells a rig's operator to set):
    its alerts stay open over much of a fault, where the ``nab`` preset's one detection per rising edge closes them
    after the first row and its spatial rule fires on the temperature's slow drift (the README's figures)."""
    root = make_testbed(tmp_path / "bed", runs=2, rows=700, fault=(500, 560))
    found = {}
    for name, scorer in (("rig", FAST), ("nab", FAST.replace("scalowatch:", "scalowatch:preset=nab,"))):
        out = tmp_path / name
        res = RUNNER.invoke(app, ["bench", "testbed", "--data", str(root), "--label-column", "anomaly",
                                  "--skip-column", "changepoint", "--out", str(out), "--scorer", scorer,
                                  "--no-progress"])
        assert res.exit_code == 0, res.output
        report = json.loads((out / "testbed.json").read_text())
        ((label, found[name]),) = report["metrics"].items()
        assert report["alert_policy"][label]["preset"] == name
    assert found["rig"]["event_recall"] == 1.0 and found["rig"]["recall"] > 0.3
    assert found["rig"]["false_alert_runs"] == 0 and found["rig"]["roc_auc"] > 0.9
    assert found["nab"]["recall"] < 0.1 < found["rig"]["recall"]
    from benchmarks.nab import PRODUCT_NAMES
    from benchmarks.testbed import TESTBED_DETECTOR_DEFAULTS

    assert {TESTBED_DETECTOR_DEFAULTS[name]["preset"] for name in PRODUCT_NAMES} == {"rig"}  # every product variant
