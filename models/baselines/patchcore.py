"""PatchCore-style nearest-neighbour image anomaly detector on frozen EfficientNet-Lite0 features.

The representation baseline every diffusion scorer is measured against on MVTec (Roth et al., "Towards Total
Recall in Industrial Anomaly Detection", CVPR 2022), rebuilt on the same frozen CNN the diffusion scorers use,
so a difference in the numbers is a difference in *method*, not in backbone.

1. Locally aware patch features: the maps of a few mid-level blocks (default 3, 4, 5: strides 8 and 16 — deep
   enough to be semantic, shallow enough to localise), each 3×3 average-pooled with stride 1 (every patch
   also sees its neighbourhood, which makes the feature robust to small misalignment), resized to one common
   grid (28×28 for a 224 input) and concatenated.
2. Memory bank: every training patch, reduced by a greedy k-center coreset on a random projection (the paper's
   approximation), so the bank covers the normal feature space with a fraction of the points and the kNN
   search stays cheap on two cores.
3. Score: per patch, the distance to its nearest bank entry (mean over ``k`` nearest when k > 1) → anomaly map;
   bilinear upsampling to the input size and a Gaussian blur (σ = 4 px at 224, scaled with the input) →
   image score = max of the map.

Deviation, and why: no re-weighting of the image score by the neighbourhood density of the nearest bank entry
(the paper's eq. 7). It changes the image score only, by a few tenths of a percent in the paper's ablation,
and "max of the map" is the score the MVTec benchmark compares across all scorers.

Calibration: after fitting, each training image is scored against the bank with its *own* patches excluded
(leave-one-image-out), and the mean / std of those map values are stored. They make the map comparable with
other scorers' z-scored maps (:meth:`PatchCore.standardise`) without touching the raw distances the
benchmark reports.

This module is not in :mod:`models.scorers`' registry on purpose: that registry is the set of diffusion
methods the streamer offers and H2's contract suite trains with U-Net keyword arguments; PatchCore registers in
:data:`IMAGE_BASELINES` instead and still implements the :class:`~models.scorers.base.Scorer` protocol.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from models.device import resolve_device
from models.errors import CheckpointMismatchError, InputError, NotFittedError
from models.features import FeatureConfig, FeatureExtractor
from models.scorers.base import validate_batch
from models.scorers.maps import gaussian_smooth
from models.strict_fields import reject_unknown_fields
from models.types import ScoreBatch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PatchCoreConfig:
    """Hyperparameters, saved as JSON beside the memory bank.

    ``layers``: EfficientNet-Lite0 block indices. ``grid``: common patch grid side (None = the largest block
    map). ``pool``: side of the local-neighbourhood average pooling. ``coreset_ratio``: fraction of training
    patches kept (1.0 = all). ``coreset_method``: "greedy" (k-center on a random projection of
    ``projection_dim`` dims) or "random". ``k``: nearest neighbours averaged per patch. ``sigma``: blur in
    pixels at a 224-pixel map (scaled linearly for other sizes). ``input_size``: resize inputs to this side
    before the CNN (None = as given).
    """

    layers: tuple[int, ...] = (3, 4, 5)
    grid: int | None = None
    pool: int = 3
    coreset_ratio: float = 0.1
    coreset_method: str = "greedy"
    projection_dim: int = 64
    k: int = 1
    sigma: float = 4.0
    input_size: int | None = None
    batch_size: int = 16
    query_chunk: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if not self.layers:
            raise ValueError("at least one feature block is needed")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError("coreset_ratio must be in (0, 1]")
        if self.coreset_method not in ("greedy", "random"):
            raise ValueError(f"coreset_method must be 'greedy' or 'random', got {self.coreset_method!r}")
        if self.pool < 1 or self.pool % 2 == 0:
            raise ValueError("pool must be a positive odd number (the pooled map keeps its size)")
        if self.k < 1 or self.projection_dim < 1 or self.batch_size < 1 or self.query_chunk < 1:
            raise ValueError("k, projection_dim, batch_size and query_chunk must be >= 1")
        if self.sigma < 0:
            raise ValueError("sigma must be >= 0")
        if self.grid is not None and self.grid < 1:
            raise ValueError("grid must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PatchCoreConfig":
        reject_unknown_fields(cls, data)
        return cls(**{**data, "layers": tuple(data.get("layers", cls.layers))})


def greedy_coreset(points: torch.Tensor, n_select: int, projection_dim: int = 64, seed: int = 0,
                   n_cells: int = 1024, progress: bool = False) -> torch.Tensor:
    """Indices of ``n_select`` rows chosen by greedy k-center (farthest-point) selection.

    Distances are computed on a Gaussian random projection (Johnson–Lindenstrauss keeps them roughly) to
    ``projection_dim`` dims when the features are wider.

    Why it is not one matrix-vector product per step over all points: that loop is memory-bound (every step
    reads all N projected points) and was half of an image model's fit. The first ``n_cells`` centres are chosen
    that way; their Voronoi cells then become contiguous blocks, each with a radius. A new centre c can only
    bring a point of cell b closer if ``d(c, centre_b) − radius_b`` is below the farthest point of b, so later
    steps update the cells that pass that test (about 2 % of the points on MVTec patches) and skip the rest,
    whose distances could not change. The selection is the full loop's (ties go to the lowest index, as argmax
    breaks them), up to float rounding: of two identical points either may be the one taken.
    """
    n = points.shape[0]
    n_select = max(1, min(int(n_select), n))
    g = torch.Generator().manual_seed(seed)
    x = points.float()
    if x.shape[1] > projection_dim:
        proj = torch.randn(x.shape[1], projection_dim, generator=g) / math.sqrt(projection_dim)
        x = x @ proj.to(x.device)
    x = x.cpu()
    sq = (x * x).sum(dim=1)
    first = int(torch.randint(n, (1,), generator=g))
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = first
    from tqdm.auto import tqdm

    # Thousands of tiny sequential ops: on a busy CPU, intra-op threads spend more time synchronising than
    # computing (measured 20x slower with 2 threads than with 1 under load), so the loop runs single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bar = tqdm(total=n_select, desc="coreset", disable=not progress, leave=False, mininterval=0.5)
    try:
        # Squared distance of every point to its closest selected centre so far, and which centre that is.
        min_d = (sq - 2 * (x @ x[first]) + sq[first]).clamp_min_(0)
        cell = torch.zeros(n, dtype=torch.long)
        n_cells = max(1, min(n_cells, n_select))
        for i in range(1, n_cells):
            nxt = int(torch.argmax(min_d))
            selected[i] = nxt
            d = (sq - 2 * (x @ x[nxt]) + sq[nxt]).clamp_min_(0)
            cell[d < min_d] = i
            torch.minimum(min_d, d, out=min_d)
        bar.update(n_cells)
        if n_cells < n_select:
            _select_in_cells(x, sq, min_d, cell, selected, n_cells, bar)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    return selected


def _select_in_cells(x: torch.Tensor, sq: torch.Tensor, min_d: torch.Tensor, cell: torch.Tensor,
                     selected: torch.Tensor, n_cells: int, bar) -> None:
    """Fill ``selected[n_cells:]``, updating only the cells a new centre can reach (see :func:`greedy_coreset`)."""
    order = torch.argsort(cell, stable=True)  # original indices, cell by cell, ascending within a cell
    xs, sqs, cells, dist = x[order].contiguous(), sq[order].contiguous(), cell[order], min_d[order].contiguous()
    centres = x[selected[:n_cells]]
    centre_sq = sq[selected[:n_cells]]
    cell_max = torch.zeros(n_cells).scatter_reduce_(0, cells, dist, "amax")  # farthest point of each cell
    radius = cell_max.sqrt()  # fixed: distance to the cell's centre, which only bounds, never changes
    counts = torch.bincount(cells, minlength=n_cells)
    starts = torch.cumsum(counts, 0) - counts
    for i in range(n_cells, len(selected)):
        far = cell_max.max()
        tied = (cell_max == far).nonzero().squeeze(1)
        if tied.numel() == 1:
            s = int(starts[tied[0]])
            at = (dist[s : s + int(counts[tied[0]])] == far).nonzero().squeeze(1) + s
        else:  # exact ties across cells (duplicated points): one scan of all points, as the full loop does
            at = (dist == far).nonzero().squeeze(1)
        j = int(at[int(torch.argmin(order[at]))])  # the lowest original index among ties, as argmax breaks them
        best = int(order[j])
        selected[i] = best
        c = xs[j]
        to_centres = (centre_sq - 2 * (centres @ c) + sqs[j]).clamp_min_(0).sqrt_()
        # a small margin keeps float rounding from skipping a cell that could change
        reach = ((to_centres - radius) * (1 - 1e-4) - 1e-4 < cell_max.sqrt()).nonzero().squeeze(1)
        lens = counts[reach]
        first_of_run = torch.cumsum(lens, 0) - lens  # where each reached cell's points start in idx
        idx = torch.arange(int(lens.sum())) + torch.repeat_interleave(starts[reach] - first_of_run, lens)
        d = torch.minimum(dist[idx], (sqs[idx] - 2 * (xs[idx] @ c) + sqs[j]).clamp_min_(0))
        dist[idx] = d
        cell_max[reach] = 0
        cell_max.scatter_reduce_(0, cells[idx], d, "amax")
        if (i - n_cells) % 256 == 255:
            bar.update(256)
    bar.update(len(selected) - bar.n)


#: The most query × bank distances :func:`knn_distance` holds at once (64 MiB in float32).
KNN_BLOCK_ELEMENTS = 1 << 24


def knn_distance(queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096,
                 exclude: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean Euclidean distance of each query row (Q, F) to its ``k`` nearest rows of ``bank`` (B, F).

    ``exclude=(query_group, bank_group)``: a query never matches a bank row of its own group (used for
    leave-one-image-out calibration).

    Memory: at most ``chunk`` queries at a time, and no more than :data:`KNN_BLOCK_ELEMENTS` distances, computed
    in place. Scoring a batch of bottle images against its bank of 16,386 patches held four (4,096 × 16,386)
    temporaries, and ``scalowatch score`` peaked at 1.3 GB.
    """
    k = max(1, min(k, bank.shape[0]))
    chunk = max(1, min(chunk, KNN_BLOCK_ELEMENTS // max(1, bank.shape[0])))
    bank_sq = (bank * bank).sum(dim=1)
    out = []
    for i in range(0, queries.shape[0], chunk):
        q = queries[i : i + chunk]
        d2 = q @ bank.T
        d2.mul_(-2).add_((q * q).sum(dim=1, keepdim=True)).add_(bank_sq)
        if exclude is not None:
            qg, bg = exclude
            d2.masked_fill_(qg[i : i + chunk, None] == bg[None, :], float("inf"))
        out.append(d2.topk(k, dim=1, largest=False).values.clamp_min(0).sqrt().mean(dim=1))
    return torch.cat(out)


class PatchCore:
    """``fit(images)`` builds the memory bank; ``score(images)`` → :class:`ScoreBatch` (max-of-map scores)."""

    name: ClassVar[str] = "patchcore"

    def __init__(self, config: PatchCoreConfig | dict | None = None, device: str | torch.device = "auto",
                 progress: bool = False, **overrides: Any) -> None:
        cfg = config if config is not None else PatchCoreConfig()
        cfg = PatchCoreConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        if overrides:
            cfg = PatchCoreConfig.from_dict({**cfg.to_dict(), **overrides})
        self.config = cfg
        self.device = resolve_device(device)
        self.progress = progress
        self.bank: torch.Tensor | None = None
        self.input_shape: tuple[int, int, int] | None = None
        self.map_stats: tuple[float, float] | None = None
        self._features: FeatureExtractor | None = None

    def __repr__(self) -> str:
        state = f"bank {tuple(self.bank.shape)}" if self.bank is not None else "not fitted"
        return f"PatchCore(layers={self.config.layers}, {state})"

    @property
    def is_fitted(self) -> bool:
        return self.bank is not None

    @property
    def features(self) -> FeatureExtractor:
        if self._features is None:
            fc = FeatureConfig(layers=self.config.layers, input_size=self.config.input_size)
            self._features = FeatureExtractor(fc, device=self.device)
        return self._features

    # ------------------------------------------------------------------ features
    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images → (N, g, g, F) locally aware patch features on the common grid."""
        return self.patch_features_from(self.features.block_maps(x))

    def patch_features_from(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`patch_features` of the configured blocks' maps (``layers`` order) already computed."""
        grid = self.config.grid or max(b.shape[-1] for b in blocks)
        pad = self.config.pool // 2
        out = []
        for b in blocks:
            if self.config.pool > 1:
                b = F.avg_pool2d(b, self.config.pool, stride=1, padding=pad, count_include_pad=False)
            if b.shape[-2:] != (grid, grid):
                b = F.interpolate(b, size=(grid, grid), mode="bilinear", align_corners=False)
            out.append(b)
        return torch.cat(out, dim=1).permute(0, 2, 3, 1).contiguous()

    def _batches(self, x: torch.Tensor, desc: str):
        from tqdm.auto import tqdm

        starts = range(0, x.shape[0], self.config.batch_size)
        for i in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
            yield x[i : i + self.config.batch_size].to(self.device)

    # ------------------------------------------------------------------ fit
    def fit(self, normal: torch.Tensor | np.ndarray) -> "PatchCore":
        """Memory bank from normal images only (N, C, H, W); then leave-one-image-out map statistics."""
        x = validate_batch(normal)
        if x.shape[0] < 2:
            raise InputError("need at least 2 normal images to fit")
        if x.shape[1] not in (1, 3):
            raise InputError(f"PatchCore takes 1- or 3-channel images, got {x.shape[1]} channels")
        self.input_shape = tuple(int(s) for s in x.shape[1:])  # type: ignore[assignment]
        with torch.inference_mode():
            feats = torch.cat([self.patch_features(b).cpu() for b in self._batches(x, "patchcore features")])
        n, g, _, f = feats.shape
        flat = feats.reshape(-1, f)
        owner = torch.arange(n).repeat_interleave(g * g)
        n_keep = max(1, int(round(flat.shape[0] * self.config.coreset_ratio)))
        if n_keep >= flat.shape[0]:
            idx = torch.arange(flat.shape[0])
        elif self.config.coreset_method == "random":
            idx = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(self.config.seed))[:n_keep]
        else:
            log.info("greedy coreset: %d of %d patches", n_keep, flat.shape[0])
            idx = greedy_coreset(flat, n_keep, self.config.projection_dim, self.config.seed, progress=self.progress)
        self.bank = flat[idx].to(self.device)
        self._bank_owner = owner[idx].to(self.device)
        self.map_stats = self._leave_one_out_stats(feats)
        return self

    def _leave_one_out_stats(self, feats: torch.Tensor) -> tuple[float, float]:
        """Mean / std of training patch distances when an image may not match its own bank entries.

        A training patch's own bank entry would give distance 0, so raw self-scores understate normal
        variation; excluding the image's own entries approximates scores of unseen normal images.
        """
        n, g, _, f = feats.shape
        assert self.bank is not None
        values = []
        with torch.inference_mode():
            for i in range(n):
                q = feats[i].reshape(-1, f).to(self.device)
                qg = torch.full((q.shape[0],), i, device=self.device)
                d = knn_distance(q, self.bank, self.config.k, self.config.query_chunk, (qg, self._bank_owner))
                values.append(d.cpu())
        v = torch.cat(values)
        v = v[torch.isfinite(v)]
        if v.numel() < 2:
            return 0.0, 1.0
        return float(v.mean()), float(v.std().clamp_min(1e-8))

    # ------------------------------------------------------------------ score
    def _validate(self, batch) -> torch.Tensor:
        if self.bank is None or self.input_shape is None:
            raise NotFittedError("patchcore is not fitted: call fit(normal_images) or load(directory) first")
        c, h, w = self.input_shape
        return validate_batch(batch, channels=c, size=(h, w))

    def patch_distances(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """The configured blocks' maps of a batch → (N, g, g) nearest-bank distances (the raw, unsmoothed map)."""
        assert self.bank is not None
        feats = self.patch_features_from(blocks)
        n, g, _, f = feats.shape
        d = knn_distance(feats.reshape(-1, f), self.bank, self.config.k, self.config.query_chunk)
        return d.reshape(n, g, g)

    def score(self, batch: torch.Tensor | np.ndarray) -> ScoreBatch:
        x = self._validate(batch)
        with torch.inference_mode():
            return self.score_blocks(self.features.block_maps(chunk) for chunk in self._batches(x, "patchcore scoring"))

    def score_blocks(self, batches: Iterable[list[torch.Tensor]]) -> ScoreBatch:
        """:meth:`score` of images whose block maps (``layers`` order, one list per batch of images) were computed
        already — by one backbone pass that also serves another channel (the image detector)."""
        if self.bank is None or self.input_shape is None:
            raise NotFittedError("patchcore is not fitted: call fit(normal_images) or load(directory) first")
        _, h, w = self.input_shape
        sigma = self.config.sigma * w / 224.0
        maps, patch_max = [], []
        with torch.inference_mode():
            for blocks in batches:
                d = self.patch_distances(blocks)
                patch_max.append(d.flatten(1).max(dim=1).values.cpu())
                m = F.interpolate(d.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
                maps.append(gaussian_smooth(m, sigma).cpu())
        m = torch.cat(maps)
        return ScoreBatch(
            scores=m.flatten(1).max(dim=1).values.double().numpy(),
            maps=m.float().numpy(),
            extras={"patch_max": torch.cat(patch_max).double().numpy()},
        )

    def standardise(self, maps: np.ndarray) -> np.ndarray:
        """Raw distance maps → z-scores against the leave-one-image-out training statistics."""
        if self.map_stats is None:
            raise NotFittedError("patchcore is not fitted")
        mean, std = self.map_stats
        return (np.asarray(maps, dtype=np.float32) - mean) / std

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """``weights.safetensors`` (memory bank) + ``config.json``; the CNN comes from the installed package."""
        from safetensors.torch import save_file

        if self.bank is None:
            raise NotFittedError("cannot save an unfitted patchcore")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"bank": self.bank.detach().float().cpu().contiguous(),
                   "bank_owner": self._bank_owner.detach().cpu().contiguous()},
                  str(directory / "weights.safetensors"))
        meta = {"format": FORMAT_VERSION, "scorer": self.name, "config": self.config.to_dict(),
                "input_shape": list(self.input_shape or ()), "map_stats": list(self.map_stats or (0.0, 1.0))}
        (directory / "config.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto") -> "PatchCore":
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, weights = directory / "config.json", directory / "weights.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            raise FileNotFoundError(f"{directory} holds no saved patchcore (config.json + weights.safetensors)")
        meta = json.loads(cfg_path.read_text())
        if meta.get("scorer") != cls.name or meta.get("format") != FORMAT_VERSION:
            raise CheckpointMismatchError(
                f"{directory} holds scorer {meta.get('scorer')!r} format {meta.get('format')}, "
                f"not {cls.name!r} format {FORMAT_VERSION}")
        scorer = cls(PatchCoreConfig.from_dict(meta["config"]), device=device)
        tensors = load_file(str(weights))
        scorer.bank = tensors["bank"].to(scorer.device)
        scorer._bank_owner = tensors["bank_owner"].to(scorer.device)
        scorer.input_shape = tuple(meta["input_shape"])  # type: ignore[assignment]
        scorer.map_stats = tuple(meta["map_stats"])  # type: ignore[assignment]
        return scorer


#: Image baselines selectable by name in the MVTec benchmark (kept apart from the diffusion scorer registry).
IMAGE_BASELINES: dict[str, Callable[..., PatchCore]] = {"patchcore": PatchCore}
