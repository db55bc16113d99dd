"""A defect image without its ground-truth mask must not silently become an all-normal mask."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.transforms.image import ImageConfig, load_mvtec_test


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


@pytest.fixture
def category(tmp_path):
    """One good image, two cracks: 000 has a mask, 001 has none."""
    root = tmp_path / "widget"
    _png(root / "test" / "good" / "000.png", np.full((40, 40, 3), 100))
    for i in range(2):
        _png(root / "test" / "crack" / f"{i:03d}.png", np.full((40, 40, 3), 200))
    mask = np.zeros((40, 40))
    mask[0:20, 0:20] = 255
    _png(root / "ground_truth" / "crack" / "000_mask.png", mask)
    return root


def test_missing_mask_is_a_clear_error_by_default(category):
    with pytest.raises(InputError, match=r"001\.png has no ground-truth mask.*allow_missing_masks"):
        load_mvtec_test(category, ImageConfig(size=20))


def test_allowed_missing_mask_marks_the_whole_image_defective(category, caplog):
    with caplog.at_level(logging.WARNING, logger="models.transforms.image"):
        split = load_mvtec_test(category, ImageConfig(size=20), allow_missing_masks=True)
    names = [f.name for f in split.files]
    assert list(split.labels) == [1, 1, 0] and names == ["000.png", "001.png", "000.png"]
    assert split.masks[0].sum() == 100  # the real mask: 20×20 of 40×40 → 10×10 of 20×20
    assert bool(split.masks[1].all())  # what the warning says: the whole image is defective
    assert not split.masks[2].any()  # a good image still has an empty mask
    assert any("whole image as defective" in r.getMessage() and "001.png" in r.getMessage()
               for r in caplog.records)


def test_complete_masks_need_no_option(category):
    (category / "test" / "crack" / "001.png").unlink()
    split = load_mvtec_test(category, ImageConfig(size=20))
    assert split.masks.dtype == torch.bool and split.masks[0].sum() == 100
