"""Image files → normalised tensors, and the MVTec AD folder layout → typed splits.

Images are resized once at load time (900×900 MVTec PNGs would dominate CPU time otherwise) and normalised
with ImageNet statistics, because the frozen EfficientNet feature extractor was trained on such inputs and
the diffusion model in feature space sees its maps. Masks are resized with nearest-neighbour so they stay
binary. Nothing here downloads anything: the caller points at a folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.errors import InputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageConfig:
    """How an image becomes a model input: square side, colour mode, normalisation."""

    size: int = 224
    channels: int = 3
    normalise: bool = True

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError("image size must be at least 8 pixels")
        if self.channels not in (1, 3):
            raise ValueError("channels must be 1 (grey) or 3 (RGB)")


def normalise_imagenet(x: torch.Tensor) -> torch.Tensor:
    """[0,1] RGB (N,3,H,W) → ImageNet-standardised; grey (N,1,H,W) uses the mean of the three channels."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)
    if x.shape[1] == 1:
        mean, std = mean.mean().reshape(1), std.mean().reshape(1)
    return (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)


def denormalise_imagenet(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise_imagenet` (for showing reconstructions), clipped to [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)
    if x.shape[1] == 1:
        mean, std = mean.mean().reshape(1), std.mean().reshape(1)
    return (x * std.reshape(1, -1, 1, 1) + mean.reshape(1, -1, 1, 1)).clamp(0, 1)


def load_image(path: str | Path, config: ImageConfig | None = None) -> torch.Tensor:
    """One image file → (C, size, size) float32, normalised as configured. InputError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    cfg = config or ImageConfig()
    path = Path(path)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if cfg.channels == 3 else "L")
            img = img.resize((cfg.size, cfg.size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    x = torch.from_numpy(arr.copy())
    x = x.permute(2, 0, 1) if x.ndim == 3 else x.unsqueeze(0)
    if cfg.normalise:
        x = normalise_imagenet(x.unsqueeze(0))[0]
    return x


def load_mask(path: str | Path | None, size: int) -> torch.Tensor:
    """Ground-truth mask → (size, size) bool; ``None`` (a good image has no mask) → all False."""
    from PIL import Image

    if path is None:
        return torch.zeros(size, size, dtype=torch.bool)
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L").resize((size, size), Image.NEAREST))
    return torch.from_numpy(arr > 127)


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(folder: str | Path, config: ImageConfig | None = None, limit: int | None = None) -> torch.Tensor:
    """All images of a folder (sorted by name) → (N, C, size, size). InputError if it holds none."""
    files = image_files(folder)[:limit]
    if not files:
        raise InputError(f"no images in {folder}")
    return torch.stack([load_image(p, config) for p in files])


@dataclass
class MVTecSplit:
    """A test split: images, per-image labels (1 = defective), pixel masks, defect type and file of each."""

    images: torch.Tensor
    labels: np.ndarray
    masks: torch.Tensor
    defect_types: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def load_mvtec_train(category_dir: str | Path, config: ImageConfig | None = None,
                     limit: int | None = None) -> torch.Tensor:
    """``<category>/train/good`` → (N, C, size, size)."""
    return load_folder(Path(category_dir) / "train" / "good", config, limit)


def mask_file(category_dir: str | Path, defect: str, image: str | Path) -> Path:
    """Where MVTec AD keeps the ground-truth mask of ``image``, a test image of type ``defect``."""
    return Path(category_dir) / "ground_truth" / defect / f"{Path(image).stem}_mask.png"


def load_mvtec_test(category_dir: str | Path, config: ImageConfig | None = None,
                    limit_per_type: int | None = None, allow_missing_masks: bool = False) -> MVTecSplit:
    """``<category>/test/<type>`` with masks from ``<category>/ground_truth/<type>/<stem>_mask.png``.

    A defect image without its mask is an InputError by default: any stand-in mask corrupts the pixel metrics
    silently (an all-normal mask turns every defect pixel into a false positive). ``allow_missing_masks=True``
    accepts such images and marks the *whole* image defective (all-True mask, with a warning), which keeps the
    image-level label right and makes the gap visible rather than hidden.
    """
    cfg = config or ImageConfig()
    root = Path(category_dir)
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise InputError(f"{root} does not look like an MVTec category (no test/ folder)")
    images, labels, masks, types, files = [], [], [], [], []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for f in image_files(type_dir)[:limit_per_type]:
            defective = type_dir.name != "good"
            mask_path = mask_file(root, type_dir.name, f) if defective else None
            whole_image = False
            if mask_path is not None and not mask_path.exists():
                if not allow_missing_masks:
                    raise InputError(
                        f"defect image {f} has no ground-truth mask (expected {mask_path}); pixel metrics need "
                        "one. Pass allow_missing_masks=True to mark such images as wholly defective instead")
                log.warning("no mask for %s; treating the whole image as defective (all-True mask)", f)
                whole_image = True
            images.append(load_image(f, cfg))
            labels.append(int(defective))
            masks.append(torch.ones(cfg.size, cfg.size, dtype=torch.bool) if whole_image
                         else load_mask(mask_path, cfg.size))
            types.append(type_dir.name)
            files.append(f)
    if not images:
        raise InputError(f"no test images under {test_dir}")
    return MVTecSplit(torch.stack(images), np.asarray(labels), torch.stack(masks), types, files)
