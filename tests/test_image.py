"""Image loading for MVTec-style folders, on a small synthesised folder (no dataset download)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.transforms.image import (
    ImageConfig,
    denormalise_imagenet,
    load_folder,
    load_image,
    load_mvtec_test,
    load_mvtec_train,
    normalise_imagenet,
)


def _png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)


@pytest.fixture
def category(tmp_path):
    root = tmp_path / "widget"
    for i in range(3):
        _png(root / "train" / "good" / f"{i:03d}.png", np.full((40, 40, 3), 100 + i))
    _png(root / "test" / "good" / "000.png", np.full((40, 40, 3), 100))
    crack = np.full((40, 40, 3), 100)
    crack[10:20, 10:20] = 255
    _png(root / "test" / "crack" / "000.png", crack)
    mask = np.zeros((40, 40))
    mask[10:20, 10:20] = 255
    _png(root / "ground_truth" / "crack" / "000_mask.png", mask)
    return root


def test_load_image_resizes_and_normalises(category):
    x = load_image(category / "train" / "good" / "000.png", ImageConfig(size=16))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = (100 / 255 - 0.485) / 0.229
    assert x[0].mean().item() == pytest.approx(expected, abs=1e-4)
    grey = load_image(category / "train" / "good" / "000.png", ImageConfig(size=16, channels=1))
    assert grey.shape == (1, 16, 16)


def test_normalise_round_trip():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(denormalise_imagenet(normalise_imagenet(x)), x, atol=1e-6)


def test_mvtec_layout(category):
    cfg = ImageConfig(size=20)
    train = load_mvtec_train(category, cfg)
    assert train.shape == (3, 3, 20, 20)
    test = load_mvtec_test(category, cfg)
    assert list(test.labels) == [1, 0]  # "crack" sorts before "good"
    assert test.defect_types == ["crack", "good"]
    assert test.masks.shape == (2, 20, 20) and test.masks.dtype == torch.bool
    assert test.masks[0].sum() == 25 and test.masks[1].sum() == 0  # 10×10 of 40×40 → 5×5 of 20×20


def test_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="MVTec"):
        load_mvtec_test(tmp_path / "empty")


def test_real_bottle_images_if_present(shared_data):
    root = shared_data / "mvtec" / "bottle"
    if not root.is_dir():
        pytest.skip("bottle category not present")
    x = load_mvtec_train(root, ImageConfig(size=64), limit=2)
    assert x.shape == (2, 3, 64, 64) and torch.isfinite(x).all()
