"""Stage ``decoder``: fine-tune the tokenizer's decoder on the frozen token maps of the training split."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io import atomic_torch_save
from ..prior import PriorConfig
from .common import CsvLog, WallBudget, batch_indices, load_train_images, lr_at, psnr_batch, resume_checkpoint, \
    run_info, set_lr, training_data
from .rundir import load_tokenizer_from_ckpt
from .tokens import split_tokens

DECODER_PARTS = ("decoder.", "post_quant_conv.")  # what the decoder stage trains; encoder and codebook stay frozen


def _decoder_data(out: Path, dataset: str, shards, limit, every) -> tuple:
    """(token maps, images, labels) of the decoder's training images; the maps are stored in image order,
    shard by shard, so a run on the first shard(s) uses their prefix."""
    data = np.load(out / "tokens_train.npz")
    tokens = torch.from_numpy(data["tokens"].astype(np.int64))
    images, image_labels = load_train_images(shards, limit, every, dataset)
    prefix_ok = len(images) < len(tokens) and np.array_equal(data["labels"][:len(images)], image_labels.numpy())
    if len(images) != len(tokens) and not prefix_ok:
        raise ValueError(f"{out / 'tokens_train.npz'} holds {len(tokens)} token maps but the training split has "
                         f"{len(images)} images: run the decoder stage with the same --shards/--every/--limit as `tokenize`")
    return tokens[:len(images)], images


def train_decoder(out: Path, cfg: PriorConfig, steps: int, batch: int = 32, lr: float = 6e-4, seed: int = 0,
                  shards: Optional[List[int]] = None, limit: Optional[int] = None, ckpt_every: int = 200,
                  bf16: bool = True, device: str = "cpu", minutes: Optional[float] = None, every: int = 1) -> Path:
    """Fine-tune the decoder on the frozen token maps of the training split (``tokens_train.npz``).

    The token maps, and so the transformer trained on them, stay valid: only the map from the
    quantised latent ``f_hat`` back to pixels improves. This is the cheapest way to raise the
    tokenizer's reconstruction PSNR, the ceiling of every token-space solver, without re-tokenising.
    No encoder pass is needed (``f_hat`` comes from the stored tokens), so a step costs about half of
    a tokenizer step. Writes ``decoder_ckpt.pt``, which :func:`load_tokenizer_from_ckpt` applies.
    """
    ckpt_path = out / "decoder_ckpt.pt"
    torch.manual_seed(seed)
    dev = torch.device(device)
    prior = load_tokenizer_from_ckpt(out, cfg)  # includes the decoder checkpoint when resuming
    tok = prior.tokenizer.to(dev)
    tok.eval()
    params = [p for n, p in tok.named_parameters() if n.startswith(DECODER_PARTS)]
    for n, p in tok.named_parameters():
        p.requires_grad_(n.startswith(DECODER_PARTS))
    tok.decoder.train()
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    step, elapsed0, _ = resume_checkpoint(ckpt_path, opt)  # the decoder weights came with load_tokenizer_from_ckpt
    if step >= steps:
        return ckpt_path
    tokens, images = _decoder_data(out, training_data(cfg.name), shards, limit, every)
    from ..data import train_selection
    info = {**run_info(dev, batch, lr), "train_images": len(images), "train_selection": train_selection(shards, every, limit),
            "history": prior.metadata["decoder_history"]}  # the decoder runs this one continues
    log = CsvLog(out / "decoder_log.csv", ["step", "elapsed_s", "lr", "loss", "psnr"], step)
    t0 = time.time()
    bar = tqdm(total=steps, initial=step, desc="decoder", unit="step")
    budget = WallBudget(minutes, step, "decoder")
    while step < steps:
        steps = budget.steps(step, steps)
        bar.total = steps
        idx = batch_indices(len(tokens), step, batch, seed + 1)
        x = (images[idx].float().div(255) * 2 - 1).to(dev)
        set_lr(opt, lr_at(step, steps, lr, warmup=min(50, steps // 10 + 1)))
        loss, rec = _decoder_step(tok, opt, tokens[idx].to(dev), x, cfg.tokenizer.patch_nums, dev, bf16)
        step += 1
        if step % 10 == 0 or step == steps:
            with torch.no_grad():
                psnr = float(psnr_batch((rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2).mean())
            log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1),
                      lr=f"{opt.param_groups[0]['lr']:.2e}", loss=f"{loss.item():.4f}", psnr=f"{psnr:.2f}")
            bar.set_postfix(loss=f"{loss.item():.3f}", psnr=f"{psnr:.1f}")
        bar.update(1)
        if step % ckpt_every == 0 or step == steps:
            state = {k: v for k, v in tok.state_dict().items() if k.startswith(DECODER_PARTS)}
            atomic_torch_save({"model": state, "opt": opt.state_dict(), "step": step,
                               "elapsed": elapsed0 + time.time() - t0, **info}, ckpt_path)
    bar.close()
    return ckpt_path


def _decoder_step(tok, opt, seq: torch.Tensor, x: torch.Tensor, patch_nums, dev: torch.device, bf16: bool) -> tuple:
    """One optimiser step of the decoder on token maps ``seq`` (B, L) against images ``x``; (loss, reconstruction)."""
    with torch.no_grad():
        f_hat = tok.quantize.tokens_to_fhat(split_tokens(seq, patch_nums))
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        rec = tok.fhat_to_img(f_hat, clamp=False)
    rec = rec.float()
    loss = (rec - x).abs().mean() + F.mse_loss(rec, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, rec
