"""VAR's multi-scale residual VQ-VAE ("VQVAE" in the official code).

The module tree and parameter names follow the official FoundationVision/VAR model so that the
official checkpoint ``vae_ch160v4096z32.pth`` loads with ``strict=True``. Images enter as
``(B, 3, H, W)`` in ``[-1, 1]`` (the prior wrapper converts from ``[0, 1]``); latents are
``(B, Cvae, h, w)`` with ``h = H / downsample``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in the official model; tiny models with < 32 channels use fewer groups.
    groups = 32 if channels % 32 == 0 else max(g for g in (16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1x1 qkv convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.C = channels
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # asymmetric zero padding, as the official model (and taming-transformers) does
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 in_channels: int = 3, dropout: float = 0.0, using_sa: bool = True, using_mid_sa: bool = True):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_resolutions):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[level], ch * ch_mult[level]
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if level == self.num_resolutions - 1 and using_sa:
                    stage.attn.append(AttnBlock(block_in))
            if level != self.num_resolutions - 1:
                stage.downsample = Downsample2x(block_in)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in) if using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if level != self.num_resolutions - 1:
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 in_channels: int = 3, dropout: float = 0.0, using_sa: bool = True, using_mid_sa: bool = True):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in) if using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.up = nn.ModuleList()
        for level in reversed(range(self.num_resolutions)):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if level == self.num_resolutions - 1 and using_sa:
                    stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample2x(block_in)
            self.up.insert(0, stage)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, in_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(self.num_resolutions)):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn) > 0:
                    h = stage.attn[i](h)
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """Residual 3x3 convolution applied to each scale's up-sampled code map."""

    def __init__(self, channels: int, quant_resi: float):
        super().__init__(channels, channels, 3, 1, 1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul(self.resi_ratio)


class PhiPartiallyShared(nn.Module):
    """K phi convolutions shared across scales: scale ratio r in [0,1] picks the nearest tick."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        K = len(qresi_ls)
        self.ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)

    def __getitem__(self, ratio: float) -> nn.Module:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - ratio)))]


class MultiScaleQuantizer(nn.Module):
    """Residual quantisation of a latent over the scale schedule ``patch_nums``.

    Down-sampling of the residual uses area interpolation, up-sampling of each scale's codes uses
    bicubic interpolation, then the scale's phi convolution, exactly as the official model.
    """

    def __init__(self, vocab_size: int, Cvae: int, patch_nums: Sequence[int], quant_resi: float = 0.5,
                 share_quant_resi: int = 4, beta: float = 0.25, using_znorm: bool = False):
        super().__init__()
        self.vocab_size, self.Cvae, self.beta, self.using_znorm = vocab_size, Cvae, beta, using_znorm
        self.patch_nums: Tuple[int, ...] = tuple(patch_nums)
        self.quant_resi = PhiPartiallyShared(nn.ModuleList(
            [Phi(Cvae, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity() for _ in range(share_quant_resi)]))
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, Cvae)
        nn.init.uniform_(self.embedding.weight, -1 / vocab_size, 1 / vocab_size)

    # -- helpers -----------------------------------------------------------------------------
    def phi(self, si: int, num_scales: Optional[int] = None) -> nn.Module:
        SN = num_scales or len(self.patch_nums)
        return self.quant_resi[si / (SN - 1)]

    def nearest_codes(self, rest_NC: torch.Tensor, codebook: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Index of the nearest codebook vector for each row of ``rest_NC`` (N, Cvae); ``codebook`` (V, Cvae):
        search these vectors instead of the embedding (a transformed codebook, same indices)."""
        emb = self.embedding.weight if codebook is None else codebook
        if self.using_znorm:
            return torch.argmax(F.normalize(rest_NC, dim=1) @ F.normalize(emb, dim=1).T, dim=1)
        d = rest_NC.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * rest_NC @ emb.T
        return torch.argmin(d, dim=1)

    def upsample_codes(self, si: int, h_BChw: torch.Tensor, HW: int, num_scales: Optional[int] = None) -> torch.Tensor:
        """Scale ``si``'s code map (B, C, pn, pn) -> its contribution to f_hat (B, C, HW, HW)."""
        SN = num_scales or len(self.patch_nums)
        if si != SN - 1:
            h_BChw = F.interpolate(h_BChw, size=(HW, HW), mode="bicubic")
        return self.phi(si, SN)(h_BChw)

    # -- training forward --------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor, patch_nums: Optional[Sequence[int]] = None):
        """Quantise ``f_BChw``; returns (f_hat with straight-through gradient, vq loss, codes used per scale)."""
        patch_nums = tuple(patch_nums or self.patch_nums)
        B, C, H, W = f_BChw.shape
        SN = len(patch_nums)
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        vq_loss = f_BChw.new_zeros(())
        hits = []
        for si, pn in enumerate(patch_nums):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != SN - 1 else f_rest
            idx_N = self.nearest_codes(rest.permute(0, 2, 3, 1).reshape(-1, C))
            hits.append(idx_N.bincount(minlength=self.vocab_size))
            h = self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2)
            h = self.upsample_codes(si, h, H, SN)
            f_hat = f_hat + h
            f_rest = f_rest - h
            vq_loss = vq_loss + F.mse_loss(f_hat.data, f_BChw).mul(self.beta) + F.mse_loss(f_hat, f_no_grad)
        if self.training and len(patch_nums) == self.ema_vocab_hit_SV.shape[0]:
            with torch.no_grad():
                hit = torch.stack(hits).float()
                self.ema_vocab_hit_SV.mul_(0.99).add_(hit / hit.sum(1, keepdim=True), alpha=0.01)
        f_hat = (f_hat.data - f_no_grad) + f_BChw
        return f_hat, vq_loss / SN, hits

    # -- inference API -----------------------------------------------------------------------
    @torch.no_grad()
    def f_to_tokens(self, f_BChw: torch.Tensor, patch_nums: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Latent -> list of token maps, one ``(B, pn, pn)`` long tensor per scale."""
        patch_nums = tuple(patch_nums or self.patch_nums)
        B, C, H, W = f_BChw.shape
        SN = len(patch_nums)
        f_rest = f_BChw.clone()
        tokens = []
        for si, pn in enumerate(patch_nums):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != SN - 1 else f_rest
            idx = self.nearest_codes(rest.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn, pn)
            tokens.append(idx)
            f_rest = f_rest - self.upsample_codes(si, self.embedding(idx).permute(0, 3, 1, 2), H, SN)
        return tokens

    def tokens_to_fhat(self, tokens: Sequence[torch.Tensor], num_scales: Optional[int] = None,
                       patch_nums: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Accumulated latent f_hat ``(B, Cvae, h, w)`` after the first ``num_scales`` scales."""
        patch_nums = tuple(patch_nums or self.patch_nums)
        SN = len(patch_nums)
        HW = patch_nums[-1]
        n = len(tokens) if num_scales is None else num_scales
        B = tokens[0].shape[0]
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, HW, HW)
        for si in range(n):
            idx = tokens[si].view(B, patch_nums[si], patch_nums[si])
            f_hat = f_hat + self.upsample_codes(si, self.embedding(idx).permute(0, 3, 1, 2), HW, SN)
        return f_hat

    def tokens_to_teacher_input(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of the transformer: (B, L - first_l, Cvae).

        For each scale after the first, the area-down-sampled f_hat accumulated over all coarser scales.
        """
        pn = self.patch_nums
        SN, HW = len(pn), pn[-1]
        B = tokens[0].shape[0]
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, HW, HW)
        inputs = []
        for si in range(SN - 1):
            idx = tokens[si].view(B, pn[si], pn[si])
            f_hat = f_hat + self.upsample_codes(si, self.embedding(idx).permute(0, 3, 1, 2), HW, SN)
            inputs.append(F.interpolate(f_hat, size=(pn[si + 1], pn[si + 1]), mode="area").flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    def next_input(self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Add scale ``si``'s code map to f_hat; return (new f_hat, transformer input map for scale si+1)."""
        SN, HW = len(self.patch_nums), self.patch_nums[-1]
        f_hat = f_hat + self.upsample_codes(si, h_BChw, HW, SN)
        if si == SN - 1:
            return f_hat, f_hat
        nxt = self.patch_nums[si + 1]
        return f_hat, F.interpolate(f_hat, size=(nxt, nxt), mode="area")


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    Cvae: int = 32
    ch: int = 160
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    patch_nums: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    beta: float = 0.25
    using_znorm: bool = False
    dropout: float = 0.0
    decoder_ch: Optional[int] = None  # the decoder's base width when it differs from the encoder's (None: ``ch``)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


class MultiScaleVQVAE(nn.Module):
    """Encoder + multi-scale quantiser + decoder. All images here are in ``[-1, 1]``."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size, self.Cvae = cfg.vocab_size, cfg.Cvae
        self.patch_nums = tuple(cfg.patch_nums)
        kw = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks, z_channels=cfg.Cvae,
                  dropout=cfg.dropout, using_sa=cfg.using_sa, using_mid_sa=cfg.using_mid_sa)
        self.encoder = Encoder(**kw)
        self.decoder = Decoder(**{**kw, "ch": cfg.decoder_ch or cfg.ch})
        self.quantize = MultiScaleQuantizer(cfg.vocab_size, cfg.Cvae, cfg.patch_nums, cfg.quant_resi,
                                            cfg.share_quant_resi, cfg.beta, cfg.using_znorm)
        self.quant_conv = nn.Conv2d(cfg.Cvae, cfg.Cvae, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(cfg.Cvae, cfg.Cvae, 3, 1, 1)

    def encode_latent(self, img: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> continuous latent (B, Cvae, H/ds, W/ds)."""
        return self.quant_conv(self.encoder(img))

    def img_to_tokens(self, img: torch.Tensor, patch_nums: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """(B,3,H,W) in [-1,1] -> list of token maps ``(B, pn, pn)`` per scale."""
        return self.quantize.f_to_tokens(self.encode_latent(img), patch_nums)

    def fhat_to_img(self, f_hat: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Accumulated latent -> image (B,3,H,W) in [-1,1] (differentiable when ``clamp`` is False)."""
        img = self.decoder(self.post_quant_conv(f_hat))
        return img.clamp(-1, 1) if clamp else img

    def tokens_to_img(self, tokens: Sequence[torch.Tensor], num_scales: Optional[int] = None) -> torch.Tensor:
        return self.fhat_to_img(self.quantize.tokens_to_fhat(tokens, num_scales))

    def forward(self, img: torch.Tensor, patch_nums: Optional[Sequence[int]] = None):
        """Training pass: returns (reconstruction in [-1,1] unclamped, vq loss, per-scale code hits).

        ``patch_nums``: the schedule for an image of another size than the model's (a training crop);
        its last entry must be the latent's side."""
        f = self.encode_latent(img)
        with torch.autocast(f.device.type, enabled=False):  # nearest-code search needs fp32
            f_hat, vq_loss, hits = self.quantize(f.float(), patch_nums)
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, hits
