"""The product's image anomaly detector: what ``scalowatch train``/``score`` run on an image folder and what
``bench mvtec`` measures by default.

Two channels on the same frozen EfficientNet-Lite0, each an anomaly map at the image's resolution:

* **diffusion** — the ``recon`` scorer in feature space (standardised block-4 maps, 40×28×28 at 224 px) on a
  *context-conditioned* U-Net (``context_block`` = 4, :mod:`models.context`): trained 2,000 steps to denoise 4×4
  blocks of cells given their clean surroundings, it scores every cell from the mask pattern that hides it —
  the cell noised to t = 250, its neighbourhood clean — map = |z − x̂₀| averaged over channels and over
  ``noise_draws`` = 8 fixed draws (each U-Net its own). Each location is judged by what the model, trained on
  normal images only, predicts there from its clean neighbourhood and its own value under noise of equal power;
  its clean value is never part of the condition (a model denoising the whole map sees a defect clean in its input
  and partly reproduces it). ``ensemble`` U-Nets (default 2, trained alike from consecutive seeds) each give their
  (training-z-scored) map and the channel is their mean: a small CPU-sized U-Net varies with its seed, and the
  mean of two is better than either. ``context_block`` = 0 is the earlier channel (the clean start, one step
  from √ᾱ_t·z over the whole map), which detectors saved before this change keep; ``benchmarks/README.md``
  compares the two.
* **knn** — PatchCore-style nearest-neighbour distances (:mod:`models.baselines.patchcore`).

Both maps are blurred alike (σ = 4 px at 224) and z-scored with statistics of *training* images (diffusion: a
fixed subset of the training images; kNN: leave-one-image-out distances), then fused:
``w·z(diffusion) + (1 − w)·z(knn)`` with ``w = diffusion_weight`` = 0.5, fixed before any test result was seen;
the image score is the maximum of the fused map. The same fit gives the ablation variants ``diffusion_only``
(w = 1) and ``without_diffusion`` (w = 0), so what the diffusion model adds is measured on one model.

Why fuse: the feature-space U-Net (base 16, 2,000 steps, sized for two CPU cores) localises at 28×28 upsampled,
while the kNN map is what makes thin defect outlines (MVTec's PRO) sharp. Measured in ``benchmarks/README.md``.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from models.baselines.patchcore import PatchCore, PatchCoreConfig
from models.checkpoint import version_of
from models.errors import CheckpointMismatchError, InputError, NotFittedError
from models.features import FeatureConfig, FeatureExtractor, combine_maps, map_side
from models.scorers.base import validate_batch
from models.scorers.maps import gaussian_smooth
from models.strict_fields import reject_unknown_fields
from models.types import ScoreBatch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "image_detector.json"
Variant = Literal["product", "without_diffusion", "diffusion_only"]
VARIANTS: tuple[Variant, ...] = ("product", "without_diffusion", "diffusion_only")


@dataclass(frozen=True)
class ImageDetectorConfig:
    """Model hyperparameters, saved as JSON beside the checkpoint.

    ``space_layers``: EfficientNet blocks the U-Net runs on. ``unet_base``: U-Net base channels (the ``feature``
    preset, attention at the 7×7 level only). ``train_steps`` / ``train_batch`` / ``lr``: U-Net training.
    ``t_start``: the noise step the cells are scored at (ᾱ ≈ 0.5 under the default linear schedule: signal and
    noise of equal power on standardised features). ``context_block``: side of the blocks the context-conditioned
    U-Nets fill in (0: U-Nets of the whole map scored from the clean start, the earlier channel).
    ``noise_draws``: draws averaged per cell (context-conditioned channel). ``sigma``: blur of both maps in pixels
    at 224 px (scaled with the image).
    ``ensemble``: U-Nets whose maps are averaged (seeds ``seed``, ``seed + 1``, …). ``diffusion_weight``: w of the
    fusion. ``calibration_images``: training images that give the diffusion map's
    mean / std. ``score_batch``: images per forward pass. ``patchcore``: the kNN channel's settings.
    """

    image_size: int = 224
    space_layers: tuple[int, ...] = (4,)
    unet_base: int = 16
    train_steps: int = 2000
    train_batch: int = 16
    lr: float = 1e-3
    t_start: int = 250
    context_block: int = 4
    noise_draws: int = 8
    sigma: float = 4.0
    ensemble: int = 2
    diffusion_weight: float = 0.5
    calibration_images: int = 20
    score_batch: int = 16
    seed: int = 0
    patchcore: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "space_layers", tuple(int(i) for i in self.space_layers))
        if self.image_size < 32:
            raise ValueError("image_size must be at least 32")
        if self.train_steps < 1 or self.train_batch < 1 or self.score_batch < 1 or self.calibration_images < 2:
            raise ValueError("train_steps, train_batch and score_batch must be >= 1, calibration_images >= 2")
        if self.ensemble < 1:
            raise ValueError("ensemble must be >= 1 (U-Nets in the diffusion channel)")
        if not 0.0 <= self.diffusion_weight <= 1.0:
            raise ValueError("diffusion_weight must be in [0, 1]")
        if self.sigma < 0 or self.t_start < 0 or self.context_block < 0 or self.noise_draws < 1:
            raise ValueError("sigma, t_start and context_block must be >= 0, noise_draws >= 1")
        FeatureConfig(layers=self.space_layers)  # unknown blocks fail here, not after the kNN bank is built
        side = map_side(self.image_size, self.space_layers)
        if self.context_block and side < 2 * self.context_block:
            raise ValueError(f"context_block {self.context_block} needs a feature map of at least "
                             f"{2 * self.context_block} cells; image_size {self.image_size} gives {side}: one pattern "
                             "would hide the whole map, with no context")
        PatchCoreConfig.from_dict(self.patchcore)  # unknown kNN settings fail here, not after training

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["space_layers"] = list(self.space_layers)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageDetectorConfig":
        reject_unknown_fields(cls, data)
        if "context_block" not in data:  # saved before the context-conditioned channel: the clean start
            data = {**data, "context_block": 0, "noise_draws": 1}
        return cls(**data)


@dataclass(frozen=True)
class ChannelMaps:
    """Both channels' maps for a batch, blurred and z-scored with training statistics: (N, H, W) each.

    ``knn_raw`` is the kNN channel before standardisation — the PatchCore-style baseline's own output — so a
    benchmark can report that baseline from the same pass instead of scoring the images a second time;
    ``seconds``: the time each channel took, and the shared EfficientNet pass (``backbone``) both took their maps
    from.
    """

    diffusion: np.ndarray
    knn: np.ndarray
    knn_raw: ScoreBatch
    seconds: dict[str, float]


class ImageDetector:
    """Fit on normal images (N, 3, H, W), ImageNet-normalised; score gives one fused map and score per image."""

    def __init__(self, config: ImageDetectorConfig | None = None, device: str | torch.device = "auto",
                 progress: bool = False) -> None:
        self.config = config or ImageDetectorConfig()
        self.device = device
        self.progress = progress
        self.diffusion: list = []  # models.scorers.recon.ReconScorer per ensemble member, once fitted
        self.knn: PatchCore | None = None
        self.diffusion_stats: tuple[float, float] | None = None
        self.input_shape: tuple[int, int, int] | None = None
        self.fit_seconds: dict[str, float] = {}
        self.version = "unsaved"
        """A hash of the saved files (set by :meth:`save` and :meth:`load`): the model each result came from."""
        self._backbone = None  # models.features.FeatureExtractor of both channels' blocks, once needed

    @property
    def is_fitted(self) -> bool:
        return bool(self.diffusion) and self.knn is not None and self.diffusion_stats is not None

    def _new_diffusion(self, n_images: int, member: int):
        from models.scorers import create_scorer
        from models.scorers.recon import ReconParams
        from models.training import TrainConfig
        from models.unet import UNetConfig

        c = self.config
        unet = UNetConfig.preset("feature", base_channels=c.unet_base, attention_levels=(2,))
        train = TrainConfig(steps=c.train_steps, batch_size=min(c.train_batch, n_images), lr=c.lr, seed=c.seed + member)
        # Each member draws its own noise fields (member 0 keeps the scorer's default seed): with shared fields the
        # members' errors from one draw are correlated and two members average 8 draws, not 16.
        how = (dict(start="noised", n_noise=c.noise_draws, context_block=c.context_block,
                    seed=ReconParams().seed + member) if c.context_block
               else dict(start="clean"))
        return create_scorer("recon", unet=unet, train=train, space="feature", space_layers=c.space_layers,
                             t_start=c.t_start, lam=1.0, device=self.device, progress=self.progress,
                             batch_size=c.score_batch, calibration_samples=32, **how)

    def fit(self, normal: torch.Tensor | np.ndarray) -> "ImageDetector":
        x = validate_batch(normal)
        if x.shape[0] < 2:
            raise InputError("need at least 2 normal images to fit")
        if x.shape[1] != 3:
            raise InputError(f"the image detector takes RGB images (N, 3, H, W), got {x.shape[1]} channel(s)")
        self.input_shape = tuple(int(s) for s in x.shape[1:])  # type: ignore[assignment]
        torch.manual_seed(self.config.seed)
        t0 = time.perf_counter()
        self.knn = PatchCore(PatchCoreConfig.from_dict({"seed": self.config.seed, **self.config.patchcore}),
                             device=self.device, progress=self.progress).fit(x)
        self.fit_seconds["knn"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.diffusion = []
        for member in range(self.config.ensemble):
            torch.manual_seed(self.config.seed + member)
            self.diffusion.append(self._new_diffusion(x.shape[0], member).fit(x))
        idx = np.unique(np.linspace(0, x.shape[0] - 1, min(self.config.calibration_images, x.shape[0])).round())
        ref = self._diffusion_raw(x[torch.as_tensor(idx, dtype=torch.long)])
        self.diffusion_stats = (float(ref.mean()), float(max(ref.std(), 1e-8)))
        self.fit_seconds["diffusion"] = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ score
    def _sigma(self) -> float:
        assert self.input_shape is not None
        return self.config.sigma * self.input_shape[2] / 224.0

    def _diffusion_raw(self, x: torch.Tensor) -> np.ndarray:
        """The diffusion channel's blurred map before standardisation (N, H, W): the members' mean (each member
        scores in batches of ``score_batch``)."""
        if self._shares_backbone():
            mean = np.concatenate([self._members_mean(space) for _, space in self._backbone_batches(x)])
        else:
            mean = np.mean([member.score(x).maps for member in self.diffusion], axis=0)
        return self._blur(mean)

    def _members_mean(self, space: torch.Tensor) -> np.ndarray:
        return np.mean([member.score_space([space]).maps for member in self.diffusion], axis=0)

    def _blur(self, maps: np.ndarray) -> np.ndarray:
        return gaussian_smooth(torch.from_numpy(maps), self._sigma()).numpy().astype(np.float32)

    def _shares_backbone(self) -> bool:
        """Whether both channels read the same EfficientNet inputs (the same resizing), so one pass serves both."""
        assert self.knn is not None
        return self.knn.config.input_size == self.diffusion[0].params.space_input_size

    def _backbone_batches(self, x: torch.Tensor) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Per batch of ``score_batch`` images, both channels' EfficientNet maps from one pass: the kNN channel's
        blocks and the diffusion space's. Each channel used to run the network on its own — once per U-Net and once
        for the kNN bank, three passes of the same images (83 bottle test images: 22.9 s against 19.4 s now). With
        the default batch sizes (the kNN's ``batch_size`` and ``score_batch`` both 16; the kNN channel is scored in
        the detector's batches) the maps are the ones each channel computes itself, bit for bit."""
        assert self.knn is not None
        knn_layers = FeatureConfig(layers=self.knn.config.layers).layers
        space_layers = FeatureConfig(layers=self.diffusion[0].params.space_layers).layers
        if self._backbone is None:
            both = FeatureConfig(layers=tuple(sorted({*knn_layers, *space_layers})),
                                 input_size=self.knn.config.input_size)
            self._backbone = FeatureExtractor(both, device=self.diffusion[0].device)
        for i in range(0, x.shape[0], self.config.score_batch):
            with torch.inference_mode():
                found = dict(zip(self._backbone.config.layers,
                                 self._backbone.block_maps(x[i:i + self.config.score_batch])))
            yield [found[k] for k in knn_layers], combine_maps([found[k] for k in space_layers])

    def channel_maps(self, batch: torch.Tensor | np.ndarray) -> ChannelMaps:
        if not self.is_fitted:
            raise NotFittedError("the image detector is not fitted: call fit(normal_images) or load(directory)")
        c, h, w = self.input_shape  # type: ignore[misc]
        x = validate_batch(batch, channels=c, size=(h, w))
        assert self.knn is not None and self.diffusion_stats is not None
        mean, std = self.diffusion_stats
        seconds = {"backbone": 0.0, "diffusion": 0.0, "knn": 0.0}
        if self._shares_backbone():  # batch by batch: memory stays that of one batch of maps
            diffusion_parts, knn_parts = [], []
            t = time.perf_counter()
            for knn_blocks, space in self._backbone_batches(x):
                t = _lap(seconds, "backbone", t)
                diffusion_parts.append(self._members_mean(space))
                t = _lap(seconds, "diffusion", t)
                knn_parts.append(self.knn.score_blocks([knn_blocks]))
                t = _lap(seconds, "knn", t)
            raw = self._blur(np.concatenate(diffusion_parts))
            knn_raw = ScoreBatch(scores=np.concatenate([p.scores for p in knn_parts]),
                                 maps=np.concatenate([p.maps for p in knn_parts]),
                                 extras={k: np.concatenate([p.extras[k] for p in knn_parts])
                                         for k in knn_parts[0].extras})
        else:
            t = time.perf_counter()
            raw = self._diffusion_raw(x)
            t = _lap(seconds, "diffusion", t)
            knn_raw = self.knn.score(x)
            _lap(seconds, "knn", t)
        return ChannelMaps(diffusion=(raw - mean) / std, knn=self.knn.standardise(knn_raw.maps), knn_raw=knn_raw,
                           seconds=seconds)

    def fuse(self, channels: ChannelMaps, variant: Variant = "product") -> ScoreBatch:
        """One variant's map and image score (max of the map) from already computed channel maps."""
        w = {"product": self.config.diffusion_weight, "without_diffusion": 0.0, "diffusion_only": 1.0}.get(variant)
        if w is None:
            raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        fused = (w * channels.diffusion + (1 - w) * channels.knn).astype(np.float32)
        return ScoreBatch(scores=fused.reshape(fused.shape[0], -1).max(axis=1).astype(np.float64), maps=fused)

    def score(self, batch: torch.Tensor | np.ndarray) -> ScoreBatch:
        return self.fuse(self.channel_maps(batch))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> str:
        """``image_detector.json`` + ``diffusion/<k>/`` (one U-Net checkpoint per member) + ``knn/`` (memory bank);
        returns the version."""
        if not self.is_fitted:
            raise NotFittedError("cannot save an unfitted image detector")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        assert self.knn is not None
        for k, member in enumerate(self.diffusion):
            member.save(directory / "diffusion" / str(k))
        self.knn.save(directory / "knn")
        meta = {"format": FORMAT_VERSION, "config": self.config.to_dict(), "input_shape": list(self.input_shape or ()),
                "diffusion_stats": list(self.diffusion_stats or ())}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        self.version = version_of(directory)
        return self.version

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto") -> "ImageDetector":
        from models.scorers.recon import ReconScorer

        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory} holds no saved image detector ({CONFIG_FILE} missing)")
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise CheckpointMismatchError(
                f"{path}: image detector format {meta.get('format')} != supported {FORMAT_VERSION}")
        det = cls(ImageDetectorConfig.from_dict(meta["config"]), device=device)
        det.input_shape = tuple(meta["input_shape"])  # type: ignore[assignment]
        det.diffusion_stats = tuple(meta["diffusion_stats"])  # type: ignore[assignment]
        det.diffusion = [ReconScorer.load(directory / "diffusion" / str(k), device=device)
                         for k in range(det.config.ensemble)]
        det.knn = PatchCore.load(directory / "knn", device=device)
        det.version = version_of(directory)
        return det


def _lap(seconds: dict[str, float], name: str, since: float) -> float:
    """Add the time since ``since`` to ``seconds[name]``; returns now."""
    now = time.perf_counter()
    seconds[name] += now - since
    return now
