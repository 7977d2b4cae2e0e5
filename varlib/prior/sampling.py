"""Autoregressive next-scale sampling: the official procedure, and a step-wise interface.

The step-wise :class:`ScaleStepper` exposes one scale at a time (its logits, after classifier-free
guidance) and accepts the tokens (or a continuous code map) chosen for it, so that a solver can
inject tokens or edit logits between scales.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering of ``(..., V)`` logits (new tensor)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use argmax decoding for temperature 0")
    logits = logits / temperature
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), -torch.inf)
    return logits


def sample_tokens(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sample one token per position from ``(B, l, V)`` logits -> ``(B, l)`` long."""
    B, l, V = logits.shape
    probs = filter_logits(logits, top_k, top_p, temperature).softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l)


class ScaleStepper:
    """One autoregressive pass over the scale schedule, a scale at a time.

    Usage::

        st = prior.stepper(labels, cfg=1.5)
        while not st.done:
            logits = st.logits()              # (B, pn*pn, V), CFG applied
            st.commit(tokens)                  # (B, pn, pn) or (B, pn*pn) long
        img = prior.fhat_to_image(st.f_hat)

    ``labels`` (B,) long; a negative label or ``None`` entries mean the null class (class-agnostic).
    With ``cfg > 0`` the batch is doubled internally (conditional + null) and the logits at scale
    ``si`` are ``(1+t) * cond - t * uncond`` with ``t = cfg * si / (num_scales - 1)`` as in VAR.
    """

    def __init__(self, prior, labels: torch.Tensor, cfg: float = 1.5, use_kv_cache: bool = True):
        tr = prior.transformer
        self.prior, self.tr = prior, tr
        self.quant = prior.tokenizer.quantize
        self.cfg = float(cfg)
        self.use_kv_cache = use_kv_cache
        dev = tr.pos_1LC.device
        labels = labels.to(dev).long()
        labels = torch.where(labels < 0, torch.full_like(labels, tr.num_classes), labels)
        if labels.max() > tr.num_classes:
            raise ValueError(f"class label {int(labels.max())} out of range: this prior has {tr.num_classes} classes "
                             f"(0..{tr.num_classes - 1}; -1 or {tr.num_classes} for the null class)")
        self.B = labels.shape[0]
        self.guided = self.cfg != 0
        all_labels = torch.cat((labels, torch.full_like(labels, tr.num_classes))) if self.guided else labels
        self.cond_BD = tr.class_emb(all_labels)
        self.lvl_pos = tr.lvl_embed(tr.lvl_1L) + tr.pos_1LC
        nb = self.cond_BD.shape[0]
        self.next_map = (self.cond_BD.unsqueeze(1).expand(nb, tr.first_l, -1) + tr.pos_start.expand(nb, tr.first_l, -1)
                         + self.lvl_pos[:, :tr.first_l])
        HW = tr.patch_nums[-1]
        self.f_hat = self.cond_BD.new_zeros(self.B, tr.Cvae, HW, HW)
        self.si = 0
        self.cur_L = 0
        self.tokens: List[torch.Tensor] = []
        self._logits: Optional[torch.Tensor] = None
        self._prefix: List[torch.Tensor] = []  # inputs so far, for the no-cache path
        # this stepper's own keys/values per block: the attention modules only hold them during a forward,
        # so several steppers (or a full forward) can interleave on one transformer
        self._kv: List[tuple] = [(None, None)] * len(tr.blocks)
        self.transformer_evals = 0
        tr.kv_caching(False)

    @property
    def num_scales(self) -> int:
        return len(self.tr.patch_nums)

    @property
    def done(self) -> bool:
        return self.si >= self.num_scales

    @property
    def patch_num(self) -> int:
        return self.tr.patch_nums[self.si]

    @property
    def ratio(self) -> float:
        return self.si / max(self.num_scales - 1, 1)

    def raw_logits(self) -> torch.Tensor:
        """Transformer logits of the current scale before CFG mixing: (nB, pn*pn, V), nB = 2B with CFG."""
        if self._logits is None:
            tr = self.tr
            x = self.next_map
            if self.use_kv_cache:
                for b, (k, v) in zip(tr.blocks, self._kv):
                    b.attn.caching, b.attn.cached_k, b.attn.cached_v = True, k, v
                try:
                    for b in tr.blocks:
                        x = b(x, self.cond_BD, None)
                    self._kv = [(b.attn.cached_k, b.attn.cached_v) for b in tr.blocks]
                finally:
                    tr.kv_caching(False)
            else:
                self._prefix.append(x)
                x = torch.cat(self._prefix, dim=1)
                n = x.shape[1]
                bias = tr.attn_bias_for_masking[:, :, :n, :n].to(x.dtype)
                for b in tr.blocks:
                    x = b(x, self.cond_BD, bias)
                x = x[:, n - self.patch_num ** 2:]
            self._logits = tr.get_logits(x, self.cond_BD)
            self.transformer_evals += 1
        return self._logits

    def logits(self) -> torch.Tensor:
        """Logits of the current scale after classifier-free guidance: (B, pn*pn, V)."""
        raw = self.raw_logits()
        if not self.guided:
            return raw
        t = self.cfg * self.ratio
        return (1 + t) * raw[: self.B] - t * raw[self.B:]

    def commit(self, tokens: torch.Tensor, codes: Optional[torch.Tensor] = None) -> None:
        """Fix the current scale's tokens (B, pn, pn) or (B, pn*pn) and advance.

        ``codes`` (B, Cvae, pn, pn), when given, is the code map the scale advances with instead of the
        tokens' embeddings (e.g. expected codes); the tokens are then kept as the scale's record."""
        pn = self.patch_num
        tokens = tokens.reshape(self.B, pn, pn).long()
        self.tokens.append(tokens)
        if codes is None:
            codes = self.quant.embedding(tokens).permute(0, 3, 1, 2)
        self.commit_codes(codes)

    def commit_codes(self, codes: torch.Tensor) -> None:
        """Advance with a continuous code map (B, Cvae, pn, pn) (tokens already appended by :meth:`commit`)."""
        if len(self.tokens) <= self.si:
            self.tokens.append(torch.full((self.B, self.patch_num, self.patch_num), -1, dtype=torch.long,
                                          device=codes.device))
        tr = self.tr
        if self._logits is None and self.si < self.num_scales - 1:
            # later scales attend to this scale's input: record it even when its logits were never read
            if self.use_kv_cache:
                self.raw_logits()
            else:
                self._prefix.append(self.next_map)
        self.f_hat, nxt = self.quant.next_input(self.si, self.f_hat, codes)
        self.cur_L += self.patch_num ** 2
        self.si += 1
        self._logits = None
        if not self.done:
            pn = self.patch_num
            nxt = tr.word_embed(nxt.flatten(2).transpose(1, 2)) + self.lvl_pos[:, self.cur_L:self.cur_L + pn * pn]
            self.next_map = nxt.repeat(2, 1, 1) if self.guided else nxt
        else:
            self._kv = [(None, None)] * len(tr.blocks)

    def close(self) -> None:
        self._kv = [(None, None)] * len(self.tr.blocks)
        self.tr.kv_caching(False)
