"""`scalowatch bench mvtec` on a synthetic MVTec-like category: file formats, metrics, PatchCore separation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.mvtec import MVTecBenchConfig, evaluate, resolve_scorers, run_mvtec, write_scores_and_maps
from models.errors import InputError
from mvtec_data import make_category


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    return make_category(tmp_path_factory.mktemp("mvtec") / "widget", n_train=10, n_good=4, n_defect=4)


def _cli(args):
    from scalowatch.cli import app

    return CliRunner().invoke(app, args)


def test_cli_writes_scores_maps_json_and_plots(category, tmp_path):
    out = tmp_path / "out"
    res = _cli(["bench", "mvtec", "--data", str(category), "--out", str(out), "--scorer", "patchcore",
                "--image-size", "64", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "MVTec widget" in res.output.strip().splitlines()[-1]

    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["path"] for r in rows] == [f"good/{i:03d}.png" for i in range(4)] + [f"paint/{i:03d}.png" for i in range(4)]
    scores = np.array([float(r["score"]) for r in rows])
    # A painted red square is far from every normal patch: every defect outscores every good image.
    assert scores[4:].min() > scores[:4].max()

    for r in rows:
        m = np.load(out / "maps" / r["path"].replace(".png", ".npy"))
        assert m.shape == (64, 64) and m.dtype == np.float32

    report = json.loads((out / "mvtec.json").read_text())
    for key in ("benchmark", "category", "run", "protocol", "config", "metrics", "scorers", "plots"):
        assert key in report
    assert report["category"] == "widget"
    assert report["run"]["machine"]["cpu_count"] >= 1 and report["run"]["wall_seconds"] > 0
    m = report["metrics"]["patchcore"]
    assert set(m) == {"image_auroc", "pixel_auroc", "pro"}
    assert m["image_auroc"] == 1.0
    assert m["pixel_auroc"] > 0.9 and 0.5 < m["pro"] <= 1.0
    for p in report["plots"]:
        assert (out / "plots").joinpath(p.split("/")[-1]).stat().st_size > 1000

    images = list(csv.DictReader((out / "image_results.csv").open()))
    assert len(images) == 8 and images[-1]["mask_path"].endswith("003_mask.png") and images[0]["mask_path"] == ""


def test_diffusion_scorer_and_fusion_outputs(category, tmp_path):
    cfg = MVTecBenchConfig(image_size=64, device="cpu", train_steps=2, train_batch=4, fusion_calibration_images=2,
                           calibration_samples=4)
    report = run_mvtec(category, ["recon"], cfg, progress=False)
    assert [r.name for r in report.runs] == ["recon", "recon+knn"]
    for r in report.runs:
        assert r.maps.shape == (8, 64, 64) and np.isfinite(r.maps).all()
        assert 0.0 <= r.metrics["image_auroc"] <= 1.0 and 0.0 <= r.metrics["pro"] <= 1.0
    write_scores_and_maps(report, tmp_path)
    header = (tmp_path / "scores.csv").read_text().splitlines()[0].split(",")
    assert header == ["path", "score", "recon", "recon+knn"]
    assert (tmp_path / "scorers" / "recon_plus_knn" / "maps" / "paint" / "000.npy").is_file()


def test_scorer_names():
    assert resolve_scorers(None) == ["scalowatch", "patchcore"]  # the product's image detector, then the baseline
    assert resolve_scorers(["all"])[:2] == ["scalowatch", "patchcore"] and len(resolve_scorers(["all"])) == 7
    assert resolve_scorers(["kl", "kl", "patchcore"]) == ["kl", "patchcore"]
    with pytest.raises(InputError):
        resolve_scorers(["nope"])


def test_evaluate_perfect_and_inverted_maps():
    labels = np.array([0, 0, 1, 1])
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[2:, 2:5, 2:5] = True
    maps = masks.astype(np.float32) + 0.01 * np.arange(64).reshape(8, 8)[None] / 64
    good = evaluate(labels, masks, np.array([0.1, 0.2, 0.9, 0.8]), maps)
    assert good == {"image_auroc": 1.0, "pixel_auroc": pytest.approx(1.0), "pro": pytest.approx(1.0, abs=0.02)}
    bad = evaluate(labels, masks, np.array([0.9, 0.8, 0.1, 0.2]), -maps)
    assert bad["image_auroc"] == 0.0 and bad["pixel_auroc"] < 0.1 and bad["pro"] < 0.1


def test_bad_folder_is_a_clear_error(tmp_path):
    res = _cli(["bench", "mvtec", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2
    assert "error" in res.output.lower()


def test_product_detector_is_the_default_with_its_ablation_from_one_fit(category, tmp_path):
    """scores.csv and maps/ are the product's; its ablation rows and the baseline come from the same fit."""
    from models.image_detector import ImageDetectorConfig

    assert MVTecBenchConfig().detector_config() == ImageDetectorConfig()  # bench default = product default
    out = tmp_path / "out"
    res = _cli(["bench", "mvtec", "--data", str(category), "--out", str(out), "--image-size", "64", "--device", "cpu",
                "--train-steps", "3", "--ablate", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "mvtec.json").read_text())
    assert list(report["metrics"]) == ["scalowatch", "without_diffusion", "diffusion_only", "patchcore"]
    assert report["config"]["product"]["train_steps"] == 3
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [float(r["score"]) for r in rows] == [float(r["scalowatch"]) for r in rows]
    product = np.load(out / "maps" / "paint" / "000.npy")
    np.testing.assert_array_equal(product, np.load(out / "scorers" / "scalowatch" / "maps" / "paint" / "000.npy"))
    knn = np.load(out / "scorers" / "without_diffusion" / "maps" / "paint" / "000.npy")
    diffusion = np.load(out / "scorers" / "diffusion_only" / "maps" / "paint" / "000.npy")
    np.testing.assert_allclose(product, 0.5 * diffusion + 0.5 * knn, rtol=1e-5, atol=1e-5)
    # The kNN-only variant ranks images exactly as the baseline (one fit, an affine standardisation apart).
    assert report["metrics"]["without_diffusion"] == report["metrics"]["patchcore"]
    # The baseline row taken from the product's pass is what the baseline scores on its own (own fit, own pass).
    alone = tmp_path / "alone"
    res = _cli(["bench", "mvtec", "--data", str(category), "--out", str(alone), "--image-size", "64", "--device", "cpu",
                "--scorer", "patchcore", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert [r["patchcore"] for r in rows] == [r["patchcore"] for r in csv.DictReader((alone / "scores.csv").open())]
    np.testing.assert_array_equal(np.load(out / "scorers" / "patchcore" / "maps" / "paint" / "000.npy"),
                                  np.load(alone / "scorers" / "patchcore" / "maps" / "paint" / "000.npy"))


def test_bench_scores_are_what_scalowatch_train_and_score_give(category, tmp_path):
    """What users run is what is measured, for images too: ``scalowatch train`` + ``scalowatch score`` on a category
    folder give every test image the score and the map ``bench mvtec`` publishes (the same detector, fitted on the
    same images in the same order, scoring the same pixels)."""
    bench = tmp_path / "bench"
    res = _cli(["bench", "mvtec", "--data", str(category), "--out", str(bench), "--image-size", "64", "--device", "cpu",
                "--train-steps", "3", "--scorer", "scalowatch", "--no-progress"])
    assert res.exit_code == 0, res.output
    model, scores, maps = tmp_path / "model", tmp_path / "scores.csv", tmp_path / "maps"
    res = _cli(["train", str(category), "--model-dir", str(model), "--image-size", "64", "--steps", "3",
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = _cli(["score", str(category), "--model-dir", str(model), "--out", str(scores), "--maps-dir", str(maps),
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    measured = {r["path"]: float(r["score"]) for r in csv.DictReader((bench / "scores.csv").open())}
    used = {r["path"].removeprefix("test/"): float(r["score"]) for r in csv.DictReader(scores.open())}
    assert set(used) == set(measured) and len(measured) == 8
    for path, score in measured.items():
        assert used[path] == pytest.approx(score, rel=1e-5)  # the CSVs keep 6 significant digits
        np.testing.assert_allclose(np.load((maps / "test" / path).with_suffix(".npy")),
                                   np.load((bench / "maps" / path).with_suffix(".npy")), rtol=0, atol=1e-5)
