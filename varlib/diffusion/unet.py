"""A small pixel-space UNet for epsilon-prediction diffusion on 64 px RGB images.

The layout follows the DDPM UNet (Ho et al., 2020) in miniature: a sinusoidal embedding of the
(possibly fractional) timestep, residual blocks with group normalisation and an additive timestep
bias, self-attention only at the levels named in ``attn_levels`` (level ``i`` works at
``image_size / 2**i``; level 2 is 16x16 for 64 px inputs), strided-convolution down-sampling,
nearest-neighbour up-sampling followed by a convolution, and skip connections from every encoder
block to the decoder. The last convolution of every residual branch, every attention projection
and the output layer start at zero, so an untrained network predicts ``eps = 0`` (the denoiser it
defines is then the identity on the noisy image).

The network is fully convolutional apart from attention over all positions, so it runs on any
square input whose side is divisible by ``2 ** (len(channel_mults) - 1)``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UNetConfig:
    in_channels: int = 3
    base_channels: int = 64
    channel_mults: Tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_levels: Tuple[int, ...] = (2,)
    mid_attention: bool = False
    num_heads: int = 4
    groups: int = 32
    dropout: float = 0.0
    time_embed_mult: int = 4

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "UNetConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def min_divisor(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.channel_mults) - 1)


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of timesteps ``t`` (B,), which may be fractional."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over all positions, residual."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention width {ch} is not divisible by num_heads={heads}")
        self.heads = heads
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """``eps = UNet(x_t, t)``: x_t (B, C, H, W) on the [-1, 1] scale (times sqrt(alpha_bar)), t (B,) float."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch0 = cfg.base_channels
        temb_dim = ch0 * cfg.time_embed_mult
        self.temb = nn.Sequential(nn.Linear(ch0, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        chans = [ch0 * m for m in cfg.channel_mults]
        levels = len(chans)

        self.down = nn.ModuleList()
        skips: List[int] = [ch0]
        cur = ch0
        for lvl, ch in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                blk = nn.ModuleDict({"res": ResBlock(cur, ch, temb_dim, cfg.groups, cfg.dropout)})
                if lvl in cfg.attn_levels:
                    blk["attn"] = AttnBlock(ch, cfg.num_heads, cfg.groups)
                self.down.append(blk)
                cur = ch
                skips.append(cur)
            if lvl != levels - 1:
                self.down.append(nn.ModuleDict({"down": Downsample(cur)}))
                skips.append(cur)

        self.mid1 = ResBlock(cur, cur, temb_dim, cfg.groups, cfg.dropout)
        self.mid_attn = AttnBlock(cur, cfg.num_heads, cfg.groups) if cfg.mid_attention else nn.Identity()
        self.mid2 = ResBlock(cur, cur, temb_dim, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()
        for lvl in reversed(range(levels)):
            ch = chans[lvl]
            for _ in range(cfg.num_res_blocks + 1):
                blk = nn.ModuleDict({"res": ResBlock(cur + skips.pop(), ch, temb_dim, cfg.groups, cfg.dropout)})
                if lvl in cfg.attn_levels:
                    blk["attn"] = AttnBlock(ch, cfg.num_heads, cfg.groups)
                self.up.append(blk)
                cur = ch
            if lvl != 0:
                self.up.append(nn.ModuleDict({"up": Upsample(cur)}))
        assert not skips
        self.norm_out = _norm(cur, cfg.groups)
        self.conv_out = _zero(nn.Conv2d(cur, cfg.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = self.cfg.min_divisor
        if x.shape[-1] % d or x.shape[-2] % d:
            raise ValueError(f"the UNet needs image sides divisible by {d}, got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device).float().reshape(-1).expand(x.shape[0])
        temb = self.temb(timestep_embedding(t, self.cfg.base_channels))
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            if "down" in blk:
                h = blk["down"](h)
            else:
                h = blk["res"](h, temb)
                if "attn" in blk:
                    h = blk["attn"](h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for blk in self.up:
            if "up" in blk:
                h = blk["up"](h)
            else:
                h = blk["res"](torch.cat([h, hs.pop()], dim=1), temb)
                if "attn" in blk:
                    h = blk["attn"](h)
        return self.conv_out(F.silu(self.norm_out(h)))
