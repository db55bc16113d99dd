"""The noise schedule, kept out of the network (diffusers style).

The U-Net only predicts ε. Everything about β_t, ᾱ_t, the forward process, the DDPM and DDIM reverse steps
and the Gaussian posterior q(x_{t-1} | x_t, x_0) lives here, so every scorer uses the same maths and the
tests can check it against closed forms once.

Timesteps are 0-based like diffusers: t ∈ {0, …, T-1}, ``alphas_cumprod[t]`` = ᾱ_{t+1} in the paper's
1-based notation. ``t = -1`` stands for "clean data" (ᾱ = 1) where a previous step is needed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

ScheduleName = Literal["linear", "cosine"]


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Ho et al. 2020. The endpoints are scaled with T so that short schedules stay as noisy at the end."""
    scale = 1000.0 / num_steps
    return torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021: ᾱ follows a squared cosine, which keeps more signal at middle steps."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps: int = 1000
    schedule: ScheduleName = "linear"
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _gather(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """Pick per-sample schedule values and shape them to broadcast over ``like`` (N, ...)."""
    if not torch.is_tensor(t):
        t = torch.tensor([t], device=like.device)
    t = t.to(device=values.device, dtype=torch.long).reshape(-1)
    out = values[t].to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


class NoiseScheduler:
    """DDPM forward/reverse process with a DDIM step; one object, shared by training and every scorer."""

    def __init__(self, config: SchedulerConfig | None = None, **overrides) -> None:
        cfg = config or SchedulerConfig()
        if overrides:
            cfg = SchedulerConfig(**{**cfg.to_dict(), **overrides})
        if cfg.num_train_timesteps < 2:
            raise ValueError("num_train_timesteps must be at least 2")
        self.config = cfg
        if cfg.schedule == "linear":
            betas = linear_betas(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
        elif cfg.schedule == "cosine":
            betas = cosine_betas(cfg.num_train_timesteps)
        else:
            raise ValueError(f"unknown schedule {cfg.schedule!r}; choose 'linear' or 'cosine'")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0) = N(c0·x_0 + ct·x_t, σ̃²_t) — Ho et al. eq. 6–7.
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # log with the t=0 value clipped (it is exactly 0), as in improved-DDPM.
        self.posterior_log_variance = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_coef_x0 = betas * torch.sqrt(self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        self.posterior_coef_xt = (
            (1 - self.alphas_cumprod_prev) * torch.sqrt(self.alphas) / (1 - self.alphas_cumprod)
        )
        self.timesteps = torch.arange(cfg.num_train_timesteps - 1, -1, -1)

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    # ------------------------------------------------------------------ forward process
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I) with the given noise."""
        ab = _gather(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def scale_clean(self, x0: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """√ᾱ_t · x_0: the noiseless, scaled start used by dynamic implicit conditioning."""
        return _gather(self.alphas_cumprod, t, x0).sqrt() * x0

    def sample_timesteps(self, n: int, device: torch.device | str = "cpu", generator=None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (n,), device=device, generator=generator)

    # ------------------------------------------------------------------ reverse-process pieces
    def pred_original_sample(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t."""
        ab = _gather(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def pred_noise(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Inverse of ``pred_original_sample``: the ε that maps x_0 to x_t."""
        ab = _gather(self.alphas_cumprod, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = _gather(self.posterior_coef_x0, t, x_t) * x0 + _gather(self.posterior_coef_xt, t, x_t) * x_t
        var = _gather(self.posterior_variance, t, x_t)
        logvar = _gather(self.posterior_log_variance, t, x_t)
        return mean, var, logvar

    def model_mean_variance(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int, clip: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """p_θ(x_{t-1} | x_t) with fixed (posterior) variance: the mean uses x̂_0 from ε̂.

        Returns (mean, variance, log-variance, x̂_0).
        """
        x0_hat = self.pred_original_sample(x_t, eps, t)
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        mean, var, logvar = self.posterior_mean_variance(x0_hat, x_t, t)
        return mean, var, logvar, x0_hat

    # ------------------------------------------------------------------ samplers
    def step(
        self,
        eps: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        generator: torch.Generator | None = None,
        clip: float | None = None,
    ) -> StepOutput:
        """One ancestral DDPM step x_t → x_{t-1}."""
        mean, _, logvar, x0_hat = self.model_mean_variance(x_t, eps, t, clip=clip)
        if t == 0:
            return StepOutput(mean, x0_hat)
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return StepOutput(mean + (0.5 * logvar).exp() * noise, x0_hat)

    def ddim_timesteps(self, num_inference_steps: int, start: int | None = None) -> list[int]:
        """Evenly spaced descending timesteps from ``start`` (default T-1) down to 0."""
        start = self.num_train_timesteps - 1 if start is None else int(start)
        if not 0 <= start < self.num_train_timesteps:
            raise ValueError(f"start step {start} outside [0, {self.num_train_timesteps})")
        n = max(1, min(num_inference_steps, start + 1))
        steps = torch.linspace(start, 0, n).round().long().tolist()
        return list(dict.fromkeys(steps))  # unique, order kept

    def ddim_step(
        self,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        x_t: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        clip: float | None = None,
    ) -> StepOutput:
        """DDIM (Song et al. 2021, eq. 12) from step t to an earlier step t_prev (−1 = clean data)."""
        ab_t = _gather(self.alphas_cumprod, t, x_t)
        ab_prev = (
            torch.ones_like(ab_t) if t_prev < 0 else _gather(self.alphas_cumprod, t_prev, x_t)
        )
        x0_hat = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
            eps = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
        sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp(min=0).sqrt()
        direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        prev = ab_prev.sqrt() * x0_hat + direction
        if eta > 0 and t_prev >= 0:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            prev = prev + sigma * noise
        return StepOutput(prev, x0_hat)


def gaussian_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp() - 1.0)
