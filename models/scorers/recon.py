"""``recon``: the wavelet-pyramid DDPM's own score (Chen 2025, arXiv 2505.05137) — the cheap default.

Noise the input to a fixed step t_s, denoise, compare: map = λ·z(|x − x̂|) + (1−λ)·z(feature distance),
sample score = mean of the top-k % of the map.

Deviations from the paper, and why:

* Denoising is one step by default (x̂₀ predicted directly from ε̂(x_{t_s}, t_s)); ``ddim_steps > 0`` runs a
  short deterministic DDIM chain instead. The paper reconstructs with the full reverse chain; one step keeps the
  scorer at one U-Net pass per window, which is what lets a CPU score ≥ 1,000 windows/s.
* The perceptual network is EfficientNet-Lite0 (the paper: MobileNet), the only pretrained CNN that loads
  offline here. Feature distance = 1 − cosine of the concatenated block maps at every location.
* Both terms are z-scored with training statistics before weighting (see ``models.scorers.diffusion``); the
  paper tunes λ by grid search on raw terms, which does not transfer between datasets.
* λ defaults to 0.5 (the middle of the paper's 0.3–0.7 search range).
* Noise is a fixed field (see the base module): deterministic, batch-independent scores.

``start="clean"`` begins the denoising from the *noiseless* scaled input √ᾱ_t·x₀ (the dynamic-conditioning
paper's start point) instead of a noised one. With one step, x̂₀ is then the denoiser's estimate of
E[x₀ | x_t = √ᾱ_t·x₀], so by Tweedie's formula x₀ − x̂₀ ∝ −∇log p_t(x_t): near zero where normal data are dense and
growing with the distance from them — for a denoiser of the training set itself, it points to the nearest
training samples. From a noised start the error also holds the random draw's irreducible denoising error, which
grows with how much fine detail the input has, not with how novel it is (the inverted audio scores and the weak
MVTec recon of ``benchmarks/README.md``). The clean start needs noise levels the network handles near clean
inputs: t around where signal and noise have equal power (ᾱ_t ≈ 0.5, the default t_start = 250) — far above it
the noiseless input is far from anything the network saw at that t (measured: MVTec bottle inverts at t = 700).

``context_block > 0`` makes the model context-conditioned (the issue's imputation direction, as in ImDiffusion):
trained to denoise blocks of cells given their clean surroundings (:mod:`models.context`), it scores each cell
from the pattern that hides it: x̂₀ comes from the cell's clean neighbourhood and its own value under noise, never
from its clean value. It needs the noised start (a clean start would hand each hidden cell its own value) and
several draws (``n_noise``) to average out the draw's denoising error. On MVTec bottle it localised regions better
than the clean start (PRO +1.0 at the same pixel AUROC) and than the same noised draws without context
(``benchmarks/README.md``); on UCR scalograms it did not help.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from models.context import BlockMasks, condition
from models.scorers.base import register
from models.scorers.diffusion import DiffusionScorer, ScorerParams
from models.scorers.maps import cosine_distance_map, l1_map
from models.training import TrainConfig


@dataclass(frozen=True)
class ReconParams(ScorerParams):
    """``t_start``: noising step t_s (0-based, of ``num_train_timesteps``). ``ddim_steps``: 0 = one-step x̂₀.
    ``start``: ``noised`` (x_t drawn with the fixed noise field) or ``clean`` (√ᾱ_t·x₀, see the module doc).
    ``n_noise``: noise draws whose x̂₀ are averaged. ``context_block``: > 0 for a context-conditioned model that
    denoises blocks of that many cells from their clean surroundings (:mod:`models.context`; see the module doc);
    0 for a model of whole inputs."""

    t_start: int = 250
    ddim_steps: int = 0
    n_noise: int = 1
    start: Literal["noised", "clean"] = "noised"
    context_block: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.t_start < 0:
            raise ValueError("t_start must be >= 0")
        if self.ddim_steps < 0 or self.n_noise < 1:
            raise ValueError("ddim_steps must be >= 0 and n_noise >= 1")
        if self.start not in ("noised", "clean"):
            raise ValueError(f"start must be 'noised' or 'clean', got {self.start!r}")
        if self.start == "clean" and self.n_noise != 1:
            raise ValueError("a clean start draws no noise: n_noise must be 1")
        if self.context_block < 0:
            raise ValueError("context_block must be >= 0")
        if self.context_block and (self.start != "noised" or self.ddim_steps):
            raise ValueError("a context-conditioned model scores from a noised start in one step: a clean start "
                             "would show each hidden cell its own clean value")


Contexts = list[tuple[torch.Tensor, torch.Tensor]]


def contexts_of(scorer: DiffusionScorer, z: torch.Tensor) -> Contexts | None:
    """A context-conditioned model's (hidden mask, condition) pairs for ``z``, one per mask pattern; None for a
    model of whole inputs. They do not depend on the noise draw: computed once for all of them."""
    masks = scorer.context_masks()
    if masks is None:
        return None
    return [(hidden, condition(z, hidden)) for hidden in masks.patterns(z.shape[2], z.shape[3], device=z.device)]


def reconstruct(scorer: DiffusionScorer, z: torch.Tensor, t_start: int, ddim_steps: int,
                noise: torch.Tensor | None, contexts: Contexts | None = None) -> torch.Tensor:
    """Take ``z`` to ``t_start`` — noised with ``noise``, or scaled without noise when it is None — and denoise
    it: one step (ddim_steps=0) or a DDIM chain. A context-conditioned model (``contexts``, :func:`contexts_of`)
    denoises each cell once, from the mask pattern that hides it: the cell noised, its surroundings clean."""
    sched = scorer.scheduler
    t_start = min(t_start, sched.num_train_timesteps - 1)
    x_t = sched.scale_clean(z, t_start) if noise is None else sched.add_noise(z, noise.expand_as(z), t_start)
    if contexts is not None:
        out = torch.zeros_like(z)
        for hidden, cond in contexts:
            out = out + hidden * sched.pred_original_sample(x_t, scorer.eps(hidden * x_t, t_start, cond), t_start)
        return out
    if ddim_steps <= 0:
        return sched.pred_original_sample(x_t, scorer.eps(x_t, t_start), t_start)
    steps = sched.ddim_timesteps(ddim_steps, start=t_start)
    x0_hat = z
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        out = sched.ddim_step(scorer.eps(x_t, t), t, t_prev, x_t)
        x_t, x0_hat = out.prev_sample, out.pred_original_sample
    return x_t if steps[-1] == 0 else x0_hat


class ReconstructionTerms:
    """The recon map terms, shared with the ``adversarial`` scorer."""

    def recon_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._recon_terms_of(self.to_space(x), x)  # type: ignore[attr-defined]

    def _recon_terms_of(self, z: torch.Tensor, x: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The terms of inputs ``x`` in the model's space ``z``; ``x`` None when only the space is known (a
        pixel-space feature term needs the inputs)."""
        p = self.params  # type: ignore[attr-defined]
        contexts = contexts_of(self, z)  # type: ignore[arg-type]
        recons = [
            reconstruct(self, z, p.t_start, p.ddim_steps,  # type: ignore[arg-type]
                        None if p.start == "clean" else self.fixed_noise(tuple(z.shape[1:]), k),  # type: ignore[attr-defined]
                        contexts)
            for k in range(p.n_noise)
        ]
        z_hat = torch.stack(recons).mean(dim=0)
        terms = {"pixel": l1_map(z, z_hat), "recon": z_hat}
        if p.lam < 1.0:
            if p.space == "feature":
                terms["feature"] = cosine_distance_map(z, z_hat)
            else:
                assert x is not None, "a pixel-space feature term needs the inputs"
                both = self.features.maps(torch.cat([x, z_hat]))  # type: ignore[attr-defined]
                terms["feature"] = cosine_distance_map(both[: x.shape[0]], both[x.shape[0]:])
        return terms


@register("recon")
class ReconScorer(ReconstructionTerms, DiffusionScorer):
    Params = ReconParams
    default_train = TrainConfig(steps=1500, batch_size=64, lr=1e-3)

    def context_masks(self) -> BlockMasks | None:
        block = self.params.context_block  # type: ignore[attr-defined]
        return BlockMasks(block) if block else None

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.recon_terms(x)

    def _space_terms(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._recon_terms_of(self.standardise_space(features), None)
