"""One contract for every registered scorer, on small synthetic scalograms with the "tiny" U-Net.

Training is the expensive part, so it happens twice per session: one plain DDPM (``recon`` fits it) and one
ADDM model (``adversarial`` fits it). ``trend``, ``kl`` and ``dynamic`` *reuse* the plain network
(``fit(normal, reuse=...)``) — the scorers differ only in how they score — but still compute their own
statistics (and the KNN bank) from the training data. ``test_fit_trains_its_own_model`` covers fitting from
scratch for every scorer with a handful of steps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.errors import CheckpointMismatchError, InputError, NotFittedError
from models.scorers import available_scorers, create_scorer, load_scorer
from models.scorers.diffusion import ADDM_WEIGHT
from models.training import TrainConfig
from models.transforms.cwt import CWTConfig, Scalogram
from scorer_data import sensor_windows

SCORERS = available_scorers()
SIZE = (16, 16)
# fp32 (amp off): for a model this small bf16 autocast on a CPU costs more than it saves.
TRAIN = TrainConfig(steps=120, batch_size=32, lr=2e-3, amp=False)
# Small calibration/batch settings keep the suite to a few minutes on two shared cores.
FAST = dict(calibration_samples=64, batch_size=128, amp=False)


@pytest.fixture(scope="session")
def data() -> dict[str, torch.Tensor]:
    to_image = Scalogram(CWTConfig(n_scales=16, out_size=SIZE))
    return {
        "train": to_image(sensor_windows(160, seed=0)),
        "normal": to_image(sensor_windows(30, seed=1)),
        "anomalous": to_image(sensor_windows(30, seed=2, anomalous=True)),
    }


@pytest.fixture(scope="session")
def fitted(data) -> dict:
    """name → fitted scorer, built lazily and shared by the whole session."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            if name in ("recon", "adversarial"):
                scorer = create_scorer(name, unet="tiny", train=TRAIN, device="cpu", **FAST)
                cache[name] = scorer.fit(data["train"])
            else:
                base = get("recon")
                scorer = create_scorer(name, unet="tiny", device="cpu", **FAST)
                cache[name] = scorer.fit(data["train"], reuse=base)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def scored(fitted, data) -> dict:
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            s = fitted(name)
            cache[name] = (s.score(data["normal"]), s.score(data["anomalous"]))
        return cache[name]

    return get


def test_all_five_scorers_are_registered():
    assert set(SCORERS) >= {"recon", "trend", "kl", "dynamic", "adversarial"}


@pytest.mark.parametrize("name", SCORERS)
def test_separates_injected_anomalies(name, scored):
    normal, anomalous = scored(name)
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    auroc = roc_auc_score(y, np.r_[normal.scores, anomalous.scores])
    assert auroc > 0.9, f"{name}: AUROC {auroc:.3f}"


@pytest.mark.parametrize("name", SCORERS)
def test_maps_at_input_resolution_and_scores_finite(name, scored, data):
    normal, anomalous = scored(name)
    for batch, x in ((normal, data["normal"]), (anomalous, data["anomalous"])):
        assert batch.scores.shape == (x.shape[0],)
        assert batch.maps.shape == (x.shape[0], *SIZE)
        assert np.isfinite(batch.scores).all() and np.isfinite(batch.maps).all()
        if batch.reconstructions is not None:
            assert batch.reconstructions.shape == tuple(x.shape)
    # The map localises: for the spike anomalies (every third sample) the hottest column is near the spike.
    assert anomalous.maps.std() > 0


@pytest.mark.parametrize("name", SCORERS)
def test_scores_deterministic_and_batch_independent(name, fitted, data):
    s = fitted(name)
    x = data["anomalous"][:6]
    together = s.score(x).scores
    alone = np.concatenate([s.score(x[i : i + 1]).scores for i in range(3)])
    np.testing.assert_allclose(together[:3], alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.score(x).scores, together, rtol=0, atol=0)


@pytest.mark.parametrize("name", SCORERS)
def test_save_load_gives_identical_scores(name, fitted, data, tmp_path):
    s = fitted(name)
    s.save(tmp_path / name)
    loaded = load_scorer(tmp_path / name, device="cpu")
    assert type(loaded) is type(s) and loaded.name == name
    assert loaded.params == s.params and loaded.unet_config == s.unet_config
    x = data["anomalous"][:8]
    np.testing.assert_allclose(loaded.score(x).scores, s.score(x).scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.score(x).maps, s.score(x).maps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SCORERS)
def test_loading_another_scorers_checkpoint_fails_clearly(name, fitted, tmp_path):
    other = "kl" if name != "kl" else "recon"
    fitted(other).save(tmp_path / other)
    cls = type(create_scorer(name))
    with pytest.raises(CheckpointMismatchError, match=other):
        cls.load(tmp_path / other, device="cpu")


@pytest.mark.parametrize("name", SCORERS)
def test_bad_input_raises_input_error(name, fitted):
    s = fitted(name)
    good = torch.zeros(2, 1, *SIZE)
    nan = good.clone()
    nan[0, 0, 3, 3] = float("nan")
    bad_inputs = {
        "wrong ndim": torch.zeros(2, *SIZE),
        "NaN": nan,
        "inf": good.clone().fill_(float("inf")),
        "empty": torch.zeros(0, 1, *SIZE),
        "wrong channels": torch.zeros(2, 3, *SIZE),
        "wrong size": torch.zeros(2, 1, 8, 8),
        "not an array": "scalogram",
    }
    for label, bad in bad_inputs.items():
        with pytest.raises(InputError):
            s.score(bad)
            pytest.fail(f"{name} accepted {label}")


@pytest.mark.parametrize("name", SCORERS)
def test_score_before_fit_raises_not_fitted(name, tmp_path):
    s = create_scorer(name, unet="tiny", device="cpu")
    with pytest.raises(NotFittedError):
        s.score(torch.zeros(2, 1, *SIZE))
    with pytest.raises(NotFittedError):
        s.save(tmp_path / "x")


@pytest.mark.parametrize("name", SCORERS)
def test_adversarial_flag_sets_addm_weight(name):
    assert create_scorer(name, adversarial=True).train_config.adversarial_weight == ADDM_WEIGHT
    expected = ADDM_WEIGHT if name == "adversarial" else 0.0
    assert create_scorer(name).train_config.adversarial_weight == expected


def test_adversarial_model_was_trained_with_the_addm_term(fitted):
    assert fitted("adversarial").train_config.adversarial_weight == ADDM_WEIGHT
    assert fitted("recon").train_config.adversarial_weight == 0.0


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="unknown option"):
        create_scorer("recon", lamda=0.3)


@pytest.mark.parametrize("name", SCORERS)
def test_fit_trains_its_own_model(name, data):
    s = create_scorer(name, unet="tiny", train=TrainConfig(steps=3, batch_size=8), device="cpu",
                      calibration_samples=16)
    s.fit(data["train"][:24])
    assert s.is_fitted and len(s.train_losses) == 3
    assert np.isfinite(s.score(data["normal"][:4]).scores).all()


def test_feature_space_scoring_on_images():
    """space="feature": RGB images → EfficientNet maps → diffusion on maps; maps back at image resolution."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    base = torch.sin(4 * xx)[None, None].expand(24, 3, 64, 64)
    train = base + 0.1 * torch.randn(24, 3, 64, 64, generator=g)
    s = create_scorer("recon", unet="tiny", train=TrainConfig(steps=3, batch_size=8), device="cpu",
                      space="feature", space_layers=(2,), calibration_samples=16)
    s.fit(train)
    assert s.unet_config.in_channels == 24 and s.unet_config.sample_size == (16, 16)
    out = s.score(train[:2])
    assert out.maps.shape == (2, 64, 64) and out.reconstructions is None
    with pytest.raises(InputError):
        s.score(torch.zeros(2, 1, 64, 64))


def test_recon_start_option_is_validated():
    assert create_scorer("recon", space_layers=2).params.space_layers == (2,)  # one block, as command lines give it
    with pytest.raises(ValueError, match="start"):
        create_scorer("recon", start="half")
    with pytest.raises(ValueError, match="n_noise"):
        create_scorer("recon", start="clean", n_noise=2)


def test_recon_clean_start_draws_no_noise_and_separates(fitted, data):
    """start="clean" denoises √ᾱ·x itself: the noise seed cannot matter, and x̂₀ is one U-Net step from it."""
    base = fitted("recon")
    clean = create_scorer("recon", unet="tiny", device="cpu", start="clean", **FAST).fit(data["train"], reuse=base)
    reseeded = create_scorer("recon", unet="tiny", device="cpu", start="clean", **{**FAST, "seed": 99}).fit(
        data["train"], reuse=base)
    x = data["anomalous"][:6]
    # (the seed also picks the calibration subset, so compare reconstructions, not the z-scored maps)
    np.testing.assert_array_equal(clean.score(x).reconstructions, reseeded.score(x).reconstructions)
    noised = create_scorer("recon", unet="tiny", device="cpu", **{**FAST, "seed": 99}).fit(data["train"], reuse=base)
    assert not np.allclose(noised.score(x).reconstructions, base.score(x).reconstructions)  # noised: the draw matters

    sched, t = clean.scheduler, clean.params.t_start
    with torch.inference_mode():
        x_t = sched.scale_clean(x, t)
        by_hand = sched.pred_original_sample(x_t, clean.eps(x_t, t), t)
    np.testing.assert_allclose(clean.score(x).reconstructions, by_hand.numpy(), rtol=1e-5, atol=1e-5)

    normal, anomalous = clean.score(data["normal"]), clean.score(data["anomalous"])
    y = np.r_[np.zeros(len(normal.scores)), np.ones(len(anomalous.scores))]
    assert roc_auc_score(y, np.r_[normal.scores, anomalous.scores]) > 0.9
