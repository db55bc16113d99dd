"""The ε-predicting U-Net with a Daubechies wavelet pyramid and multi-head self-attention (Chen 2025).

Layout (lucidrains/diffusers style, the network only predicts noise; the schedule lives in the scheduler):

    x ─conv_in─► [level 0: ResBlocks(+attn)] ─down─► (+ proj(DWT¹ x)) [level 1 …] ─down─► (+ proj(DWT² x)) …
                                                                   bridge: ResBlock → MHSA → ResBlock
    ε̂ ◄─zero conv─ [level 0 …] ◄─up─ [level 1: concat skips, ResBlocks(+attn)] ◄─up─ …

* Wavelet pyramid module: after every downsampling, the encoder receives the four periodized DWT sub-bands
  (LL, LH, HL, HH) of the *input* at exactly that resolution, through a 1×1 conv, added to the features. The
  convolutional path has to re-derive frequency detail from pixels; the pyramid hands it over losslessly at
  every scale, which is where scalogram anomalies (transients, periodic breaks) live.
* Multi-head self-attention at the configured low resolutions and at the bridge: global dependencies
  (e.g. across the whole time axis of a scalogram) that 3×3 convolutions only reach after many layers.
* Hybrid time embedding (sinusoidal + Conv1D), injected into every ResBlock as a per-channel bias.
* The output conv is zero-initialised, so an untrained model predicts ε̂ = 0 and training starts stable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.embeddings import HybridTimeEmbedding
from models.strict_fields import reject_unknown_fields
from models.wavelets import wavelet_pyramid


@dataclass(frozen=True)
class UNetConfig:
    """Model hyperparameters; saved as JSON beside checkpoints (``to_dict``/``from_dict``)."""

    in_channels: int = 1
    sample_size: tuple[int, int] = (32, 32)
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    attention_heads: int = 4
    mid_attention: bool = True
    wavelet: str = "db2"
    use_wavelet_pyramid: bool = True
    dropout: float = 0.0
    time_conv_channels: int = 8
    cond_channels: int = 0
    """Channels of a conditioning input joined to x (a context-conditioned model: the clean context and its mask,
    :mod:`models.context`), at the first convolution and in the wavelet pyramid that feeds every level; the output
    keeps ``in_channels``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_size", tuple(int(s) for s in self.sample_size))
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if len(self.sample_size) != 2:
            raise ValueError(f"sample_size must be (H, W), got {self.sample_size}")
        if self.cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0, got {self.cond_channels}")
        if not self.channel_mults:
            raise ValueError("channel_mults must not be empty")
        factor = self.downsample_factor
        h, w = self.sample_size
        if h % factor or w % factor:
            raise ValueError(
                f"sample_size {h}x{w} must be divisible by 2**{len(self.channel_mults) - 1}={factor}"
            )
        bad = [a for a in self.attention_levels if not 0 <= a < len(self.channel_mults)]
        if bad:
            raise ValueError(f"attention_levels {bad} outside 0..{len(self.channel_mults) - 1}")
        for level, mult in enumerate(self.channel_mults):
            ch = self.base_channels * mult
            if (level in self.attention_levels or (self.mid_attention and level == len(self.channel_mults) - 1)):
                if ch % self.attention_heads:
                    raise ValueError(f"{ch} channels at level {level} not divisible by {self.attention_heads} heads")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UNetConfig":
        reject_unknown_fields(cls, data)
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "UNetConfig":
        """Named configurations; keyword overrides replace fields (e.g. ``in_channels`` for features)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


PRESETS: dict[str, UNetConfig] = {
    # Unit tests: a few thousand parameters, milliseconds per step.
    "tiny": UNetConfig(
        in_channels=1, sample_size=(16, 16), base_channels=8, channel_mults=(1, 2),
        attention_levels=(1,), attention_heads=2,
    ),
    # Default scalogram model for sensor series: sized for >= 1,000 windows/s on 2 CPU cores (bf16).
    "series": UNetConfig(
        in_channels=1, sample_size=(32, 32), base_channels=16, channel_mults=(1, 2, 2),
        attention_levels=(2,), attention_heads=4,
    ),
    # Machine audio: finer scalograms, one more level.
    "audio": UNetConfig(
        in_channels=1, sample_size=(64, 64), base_channels=32, channel_mults=(1, 2, 2, 2),
        attention_levels=(2, 3), attention_heads=4,
    ),
    # Frozen CNN feature maps (EfficientNet-Lite0 blocks 3-4: 40 x 28 x 28); override in_channels as needed.
    "feature": UNetConfig(
        in_channels=40, sample_size=(28, 28), base_channels=64, channel_mults=(1, 2, 2),
        attention_levels=(1, 2), attention_heads=4,
    ),
    # Pixel-space MVTec on a GPU.
    "gpu": UNetConfig(
        in_channels=3, sample_size=(256, 256), base_channels=64, channel_mults=(1, 1, 2, 2, 4),
        num_res_blocks=2, attention_levels=(3, 4), attention_heads=8, dropout=0.1,
    ),
}


def _groups(channels: int) -> int:
    """GroupNorm groups: ~4+ channels per group, at most 32 groups."""
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the time embedding as a per-channel bias, twice; residual."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all H·W positions, pre-norm, residual."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [N, heads, HW, d]
        # Written out rather than F.scaled_dot_product_attention: on CPU under bf16 autocast SDPA takes its
        # math fallback with -inf/NaN guards that cost ~10 % of the whole forward pass at these sizes.
        if x.device.type == "cuda":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1)
            out = weights.to(v.dtype) @ v
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class WaveletPyramidUNet(nn.Module):
    """forward(x [N, C, H, W], t [N], cond [N, cond_channels, H, W] if the config has any) → ε̂ [N, C, H, W]; any
    H, W divisible by ``config.downsample_factor``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        base = cfg.base_channels
        chans = [base * m for m in cfg.channel_mults]
        n_levels = len(chans)
        temb_dim = 4 * base
        self.time_embedding = HybridTimeEmbedding(base, temb_dim, conv_channels=cfg.time_conv_channels)
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.cond_channels, chans[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        self.wavelet_proj = nn.ModuleList()  # wavelet_proj[i] feeds level i+1
        skip_chans: list[int] = []
        ch = chans[0]
        for level, out_ch in enumerate(chans):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, out_ch, temb_dim, cfg.dropout))
                attns.append(
                    SelfAttention2d(out_ch, cfg.attention_heads) if level in cfg.attention_levels else nn.Identity()
                )
                ch = out_ch
                skip_chans.append(ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if level < n_levels - 1:
                self.downsamplers.append(Downsample(ch))
                if cfg.use_wavelet_pyramid:
                    self.wavelet_proj.append(nn.Conv2d(4 * (cfg.in_channels + cfg.cond_channels), ch, 1))

        self.mid_block1 = ResBlock(ch, ch, temb_dim, cfg.dropout)
        self.mid_attn = SelfAttention2d(ch, cfg.attention_heads) if cfg.mid_attention else nn.Identity()
        self.mid_block2 = ResBlock(ch, ch, temb_dim, cfg.dropout)

        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(n_levels)):
            out_ch = chans[level]
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch + skip_chans.pop(), out_ch, temb_dim, cfg.dropout))
                attns.append(
                    SelfAttention2d(out_ch, cfg.attention_heads) if level in cfg.attention_levels else nn.Identity()
                )
                ch = out_ch
            self.up_blocks.append(blocks)
            self.up_attn.append(attns)
            if level > 0:
                self.upsamplers.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_input(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected x of shape (N, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"model expects {self.config.in_channels} channel(s), got {x.shape[1]}")
        f = self.config.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {f}")
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=x.device)
        t = t.to(device=x.device, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        if t.numel() != x.shape[0]:
            raise ValueError(f"got {t.numel()} timesteps for a batch of {x.shape[0]}")
        return t

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None = None) -> torch.Tensor:
        t = self._check_input(x, t)
        if (cond is None) != (self.config.cond_channels == 0):
            raise ValueError(f"model takes {self.config.cond_channels} conditioning channel(s), got "
                             f"{'none' if cond is None else cond.shape[1]}")
        if cond is not None and (cond.shape[1] != self.config.cond_channels or cond.shape[0] != x.shape[0]
                                 or cond.shape[2:] != x.shape[2:]):
            raise ValueError(f"conditioning input of shape {tuple(cond.shape)} does not fit x {tuple(x.shape)} "
                             f"with {self.config.cond_channels} channel(s)")
        temb = self.time_embedding(t)
        x = x if cond is None else torch.cat([x, cond.to(x.dtype)], dim=1)  # the condition enters at every level too
        pyramid = (
            wavelet_pyramid(x, len(self.downsamplers), self.config.wavelet)
            if self.config.use_wavelet_pyramid and len(self.downsamplers)
            else []
        )
        h = self.conv_in(x)
        skips: list[torch.Tensor] = []
        for level, (blocks, attns) in enumerate(zip(self.down_blocks, self.down_attn)):
            for block, attn in zip(blocks, attns):
                h = attn(block(h, temb))
                skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
                if pyramid:
                    h = h + self.wavelet_proj[level](pyramid[level].to(h.dtype))
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)
        for i, (blocks, attns) in enumerate(zip(self.up_blocks, self.up_attn)):
            for block, attn in zip(blocks, attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), temb))
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
