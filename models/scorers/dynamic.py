"""``dynamic``: dynamic implicit conditioning (Tebbe & Tayyub 2024).

1. ``fit`` stores CNN features of every training sample (the KNN bank) and each training sample's mean L1
   distance to its K nearest *other* training samples. Equal-width bins over [min, max] of those distances.
2. Per input: mean L1 distance to its K nearest training samples → bin b (binary search; inputs beyond the
   training range land in the top bin; ``min_bin`` = 2 so the prior never fully decides) →
   T̂ = ⌊b/|B| · T_max⌋, rounded to a multiple of ``round_to`` — the more unusual the input, the more it is
   allowed to change.
3. Start from the *noiseless*, scaled input x_T̂ = √ᾱ_T̂ · x₀ (``scheduler.scale_clean``), run DDIM (≈10 steps)
   down to 0 with DDAD guidance toward the input:
   ε̂ = ε_θ(x_t, t) − η·√(1−ᾱ_t)·(x̃_t − x_t),  x̃_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε_θ(x_t, t).
4. Map = λ·z(L1(x₀, x̂₀)) + (1−λ)·z(1 − cos(φ(x₀), φ(x̂₀))), Gaussian-smoothed; sample score = max of the map.

Paper defaults: K = 20 (L1), |B| = 10, minimum bin 2, T_max = 80 of T = 1000, DDIM 10 steps, η in 7–10 (we use
7), λ = 0.85, σ = 4 px on 256-px maps, score = max.

Deviations, and why:

* No VAE latent: the "latent" is the input itself in pixel space, or the EfficientNet feature map in feature
  space (``space="feature"``), which plays the VAE's role of abstracting from pixel detail.
* No domain-adapted (fine-tuned) feature extractor: the frozen ImageNet EfficientNet-Lite0 is used for both the
  KNN features and the feature map (fine-tuning on two CPU cores is out of budget).
* KNN features: block maps average-pooled to a ``knn_grid``×``knn_grid`` grid and flattened (the paper uses a
  whole block map; pooling keeps the bank small and the search fast, while a grid > 1 keeps *where*).
* σ scales with the map: σ = ``smooth_fraction`` × map width (4/256 by default, i.e. the paper's 4 px at 256).
* Terms are z-scored with training statistics before weighting (the paper says "normalized" without detail).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from models.features import FeatureConfig, FeatureExtractor
from models.scorers.base import register
from models.scorers.diffusion import DiffusionScorer, ScorerParams
from models.scorers.maps import cosine_distance_map, gaussian_smooth, l1_map
from models.training import TrainConfig


@dataclass(frozen=True)
class DynamicParams(ScorerParams):
    lam: float = 0.85
    reduction: str = "max"  # type: ignore[assignment]
    t_max: int = 80
    n_bins: int = 10
    min_bin: int = 2
    round_to: int = 10
    knn_k: int = 20
    knn_layers: tuple[int, ...] = (2,)
    knn_grid: int = 4
    ddim_steps: int = 10
    guidance: float = 7.0
    smooth_fraction: float = 4.0 / 256.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "knn_layers", tuple(int(i) for i in self.knn_layers))
        if self.t_max < 1 or self.n_bins < 1 or not 1 <= self.min_bin <= self.n_bins:
            raise ValueError("need t_max >= 1, n_bins >= 1 and 1 <= min_bin <= n_bins")
        if self.knn_k < 1 or self.knn_grid < 1 or self.ddim_steps < 1:
            raise ValueError("knn_k, knn_grid and ddim_steps must be >= 1")
        if self.guidance < 0 or self.smooth_fraction < 0:
            raise ValueError("guidance and smooth_fraction must be >= 0")


def mean_knn_l1(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude_offset: int | None = None) -> torch.Tensor:
    """Mean L1 distance of each query (Q, F) to its k nearest rows of ``bank`` (B, F).

    ``exclude_offset=i``: the queries are bank rows i, i+1, …; each one's own row is left out (leave-one-out).
    """
    d = torch.cdist(queries.float(), bank.float(), p=1.0)
    if exclude_offset is not None:
        rows = torch.arange(d.shape[0], device=d.device)
        d[rows, rows + exclude_offset] = float("inf")
    k = max(1, min(k, bank.shape[0] - (1 if exclude_offset is not None else 0)))
    return d.topk(k, dim=1, largest=False).values.mean(dim=1)


@register("dynamic")
class DynamicScorer(DiffusionScorer):
    Params = DynamicParams
    default_train = TrainConfig(steps=1500, batch_size=64, lr=1e-3)
    term_names: ClassVar[tuple[str, ...]] = ("pixel", "feature")

    @classmethod
    def reads_input_with_cnn(cls, params: ScorerParams) -> bool:
        return True  # the noise level is chosen from the CNN features of the input's nearest training samples

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._knn_features: FeatureExtractor | None = None

    @property
    def knn_features(self) -> FeatureExtractor:
        if self._knn_features is None:
            p: DynamicParams = self.params  # type: ignore[assignment]
            cfg = FeatureConfig(layers=p.knn_layers, input_size=p.feature_input_size)
            self._knn_features = FeatureExtractor(cfg, device=self.device)
        return self._knn_features

    def knn_embedding(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.params.knn_grid  # type: ignore[attr-defined]
        maps = self.knn_features.maps(x)
        return F.adaptive_avg_pool2d(maps, grid).flatten(1)

    def _after_train(self, x: torch.Tensor) -> None:
        p: DynamicParams = self.params  # type: ignore[assignment]
        with torch.no_grad():
            bank = torch.cat([self.knn_embedding(chunk) for chunk in self._chunks(x)])
            dists = torch.cat([
                mean_knn_l1(bank[i : i + p.batch_size], bank, p.knn_k, exclude_offset=i)
                for i in range(0, bank.shape[0], p.batch_size)
            ])
        self.buffers["knn_bank"] = bank
        self.buffers["knn_range"] = torch.stack([dists.min(), dists.max()])

    def noise_steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T̂ as 0-based step index per sample, mean KNN distance per sample)."""
        p: DynamicParams = self.params  # type: ignore[assignment]
        d = mean_knn_l1(self.knn_embedding(x), self.buffers["knn_bank"], p.knn_k)
        lo, hi = self.buffers["knn_range"].tolist()
        width = max(hi - lo, 1e-12)
        b = torch.floor((d - lo) / width * p.n_bins).long() + 1
        b = b.clamp(p.min_bin, p.n_bins)
        t_hat = torch.floor(b.float() / p.n_bins * p.t_max)
        if p.round_to > 1:
            t_hat = (torch.round(t_hat / p.round_to) * p.round_to).clamp_min(p.round_to)
        t_hat = t_hat.clamp(1, self.scheduler.num_train_timesteps).long() - 1  # paper's 1-based T̂ → index
        return t_hat, d

    def reconstruct(self, z: torch.Tensor, t_start: int) -> torch.Tensor:
        """Guided DDIM from the noiseless scaled input at ``t_start`` down to clean data."""
        p: DynamicParams = self.params  # type: ignore[assignment]
        sched = self.scheduler
        x_t = sched.scale_clean(z, t_start)
        steps = sched.ddim_timesteps(p.ddim_steps, start=t_start)
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            eps = self.eps(x_t, t)
            ab = float(sched.alphas_cumprod[t])
            if p.guidance > 0:
                x_tilde = ab**0.5 * z + (1 - ab) ** 0.5 * eps
                eps = eps - p.guidance * (1 - ab) ** 0.5 * (x_tilde - x_t)
            x_t = sched.ddim_step(eps, t, t_prev, x_t).prev_sample
        return x_t

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p: DynamicParams = self.params  # type: ignore[assignment]
        z = self.to_space(x)
        t_hat, knn = self.noise_steps(x)
        z_hat = torch.empty_like(z)
        for t in t_hat.unique().tolist():
            idx = (t_hat == t).nonzero().flatten()
            z_hat[idx] = self.reconstruct(z[idx], int(t))
        terms = {"pixel": l1_map(z, z_hat), "recon": z_hat,
                 "t_hat": (t_hat + 1).float(), "knn_distance": knn}
        if p.lam < 1.0:
            if p.space == "feature":
                terms["feature"] = cosine_distance_map(z, z_hat)
            else:
                both = self.features.maps(torch.cat([x, z_hat]))
                terms["feature"] = cosine_distance_map(both[: x.shape[0]], both[x.shape[0]:])
        return terms

    def _postprocess(self, m: torch.Tensor) -> torch.Tensor:
        sigma = self.params.smooth_fraction * m.shape[-1]  # type: ignore[attr-defined]
        return gaussian_smooth(m, sigma)
