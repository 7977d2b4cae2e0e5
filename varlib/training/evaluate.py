"""Stage ``evaluate``: held-out metrics of a run's prior (``metrics.json``).

Every metric is measured on the first ``VAL_SLICE`` (500) ``tinyimagenet-val`` images: the tokenizer's
PSNR over all scales and per number of scales kept, codebook usage, the transformer's teacher-forced NLL
and top-1 accuracy per scale beside three baselines (unigram, copy-coarser, class-unigram), and the CPU
time of sampling one image.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_write_text
from ..prior import Prior, PriorConfig
from .common import VAL_SLICE, load_val_images, psnr_batch, training_data
from .rundir import assemble_prior, transformer_ckpt_path
from .tokens import load_tokens, split_tokens, tokenize_split
from .transformer import token_nll

CKPT_KEYS = ("batch", "lr", "device", "torch", "holdout", "holdout_nll", "init_weights", "init_steps",
             "loss", "lr_schedule", "crop", "crop_fraction")  # copied from a stage's checkpoint into the metrics
DECODER_KEYS = ("batch", "lr", "device", "train_images", "train_selection", "history")  # as decoder_<key>


@torch.no_grad()
def evaluate_tokenizer(prior: Prior, n: int = VAL_SLICE) -> Dict:
    """Held-out PSNR (all scales and per number of scales kept) and codebook usage."""
    images, _ = load_val_images(n, training_data(prior.config.name))
    x = images.float().div(255)
    toks = []
    for i in range(0, len(x), 100):
        toks.append(prior.encode(x[i:i + 100]))
    toks = [torch.cat([t[s] for t in toks]) for s in range(prior.num_scales)]
    curve = []
    for k in range(1, prior.num_scales + 1):
        rec = torch.cat([prior.decode([t[i:i + 100] for t in toks], num_scales=k) for i in range(0, len(x), 100)])
        curve.append(float(psnr_batch(rec, x).mean()))
    used = torch.unique(torch.cat([t.flatten() for t in toks]))
    bicubic = {}
    for f in (2, 4):  # scale of comparison: bicubic down-and-up sampling
        s = x.shape[-1] // f
        down = F.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
        up = F.interpolate(down, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        bicubic[f"bicubic_x{f}_psnr"] = float(psnr_batch(up, x).mean())
    return {"val_images": n, "psnr": curve[-1], "psnr_per_scales": curve, "codes_used_val": int(len(used)),
            "vocab_size": prior.config.tokenizer.vocab_size, **bicubic}


@torch.no_grad()
def class_unigram_nll(train_maps: torch.Tensor, train_labels: torch.Tensor, val_maps: torch.Tensor,
                      val_labels: torch.Tensor, num_classes: int, vocab: int,
                      betas=(1, 3, 10, 30, 100, 300, 1000, 3000), seed: int = 0) -> tuple:
    """Held-out NLL of per-class code frequencies at one scale: what knowing only the class gives.

    ``p(code | class) = (n_class(code) + beta * p_unigram(code)) / (n_class + beta)``, with the shrinkage
    ``beta`` chosen by two-fold cross-validation on the training maps (never on the held-out ones).
    Maps are (N, pn, pn) long, labels (N,) long. Returns (nll, beta).
    """
    def fit_and_score(tr_m, tr_l, te_m, te_l, beta):
        uni = torch.bincount(tr_m.flatten(), minlength=vocab).double() + 1
        uni /= uni.sum()
        per = tr_m.flatten(1).shape[1]
        counts = torch.zeros(num_classes, vocab, dtype=torch.float64)
        counts.index_put_((tr_l.repeat_interleave(per), tr_m.flatten()), torch.ones(tr_m.numel(), dtype=torch.float64),
                          accumulate=True)
        p = (counts + beta * uni) / (counts.sum(1, keepdim=True) + beta)
        return float(-p[te_l.repeat_interleave(per), te_m.flatten()].log().mean())
    half = torch.rand(len(train_labels), generator=torch.Generator().manual_seed(seed)) < 0.5
    cv = [fit_and_score(train_maps[half], train_labels[half], train_maps[~half], train_labels[~half], b) for b in betas]
    beta = betas[int(np.argmin(cv))]
    return fit_and_score(train_maps, train_labels, val_maps, val_labels, beta), beta


def class_unigram_baseline(tr_maps, tr_lab, va_maps, va_lab, num_classes: int, vocab: int) -> Dict:
    """Per-scale :func:`class_unigram_nll` as metrics entries."""
    fits = [class_unigram_nll(t, tr_lab, v, va_lab, num_classes, vocab) for t, v in zip(tr_maps, va_maps)]
    return {"class_unigram_nll": [f[0] for f in fits], "class_unigram_beta": [f[1] for f in fits]}


@torch.no_grad()  # without it every batch's graph stays alive through the running sums
def model_nll_per_scale(prior: Prior, va_tok: torch.Tensor, va_lab: torch.Tensor, batch: int = 50) -> Dict:
    """Mean teacher-forced NLL per scale with the class and with the null class, and top-1 accuracy with the class."""
    pn = prior.config.tokenizer.patch_nums
    nll_c = torch.zeros(len(pn)); acc_c = torch.zeros(len(pn)); nll_u = torch.zeros(len(pn))
    for i in range(0, len(va_tok), batch):
        seq, lab = va_tok[i:i + batch], va_lab[i:i + batch]
        x_in = prior.teacher_input(split_tokens(seq, pn))
        for lbl, acc_into in ((lab, True), (torch.full_like(lab, prior.num_classes), False)):
            nll, logits = token_nll(prior.transformer, lbl, x_in, seq)
            for s, (b, e) in enumerate(prior.transformer.begin_ends):
                if acc_into:
                    nll_c[s] += nll[:, b:e].mean(1).sum()
                    acc_c[s] += (logits[:, b:e].argmax(-1) == seq[:, b:e]).float().mean(1).sum()
                else:
                    nll_u[s] += nll[:, b:e].mean(1).sum()
    n = len(va_tok)
    return {"model_nll": (nll_c / n).tolist(), "model_acc": (acc_c / n).tolist(), "model_nll_uncond": (nll_u / n).tolist()}


@torch.no_grad()
def count_baselines(tr_maps, va_maps, patch_nums, vocab: int) -> Dict:
    """Per-scale NLL and top-1 of the unigram (the training split's code frequencies per scale, add-one smoothed)
    and of copy-coarser (the training split's frequency of a code given the code at the same place one scale
    coarser, add-one smoothed; its top-1 is the most frequent such code; the unigram at the first scale)."""
    res = {"unigram_nll": [], "unigram_acc": [], "copy_nll": [], "copy_acc": []}
    for s in range(len(patch_nums)):
        freq = torch.bincount(tr_maps[s].flatten(), minlength=vocab).float() + 1
        logp = (freq / freq.sum()).log()
        tgt = va_maps[s].flatten()
        res["unigram_nll"].append(float(-logp[tgt].mean()))
        res["unigram_acc"].append(float((tgt == logp.argmax()).float().mean()))
        if s == 0:
            res["copy_nll"].append(res["unigram_nll"][-1]); res["copy_acc"].append(res["unigram_acc"][-1])
            continue

        def coarse_of(maps):
            return F.interpolate(maps[s - 1][:, None].float(), size=(patch_nums[s], patch_nums[s]),
                                 mode="nearest")[:, 0].long().flatten()
        table = torch.ones(vocab, vocab)
        table.index_put_((coarse_of(tr_maps), tr_maps[s].flatten()), torch.ones(tr_maps[s].numel()), accumulate=True)
        logp_tab = (table / table.sum(1, keepdim=True)).log()
        c_va = coarse_of(va_maps)
        res["copy_nll"].append(float(-logp_tab[c_va, tgt].mean()))
        res["copy_acc"].append(float((logp_tab[c_va].argmax(1) == tgt).float().mean()))
    return res


def evaluate_transformer(prior: Prior, out: Path, batch: int = 50) -> Dict:
    """Teacher-forced NLL / top-1 accuracy per scale on held-out tokens (``tokens_val.npz``, written if
    missing), beside the baselines of :func:`count_baselines` and :func:`class_unigram_baseline`."""
    cfg = prior.config
    pn, V = cfg.tokenizer.patch_nums, cfg.tokenizer.vocab_size
    tr_tok, tr_lab = load_tokens(out / "tokens_train.npz")
    va = np.load(tokenize_split(out, cfg, "val"))
    va_tok, va_lab = torch.from_numpy(va["tokens"].astype(np.int64)), torch.from_numpy(va["labels"])
    tr_maps, va_maps = split_tokens(tr_tok, pn), split_tokens(va_tok, pn)
    res = {"scales": list(pn), **model_nll_per_scale(prior, va_tok, va_lab, batch),
           **count_baselines(tr_maps, va_maps, pn, V)}
    res.update(class_unigram_baseline(tr_maps, tr_lab, va_maps, va_lab.long(), cfg.transformer.num_classes, V))
    res["val_images"] = len(va_tok)
    return res


@torch.no_grad()
def time_sampling(prior: Prior, repeats: int = 3) -> Dict:
    """Wall seconds of sampling one image (cfg 1.5) with and without the KV cache, after a warm-up."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for cache in (True, False):
        prior.sample([0], cfg=1.5, top_k=0, top_p=0.0, generator=g, use_kv_cache=cache)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            prior.sample([0], cfg=1.5, generator=g, use_kv_cache=cache)
        out["seconds_per_image_kv_cache" if cache else "seconds_per_image_no_cache"] = (time.perf_counter() - t) / repeats
    return out


def _training_records(out: Path, metrics: Dict) -> None:
    """Add to ``metrics`` how each stage trained, from its checkpoint (steps, wall time, CKPT_KEYS)."""
    tr_path = transformer_ckpt_path(out)
    for stage, path in (("tokenizer", out / "tokenizer_ckpt.pt"), ("transformer", tr_path)):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        metrics[stage]["steps"] = ck["step"]
        metrics[stage]["train_wall_s"] = round(ck.get("elapsed", 0.0), 1)
        metrics[stage].update({key: ck[key] for key in CKPT_KEYS if key in ck})
    if tr_path.name == "transformer_best.pt" and (out / "transformer_log.csv").exists():
        with open(out / "transformer_log.csv") as f:
            metrics["transformer"]["steps_run"] = max(int(r["step"]) for r in csv.DictReader(f))
    if (out / "decoder_ckpt.pt").exists():
        ck = torch.load(out / "decoder_ckpt.pt", map_location="cpu", weights_only=False)
        metrics["tokenizer"]["decoder_finetune_steps"] = ck["step"]
        metrics["tokenizer"]["decoder_finetune_wall_s"] = round(ck.get("elapsed", 0.0), 1)
        metrics["tokenizer"].update({f"decoder_{key}": ck[key] for key in DECODER_KEYS if key in ck})


def evaluate(out: Path, cfg: PriorConfig) -> Dict:
    """Evaluate run ``out``'s prior on the held-out images and write ``metrics.json`` there."""
    prior = assemble_prior(out, cfg)
    metrics = {"tokenizer": evaluate_tokenizer(prior), "transformer": evaluate_transformer(prior, out),
               "sampling_cpu": time_sampling(prior)}
    _training_records(out, metrics)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
