"""Benchmark protocol and formats on tiny synthetic NAB/UCR inputs (fast: no matrix profile here).

- training sees only the probationary part (NAB) / [0, trainEnd) (UCR);
- no look-ahead through the whole NAB pipeline (detector + likelihood calibration);
- the files the commands write have the agreed formats, and re-scoring them reproduces the JSON.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.detectors import DetectorSpec, parse_spec
from benchmarks.nab import detect_series
from benchmarks.nab_files import NabCorpus, read_data_file, score_detector_results
from benchmarks.ucr import predict_location
from models.baselines import SERIES_DETECTORS, register_series_detector
from models.errors import InputError
from models.metrics.nab import probationary_length
from scalowatch.cli import app

RUNNER = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _RecordingDetector:
    """Remembers what fit() saw; scores |x - train mean| (causal)."""

    name = "recording"
    output_is_probability = False
    lag = 0
    last_fit: np.ndarray | None = None

    def fit(self, train):
        _RecordingDetector.last_fit = np.array(train, copy=True)
        self._mean = float(np.mean(train))
        return self

    def score(self, values):
        return np.abs(np.asarray(values, dtype=float) - self._mean)


if "test_recording" not in SERIES_DETECTORS:
    register_series_detector("test_recording", lambda **kw: _RecordingDetector())


def _write_nab_corpus(root: Path) -> dict[str, list[int]]:
    """Three small files in two categories; returns the window start rows per file."""
    rng = np.random.default_rng(0)
    spec = {"catA/one.csv": [(700, 740)], "catA/two.csv": [(500, 530), (800, 850)], "catB/three.csv": []}
    windows = {}
    for key, spans in spec.items():
        n = 1000
        ts = np.datetime64("2021-03-01T00:00:00") + np.arange(n) * np.timedelta64(5, "m")
        x = np.sin(np.arange(n) * 2 * np.pi / 50) + 0.1 * rng.standard_normal(n)
        for s, _ in spans:
            x[s + 5 : s + 10] += 6.0
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["timestamp,value"] + [f"{str(t).replace('T', ' ')},{float(v)!r}" for t, v in zip(ts, x)]
        path.write_text("\n".join(lines) + "\n")
        windows[key] = [[f"{str(ts[s]).replace('T', ' ')}.000000", f"{str(ts[e]).replace('T', ' ')}.000000"] for s, e in spans]
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return {k: [s for s, _ in v] for k, v in spec.items()}


@pytest.fixture()
def nab_corpus(tmp_path):
    root = tmp_path / "nab"
    starts = _write_nab_corpus(root)
    return root, starts


def test_nab_training_sees_only_the_probationary_part(nab_corpus):
    root, _ = nab_corpus
    series = NabCorpus(root).read("catA/one.csv")
    detect_series(parse_spec("test_recording"), series)
    prob = probationary_length(len(series))
    assert prob == 150
    np.testing.assert_array_equal(_RecordingDetector.last_fit, series.values[:prob])


@pytest.mark.parametrize("name", ["test_recording", "windowed_gaussian", "half_space_trees_train"])
def test_nab_pipeline_has_no_look_ahead(nab_corpus, name):
    """Scores for a prefix (detector + calibration) equal the full run's first rows; later points
    cannot change them. The probationary length depends on n, so the prefix keeps n by padding."""
    root, _ = nab_corpus
    full = NabCorpus(root).read("catA/two.csv")
    altered_values = full.values.copy()
    altered_values[600:] = altered_values[600:] * 3 + 10
    altered = type(full)(full.key, full.timestamp_text, full.timestamps, altered_values)
    raw_a, score_a = detect_series(parse_spec(name), full)
    raw_b, score_b = detect_series(parse_spec(name), altered)
    np.testing.assert_allclose(raw_a[:600], raw_b[:600], atol=1e-12)
    np.testing.assert_allclose(score_a[:600], score_b[:600], atol=1e-12)
    assert not np.allclose(score_a[600:], score_b[600:])
    assert np.all((score_a >= 0) & (score_a <= 1))
    # Calibration is silent during the probationary part.
    if not parse_spec(name).build().output_is_probability:
        assert np.all(score_a[: probationary_length(len(full))] == 0.5)


def test_bench_nab_command_writes_nab_format(nab_corpus, tmp_path):
    root, starts = nab_corpus
    out = tmp_path / "out"
    res = RUNNER.invoke(
        app, ["bench", "nab", "--data", str(root), "--out", str(out), "--scorer", "windowed_gaussian",
              "--scorer", "test_recording", "--jobs", "1", "--no-progress"],  # it is registered here only
    )
    assert res.exit_code == 0, res.output
    summary = [line for line in res.output.strip().splitlines() if line.startswith("NAB (")]
    assert len(summary) == 1 and "windowed_gaussian" in summary[0]
    for det in ("windowed_gaussian", "test_recording"):
        for key in starts:
            cat, name = key.split("/")
            path = out / det / cat / f"{det}_{name}"
            lines = path.read_text().strip().splitlines()
            assert lines[0] == "timestamp,value,anomaly_score,label"
            rows = [ln.split(",") for ln in lines[1:]]
            data = read_data_file(root / "data" / key, key)
            assert len(rows) == len(data)
            assert [r[0] for r in rows] == data.timestamp_text
            scores = np.array([float(r[2]) for r in rows])
            labels = np.array([int(r[3]) for r in rows])
            assert np.all((scores >= 0) & (scores <= 1))
            assert labels.sum() == {"catA/one.csv": 41, "catA/two.csv": 31 + 51, "catB/three.csv": 0}[key]
            for s in starts[key]:
                assert labels[s] == 1 and labels[s - 1] == 0

    meta = json.loads((out / "nab.json").read_text())
    assert meta["benchmark"] == "nab" and meta["n_files"] == 3
    run = meta["run"]
    for k in ("command", "git_commit", "started_utc", "wall_seconds", "machine"):
        assert k in run
    assert run["machine"]["cpu_count"] >= 1 and run["machine"]["cpu_model"]
    assert "gpu" in run["machine"]
    assert set(meta["scores"]) == {"windowed_gaussian", "test_recording"}
    for row in meta["scores"].values():
        assert set(row) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    # The written files alone reproduce the reported scores.
    rescored = score_detector_results(NabCorpus(root), out, "test_recording")
    for prof, res_p in rescored.items():
        assert res_p.normalized == pytest.approx(meta["scores"]["test_recording"][prof], abs=1e-3)
    # The planted spikes are easy: a simple detector must beat the null detector clearly.
    assert meta["scores"]["test_recording"]["standard"] > 50
    for png in meta["plots"]:
        assert Path(png).read_bytes()[:8] == PNG_MAGIC


def _write_ucr(root: Path) -> list[str]:
    rng = np.random.default_rng(1)
    names = []
    for num, (n, train, begin, end, gz) in enumerate(
        [(3000, 1000, 2000, 2030, False), (2500, 800, 1500, 1510, True)], start=1
    ):
        x = np.sin(np.arange(n) * 2 * np.pi / 40) + 0.05 * rng.standard_normal(n)
        x[begin:end] += 8.0
        name = f"{num:03d}_UCR_Anomaly_synth{num}_{train}_{begin}_{end}.txt"
        text = "\n".join(repr(float(v)) for v in x) + "\n"
        if gz:
            name += ".gz"
            with gzip.open(root / name, "wt") as fh:
                fh.write(text)
        else:
            (root / name).write_text(text)
        names.append(name)
    (root / "README.md").write_text("not a series")
    return names


def test_ucr_training_sees_only_train_part(tmp_path):
    x = np.arange(500, dtype=float)
    pred, scores = predict_location(parse_spec("test_recording"), x, 200)
    np.testing.assert_array_equal(_RecordingDetector.last_fit, x[:200])
    assert pred == 499 and scores.shape == x.shape
    with pytest.raises(InputError):
        predict_location(parse_spec("test_recording"), x, 500)


def test_bench_ucr_command_writes_predictions(tmp_path):
    data = tmp_path / "ucr"
    data.mkdir()
    names = _write_ucr(data)
    out = tmp_path / "out"
    res = RUNNER.invoke(
        app, ["bench", "ucr", "--data", str(data), "--out", str(out), "--scorer", "windowed_gaussian_train",
              "--scorer", "test_recording", "--examples", "1", "--jobs", "1", "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("UCR (")]
    preds = json.loads((out / "predictions.json").read_text())
    assert "absolute 0-based" in preds["index_frame"]
    for det in ("windowed_gaussian_train", "test_recording"):
        assert set(preds["predictions"][det]) == set(names)
    wg = preds["predictions"]["windowed_gaussian_train"]
    assert 2000 <= wg[names[0]] < 2030 and 1500 <= wg[names[1]] < 1510
    meta = json.loads((out / "ucr.json").read_text())
    acc = meta["accuracy"]["windowed_gaussian_train"]
    assert acc["n_series"] == 2 and acc["accuracy"] == 1.0 and acc["accuracy_pm100"] == 1.0
    assert meta["run"]["machine"]["cpu_count"] >= 1 and meta["run"]["wall_seconds"] is not None
    for png in meta["plots"]:
        assert Path(png).read_bytes()[:8] == PNG_MAGIC


def test_bench_commands_report_bad_input_cleanly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = RUNNER.invoke(app, ["bench", "ucr", "--data", str(empty), "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2 and "no NNN_UCR_Anomaly" in res.output
    res = RUNNER.invoke(app, ["bench", "nab", "--data", str(empty), "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2 and "not a NAB corpus" in res.output
    with pytest.raises(InputError, match="unknown detector"):
        parse_spec("nope")
    assert parse_spec("windowed_gaussian:window=100,adapt=false") == DetectorSpec(
        "windowed_gaussian", {"window": 100, "adapt": False}, "window=100,adapt=false"
    )


@pytest.mark.parametrize("spec", ["scalowatch:scorer_lamda=1", "scalowatch:scorer_start=dirty",
                                  "scalowatch:windw=64", "windowed_gaussian:nope=1"])
def test_bad_detector_options_fail_when_parsed_not_mid_run(spec):
    """A typo must be a clear InputError before any file is read, not a traceback after the first fits."""
    with pytest.raises(InputError, match=spec.split(":")[1].split("=")[0].removeprefix("scorer_")):
        parse_spec(spec)
