"""`scalowatch bench audio` on synthetic WAV clips: deterministic split, windowing, clip scores, output format."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.io import wavfile
from typer.testing import CliRunner

from benchmarks.audio import (
    AudioBenchConfig, clip_score, read_wav, resolve_detectors, run_audio, split_clips, windows_of,
)
from models.errors import InputError

RATE = 16000


def _clip(rng, abnormal: bool, seconds: float = 0.5) -> np.ndarray:
    """A fan-like hum (120 Hz + 1 kHz tones + noise); abnormal clips add a loud 3 kHz rattle."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 120 * t) + 0.1 * np.sin(2 * np.pi * 1000 * t + rng.uniform(0, 6))
    x += 0.05 * rng.standard_normal(t.size)
    if abnormal:
        x += 0.3 * np.sin(2 * np.pi * 3000 * t) * (np.sin(2 * np.pi * 7 * t) > 0)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio") / "fan"
    rng = np.random.default_rng(0)
    for folder, n, abnormal in (("normal", 6, False), ("abnormal", 3, True)):
        (root / folder).mkdir(parents=True)
        for i in reversed(range(n)):  # written out of order: the split must not depend on creation order
            wavfile.write(root / folder / f"{i:08d}.wav", RATE, _clip(rng, abnormal))
    return root


def test_split_is_deterministic_and_disjoint(dataset):
    a, b = split_clips(dataset), split_clips(dataset)
    assert a.describe() == b.describe()
    assert [c.name for c in a.train] == [f"normal/{i:08d}.wav" for i in range(3)]
    assert [c.name for c in a.test] == [f"normal/{i:08d}.wav" for i in range(3, 6)] + \
        [f"abnormal/{i:08d}.wav" for i in range(3)]
    assert [c.label for c in a.test] == [0, 0, 0, 1, 1, 1]
    assert not {c.path for c in a.train} & {c.path for c in a.test}


def test_split_errors(tmp_path):
    with pytest.raises(InputError):
        split_clips(tmp_path)


def test_windows_and_clip_score():
    w = windows_of(np.arange(10.0), 4, 3)
    assert w.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    with pytest.raises(InputError):
        windows_of(np.arange(3.0), 4, 1)
    assert clip_score(np.array([1.0, 5.0, 3.0, 2.0]), 0.5) == 4.0
    assert clip_score(np.array([1.0, 5.0]), 0.01) == 5.0


def test_read_wav_scales_int16(dataset):
    x, rate = read_wav(dataset / "normal" / "00000000.wav")
    assert rate == RATE and x.dtype == np.float32 and 0.2 < np.abs(x).max() <= 1.0


def test_baseline_separates_and_scores_are_reproducible(dataset):
    cfg = AudioBenchConfig(window=256, test_hop=128, n_scales=16, image_size=16, device="cpu")
    r1 = run_audio(dataset, ["band_knn"], cfg, progress=False)
    r2 = run_audio(dataset, ["band_knn"], cfg, progress=False)
    assert r1.runs[0].auroc == 1.0  # the rattle adds energy in bands the normal hum never has
    np.testing.assert_array_equal(r1.runs[0].clip_scores, r2.runs[0].clip_scores)
    assert r1.n_train_windows == 3 * (8000 // 256)


def test_detector_names_default_to_the_product_beside_the_baseline():
    assert resolve_detectors(None) == ["band_knn", "scalowatch"]
    assert resolve_detectors(["kl"]) == ["band_knn", "kl"]
    assert len(resolve_detectors(["all"])) == 6
    for gone in ("patchcore", "recon+level", "recon+profile"):  # the +profile/+level variants were removed
        with pytest.raises(InputError):
            resolve_detectors([gone])


def test_cli_writes_json_csv_and_plot(dataset, tmp_path):
    from scalowatch.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "audio", "--data", str(dataset), "--out", str(out),
                                   "--window", "256", "--train-steps", "3", "--device", "cpu", "--threads", "1",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "clip AUROC" in res.output.strip().splitlines()[-1]
    report = json.loads((out / "audio.json").read_text())
    for key in ("benchmark", "run", "protocol", "config", "auroc", "scorers", "clip_scores", "plots"):
        assert key in report
    assert set(report["auroc"]) == {"band_knn", "scalowatch"}
    assert set(report["scorers"]["scalowatch"]["ablation_auroc"]) == {"product", "without_diffusion",
                                                                      "diffusion_only"}
    assert report["protocol"]["train_clips"] == [f"normal/{i:08d}.wav" for i in range(3)]
    assert report["run"]["wall_seconds"] > 0
    rows = list(csv.DictReader((out / "clip_scores.csv").open()))
    assert len(rows) == 6 and set(rows[0]) == {"clip", "label", "band_knn", "scalowatch"}
    assert all(np.isfinite(float(r["scalowatch"])) for r in rows)
    assert (out / "plots" / "audio_roc.png").stat().st_size > 1000


def test_cli_bad_folder(tmp_path):
    from scalowatch.cli import app

    res = CliRunner().invoke(app, ["bench", "audio", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                   "--no-progress"])
    assert res.exit_code == 2 and "error" in res.output.lower()


# ---------------------------------------------------------------------------------------------- the product
TINY = AudioBenchConfig(window=256, test_hop=128, n_scales=16, image_size=16, device="cpu", train_steps=3)


def _write(root, clips):
    for name, x in clips.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(root / name, RATE, x)
    return root


def test_product_scores_test_clips_as_the_training_streams_continuation(tmp_path):
    """The test clips follow the training part as one stream, normal clips first: the same training clips give the
    same normal-clip scores whatever abnormal clips follow (scoring is causal)."""
    rng = np.random.default_rng(1)
    train = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(3)}
    test_a = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(3, 6)}
    test_a.update({f"abnormal/{i:08d}.wav": _clip(rng, True) for i in range(2)})
    test_b = dict(test_a)
    test_b.update({f"abnormal/{i:08d}.wav": (np.clip(_clip(rng, True) * 10.0, -32767, 32767)).astype(np.int16)
                   for i in range(2)})
    a = run_audio(_write(tmp_path / "a", {**train, **test_a}), ["scalowatch"], TINY, progress=False)
    b = run_audio(_write(tmp_path / "b", {**train, **test_b}), ["scalowatch"], TINY, progress=False)
    np.testing.assert_allclose(a.runs[0].clip_scores[:3], b.runs[0].clip_scores[:3])
    assert b.runs[0].clip_scores[3:].min() >= b.runs[0].clip_scores[:3].max()  # the rattles score highest
    # One stream, not clips scored alone: the last normal clip's first windows hold the end of the clip before it,
    # so a different clip before it changes its score (scored alone from the state after training, it would not).
    test_c = dict(test_a)
    test_c["normal/00000004.wav"] = _clip(rng, True)  # the clip before normal/00000005 now rattles
    c = run_audio(_write(tmp_path / "c", {**train, **test_c}), ["scalowatch"], TINY, progress=False)
    assert c.runs[0].clip_scores[2] != a.runs[0].clip_scores[2]


def test_via_monitor_gives_the_detectors_clip_scores(tmp_path):
    """What users run is what is measured: the stream replayed as PCM chunks through the monitor's processing path
    (its own fit, online state, the store) gives the detector path's clip scores — abnormal clips that follow the
    normal ones included, and at a sample rate other than the monitor's default."""
    rng = np.random.default_rng(4)
    clips = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(6)}
    clips.update({f"abnormal/{i:08d}.wav": _clip(rng, True) for i in range(2)})
    root = _write(tmp_path / "fan", clips)
    detector = run_audio(root, ["scalowatch"], TINY, progress=False)
    monitor = run_audio(root, ["scalowatch"], TINY, progress=False, via="monitor")
    assert [r.name for r in monitor.runs] == ["scalowatch"] and monitor.runs[0].details["via"] == "monitor"
    np.testing.assert_allclose(monitor.runs[0].clip_scores, detector.runs[0].clip_scores, rtol=0, atol=1e-12)
    assert len(set(detector.runs[0].clip_scores.round(9))) > 2  # not a constant that would match anyway
    odd = _write(tmp_path / "odd", clips)  # the same samples at 22,050 Hz: 1e9 / rate is no whole number of ns
    for path in odd.rglob("*.wav"):
        wavfile.write(path, 22_050, wavfile.read(path)[1])
    np.testing.assert_allclose(run_audio(odd, ["scalowatch"], TINY, progress=False, via="monitor").runs[0].clip_scores,
                               run_audio(odd, ["scalowatch"], TINY, progress=False).runs[0].clip_scores,
                               rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="via"):
        run_audio(root, ["scalowatch"], TINY, progress=False, via="kafka")


def test_product_sees_a_louder_clip_through_its_level_channel_and_reports_the_ablation(tmp_path):
    """Abnormal = a normal clip played 1.75x louder: invisible to window-normalised scalograms."""
    rng = np.random.default_rng(2)
    clips = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(6)}
    for i in range(3):
        quiet = _clip(rng, False)
        clips[f"abnormal/{i:08d}.wav"] = np.clip(quiet.astype(np.float64) * 1.75, -32767, 32767).astype(np.int16)
    report = run_audio(_write(tmp_path / "loud", clips), ["scalowatch"], TINY, progress=False)
    product = report.runs[0]
    assert product.auroc == 1.0
    assert product.details["ablation_auroc"]["without_diffusion"] == 1.0
    assert 0.0 <= product.details["ablation_auroc"]["diffusion_only"] <= 1.0


def test_gain_normalise_makes_every_number_independent_of_a_clips_loudness(tmp_path):
    """Issue 10 asks the diffusion channel to hold on loudness-normalised clips: with ``gain_normalise`` a clip
    played twice as loud gives bit-identical scores in every detector and variant; without it the baseline (which
    keeps loudness on purpose) tells the two apart."""
    rng = np.random.default_rng(3)
    clips = {f"normal/{i:08d}.wav": _clip(rng, False) // 2 for i in range(5)}
    clips.update({f"abnormal/{i:08d}.wav": _clip(rng, True) // 2 for i in range(2)})
    louder = {name: x * 2 if name != "normal/00000000.wav" else x for name, x in clips.items()}  # exact
    cfg = AudioBenchConfig(window=256, test_hop=128, n_scales=16, image_size=16, device="cpu", train_steps=3,
                           gain_normalise=True)
    a = run_audio(_write(tmp_path / "a", clips), ["scalowatch"], cfg, progress=False)
    b = run_audio(_write(tmp_path / "b", louder), ["scalowatch"], cfg, progress=False)
    for ra, rb in zip(a.runs, b.runs):
        np.testing.assert_array_equal(ra.clip_scores, rb.clip_scores)
        if ra.name == "scalowatch":
            for variant, scores in ra.details["ablation_clip_scores"].items():
                assert scores == rb.details["ablation_clip_scores"][variant]
    raw = AudioBenchConfig(window=256, test_hop=128, n_scales=16, image_size=16, device="cpu")
    plain_a = run_audio(tmp_path / "a", ["band_knn"], raw, progress=False).runs[0].clip_scores
    plain_b = run_audio(tmp_path / "b", ["band_knn"], raw, progress=False).runs[0].clip_scores
    assert not np.allclose(plain_a, plain_b)


def test_window_and_hop_default_to_the_audio_preset():
    from models.detector import PRESETS

    audio = PRESETS["audio"].config
    cfg = AudioBenchConfig()
    assert (cfg.window, cfg.test_hop) == (audio.window, audio.hop)
    assert AudioBenchConfig(window=300).test_hop == 150


def test_detector_options_reach_the_product_and_bad_ones_are_refused(tmp_path):
    """``scalowatch:level_weight=0`` is the product without its loudness channels: on clips that differ only in
    loudness it hears nothing, and its fused score is its diffusion channel's."""
    assert resolve_detectors(["scalowatch:level_weight=0"]) == ["band_knn", "scalowatch:level_weight=0"]
    for bad in ("scalowatch:no_such_setting=1", "scalowatch:level_weight", "band_knn:k=3"):
        with pytest.raises(InputError):
            resolve_detectors([bad])
    rng = np.random.default_rng(2)
    clips = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(6)}
    for i in range(3):
        clips[f"abnormal/{i:08d}.wav"] = np.clip(_clip(rng, False).astype(np.float64) * 1.75, -32767,
                                                 32767).astype(np.int16)
    report = run_audio(_write(tmp_path / "loud", clips), ["scalowatch:level_weight=0"], TINY, progress=False)
    (run,) = report.runs
    assert run.name == "scalowatch:level_weight=0" and run.details["detector"]["level_weight"] == 0
    assert run.details["ablation_clip_scores"]["product"] == run.details["ablation_clip_scores"]["diffusion_only"]
    assert run.auroc < 1.0  # the loudness channel that caught these (test above) is gone
