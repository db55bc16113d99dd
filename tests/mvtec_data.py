"""A tiny synthetic MVTec-like category for benchmark tests (anomalib style: never download data).

Normal images: a grey gradient with a dark disc near the centre (jittered by a few pixels) and mild noise.
Defects: a bright red square painted at a random spot (``paint``), with its ground-truth mask.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def normal_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    base = 120 + 60 * xx / size
    cy, cx = size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size / 4) ** 2
    img = np.repeat(base[..., None], 3, axis=2)
    img[disc] = 50
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def paint(img: np.ndarray, rng: np.random.Generator, side: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Paint a red square at a random spot → (image, 0/255 mask)."""
    size = img.shape[0]
    y, x = rng.integers(4, size - side - 4, size=2)
    out = img.copy()
    out[y : y + side, x : x + side] = (230, 30, 30)
    mask = np.zeros(img.shape[:2], dtype=np.uint8)
    mask[y : y + side, x : x + side] = 255
    return out, mask


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_category(root: Path, n_train: int = 12, n_good: int = 4, n_defect: int = 4, seed: int = 0) -> Path:
    """``root/{train/good, test/good, test/paint, ground_truth/paint}`` with PNGs named 000.png …"""
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        _save(root / "train" / "good" / f"{i:03d}.png", normal_image(rng))
    for i in range(n_good):
        _save(root / "test" / "good" / f"{i:03d}.png", normal_image(rng))
    for i in range(n_defect):
        img, mask = paint(normal_image(rng), rng)
        _save(root / "test" / "paint" / f"{i:03d}.png", img)
        _save(root / "ground_truth" / "paint" / f"{i:03d}_mask.png", mask)
    return root
