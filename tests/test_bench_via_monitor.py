"""`bench nab|ucr --via monitor` and `--ablate`: the monitor's path gives the detector's numbers (issue 11), and
the ablation variants come from the same run (issue 10)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nab_corpus import write_tiny_nab_corpus
from scalowatch.cli import app
from ucr_folder import write_ucr_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest

RUNNER = CliRunner()
FAST = "scalowatch:steps=3,max_train_windows=32"


def _scores(folder):
    out = {}
    for path in sorted(folder.rglob("*.csv")):
        with path.open() as fh:
            out[path.name[len(folder.name) + 1:]] = [float(r["anomaly_score"]) for r in csv.DictReader(fh)]
    return out


def test_nab_via_monitor_writes_the_detectors_scores_and_the_alerts_folder(tmp_path):
    root = tmp_path / "nab"
    write_tiny_nab_corpus(root)
    runs = {}
    for via in ("detector", "monitor"):
        out = tmp_path / via
        res = RUNNER.invoke(app, ["bench", "nab", "--data", str(root), "--out", str(out), "--scorer", FAST,
                                  "--via", via, "--no-progress"])
        assert res.exit_code == 0, res.output
        runs[via] = out
    label = "scalowatch_steps-3_max_train_windows-32"
    det, mon = _scores(runs["detector"] / label), _scores(runs["monitor"] / label)
    assert det.keys() == mon.keys() and len(det) == 2
    for name in det:
        np.testing.assert_allclose(mon[name], det[name], rtol=0, atol=1e-9)
    alerts = _scores(runs["monitor"] / f"{label}-alerts")
    assert set(v for values in alerts.values() for v in values) <= {0.0, 1.0}
    report = json.loads((runs["monitor"] / "nab.json").read_text())
    assert report["via"] == "monitor" and set(report["scores"]) == {label, f"{label}-alerts"}


def test_nab_via_monitor_refuses_a_baseline(tmp_path):
    root = tmp_path / "nab"
    write_tiny_nab_corpus(root)
    res = RUNNER.invoke(app, ["bench", "nab", "--data", str(root), "--out", str(tmp_path / "o"), "--scorer",
                              "windowed_gaussian", "--via", "monitor", "--no-progress"])
    assert res.exit_code == 2 and "product" in res.output


def test_nab_ablate_writes_three_result_folders_from_one_run(tmp_path):
    root = tmp_path / "nab"
    write_tiny_nab_corpus(root)
    out = tmp_path / "abl"
    res = RUNNER.invoke(app, ["bench", "nab", "--data", str(root), "--out", str(out), "--scorer", FAST, "--ablate",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    for variant in ("product", "without_diffusion", "diffusion_only"):
        assert len(list((out / variant).rglob("*.csv"))) == 2
    plain = tmp_path / "plain"
    RUNNER.invoke(app, ["bench", "nab", "--data", str(root), "--out", str(plain), "--scorer", FAST, "--no-progress"])
    label = "scalowatch_steps-3_max_train_windows-32"
    assert _scores(out / "product") == _scores(plain / label)  # the product variant is the detector


def test_ucr_via_monitor_predicts_what_the_detector_predicts_and_ablate_has_three_entries(tmp_path):
    data = write_ucr_folder(tmp_path / "ucr")
    preds = {}
    for via in ("detector", "monitor"):
        out = tmp_path / via
        res = RUNNER.invoke(app, ["bench", "ucr", "--data", str(data), "--out", str(out), "--scorer",
                                  "scalowatch:steps=3,max_train_windows=32", "--via", via, "--examples", "0",
                                  "--no-progress"])
        assert res.exit_code == 0, res.output
        preds[via] = json.loads((out / "predictions.json").read_text())["predictions"]
    assert list(preds["monitor"].values()) == list(preds["detector"].values())
    out = tmp_path / "abl"
    res = RUNNER.invoke(app, ["bench", "ucr", "--data", str(data), "--out", str(out), "--scorer",
                              "scalowatch:steps=3,max_train_windows=32", "--ablate", "--examples", "0",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    ablation = json.loads((out / "predictions.json").read_text())["predictions"]
    assert set(ablation) == {"product", "without_diffusion", "diffusion_only"}
    assert ablation["product"] == list(preds["detector"].values())[0]
