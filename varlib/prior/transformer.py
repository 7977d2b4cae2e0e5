"""VAR's class-conditional next-scale transformer.

Parameter and buffer names follow the official ``models/var.py`` so official checkpoints load with
``strict=True``. The tokenizer is *not* a sub-module (as in the official model); the prior wrapper
(:class:`varlib.prior.Prior`) holds both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfAttention(nn.Module):
    """Multi-head attention with L2-normalised q/k and a learned per-head scale, plus a KV cache."""

    def __init__(self, dim: int, num_heads: int, attn_l2_norm: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100.0)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.caching = False
        self.cached_k: Optional[torch.Tensor] = None
        self.cached_v: Optional[torch.Tensor] = None

    def kv_caching(self, enable: bool) -> None:
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        q, k, v = F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:
            q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp())
            k = F.normalize(k, dim=-1)
        if self.caching:
            if self.cached_k is not None:
                k = torch.cat((self.cached_k, k), dim=2)
                v = torch.cat((self.cached_v, v), dim=2)
            self.cached_k, self.cached_v = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNSelfAttn(nn.Module):
    """Transformer block whose LayerNorms are modulated (scale, shift, gate) by the class embedding."""

    def __init__(self, dim: int, cond_dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 attn_l2_norm: bool = True):
        super().__init__()
        self.C = dim
        self.attn = SelfAttention(dim, num_heads, attn_l2_norm)
        self.ffn = FFN(dim, round(dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor, attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1 + 1).add(shift1), attn_bias).mul(gamma1)
        x = x + self.ffn(self.ln_wo_grad(x).mul(scale2 + 1).add(shift2)).mul(gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, dim: int, cond_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C = dim
        self.ln_wo_grad = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x).mul(scale + 1).add(shift)


@dataclass
class TransformerConfig:
    depth: int = 16
    width: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    vocab_size: int = 4096
    Cvae: int = 32
    patch_nums: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    cond_drop_rate: float = 0.1


class NextScaleTransformer(nn.Module):
    """Predicts the token map of scale k from the class and all coarser scales (block-causal)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.width
        self.C, self.V, self.Cvae, self.num_classes = C, cfg.vocab_size, cfg.Cvae, cfg.num_classes
        self.patch_nums = tuple(cfg.patch_nums)
        self.L = sum(pn * pn for pn in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends: List[Tuple[int, int]] = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn
        init_std = math.sqrt(1 / C / 3)
        self.word_embed = nn.Linear(cfg.Cvae, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)  # row num_classes = null class (CFG)
        nn.init.trunc_normal_(self.class_emb.weight, mean=0, std=init_std)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        nn.init.trunc_normal_(self.pos_start, mean=0, std=init_std)
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        nn.init.trunc_normal_(self.pos_1LC, mean=0, std=init_std)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        nn.init.trunc_normal_(self.lvl_embed.weight, mean=0, std=init_std)
        self.blocks = nn.ModuleList([AdaLNSelfAttn(C, C, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.attn_l2_norm)
                                     for _ in range(cfg.depth)])
        d = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(self.patch_nums)]).view(1, self.L, 1)
        dT = d.transpose(1, 2)
        self.register_buffer("lvl_1L", dT[:, 0].contiguous())
        self.register_buffer("attn_bias_for_masking",
                             torch.where(d >= dT, 0.0, -torch.inf).reshape(1, 1, self.L, self.L).contiguous())
        self.head_nm = AdaLNBeforeHead(C, C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)
        self._init_weights()

    def _init_weights(self, init_std: float = 0.02) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # start each block near identity and the head small, as the official recipe does
        self.head.weight.data.mul_(0.02)
        self.head_nm.ada_lin[-1].weight.data.mul_(0.5)
        for i, b in enumerate(self.blocks):
            b.attn.proj.weight.data.div_(math.sqrt(2 * len(self.blocks)))
            b.ffn.fc2.weight.data.div_(math.sqrt(2 * len(self.blocks)))
            b.ada_lin[-1].weight.data[2 * self.C:].mul_(0.5)
            b.ada_lin[-1].weight.data[:2 * self.C].mul_(1e-5)

    def get_logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h.float(), cond_BD).float()).float()

    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor, cond_drop_rate: Optional[float] = None) -> torch.Tensor:
        """Teacher-forced block-causal forward over all scales.

        label_B: (B,) class ids (``num_classes`` = null class); x_BLCv_wo_first_l: (B, L - first_l, Cvae)
        from :meth:`MultiScaleQuantizer.tokens_to_teacher_input`. Returns logits (B, L, V).
        During training a fraction ``cond_drop_rate`` of labels is replaced by the null class.
        """
        B = x_BLCv_wo_first_l.shape[0]
        drop = self.cfg.cond_drop_rate if cond_drop_rate is None else cond_drop_rate
        if self.training and drop > 0:
            label_B = torch.where(torch.rand(B, device=label_B.device) < drop, self.num_classes, label_B)
        cond_BD = self.class_emb(label_B)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        x = x + self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC
        attn_bias = self.attn_bias_for_masking.to(x.dtype)
        for b in self.blocks:
            x = b(x, cond_BD, attn_bias)
        return self.get_logits(x, cond_BD)

    def kv_caching(self, enable: bool) -> None:
        for b in self.blocks:
            b.attn.kv_caching(enable)
