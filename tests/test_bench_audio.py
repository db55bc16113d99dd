"""`scalowatch bench audio` on synthetic WAV clips: deterministic split, windowing, clip scores, output format."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.io import wavfile
from typer.testing import CliRunner

from benchmarks.audio import (
    AudioBenchConfig, LevelScaleCombiner, WindowScores, clip_score, read_wav, resolve_detectors, run_audio,
    split_clips, windows_of,
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


def test_detector_names():
    assert resolve_detectors(None) == ["band_knn", "recon"]
    assert resolve_detectors(["kl"]) == ["band_knn", "kl"]
    assert len(resolve_detectors(["all"])) == 6
    assert resolve_detectors(["recon+level"]) == ["band_knn", "recon", "recon+level"]  # plain score beside it
    assert resolve_detectors(["kl+level", "kl"]) == ["band_knn", "kl", "kl+level"]
    assert resolve_detectors(["recon+profile"]) == ["band_knn", "recon", "recon+profile"]
    with pytest.raises(InputError):
        resolve_detectors(["patchcore"])


def test_cli_writes_json_csv_and_plot(dataset, tmp_path):
    from streamer.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "audio", "--data", str(dataset), "--out", str(out), "--scorer", "recon",
                                   "--window", "256", "--train-steps", "3", "--device", "cpu", "--threads", "1",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "clip AUROC" in res.output.strip().splitlines()[-1]
    report = json.loads((out / "audio.json").read_text())
    for key in ("benchmark", "run", "protocol", "config", "auroc", "scorers", "clip_scores", "plots"):
        assert key in report
    assert set(report["auroc"]) == {"band_knn", "recon"}
    assert report["protocol"]["train_clips"] == [f"normal/{i:08d}.wav" for i in range(3)]
    assert report["run"]["wall_seconds"] > 0
    rows = list(csv.DictReader((out / "clip_scores.csv").open()))
    assert len(rows) == 6 and set(rows[0]) == {"clip", "label", "band_knn", "recon"}
    assert all(np.isfinite(float(r["recon"])) for r in rows)
    assert (out / "plots" / "audio_roc.png").stat().st_size > 1000


def test_cli_bad_folder(tmp_path):
    from streamer.cli import app

    res = CliRunner().invoke(app, ["bench", "audio", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                   "--no-progress"])
    assert res.exit_code == 2 and "error" in res.output.lower()


# ---------------------------------------------------------------------------------------------- <scorer>+level
TINY = AudioBenchConfig(window=256, test_hop=128, n_scales=16, image_size=16, device="cpu", train_steps=3)


def _write(root, clips):
    for name, x in clips.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(root / name, RATE, x)
    return root


def test_combiner_is_two_sided_max_of_training_z_scores():
    comb = LevelScaleCombiner.fit(np.array([1.0, 2.0, 3.0]))  # mean 2, std 1
    w = WindowScores(scores=np.array([2.0, -1.0, 4.0, 2.0]), level_z=np.array([0.5, 0.0, 0.0, -6.0]),
                     scale_z=np.array([-1.0, 1.0, 0.0, 0.0]), error_profile=np.zeros((4, 2)),
                     scalogram_profile=np.zeros((4, 2)))
    np.testing.assert_allclose(comb.combine(w), [1.0, 3.0, 2.0, 6.0])  # a too-easy window (-1 → z=-3) counts
    with pytest.raises(InputError):
        LevelScaleCombiner.fit(np.array([1.0]))


def test_level_variant_standardises_on_training_windows_only(tmp_path):
    rng = np.random.default_rng(1)
    train = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(3)}
    test_a = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(3, 6)}
    test_a.update({f"abnormal/{i:08d}.wav": _clip(rng, True) for i in range(2)})
    test_b = dict(test_a)  # same training clips, very different test clips: 10x louder abnormal ones
    test_b.update({f"abnormal/{i:08d}.wav": (np.clip(_clip(rng, True) * 10.0, -32767, 32767)).astype(np.int16)
                   for i in range(2)})
    a = run_audio(_write(tmp_path / "a", {**train, **test_a}), ["recon", "recon+level"], TINY, progress=False)
    b = run_audio(_write(tmp_path / "b", {**train, **test_b}), ["recon", "recon+level"], TINY, progress=False)
    std_a, std_b = a.runs[1].details["standardisation"], b.runs[1].details["standardisation"]
    assert std_a == std_b  # diffusion-score mean/std and level/scale statistics ignore the test clips
    assert std_a["score_std"] > 0 and std_a["log_scale_std"] > 0
    # the shared (normal) test clips therefore get the same combined clip scores in both runs
    np.testing.assert_allclose(a.runs[1].clip_scores[:3], b.runs[1].clip_scores[:3])
    assert not np.allclose(a.runs[1].clip_scores[3:], b.runs[1].clip_scores[3:])


def test_level_variant_separates_louder_but_otherwise_identical_clips(tmp_path):
    """Abnormal = a normal clip played 1.75x louder: invisible to window-normalised scalograms."""
    rng = np.random.default_rng(2)
    clips = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(6)}
    for i in range(3):
        quiet = _clip(rng, False)
        clips[f"abnormal/{i:08d}.wav"] = np.clip(quiet.astype(np.float64) * 1.75, -32767, 32767).astype(np.int16)
    report = run_audio(_write(tmp_path / "loud", clips), ["recon", "recon+level"], TINY, progress=False)
    plain, combined = report.runs
    assert (plain.name, combined.name) == ("recon", "recon+level")
    assert combined.auroc == 1.0
    assert combined.details["level_scale_only_auroc"] == 1.0
    labels = report.labels
    assert combined.clip_scores[labels == 1].min() > combined.clip_scores[labels == 0].max()
    # the plain diffusion score is reported beside it, from the same fitted model
    assert np.all(np.isfinite(plain.clip_scores)) and plain.fit_seconds == combined.fit_seconds


# ---------------------------------------------------------------------------------------------- <scorer>+profile
def test_profile_knn_is_the_mean_distance_to_the_nearest_training_profiles():
    from benchmarks.audio import ProfileKNN

    train = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    knn = ProfileKNN(k=2).fit(train)
    z = (train - train.mean(0)) / train.std(0, ddof=1)
    q = np.array([[0.0, 0.0], [5.0, 5.0]])
    zq = (q - train.mean(0)) / train.std(0, ddof=1)
    d = np.sort(np.linalg.norm(zq[:, None] - z[None], axis=2), axis=1)[:, :2].mean(1)
    np.testing.assert_allclose(knn.score(q), d)
    assert knn.score(q)[1] > knn.score(q)[0]


def test_profile_variant_separates_a_rattle_at_equal_loudness(tmp_path):
    """Abnormal = the fan plus a 3 kHz rattle, rescaled to the normal clips' RMS: the level channel cannot see it,
    the per-frequency error profile can."""
    rng = np.random.default_rng(3)
    clips = {f"normal/{i:08d}.wav": _clip(rng, False) for i in range(6)}
    rms = np.sqrt(np.mean(clips["normal/00000000.wav"].astype(np.float64) ** 2))
    for i in range(3):
        x = _clip(rng, True).astype(np.float64)
        clips[f"abnormal/{i:08d}.wav"] = (x * rms / np.sqrt(np.mean(x**2))).astype(np.int16)
    report = run_audio(_write(tmp_path / "rattle", clips), ["recon", "recon+profile"], TINY, progress=False)
    plain, profile = report.runs[1:] if report.runs[0].name == "band_knn" else report.runs
    assert (plain.name, profile.name) == ("recon", "recon+profile")
    assert plain.fit_seconds == profile.fit_seconds  # one fitted model
    assert 0.0 <= profile.details["scalogram_profile_knn_auroc"] <= 1.0
    labels = report.labels
    assert profile.clip_scores[labels == 1].min() > profile.clip_scores[labels == 0].max()
