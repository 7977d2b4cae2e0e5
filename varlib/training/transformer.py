"""Stage ``transformer``: the class-conditional next-scale transformer on the stored token maps."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io import atomic_torch_save
from ..prior import PriorConfig
from .common import CsvLog, WallBudget, batch_indices, lr_at, resume_checkpoint, run_info, set_lr
from .rundir import load_tokenizer_from_ckpt
from .tokens import load_tokens, split_tokens


def token_nll(tr, labels: torch.Tensor, x_in: torch.Tensor, seq: torch.Tensor, bf16: bool = False) -> tuple:
    """Teacher-forced per-token NLL (B, L) of ``seq`` (B, L) given ``labels`` and the teacher input, and the logits."""
    with torch.autocast(seq.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = tr(labels, x_in)
    logits = logits.float()
    nll = F.cross_entropy(logits.reshape(-1, tr.V), seq.reshape(-1), reduction="none").view(len(seq), -1)
    return nll, logits


@torch.no_grad()
def holdout_nll(tr, quantizer, tokens: torch.Tensor, labels: torch.Tensor, patch_nums, bf16: bool = True,
                batch: int = 250) -> float:
    """Mean teacher-forced NLL (nats per token) of the class-conditional transformer on ``tokens`` (N, L)."""
    tr.eval()
    total = 0.0
    for i in range(0, len(tokens), batch):
        seq = tokens[i:i + batch]
        x_in = quantizer.tokens_to_teacher_input(split_tokens(seq, patch_nums))
        total += float(token_nll(tr, labels[i:i + batch], x_in, seq, bf16)[0].sum())
    return total / tokens.numel()


def _optimizer(tr, lr: float) -> torch.optim.Optimizer:
    """AdamW with weight decay 0.05 on the matrices, none on embeddings, positions, biases and norms."""
    decayed = [p.ndim >= 2 and "emb" not in n and "pos" not in n for n, p in tr.named_parameters()]
    params = [p for _, p in tr.named_parameters()]
    return torch.optim.AdamW([{"params": [p for p, d in zip(params, decayed) if d], "weight_decay": 0.05},
                              {"params": [p for p, d in zip(params, decayed) if not d], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def init_from_shipped(tr, name: str) -> None:
    """Start ``tr`` from a shipped prior's transformer of the same size (fine-tuning instead of training from
    scratch). Its class table may differ: every row of ``tr``'s (each class and the null class) starts from the
    shipped null-class row, the unconditional start."""
    from ..prior.loading import load_prior
    src = load_prior(name).transformer.state_dict()
    own = tr.state_dict()
    for key, value in own.items():
        if key not in src:
            raise ValueError(f"{name}'s transformer has no {key}: it is not the same architecture as {tr.cfg}")
        if key == "class_emb.weight" and src[key].shape != value.shape:
            own[key] = src[key][-1:].expand_as(value).clone()
        elif src[key].shape != value.shape:
            raise ValueError(f"{name}'s transformer has {key} of shape {tuple(src[key].shape)}, this one "
                             f"{tuple(value.shape)}: not the same architecture")
        else:
            own[key] = src[key]
    tr.load_state_dict(own)


class Holdout:
    """A seeded random ``n`` of the training maps kept out of training (the maps are stored class by class,
    so a random subset covers the classes), scored every ``every`` steps into ``transformer_eval.csv``;
    the best state so far goes to ``transformer_best.pt`` (fp16 weights only)."""

    def __init__(self, out: Path, n: int, every: int, seed: int, tokens, labels, dev, step: int):
        if not 0 < n < len(tokens) // 2:
            raise ValueError(f"holdout={n} must be between 1 and half the {len(tokens)} training maps")
        perm = torch.from_numpy(np.random.default_rng(seed + 12345).permutation(len(tokens)))
        self.kept = perm[n:].sort().values
        self.tokens, self.labels = tokens[perm[:n]].to(dev), labels[perm[:n]].to(dev)
        self.out, self.n, self.every = out, n, every
        self.log = CsvLog(out / "transformer_eval.csv", ["step", "elapsed_s", "holdout_nll"], step)
        self.best = float("inf")  # a resumed run keeps the best state of its earlier part unless it beats it
        if (out / "transformer_best.pt").exists():
            self.best = torch.load(out / "transformer_best.pt", map_location="cpu", weights_only=False)["holdout_nll"]

    def score(self, tr, q, patch_nums, bf16: bool, step: int, elapsed, info: dict) -> None:
        """Score ``tr`` at ``step`` (``elapsed()``: the run's wall seconds so far) and keep it if it is the best."""
        nll = holdout_nll(tr, q, self.tokens, self.labels, patch_nums, bf16)
        tr.train()
        self.log.write(step=step, elapsed_s=round(elapsed(), 1), holdout_nll=f"{nll:.4f}")
        if nll < self.best:
            self.best = nll
            atomic_torch_save({"model": {k: v.half().cpu() for k, v in tr.state_dict().items()}, "step": step,
                               "holdout_nll": nll, "elapsed": elapsed(), **info, "holdout": self.n},
                              self.out / "transformer_best.pt")


def train_transformer(out: Path, cfg: PriorConfig, steps: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                      ckpt_every: int = 100, bf16: bool = True, label_smoothing: float = 0.0,
                      device: str = "cpu", minutes: Optional[float] = None, holdout: int = 0,
                      eval_every: int = 500, init_weights: Optional[str] = None) -> Path:
    """Next-scale transformer on the stored token maps (``tokens_train.npz``); ``device`` may be "cuda"
    (only the token maps and the tokenizer checkpoint are needed, no images).

    ``minutes``: a wall-clock budget: the pace of steps 20-70 fixes the step count (printed and logged;
    ``--steps`` with that count reproduces the run). ``holdout``: a seeded random ``holdout`` of the
    training images is kept out and scored (teacher-forced NLL) every ``eval_every`` steps into
    ``transformer_eval.csv``; the best state so far goes to ``transformer_best.pt`` (fp16 weights only),
    so a long run can stop early without touching ``tinyimagenet-val``. ``init_weights``: fine-tune a
    shipped prior's transformer (:func:`init_from_shipped`) instead of starting from random weights."""
    ckpt_path = out / "transformer_ckpt.pt"
    torch.manual_seed(seed)
    dev = torch.device(device)
    prior = load_tokenizer_from_ckpt(out, cfg).to(dev)
    tr = prior.transformer.train()
    opt = _optimizer(tr, lr)
    step, elapsed0, _ = resume_checkpoint(ckpt_path, opt, tr)
    if step >= steps:
        return ckpt_path
    if init_weights and step == 0:
        init_from_shipped(tr, init_weights)
    tokens, labels = load_tokens(out / "tokens_train.npz")
    ho = Holdout(out, holdout, eval_every, seed, tokens, labels, dev, step) if holdout else None
    if ho is not None:
        tokens, labels = tokens[ho.kept], labels[ho.kept]
    pn, q = cfg.tokenizer.patch_nums, prior.tokenizer.quantize
    log = CsvLog(out / "transformer_log.csv", ["step", "elapsed_s", "lr", "loss", "acc"], step)
    t0 = time.time()
    bar = tqdm(total=steps, initial=step, desc="transformer", unit="step")
    budget = WallBudget(minutes, step, "transformer")
    info = {**run_info(dev, batch, lr), **({"init_weights": init_weights} if init_weights else {})}
    while step < steps:
        steps = budget.steps(step, steps)
        bar.total = steps
        idx = batch_indices(len(tokens), step, batch, seed)
        torch.manual_seed(seed * 7919 + step)  # class dropout draws
        seq, lab = tokens[idx].to(dev), labels[idx].to(dev)
        set_lr(opt, lr_at(step, steps, lr, warmup=min(200, steps // 10 + 1)))
        loss, logits = _transformer_step(tr, opt, q, seq, lab, pn, dev, bf16, label_smoothing)
        step += 1
        if step % 10 == 0 or step == steps:
            acc = float((logits.argmax(-1) == seq).float().mean())
            log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1), lr=f"{opt.param_groups[0]['lr']:.2e}",
                      loss=f"{loss.item():.4f}", acc=f"{acc:.4f}")
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
        bar.update(1)
        if ho is not None and (step % eval_every == 0 or step == steps):
            ho.score(tr, q, pn, bf16, step, lambda: elapsed0 + time.time() - t0, info)
        if step % ckpt_every == 0 or step == steps:
            atomic_torch_save({"model": tr.state_dict(), "opt": opt.state_dict(), "step": step,
                               "elapsed": elapsed0 + time.time() - t0, **info}, ckpt_path)
    bar.close()
    return ckpt_path


def _transformer_step(tr, opt, q, seq, lab, patch_nums, dev: torch.device, bf16: bool, label_smoothing: float) -> tuple:
    """One optimiser step on token maps ``seq`` (B, L) of classes ``lab``; (loss, logits)."""
    with torch.no_grad():
        x_in = q.tokens_to_teacher_input(split_tokens(seq, patch_nums))
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        logits = tr(lab, x_in)
    loss = F.cross_entropy(logits.float().reshape(-1, tr.V), seq.reshape(-1), label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(tr.parameters(), 2.0)
    opt.step()
    return loss, logits
