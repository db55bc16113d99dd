"""Training the ε-prediction U-Net on normal data, optionally with the ADDM adversarial term.

Plain DDPM objective (Ho et al. 2020): t ~ U{0..T-1}, ε ~ N(0, I), loss = ‖ε̂(x_t, t) − ε‖². AdamW, gradient
clipping, cosine (or constant) learning rate with a short warm-up, and an exponential moving average of the
weights — the EMA copy is what gets returned, because it scores more stably than the last raw iterate.
The EMA decay is warmed up ((1+k)/(10+k), capped at ``ema_decay``) so short CPU runs of a few hundred steps
still end with an EMA that has moved away from the random initialisation.

ADDM (Kim et al. 2023) when ``adversarial_weight > 0``: a time-conditioned discriminator D sees a *real* sample
of the posterior q(x_{t-1} | x_t, x_0) and a *fake* one, the model's own DDPM step from ε̂ (differentiable
through ε̂). Both use the same Gaussian draw, so real and fake differ only through the model's error on the
mean — D learns what a correct denoising step looks like rather than to tell two noise draws apart. D is
trained with BCE; the generator loss adds ``adversarial_weight · BCE(D(fake), 1)``.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.context import BlockMasks, condition
from models.device import autocast, autocast_dtype
from models.discriminator import DiscriminatorConfig, TimeConditionedDiscriminator
from models.errors import InputError
from models.scheduler import NoiseScheduler
from models.strict_fields import reject_unknown_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyperparameters; saved as JSON beside checkpoints.

    ``amp``: mixed precision on CUDA (bf16, else fp16 with a gradient scaler). On a CPU it is ignored: training runs in
    fp32 whatever it says, so a fitted model does not depend on the CPU (``models/device.py``).
    """

    steps: int = 400
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema_decay: float = 0.995
    seed: int = 0
    adversarial_weight: float = 0.0
    grad_clip: float = 1.0
    amp: bool = True
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 20
    discriminator_lr: float = 2e-4
    discriminator_channels: int = 16

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.adversarial_weight < 0:
            raise ValueError("adversarial_weight must be >= 0 (0 turns the ADDM loss off)")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        reject_unknown_fields(cls, data)
        return cls(**data)


@dataclass
class TrainResult:
    model: nn.Module
    """EMA copy of the network, in eval mode with gradients off: use this for scoring."""
    losses: list[float]
    """Diffusion MSE per step."""
    seconds: float
    discriminator: nn.Module | None = None
    adversarial_losses: list[float] = field(default_factory=list)
    """Generator-side BCE(D(fake), 1) per step (empty without ADDM)."""
    discriminator_losses: list[float] = field(default_factory=list)
    raw_model: nn.Module | None = None
    """The last raw iterate (the ``unet`` passed in, trained in place)."""


def validate_training_data(data: torch.Tensor, in_channels: int | None = None) -> torch.Tensor:
    """Float32 [N, C, H, W] with finite values, or :class:`InputError` saying what is wrong."""
    if not torch.is_tensor(data):
        try:
            data = torch.as_tensor(data)
        except Exception as exc:  # noqa: BLE001 - anything unconvertible is bad input
            raise InputError(f"training data must be a tensor/array (N, C, H, W), got {type(data).__name__}") from exc
    if data.ndim != 4:
        raise InputError(f"training data must be (N, C, H, W), got shape {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise InputError("training data is empty")
    if in_channels is not None and data.shape[1] != in_channels:
        raise InputError(f"model expects {in_channels} channel(s), training data has {data.shape[1]}")
    data = data.float()
    if not torch.isfinite(data).all():
        bad = int((~torch.isfinite(data)).sum())
        raise InputError(f"training data contains {bad} NaN/inf value(s)")
    return data


def _lr_lambda(config: TrainConfig):
    def fn(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
        if config.lr_schedule == "constant":
            return warm
        progress = min(1.0, step / max(1, config.steps - 1))
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    return fn


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_params = [p for p in ema.parameters()]
    model_params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Endless shuffled index batches; each epoch is a fresh permutation (batch = N when N < batch_size)."""
    size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator, device=device)
        for start in range(0, n - size + 1, size):
            yield perm[start : start + size]


def train_diffusion(
    unet: nn.Module,
    scheduler: NoiseScheduler,
    data: torch.Tensor,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
    context: BlockMasks | None = None,
) -> TrainResult:
    """Train ``unet`` (in place) on ``data`` [N, C, H, W]; return the EMA copy and the loss history.

    ``context``: train a context-conditioned model (``unet.config.cond_channels`` = C + 1): each sample hides the
    cells of a random mask, the model sees them noised and the rest clean (:func:`models.context.condition`), and
    the loss counts the hidden cells only — what it learns is to denoise a block from its surroundings."""
    device = torch.device(device)
    in_channels = getattr(getattr(unet, "config", None), "in_channels", None)
    data = validate_training_data(data, in_channels).to(device)
    n = data.shape[0]

    torch.manual_seed(config.seed)  # dropout and the discriminator's initialisation
    gen = torch.Generator(device=device).manual_seed(config.seed)

    unet.to(device).train()
    ema = copy.deepcopy(unet).eval()
    for p in ema.parameters():
        p.requires_grad_(False)

    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    use_amp = config.amp and autocast_dtype(device) is not None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and autocast_dtype(device) == torch.float16)

    if context is not None and config.adversarial_weight > 0:
        raise ValueError("a context-conditioned model is not trained adversarially")
    disc = disc_opt = None
    if config.adversarial_weight > 0:
        disc = TimeConditionedDiscriminator(
            DiscriminatorConfig(in_channels=data.shape[1], base_channels=config.discriminator_channels)
        ).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=config.discriminator_lr, betas=(0.5, 0.999))

    losses: list[float] = []
    adv_losses: list[float] = []
    disc_losses: list[float] = []
    batches = _batches(n, config.batch_size, gen, device)
    log.info(
        "training %d steps on %d samples %s (batch %d, amp=%s, adversarial_weight=%g) on %s",
        config.steps, n, tuple(data.shape[1:]), min(config.batch_size, n), use_amp,
        config.adversarial_weight, device,
    )
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train", disable=not progress, leave=False)
    for step in bar:
        x0 = data[next(batches)]
        t = torch.randint(0, scheduler.num_train_timesteps, (x0.shape[0],), generator=gen, device=device)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        x_t = scheduler.add_noise(x0, noise, t)
        if context is None:
            with autocast(device, enabled=use_amp):
                eps_hat = unet(x_t, t)
            eps_hat = eps_hat.float()
            mse = F.mse_loss(eps_hat, noise)
        else:
            hidden = context.sample(x0.shape[0], x0.shape[2], x0.shape[3], gen, device)
            with autocast(device, enabled=use_amp):
                eps_hat = unet(hidden * x_t, t, condition(x0, hidden))
            eps_hat = eps_hat.float()
            mse = ((eps_hat - noise) ** 2 * hidden).sum() / (hidden.sum() * x0.shape[1]).clamp_min(1.0)
        loss = mse

        if disc is not None:
            z = torch.randn(x0.shape, generator=gen, device=device)
            real, fake = _posterior_pair(scheduler, x0, x_t, eps_hat, t, z)
            disc.requires_grad_(False)
            with autocast(device, enabled=use_amp):
                fake_logits = disc(fake, t).float()
            adv = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
            loss = loss + config.adversarial_weight * adv
            adv_losses.append(float(adv.detach()))

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip and config.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        lr_sched.step()
        _ema_update(ema, unet, min(config.ema_decay, (1 + step) / (10 + step)))

        if disc is not None:
            disc.requires_grad_(True)
            with autocast(device, enabled=use_amp):
                logits_real = disc(real, t).float()
                logits_fake = disc(fake.detach(), t).float()
            d_loss = F.binary_cross_entropy_with_logits(
                logits_real, torch.ones_like(logits_real)
            ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()
            disc_losses.append(float(d_loss.detach()))

        losses.append(float(mse.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"training diverged at step {step} (loss {losses[-1]}); lower lr")
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % 100 == 0:
            log.debug("step %d loss %.5f lr %.2e", step, losses[-1], lr_sched.get_last_lr()[0])
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    log.info("trained %d steps in %.1f s, final loss %.5f", config.steps, seconds, sum(tail) / len(tail))

    unet.eval()
    if disc is not None:
        disc.eval()
    return TrainResult(
        model=ema,
        losses=losses,
        seconds=seconds,
        discriminator=disc,
        adversarial_losses=adv_losses,
        discriminator_losses=disc_losses,
        raw_model=unet,
    )


def _posterior_pair(
    scheduler: NoiseScheduler,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    eps_hat: torch.Tensor,
    t: torch.Tensor,
    z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, fake) x_{t-1}: a draw of q(x_{t-1}|x_t, x_0) and the model's DDPM step, same noise draw z."""
    mean_q, _, logvar = scheduler.posterior_mean_variance(x0, x_t, t)
    mean_p, _, _, _ = scheduler.model_mean_variance(x_t, eps_hat, t)
    std = (0.5 * logvar).exp() * (t > 0).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return (mean_q + std * z).detach(), mean_p + std * z
