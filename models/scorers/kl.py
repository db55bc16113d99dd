"""``kl``: DiffAD's likelihood-style pixel score (Zhang et al., ICCV 2023).

For each of several steps t: noise the input to x_t, and score each pixel by
KL( q(x_{t−1} | x_t, x₀) ‖ p_θ(x_{t−1} | x_t) ) — closed form between two Gaussians, from
``scheduler.posterior_mean_variance`` / ``model_mean_variance`` / ``gaussian_kl``. Plus a feature-level score:
MSE of pretrained CNN features of the input versus those of each step's reconstruction x̂₀(t). Both are averaged
over the steps; map = λ·z(KL) + (1−λ)·z(feature MSE).

Deviations, and why:

* The paper learns the reverse variance (improved-DDPM L_vlb); our U-Net predicts ε only, so p_θ uses the fixed
  posterior variance. The KL then reduces to a per-pixel squared error between the two means weighted by
  1/(2σ̃²_t): still the paper's likelihood-ratio weighting across t (small-t errors count more), not a plain MSE.
* Features: EfficientNet-Lite0 (see ``models.features``) instead of the paper's backbone. In feature space the
  "feature" term is the MSE between input and reconstructed feature maps.
* Fixed noise field (see ``models.scorers.diffusion``), so scores are deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from models.scheduler import gaussian_kl
from models.scorers.base import register
from models.scorers.diffusion import DiffusionScorer, ScorerParams
from models.scorers.maps import mse_map
from models.training import TrainConfig


@dataclass(frozen=True)
class KLParams(ScorerParams):
    timesteps: tuple[int, ...] = (50, 100, 200, 300)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        if not self.timesteps or min(self.timesteps) < 1:
            raise ValueError("timesteps must be non-empty and >= 1 (the posterior at t=0 is degenerate)")


@register("kl")
class KLScorer(DiffusionScorer):
    Params = KLParams
    default_train = TrainConfig(steps=1500, batch_size=64, lr=1e-3)
    term_names: ClassVar[tuple[str, ...]] = ("pixel", "feature")

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p: KLParams = self.params  # type: ignore[assignment]
        sched = self.scheduler
        z = self.to_space(x)
        noise = self.fixed_noise(tuple(z.shape[1:])).expand_as(z)
        kls, recons = [], []
        for t in p.timesteps:
            t = min(t, sched.num_train_timesteps - 1)
            x_t = sched.add_noise(z, noise, t)
            eps = self.eps(x_t, t)
            q_mean, _, q_logvar = sched.posterior_mean_variance(z, x_t, t)
            p_mean, _, p_logvar, x0_hat = sched.model_mean_variance(x_t, eps, t)
            kls.append(gaussian_kl(q_mean, q_logvar, p_mean, p_logvar).mean(dim=1))
            recons.append(x0_hat)
        terms = {"pixel": torch.stack(kls).mean(dim=0), "recon": torch.stack(recons).mean(dim=0)}
        if p.lam < 1.0:
            if p.space == "feature":
                terms["feature"] = torch.stack([mse_map(z, r) for r in recons]).mean(dim=0)
            else:
                n = x.shape[0]
                feats = self.features.maps(torch.cat([x, *recons]))
                ref = feats[:n]
                terms["feature"] = torch.stack(
                    [mse_map(ref, feats[(i + 1) * n : (i + 2) * n]) for i in range(len(recons))]
                ).mean(dim=0)
        return terms
