"""`scalowatch train` / `scalowatch score` on small generated files: output formats, causality, error exits."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile
from typer.testing import CliRunner

from mvtec_data import make_category

N_POINTS, SPIKE, TRAIN_END, WINDOW, HOP = 1000, 800, 400, 32, 4
FAST = ["--steps", "12", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def _cli(args):
    from scalowatch.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _sine(n: int, period: float = 24.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * np.arange(n) / period) + 0.1 * rng.standard_normal(n)


def _write_csv(path, values, start="2021-01-01T00:00:00"):
    stamps = np.datetime64(start) + np.arange(len(values)) * np.timedelta64(5, "m")
    with path.open("w") as f:
        f.write("timestamp,value\n")
        for t, v in zip(stamps, values):
            f.write(f"{str(t).replace('T', ' ')},{float(v)!r}\n")
    return path


@pytest.fixture(scope="module")
def spiky_csv(tmp_path_factory):
    values = _sine(N_POINTS)
    values[SPIKE : SPIKE + 3] += 5.0
    return _write_csv(tmp_path_factory.mktemp("csv") / "sensor.csv", values), values


@pytest.fixture(scope="module")
def series_model(spiky_csv, tmp_path_factory):
    path, _ = spiky_csv
    model = tmp_path_factory.mktemp("model") / "m"
    res = _cli(["train", path, "--model-dir", model, "--train-end", TRAIN_END, "--window", WINDOW, "--hop", HOP,
                *FAST])
    assert res.exit_code == 0, res.output
    return model, res.output


def test_train_series_writes_the_detector_and_its_description(series_model, spiky_csv):
    model, output = series_model
    assert (model / "detector.json").is_file() and (model / "pipeline" / "pipeline.json").is_file()
    meta = json.loads((model / "cli_model.json").read_text())
    assert meta["kind"] == "series" and meta["input"] == str(spiky_csv[0]) and meta["preset"] == "nab"
    assert (meta["window"], meta["hop"], meta["train_end"]) == (WINDOW, HOP, TRAIN_END)
    assert meta["scorer"] == "recon" and meta["steps"] == 12
    assert "fitted the nab detector (recon, series)" in output and f"[0, {TRAIN_END})" in output


def test_score_series_is_the_detectors_score_of_every_point(series_model, spiky_csv, tmp_path):
    from models.detector import FittedDetector, score_series

    model, _ = series_model
    path, values = spiky_csv
    out = tmp_path / "scores.csv"
    res = _cli(["score", path, "--model-dir", model, "--out", out, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["timestamp", "value", "score", "decided_by", "channel_value"]
    assert len(rows) == N_POINTS
    assert rows[0]["timestamp"] == "2021-01-01T00:00:00" and rows[1]["timestamp"] == "2021-01-01T00:05:00"
    np.testing.assert_allclose([float(r["value"]) for r in rows], values)
    score = np.array([float(r["score"]) for r in rows])
    expected = score_series(FittedDetector.load(model, device="cpu"), values)["product"]
    np.testing.assert_allclose(score, expected.scores, rtol=1e-8, atol=1e-12)
    assert {r["decided_by"] for r in rows[:TRAIN_END]} == {"none"}  # the likelihoods learn on the training part
    assert SPIKE <= int(np.argmax(score)) < SPIKE + WINDOW + HOP
    spike_time = rows[SPIKE]["timestamp"][:13]  # the hour of the spike
    alert_lines = [line for line in res.output.splitlines() if line.strip().startswith("alert")]
    assert any(spike_time in line for line in alert_lines)


def test_score_is_repeatable_and_threshold_controls_alerts(series_model, spiky_csv, tmp_path):
    model, _ = series_model
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    res_a = _cli(["score", spiky_csv[0], "--model-dir", model, "--out", a, "--device", "cpu", "--threshold", "0.5"])
    res_b = _cli(["score", spiky_csv[0], "--model-dir", model, "--out", b, "--threshold", "1.0"])
    assert res_a.exit_code == 0 and res_b.exit_code == 0, res_a.output + res_b.output
    assert a.read_text() == b.read_text()
    count = lambda out: int(out.split(" alert(s)")[0].rsplit("; ", 1)[1])  # noqa: E731
    assert count(res_b.output) <= count(res_a.output)


def test_txt_series_round_trip_with_the_ucr_preset(tmp_path):
    values = _sine(600, period=20, seed=3)
    values[450:470] = 0.0  # a flat dropout
    path = tmp_path / "series.txt"
    np.savetxt(path, values)
    model = tmp_path / "m"
    res = _cli(["train", path, "--model-dir", model, "--train-fraction", "0.5", "--window", "40", "--preset", "ucr",
                *FAST])
    assert res.exit_code == 0, res.output
    meta = json.loads((model / "cli_model.json").read_text())
    assert meta["train_end"] == 300 and meta["window"] == 40 and meta["hop"] == 10 and meta["preset"] == "ucr"
    out = tmp_path / "s.csv"
    res = _cli(["score", path, "--model-dir", model, "--out", out])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["timestamp"] for r in rows[:3]] == ["0", "1", "2"] and len(rows) == 600
    score = np.array([float(r["score"]) for r in rows])
    assert 450 <= int(np.argmax(score)) < 470 + 40 + 10


def test_adversarial_training_of_a_series_detector(tmp_path, caplog):
    """``--adversarial`` trains the detector's model with ADDM's loss (any scorer): the weight travels in the
    detector's configuration, so a loaded detector says how it was trained. It once failed on every series (the
    flag went in as an option the scorer refuses)."""
    from models.detector import FittedDetector
    from models.scorers.diffusion import ADDM_WEIGHT

    path = tmp_path / "series.txt"
    np.savetxt(path, _sine(600, period=20, seed=3))
    model = tmp_path / "m"
    with caplog.at_level(logging.INFO, logger="models.training"):
        res = _cli(["train", path, "--model-dir", model, "--train-fraction", "0.5", "--window", "40", "--adversarial",
                    *FAST])
    assert res.exit_code == 0, res.output
    assert f"adversarial_weight={ADDM_WEIGHT}" in caplog.text  # the training ran with it
    assert json.loads((model / "detector.json").read_text())["adversarial_weight"] == ADDM_WEIGHT
    assert FittedDetector.load(model).config.adversarial_weight == ADDM_WEIGHT
    plain = tmp_path / "p"
    res = _cli(["train", path, "--model-dir", plain, "--train-fraction", "0.5", "--window", "40", *FAST])
    assert res.exit_code == 0, res.output
    assert "adversarial_weight" not in json.loads((plain / "detector.json").read_text())  # loadable by older releases


def test_sensor_csv_column_is_one_series_like_its_own_nab_file(spiky_csv, tmp_path):
    """A column of a CSV of several sensors trains and scores exactly like the same readings in a NAB file."""
    path, values = spiky_csv
    other = _sine(N_POINTS, seed=9)
    stamps = [line.split(",")[0] for line in path.read_text().splitlines()[1:]]
    bed = tmp_path / "bed.csv"
    bed.write_text("datetime;flow;pressure;anomaly\n" + "".join(
        f"{t};{b!r};{a!r};0\n" for t, a, b in zip(stamps, values.tolist(), other.tolist())))
    runs = {}
    for name, src, extra in (("nab", path, []), ("bed", bed, ["--column", "pressure"])):
        model = tmp_path / f"m_{name}"
        res = _cli(["train", src, "--model-dir", model, "--train-end", TRAIN_END, "--window", WINDOW, "--hop", HOP,
                    *FAST, *extra])
        assert res.exit_code == 0, res.output
        out = tmp_path / f"scores_{name}.csv"
        res = _cli(["score", src, "--model-dir", model, "--out", out])  # the column comes from the model
        assert res.exit_code == 0, res.output
        runs[name] = list(csv.DictReader(out.open()))
    assert json.loads((tmp_path / "m_bed" / "cli_model.json").read_text())["column"] == "pressure"
    assert runs["bed"] == runs["nab"]
    _assert_clean_error(_cli(["train", bed, "--model-dir", tmp_path / "m"]),
                        "3 value columns (flow, pressure, anomaly): name one with --column")
    _assert_clean_error(_cli(["train", bed, "--model-dir", tmp_path / "m", "--column", "speed"]), "no column(s)")
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--column", "flow"]),
                        "no column(s) ['flow']; the value columns are ['value']")
    _assert_clean_error(_cli(["score", path, "--model-dir", tmp_path / "m_bed", "--out", tmp_path / "o.csv"]),
                        "no column(s) ['pressure']")  # the model's column, looked for in a NAB file


def _wav(path, rate=8000, seconds=1.0, click_at=None):
    rng = np.random.default_rng(1)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)
    if click_at is not None:
        i = int(click_at * rate)
        x[i : i + 40] += 0.6 * rng.standard_normal(40)
    wavfile.write(path, rate, (x * 32767).astype(np.int16))
    return path


def test_wav_per_window_seconds_and_sample_rate_check(tmp_path, monkeypatch):
    path = _wav(tmp_path / "fan.wav", click_at=0.8)
    model = tmp_path / "m"
    res = _cli(["train", path, "--model-dir", model, "--train-end", "3000", "--window", "256", "--hop", "128",
                *FAST])
    assert res.exit_code == 0, res.output
    meta = json.loads((model / "cli_model.json").read_text())
    assert meta["kind"] == "audio" and meta["sample_rate"] == 8000 and meta["hop"] == 128
    assert meta["preset"] == "audio"
    out = tmp_path / "a.csv"
    res = _cli(["score", path, "--model-dir", model, "--out", out])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["start_s", "end_s", "score", "decided_by", "channel_value"]
    start = np.array([float(r["start_s"]) for r in rows])
    end = np.array([float(r["end_s"]) for r in rows])
    assert len(rows) == (8000 - 256) // 128 + 1
    np.testing.assert_allclose(end - start, 256 / 8000)
    np.testing.assert_allclose(np.diff(start), 128 / 8000)
    assert end[-1] <= 1.0
    score = np.array([float(r["score"]) for r in rows])
    hit = start[int(np.argmax(score))]
    assert 0.8 - 256 / 8000 <= hit <= 0.8 + 256 / 8000
    # A long file is fed a chunk at a time (bounded memory): the same rows and scores as one pass.
    import scalowatch.cli_model as cli_model
    monkeypatch.setattr(cli_model, "SCORE_CHUNK", 1000)
    res = _cli(["score", path, "--model-dir", model, "--out", tmp_path / "chunked.csv"])
    assert res.exit_code == 0, res.output
    chunked = list(csv.DictReader((tmp_path / "chunked.csv").open()))
    assert [(r["start_s"], r["decided_by"]) for r in chunked] == [(r["start_s"], r["decided_by"]) for r in rows]
    np.testing.assert_allclose([float(r["score"]) for r in chunked], score, rtol=0, atol=1e-8)

    other = _wav(tmp_path / "fast.wav", rate=16000)
    res = _cli(["score", other, "--model-dir", model, "--out", tmp_path / "x.csv"])
    assert res.exit_code == 2 and "16000 Hz" in res.output and "8000 Hz" in res.output


def test_image_folder_train_and_score_with_maps(tmp_path):
    root = make_category(tmp_path / "widget", n_train=6, n_good=2, n_defect=2)
    model = tmp_path / "m"
    res = _cli(["train", root, "--model-dir", model, "--image-size", "64", "--steps", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    meta = json.loads((model / "cli_model.json").read_text())
    assert meta["kind"] == "image" and meta["train_images"] == 6 and meta["image_size"] == 64
    out, maps = tmp_path / "img.csv", tmp_path / "maps"
    res = _cli(["score", root, "--model-dir", model, "--out", out, "--maps-dir", maps])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == ["test/good/000.png", "test/good/001.png",
                                         "test/paint/000.png", "test/paint/001.png"]
    assert all(np.isfinite(float(r["score"])) for r in rows)
    for r in rows:
        m = np.load((maps / r["path"]).with_suffix(".npy"))
        assert m.shape == (64, 64) and m.dtype == np.float32
    # ... and the maps folder opens on the dashboard's Images page: picture, map and mask of every scored image
    from dashboards.imaging import load_results_folder

    shown = load_results_folder(maps)
    assert shown["path"].tolist() == [str((root / r["path"]).resolve()) for r in rows]
    assert shown["category"].tolist() == ["widget"] * 4 and shown["defect"].tolist() == ["good"] * 2 + ["paint"] * 2
    np.testing.assert_allclose(shown["score"], [float(r["score"]) for r in rows])
    assert all(np.load(p).shape == (64, 64) for p in shown["map_path"])
    assert shown["mask_path"].tolist()[:2] == ["", ""]
    assert all(p.endswith("_mask.png") and Path(p).is_file() for p in shown["mask_path"].tolist()[2:])

    assert meta["scorer"] == "scalowatch-image"
    # What the CLI trains is what bench mvtec measures: the same detector configuration.
    from benchmarks.mvtec import MVTecBenchConfig

    saved = json.loads((model / "image_detector" / "image_detector.json").read_text())["config"]
    assert saved == MVTecBenchConfig(image_size=64, train_steps=2).detector_config().to_dict()
    # A plain folder of images is scored image by image with the same model.
    res = _cli(["score", root / "test" / "paint", "--model-dir", model, "--out", tmp_path / "p.csv"])
    assert res.exit_code == 0, res.output
    assert [r["path"] for r in csv.DictReader((tmp_path / "p.csv").open())] == ["000.png", "001.png"]
    # Two images of one name but different types get a map each (the second overwrote the first).
    from PIL import Image

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.open(root / "test" / "paint" / "000.png").save(mixed / "a.png")
    Image.open(root / "test" / "good" / "000.png").convert("RGB").save(mixed / "a.jpg")
    Image.open(root / "test" / "good" / "001.png").save(mixed / "b.png")
    res = _cli(["score", mixed, "--model-dir", model, "--out", tmp_path / "m.csv", "--maps-dir", tmp_path / "mm"])
    assert res.exit_code == 0, res.output
    shown = load_results_folder(tmp_path / "mm")
    assert sorted(Path(p).name for p in shown["map_path"]) == ["a.jpg.npy", "a.png.npy", "b.npy"]
    from models.checkpoint import version_of

    assert set(shown["model_version"]) == {version_of(model / "image_detector")}  # the file names the model too
    by_image = dict(zip((Path(p).name for p in shown["path"]), shown["map_path"]))
    assert not np.array_equal(np.load(by_image["a.png"]), np.load(by_image["a.jpg"]))

    # --store: the same results as image_result points, which the Images page reads from the store
    from dashboards.store import SQLiteStore

    db = tmp_path / "store.sqlite"
    res = _cli(["score", root, "--model-dir", model, "--out", tmp_path / "s.csv", "--store", "sqlite",
                "--sqlite-path", db])
    assert res.exit_code == 0, res.output
    stored = SQLiteStore(db).image_results()
    assert sorted(stored["path"]) == sorted(str((root / r["path"]).resolve()) for r in rows)
    by_path = {str((root / r["path"]).resolve()): float(r["score"]) for r in rows}
    np.testing.assert_allclose([by_path[p] for p in stored["path"]], stored["score"], rtol=1e-5)
    assert stored["category"].tolist() == ["widget"] * 4 and sorted(stored["defect"]) == ["good"] * 2 + ["paint"] * 2
    assert (stored["map_path"] == "").all() and sum(p.endswith("_mask.png") for p in stored["mask_path"]) == 2
    assert set(stored["model_version"]) == {version_of(model / "image_detector")}
    from streamer.points import IMAGE_RESULT
    from streamer.sinks.sqlite import SQLiteSink

    with SQLiteSink(db) as sink:  # each result names the model that scored it
        assert {p.fields["model_version"] for p in sink.read(IMAGE_RESULT)} == {version_of(model / "image_detector")}
    res = _cli(["score", mixed, "--model-dir", model, "--out", tmp_path / "m2.csv", "--store", "sqlite",
                "--sqlite-path", db, "--maps-dir", tmp_path / "mm2"])  # a plain folder: no defect tag
    assert res.exit_code == 0, res.output
    again = _cli(["score", root, "--model-dir", model, "--out", tmp_path / "s.csv", "--store", "sqlite",
                  "--sqlite-path", db])  # a second run of the same folder: its newest results, not both runs
    assert again.exit_code == 0 and len(SQLiteStore(db).image_results().query("category == 'widget'")) == 4
    plain = SQLiteStore(db).image_results().query("category == 'mixed'")
    assert len(plain) == 3 and (plain["defect"] == "").all() and all(Path(p).is_file() for p in plain["map_path"])
    res = _cli(["score", root, "--model-dir", model, "--out", tmp_path / "s.csv", "--store", "mongo"])
    assert res.exit_code == 2 and "influx or sqlite" in res.output
    res = _cli(["score", root, "--model-dir", model, "--out", tmp_path / "s.csv", "--sqlite-path", db])
    assert res.exit_code == 2 and "--store sqlite" in res.output
    from scalowatch.cli import app

    down = CliRunner().invoke(app, ["score", str(root), "--model-dir", str(model), "--out", str(tmp_path / "d.csv"),
                                    "--store", "influx"], env={"SCALOWATCH_INFLUX__URL": "http://127.0.0.1:9"})
    assert down.exit_code == 2 and "does not answer" in down.output and not (tmp_path / "d.csv").exists()
    series = tmp_path / "s.csv"
    series.write_text("timestamp,value\n2024-01-01 00:00:00,1.0\n")
    res = _cli(["score", series, "--model-dir", model, "--out", tmp_path / "o.csv", "--store", "sqlite"])
    assert res.exit_code == 2 and "writes image results" in res.output  # streams reach the store via the monitor


def test_map_files_never_share_a_file():
    from scalowatch.cli_model import map_files

    names = ["a.png", "a.jpg", "a.png.tif", "b.png", "sub/b.png"]
    targets = map_files(Path("maps"), names)
    assert [str(t) for t in targets] == ["maps/a.png.npy", "maps/a.jpg.npy", "maps/a.png.tif.npy", "maps/b.npy",
                                         "maps/sub/b.npy"]
    assert len(set(targets)) == len(names)


# ---------------------------------------------------------------------------------------------------- errors
def _assert_clean_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    for f in fragments:
        assert f in res.output, res.output


def test_error_missing_input_and_unknown_type(tmp_path):
    _assert_clean_error(_cli(["train", tmp_path / "nope.csv", "--model-dir", tmp_path / "m"]), "no such file")
    odd = tmp_path / "x.json"
    odd.write_text("{}")
    _assert_clean_error(_cli(["train", odd, "--model-dir", tmp_path / "m"]), "unknown input type")


def test_error_nan_only_series(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("timestamp,value\n" + "".join(f"2021-01-01 00:0{i}:00,nan\n" for i in range(5)))
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m"]), "not finite")
    txt = tmp_path / "nan.txt"
    txt.write_text("nan\nnan\nnan\n")
    _assert_clean_error(_cli(["train", txt, "--model-dir", tmp_path / "m"]), "non-finite")


def test_error_train_range_and_short_series(tmp_path):
    path = _write_csv(tmp_path / "s.csv", _sine(100))
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--train-end", "500"]),
                        "--train-end 500 is outside the series (1..100")
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--train-end", "40"]),
                        "the detector needs at least 48")
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--train-fraction", "1.5"]),
                        "--train-fraction")
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--scorer", "bogus"]),
                        "unknown scorer 'bogus'")


def test_a_scorer_the_preset_cannot_run_is_refused_with_the_ones_it_can(tmp_path):
    # The configuration's own reason names fields `train` has no option for; the error must say what to pass.
    path = _write_csv(tmp_path / "s.csv", _sine(200))
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--scorer", "dynamic"]),
                        "--scorer dynamic does not run on the nab preset, which runs recon, kl, trend, adversarial")
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--scorer", "kl", "--preset", "ucr"]),
                        "--scorer kl does not run on the ucr preset, which runs recon (")
    assert not (tmp_path / "m" / "cli_model.json").exists()


def test_error_model_dir_missing_wrong_kind_or_input_too_short(series_model, tmp_path):
    model, _ = series_model
    csv_path = _write_csv(tmp_path / "s.csv", _sine(200))
    _assert_clean_error(_cli(["score", csv_path, "--model-dir", tmp_path / "none"]), "does not exist")
    (tmp_path / "empty").mkdir()
    _assert_clean_error(_cli(["score", csv_path, "--model-dir", tmp_path / "empty"]), "cli_model.json")
    wav = _wav(tmp_path / "a.wav")
    _assert_clean_error(_cli(["score", wav, "--model-dir", model]), "model for series input")
    short = _write_csv(tmp_path / "short.csv", _sine(10))
    _assert_clean_error(_cli(["score", short, "--model-dir", model, "--out", tmp_path / "o.csv"]),
                        "too short for one window of 32")


def test_error_cuda_requested_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    path = _write_csv(tmp_path / "s.csv", _sine(300))
    _assert_clean_error(_cli(["train", path, "--model-dir", tmp_path / "m", "--device", "cuda"]), "no CUDA GPU")


def test_image_folder_refuses_series_options_and_old_models(tmp_path):
    root = make_category(tmp_path / "widget", n_train=4, n_good=1, n_defect=1)
    _assert_clean_error(_cli(["train", root, "--model-dir", tmp_path / "m", "--scorer", "kl"]), "image detector")
    _assert_clean_error(_cli(["train", root, "--model-dir", tmp_path / "m", "--adversarial"]), "image detector")
    old = tmp_path / "old"
    old.mkdir()
    (old / "cli_model.json").write_text(json.dumps({"kind": "image", "input": str(root), "scorer": "recon", "steps": 2,
                                                    "seed": 0, "adversarial": False, "image_size": 64}))
    _assert_clean_error(_cli(["score", root, "--model-dir", old, "--out", tmp_path / "s.csv"]), "retrain")


@pytest.mark.integration
def test_image_results_reach_a_real_influxdb_and_the_images_page_reads_them(tmp_path, influx_server):
    """`scalowatch score IMAGES --store influx` over real sockets: the points the dashboard's InfluxQL reader finds."""
    import uuid

    from dashboards.store import InfluxQLStore
    from scalowatch.cli import app

    root = make_category(tmp_path / "gadget", n_train=6, n_good=1, n_defect=2)
    model = tmp_path / "m"
    res = _cli(["train", root, "--model-dir", model, "--image-size", "64", "--steps", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    database = "img_" + uuid.uuid4().hex[:10]  # its own database: other tests' points stay out
    influx_server.query(f'CREATE DATABASE "{database}"', method="POST")
    env = {"SCALOWATCH_INFLUX__URL": influx_server.url, "SCALOWATCH_INFLUX__BUCKET": database}
    res = CliRunner().invoke(app, ["score", str(root), "--model-dir", str(model), "--out", str(tmp_path / "s.csv"),
                                   "--store", "influx"], env=env)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    stored = InfluxQLStore(influx_server.query_url, database).image_results()
    assert sorted(stored["path"]) == sorted(str((root / r["path"]).resolve()) for r in rows)
    assert sorted(stored["defect"]) == ["good", "paint", "paint"] and set(stored["category"]) == {"gadget"}
    by_path = {str((root / r["path"]).resolve()): float(r["score"]) for r in rows}
    np.testing.assert_allclose([by_path[p] for p in stored["path"]], stored["score"], rtol=1e-5)
    from models.checkpoint import version_of

    assert set(stored["model_version"]) == {version_of(model / "image_detector")}
