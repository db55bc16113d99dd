"""The product's image detector: channels, fusion variants, persistence and errors on a synthetic category."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import InputError, NotFittedError
from models.image_detector import ImageDetector, ImageDetectorConfig
from models.transforms.image import ImageConfig, load_mvtec_test, load_mvtec_train
from mvtec_data import make_category

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest

CONFIG = ImageDetectorConfig(image_size=64, train_steps=40, train_batch=8, calibration_images=6)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = make_category(tmp_path_factory.mktemp("img") / "widget", n_train=12, n_good=4, n_defect=4)
    cfg = ImageConfig(size=64)
    return load_mvtec_train(root, cfg), load_mvtec_test(root, cfg)


@pytest.fixture(scope="module")
def detector(split):
    return ImageDetector(CONFIG, device="cpu").fit(split[0])


def test_channels_fuse_into_the_variants(detector, split):
    test = split[1]
    ch = detector.channel_maps(test.images)
    assert ch.diffusion.shape == ch.knn.shape == (8, 64, 64)
    product = detector.fuse(ch)
    np.testing.assert_allclose(product.maps, 0.5 * ch.diffusion + 0.5 * ch.knn, rtol=1e-6)
    np.testing.assert_array_equal(product.scores, product.maps.reshape(8, -1).max(axis=1))
    np.testing.assert_array_equal(detector.fuse(ch, "diffusion_only").maps, ch.diffusion)
    np.testing.assert_array_equal(detector.fuse(ch, "without_diffusion").maps, ch.knn)
    with pytest.raises(ValueError, match="variant"):
        detector.fuse(ch, "knn_only")
    # Painted red squares lie far from every normal patch: each defect outscores each good image.
    labels = test.labels.numpy() if torch.is_tensor(test.labels) else np.asarray(test.labels)
    assert product.scores[labels == 1].min() > product.scores[labels == 0].max()


def test_diffusion_channel_is_the_context_conditioned_recon_standardised_on_training_images(detector, split):
    assert len(detector.diffusion) == CONFIG.ensemble == 2
    for d in detector.diffusion:
        assert d.params.start == "noised" and d.params.space == "feature" and d.params.lam == 1.0
        assert d.params.context_block == CONFIG.context_block == 4 and d.params.n_noise == CONFIG.noise_draws == 8
        assert d.unet_config.cond_channels == d.unet_config.in_channels + 1  # the clean context and its mask
    # Two U-Nets trained from consecutive seeds: different networks, and the channel is the mean of their maps.
    a, b = (m.model.state_dict() for m in detector.diffusion)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert [m.train_config.seed for m in detector.diffusion] == [CONFIG.seed, CONFIG.seed + 1]
    # ... and each draws its own noise fields: shared fields would correlate the members' errors draw by draw.
    first, second = detector.diffusion
    shape = (40, 8, 8)
    for k in range(CONFIG.noise_draws):
        assert not any(torch.equal(first.fixed_noise(shape, k), second.fixed_noise(shape, j))
                       for j in range(CONFIG.noise_draws))
    x = split[1].images[:3]
    mean = np.mean([m.score(x).maps for m in detector.diffusion], axis=0)
    raw = detector._diffusion_raw(x)
    from models.scorers.maps import gaussian_smooth
    np.testing.assert_allclose(raw, gaussian_smooth(torch.from_numpy(mean), detector._sigma()).numpy(), rtol=1e-5,
                               atol=1e-5)
    # Standardised with training statistics: the calibration images average ≈ 0 with unit spread.
    train = split[0]
    idx = np.unique(np.linspace(0, train.shape[0] - 1, CONFIG.calibration_images).round()).astype(int)
    z = detector.channel_maps(train[idx]).diffusion
    assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1.0) < 1e-3


def test_both_channels_read_one_backbone_pass_and_get_the_maps_of_their_own(detector, split, monkeypatch):
    """One EfficientNet pass serves the kNN bank and both U-Nets; each channel's maps are the ones it computes
    alone, bit for bit, and the network runs once per batch instead of three times."""
    x = split[1].images
    shared = detector.channel_maps(x)
    mean, std = detector.diffusion_stats
    np.testing.assert_array_equal(shared.diffusion, (detector._diffusion_raw(x) - mean) / std)
    alone = detector.knn.score(x)
    np.testing.assert_array_equal(shared.knn_raw.maps, alone.maps)
    np.testing.assert_array_equal(shared.knn_raw.scores, alone.scores)
    assert set(shared.seconds) == {"backbone", "diffusion", "knn"}
    from models.features import FeatureExtractor

    passes = []
    original = FeatureExtractor.block_maps
    monkeypatch.setattr(FeatureExtractor, "block_maps",
                        lambda self, *a, **k: passes.append(self.config.layers) or original(self, *a, **k))
    detector.channel_maps(x)
    assert passes == [(3, 4, 5)]  # the union of the kNN blocks (3, 4, 5) and the diffusion space's (4)
    # Batch by batch (memory of one batch of maps): with smaller batches than the channels' own, the same maps to
    # float rounding, one pass per batch.
    from dataclasses import replace

    passes.clear()
    monkeypatch.setattr(detector, "config", replace(detector.config, score_batch=3))
    small = detector.channel_maps(x)
    assert passes == [(3, 4, 5)] * 3  # 8 images in batches of 3
    np.testing.assert_allclose(small.diffusion, shared.diffusion, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(small.knn_raw.maps, shared.knn_raw.maps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(small.knn_raw.extras["patch_max"], shared.knn_raw.extras["patch_max"], rtol=1e-4)


def test_save_load_gives_identical_scores(detector, split, tmp_path):
    detector.save(tmp_path / "det")
    back = ImageDetector.load(tmp_path / "det", device="cpu")
    assert back.config == detector.config
    x = split[1].images[:5]
    np.testing.assert_array_equal(back.score(x).maps, detector.score(x).maps)


def test_scores_do_not_depend_on_the_batch(detector, split):
    x = split[1].images
    together = detector.score(x).scores
    alone = np.concatenate([detector.score(x[i : i + 1]).scores for i in range(3)])
    np.testing.assert_allclose(together[:3], alone, rtol=1e-5, atol=1e-5)


def test_clear_errors(detector, tmp_path):
    with pytest.raises(NotFittedError):
        ImageDetector(CONFIG).score(torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match="channel"):
        detector.score(torch.zeros(1, 1, 64, 64))
    with pytest.raises(InputError, match="size"):
        detector.score(torch.zeros(1, 3, 32, 32))
    bad = torch.zeros(1, 3, 64, 64)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        detector.score(bad)
    with pytest.raises(InputError, match="RGB"):
        ImageDetector(CONFIG).fit(torch.zeros(4, 1, 64, 64))
    with pytest.raises(ValueError, match="PatchCoreConfig"):
        ImageDetectorConfig(patchcore={"coreset": 0.1})
    with pytest.raises(ValueError, match="ensemble"):
        ImageDetectorConfig(ensemble=0)
    with pytest.raises(ValueError, match="diffusion_weight"):
        ImageDetectorConfig(diffusion_weight=1.5)
    with pytest.raises(ValueError, match=r"block indices \[16\] outside 0..15"):
        ImageDetectorConfig(space_layers=(16,))
    # The context needs a map of two blocks a side: block 4 is at stride 8, block 6 at 16 (64 px: 8 and 4 cells).
    ImageDetectorConfig(image_size=64, space_layers=(4,), context_block=4)
    with pytest.raises(ValueError, match="image_size 64 gives 4"):
        ImageDetectorConfig(image_size=64, space_layers=(6,), context_block=4)
    ImageDetectorConfig(image_size=64, space_layers=(4, 6), context_block=4)  # the finest block sets the map
    with pytest.raises(FileNotFoundError, match="image detector"):
        ImageDetector.load(tmp_path)
