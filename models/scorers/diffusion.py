"""The part every diffusion scorer shares: model building, training on normal data, input spaces, map
normalisation, batching, devices, save/load. A concrete scorer only says how to turn a batch into named
per-pixel *terms* (``_terms``) and how to combine them (``_combine``).

Spaces
------
``space="pixel"``: the U-Net runs on the inputs themselves (scalograms; images on a GPU).
``space="feature"``: inputs first go through the frozen :class:`~models.features.FeatureExtractor`, are
standardised per channel with training statistics, and the diffusion model runs on those maps (the
"latent" of the dynamic-implicit-conditioning paper, with EfficientNet features instead of a VAE). It is what
makes MVTec images tractable on two CPU cores: a 40×28×28 map instead of 3×224×224 pixels.
In feature space there is no second CNN pass for the perceptual term: the reconstruction already *is* a
feature map, so "feature distance" is computed directly between input and reconstructed maps.

Terms and normalisation
-----------------------
Papers combine a pixel error and a feature distance with λ·a + (1−λ)·b, but the two live on unrelated
scales (an L1 of standardised scalograms versus a cosine distance in [0, 2]). After training, every term's
per-pixel mean and standard deviation over the (normal) training data are stored and terms are z-scored
before they are combined, so λ means what it says. The same statistics serve the trend scorer's
"normalise each (statistics from the training data)".

Determinism
-----------
Noise is a *fixed* field per scorer (drawn from ``params.seed`` at the sample shape), shared by every sample.
A window's score therefore never depends on which other windows share its micro-batch, repeated scoring is
identical, and save → load reproduces scores exactly.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from models.context import BlockMasks
from models.device import autocast, resolve_device
from models.errors import CheckpointMismatchError, InputError, NotFittedError
from models.features import FeatureConfig, FeatureExtractor
from models.scheduler import NoiseScheduler, SchedulerConfig
from models.scorers.base import validate_batch
from models.scorers.maps import Reduction, reduce_map, resize_map
from models.strict_fields import number_tuple, reject_unknown_fields
from models.training import TrainConfig, train_diffusion
from models.types import ScoreBatch
from models.unet import UNetConfig, WaveletPyramidUNet

log = logging.getLogger(__name__)

Space = Literal["pixel", "feature"]
FORMAT_VERSION = 1
ADDM_WEIGHT = 0.05


@dataclass(frozen=True)
class ScorerParams:
    """Scoring hyperparameters common to all diffusion scorers (saved as JSON beside the weights).

    ``lam`` weighs the pixel term against the feature term (1.0 = pixel only: the CNN is then never run).
    ``feature_layers`` / ``feature_input_size``: EfficientNet blocks for the perceptual term (pixel space).
    ``space_layers`` / ``space_input_size``: blocks whose maps the diffusion model runs on (feature space).
    ``reduction`` / ``top_percent``: map → sample score (see :func:`models.scorers.maps.reduce_map`).
    ``calibration_samples``: how many training samples estimate each term's mean/std after training.
    ``amp``: run the U-Net under ``models.device.autocast``: AMP on CUDA; on a CPU it changes nothing (always fp32,
    see ``models/device.py``).
    """

    space: Space = "pixel"
    lam: float = 0.5
    feature_layers: tuple[int, ...] = (2, 4)
    feature_input_size: int | None = 64
    space_layers: tuple[int, ...] = (4,)
    space_input_size: int | None = None
    reduction: Reduction = "topk"
    top_percent: float = 10.0
    batch_size: int = 256
    calibration_samples: int = 256
    seed: int = 1234
    amp: bool = True

    def __post_init__(self) -> None:
        for name in ("feature_layers", "space_layers"):
            object.__setattr__(self, name, number_tuple(getattr(self, name), int, name, "'2;4'"))
        if self.space not in ("pixel", "feature"):
            raise ValueError(f"space must be 'pixel' or 'feature', got {self.space!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError("lam must be in [0, 1]")
        if self.reduction not in ("topk", "max", "mean"):
            raise ValueError(f"reduction must be 'topk', 'max' or 'mean', got {self.reduction!r}")
        if not 0 < self.top_percent <= 100:
            raise ValueError("top_percent must be in (0, 100]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScorerParams":
        reject_unknown_fields(cls, data)
        return cls(**data)


def _unet_config(unet: UNetConfig | str | dict) -> UNetConfig:
    if isinstance(unet, UNetConfig):
        return unet
    if isinstance(unet, str):
        return UNetConfig.preset(unet)
    if isinstance(unet, dict):
        return UNetConfig.from_dict(unet)
    raise TypeError(f"unet must be a UNetConfig, preset name or dict, got {type(unet).__name__}")


class DiffusionScorer:
    """Base class. Subclasses set ``name`` (via ``@register``), ``Params`` and implement ``_terms``.

    Construction is cheap; ``fit`` builds and trains the network on normal data. Keyword arguments that
    name a field of ``Params`` override it, so ``create_scorer("recon", lam=1.0)`` works.
    """

    name: ClassVar[str] = "diffusion"
    Params: ClassVar[type[ScorerParams]] = ScorerParams
    default_train: ClassVar[TrainConfig] = TrainConfig()
    default_unet: ClassVar[str] = "series"
    #: Names of the per-pixel terms ``_terms`` returns; their training statistics are stored.
    term_names: ClassVar[tuple[str, ...]] = ("pixel", "feature")

    @classmethod
    def reads_input_with_cnn(cls, params: ScorerParams) -> bool:
        """Whether scoring runs the ImageNet CNN on the input image: it then takes one- or three-channel images
        only, which a transform with extra channels (the series' waveform channel) cannot give it."""
        return params.space == "feature" or params.lam < 1.0

    def __init__(
        self,
        unet: UNetConfig | str | dict | None = None,
        train: TrainConfig | dict | None = None,
        params: ScorerParams | dict | None = None,
        scheduler: SchedulerConfig | dict | None = None,
        device: str | torch.device = "auto",
        adversarial: bool = False,
        progress: bool = False,
        **overrides: Any,
    ) -> None:
        self.unet_config = _unet_config(unet if unet is not None else self.default_unet)
        train = train if train is not None else self.default_train
        self.train_config = TrainConfig.from_dict(train) if isinstance(train, dict) else train
        if adversarial and self.train_config.adversarial_weight == 0:
            self.train_config = replace(self.train_config, adversarial_weight=ADDM_WEIGHT)
        params = params if params is not None else self.Params()
        params = self.Params.from_dict(params) if isinstance(params, dict) else params
        if overrides:
            known = {f.name for f in fields(self.Params)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise TypeError(f"{type(self).__name__} got unknown option(s) {unknown}; "
                                f"params are {sorted(known)}")
            params = replace(params, **overrides)
        self.params = params
        sched = scheduler if scheduler is not None else SchedulerConfig()
        self.scheduler_config = SchedulerConfig(**sched) if isinstance(sched, dict) else sched
        self.scheduler = NoiseScheduler(self.scheduler_config)
        self.device = resolve_device(device)
        self.progress = progress
        self.model: WaveletPyramidUNet | None = None
        self.input_shape: tuple[int, int, int] | None = None  # (C, H, W) of raw inputs seen at fit
        self.buffers: dict[str, torch.Tensor] = {}
        self.train_seconds: float | None = None
        self.train_losses: list[float] = []
        self._features: FeatureExtractor | None = None
        self._space_features: FeatureExtractor | None = None
        self._noise: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ properties
    @property
    def adversarial(self) -> bool:
        return self.train_config.adversarial_weight > 0

    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def __repr__(self) -> str:
        state = f"fitted on {self.input_shape}" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}(space={self.params.space!r}, {state}, device={self.device})"

    # ------------------------------------------------------------------ feature extractors (lazy)
    @property
    def features(self) -> FeatureExtractor:
        """Perceptual-term CNN (pixel space)."""
        if self._features is None:
            cfg = FeatureConfig(layers=self.params.feature_layers, input_size=self.params.feature_input_size)
            self._features = FeatureExtractor(cfg, device=self.device)
        return self._features

    @property
    def space_features(self) -> FeatureExtractor:
        """CNN that maps inputs into the diffusion space (feature space)."""
        if self._space_features is None:
            cfg = FeatureConfig(layers=self.params.space_layers, input_size=self.params.space_input_size)
            self._space_features = FeatureExtractor(cfg, device=self.device)
        return self._space_features

    # ------------------------------------------------------------------ input handling
    def _validate(self, batch) -> torch.Tensor:
        if self.input_shape is None:
            raise NotFittedError(f"{self.name} scorer is not fitted: call fit(normal) or load(directory) first")
        c, h, w = self.input_shape
        return validate_batch(batch, channels=c, size=(h, w))

    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs (N, C, H, W) on the device → the diffusion model's space (normalised features or x)."""
        if self.params.space == "pixel":
            return x
        return self.standardise_space(self.space_features.maps(x))

    def standardise_space(self, features: torch.Tensor) -> torch.Tensor:
        """The CNN's maps of the space blocks (:meth:`FeatureExtractor.maps`) → the model's standardised space."""
        return (features.to(self.device) - self.buffers["space_mean"]) / self.buffers["space_std"]

    def _chunks(self, x: torch.Tensor):
        bs = self.params.batch_size
        for i in range(0, x.shape[0], bs):
            yield x[i : i + bs].to(self.device)

    def fixed_noise(self, shape: tuple[int, ...], index: int = 0) -> torch.Tensor:
        """A noise field of the sample shape (C, H, W), the same for every call and sample (see module doc)."""
        key = (tuple(shape), index, str(self.device))
        if key not in self._noise:
            g = torch.Generator().manual_seed(self.params.seed + 7919 * index)
            with torch.inference_mode(False):  # a normal tensor, usable later under autograd too
                self._noise[key] = torch.randn(shape, generator=g).to(self.device)
        return self._noise[key]

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂(x_t, t) in float32, under the device's autocast; ``cond`` for a context-conditioned model."""
        assert self.model is not None
        if not torch.is_tensor(t):
            t = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        with autocast(self.device, enabled=self.params.amp):
            out = self.model(x_t, t, cond)
        return out.float()

    def context_masks(self) -> BlockMasks | None:
        """The masks a context-conditioned model is trained and scored with (:mod:`models.context`); None for a
        model of whole inputs."""
        return None

    # ------------------------------------------------------------------ fit
    def fit(self, normal: torch.Tensor | np.ndarray, reuse: "DiffusionScorer | None" = None) -> "DiffusionScorer":
        """Train on normal samples only (N, C, H, W), then record per-term statistics for normalisation.

        ``reuse``: take the trained network of another fitted scorer instead of training (same space and
        input shape required). The scorers differ only in how they *score*, so switching scorer does not need
        a new model; the per-term statistics (and e.g. the KNN bank) are still computed from ``normal``.
        """
        x = validate_batch(normal)
        if x.shape[0] < 2:
            raise InputError("need at least 2 normal samples to fit")
        self.input_shape = tuple(int(s) for s in x.shape[1:])  # type: ignore[assignment]
        self.buffers = {}
        if reuse is not None:
            self._reuse_model(reuse)  # the feature statistics come with the model: no second feature pass
        else:
            if self.params.space == "feature":
                z = torch.cat([self.space_features.maps(chunk).cpu() for chunk in self._chunks(x)])
                self.buffers["space_mean"] = z.mean(dim=(0, 2, 3), keepdim=True)[0].to(self.device)
                self.buffers["space_std"] = z.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-4).to(self.device)
                data = ((z.to(self.device) - self.buffers["space_mean"]) / self.buffers["space_std"]).cpu()
            else:
                data = x
            self._train(data, x.shape[0])
        self._after_train(x)
        self._calibrate(x)
        return self

    def _reuse_model(self, other: "DiffusionScorer") -> None:
        if other.model is None:
            raise NotFittedError("the scorer to reuse is not fitted")
        if other.params.space != self.params.space or other.input_shape != self.input_shape:
            raise CheckpointMismatchError(
                f"cannot reuse a model for {other.params.space} space on inputs {other.input_shape} "
                f"for {self.params.space} space on inputs {self.input_shape}"
            )
        if (other.unet_config.cond_channels > 0) != (self.context_masks() is not None):
            raise CheckpointMismatchError("cannot reuse a context-conditioned model for a scorer of whole inputs, "
                                          "or the other way round")
        if self.params.space == "feature":
            if other.params.space_layers != self.params.space_layers:
                raise CheckpointMismatchError("cannot reuse a feature-space model built on other CNN blocks")
            self.buffers["space_mean"] = other.buffers["space_mean"]
            self.buffers["space_std"] = other.buffers["space_std"]
        self.unet_config = other.unet_config
        self.train_config = other.train_config
        self.scheduler_config = other.scheduler_config
        self.scheduler = other.scheduler
        self.model = other.model
        self.train_seconds, self.train_losses = other.train_seconds, list(other.train_losses)

    def _train(self, data: torch.Tensor, n_inputs: int) -> None:
        c, h, w = data.shape[1:]
        context = self.context_masks()
        self.unet_config = replace(self.unet_config, in_channels=int(c), sample_size=(int(h), int(w)),
                                   cond_channels=0 if context is None else int(c) + 1)
        model = WaveletPyramidUNet(self.unet_config)
        log.info("training %s (%s space, %d samples of %s) for %d steps on %s",
                 self.name, self.params.space, n_inputs, tuple(data.shape[1:]), self.train_config.steps,
                 self.device)
        result = train_diffusion(model, self.scheduler, data, self.train_config, self.device, self.progress,
                                 context=context)
        self.model = result.model.to(self.device).eval()
        self.train_seconds = result.seconds
        self.train_losses = list(result.losses)

    def _after_train(self, x: torch.Tensor) -> None:
        """Hook for scorers that need more from the training data (e.g. a KNN bank)."""

    def _grad_context(self):
        """Scoring runs in inference mode unless the scorer differentiates through the network."""
        if self.needs_grad:
            return torch.enable_grad()
        return torch.inference_mode()

    def _calibrate(self, x: torch.Tensor) -> None:
        """Per-term mean/std over training maps, so terms can be z-scored before combining."""
        n = min(x.shape[0], self.params.calibration_samples)
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.params.seed))[:n]
        sums = {k: [] for k in self.term_names}
        for chunk in self._chunks(x[idx]):
            with self._grad_context():
                terms = self._terms(chunk)
            for k in self.term_names:
                if k in terms:
                    sums[k].append(terms[k].flatten().cpu())
        for k, vals in sums.items():
            if vals:
                v = torch.cat(vals)
                self.buffers[f"{k}_mean"] = v.mean().reshape(1).to(self.device)
                self.buffers[f"{k}_std"] = v.std().clamp_min(1e-6).reshape(1).to(self.device)

    def normalised(self, name: str, term: torch.Tensor) -> torch.Tensor:
        """z-score of a term with its training statistics (identity before calibration)."""
        mean, std = self.buffers.get(f"{name}_mean"), self.buffers.get(f"{name}_std")
        if mean is None or std is None:
            return term
        return (term - mean) / std

    # ------------------------------------------------------------------ score
    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-pixel terms (N, h, w) for one chunk of raw inputs on the device; may add "recon" (N,C,H,W)."""
        raise NotImplementedError

    def _combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Default: λ·z(pixel) + (1−λ)·z(feature)."""
        lam = self.params.lam
        out = lam * self.normalised("pixel", terms["pixel"])
        if lam < 1.0 and "feature" in terms:
            f = self.normalised("feature", terms["feature"])
            out = out + (1 - lam) * resize_map(f, tuple(out.shape[-2:]))
        return out

    def _postprocess(self, m: torch.Tensor) -> torch.Tensor:
        """Map at input resolution → final map (e.g. smoothing). Default: unchanged."""
        return m

    def score(self, batch: torch.Tensor | np.ndarray) -> ScoreBatch:
        x = self._validate(batch)
        return self._score_chunks(self._chunks(x), self._terms)

    def score_space(self, batches: Iterable[torch.Tensor]) -> ScoreBatch:
        """:meth:`score` of images whose space maps (:meth:`FeatureExtractor.maps` of the space blocks, one tensor
        per batch of images) were computed already — by one backbone pass that also serves another channel (the
        image detector). Feature-space scorers whose terms need nothing but the space (:meth:`_space_terms`)."""
        if self.params.space != "feature":
            raise ValueError(f"{self.name} works in pixel space: score it from its inputs (score)")
        if self.input_shape is None:
            raise NotFittedError(f"{self.name} scorer is not fitted: call fit(normal) or load(directory) first")
        return self._score_chunks(batches, self._space_terms)

    def _space_terms(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`_terms` from the space maps alone (see :meth:`score_space`)."""
        raise NotImplementedError(f"{self.name} scores from its inputs, not from precomputed space maps")

    def _score_chunks(self, chunks: Iterable[torch.Tensor],
                      terms_of: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> ScoreBatch:
        size = (self.input_shape[1], self.input_shape[2])  # type: ignore[index]
        maps, scores, recons = [], [], []
        extras: dict[str, list[np.ndarray]] = {}
        for chunk in chunks:
            with self._grad_context():
                terms = terms_of(chunk)
                m = self._postprocess(resize_map(self._combine(terms), size))
                s = reduce_map(m, self.params.reduction, self.params.top_percent)
            maps.append(m.detach().float().cpu().numpy())
            scores.append(s.detach().float().cpu().numpy())
            if "recon" in terms and self.params.space == "pixel":
                recons.append(terms["recon"].detach().float().cpu().numpy())
            for k, v in terms.items():
                if k == "recon":
                    continue
                v = v.detach().float()
                vals = v.flatten(1).mean(dim=1) if v.ndim > 1 else v
                extras.setdefault(k, []).append(vals.cpu().numpy())
        return ScoreBatch(
            scores=np.concatenate(scores).astype(np.float64),
            maps=np.concatenate(maps).astype(np.float32),
            reconstructions=np.concatenate(recons) if recons else None,
            extras={k: np.concatenate(v) for k, v in extras.items()},
        )

    #: Scorers that differentiate through the network while scoring (trend) set this.
    needs_grad: ClassVar[bool] = False

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "scorer": self.name,
            "unet": self.unet_config.to_dict(),
            "train": self.train_config.to_dict(),
            "params": self.params.to_dict(),
            "scheduler": self.scheduler_config.to_dict(),
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "buffers": sorted(self.buffers),
        }

    def save(self, directory: str | Path) -> None:
        """``weights.safetensors`` (network + buffers) and ``config.json`` (everything needed to rebuild)."""
        from models.checkpoint import save_checkpoint

        if self.model is None:
            raise NotFittedError(f"cannot save an unfitted {self.name} scorer")
        tensors = {
            "unet": {k: v.detach().float().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "buffers": {k: v.detach().float().cpu().contiguous() for k, v in self.buffers.items()},
        }
        save_checkpoint(Path(directory), tensors, self.config_dict())

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto",
             expected_config: dict | None = None) -> "DiffusionScorer":
        """Rebuild a saved scorer. A checkpoint of another scorer raises :class:`CheckpointMismatchError`."""
        from models.checkpoint import load_checkpoint

        config, tensors = load_checkpoint(Path(directory), expected_config)
        saved = config.get("scorer")
        if saved != cls.name:
            raise CheckpointMismatchError(
                f"{Path(directory)} holds a {saved!r} scorer, not {cls.name!r}; "
                f"use models.scorers.load_scorer() to load whatever it holds"
            )
        if config.get("format") != FORMAT_VERSION:
            raise CheckpointMismatchError(
                f"{Path(directory)}: checkpoint format {config.get('format')} != supported {FORMAT_VERSION}"
            )
        scorer = cls(
            unet=UNetConfig.from_dict(config["unet"]),
            train=TrainConfig.from_dict(config["train"]),
            params=cls.Params.from_dict(config["params"]),
            scheduler=SchedulerConfig(**config["scheduler"]),
            device=device,
        )
        scorer.input_shape = tuple(config["input_shape"])  # type: ignore[assignment]
        model = WaveletPyramidUNet(scorer.unet_config)
        try:
            model.load_state_dict(tensors["unet"])
        except RuntimeError as exc:
            raise CheckpointMismatchError(f"{Path(directory)}: weights do not fit the saved UNet config: {exc}") from None
        scorer.model = model.to(scorer.device).eval().requires_grad_(False)
        scorer.buffers = {k: v.to(scorer.device) for k, v in tensors.get("buffers", {}).items()}
        missing = sorted(set(config.get("buffers", [])) - set(scorer.buffers))
        if missing:
            raise CheckpointMismatchError(f"{Path(directory)}: missing buffers {missing}")
        return scorer


def read_scorer_name(directory: str | Path) -> str:
    """The scorer name stored in a checkpoint directory's ``config.json``."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}: not a saved scorer")
    name = json.loads(path.read_text()).get("scorer")
    if not isinstance(name, str):
        raise CheckpointMismatchError(f"{path} names no scorer")
    return name


def sqrt_ab(scheduler: NoiseScheduler, t: int) -> float:
    return math.sqrt(float(scheduler.alphas_cumprod[t]))
