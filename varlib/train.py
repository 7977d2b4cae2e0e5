"""Training the embedded prior on Tiny ImageNet: tokenizer, tokenising, transformer, export.

    python -m varlib.train all --out runs/tiny64            # the whole recipe (what `make prior` runs)
    python -m varlib.train tokenizer --out runs/tiny64 --steps 3600
    python -m varlib.train tokenize --out runs/tiny64
    python -m varlib.train decoder --out runs/tiny64 --steps 2000   # fine-tune the decoder on the frozen tokens
    python -m varlib.train transformer --out runs/tiny64 --steps 1500
    python -m varlib.train evaluate --out runs/tiny64
    python -m varlib.train export --out runs/tiny64 --dest varlib/weights/tiny64
    python -m varlib.train pack --out runs/tiny64 --dest runs/gpu   # small copy to train the transformer elsewhere
    python -m varlib.train subset --every 6 --limit 10000 --dest runs/gpu/data   # 10,000 images as one 27 MB tar
    python -m varlib.train transformer --config tiny64-gpu --from runs/tiny64 --out runs/tiny64-gpu \
        --device cuda --batch 256 --steps 4500 --holdout 1000 --eval-every 500   # GPU recipe (make prior-gpu)
    python -m varlib.train diffusion --out runs/diffusion64 --steps 3000 --export   # the diffusion prior

Every stage is seeded, resumable (re-running continues from the last checkpoint in ``--out``),
shows a progress bar and appends to a CSV log in ``--out``. Data order and flips depend only on the
seed and the step, so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .prior import Prior, PriorConfig, build_prior, save_prior
from .prior.configs import named_config

SHARD_IMAGES = 20200  # tinyimagenet-train images per tar shard (3 shards)
VAL_SLICE = 500  # first 500 tinyimagenet-val images (by index): the held-out slice for prior metrics


# -- small utilities -----------------------------------------------------------------------------
def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resume(ckpt_path: Path, opt: torch.optim.Optimizer, model: Optional[torch.nn.Module] = None) -> tuple:
    """(step, elapsed seconds, the checkpoint dict) of the stage's checkpoint, loading its optimizer (and
    model) state; (0, 0, {}) if none."""
    if not ckpt_path.exists():
        return 0, 0.0, {}
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if model is not None:
        model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    return ck["step"], ck.get("elapsed", 0.0), ck


class CsvLog:
    """A stage's CSV log. ``resume_step``: the step its checkpoint holds; rows logged past it came from an
    interrupted run whose later steps the resumed run redoes, so they are dropped rather than duplicated."""

    def __init__(self, path: Path, fields: Sequence[str], resume_step: int = 0):
        self.path, self.fields = path, list(fields)
        kept: List[List[str]] = []
        if path.exists():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            kept = [r for r in rows[1:] if r and int(float(r[0])) <= resume_step]
            if len(kept) == len(rows) - 1:
                return
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([self.fields] + kept)
        os.replace(tmp, path)

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])


class WallBudget:
    """Fix a stage's step count from a wall-clock budget (for a GPU lease): the pace of the 50 steps
    after a 20-step warm-up (CUDA start, autotuning) decides how many steps fit. The count is printed,
    so ``--steps`` with it reproduces the run."""

    def __init__(self, minutes: Optional[float], start_step: int, stage: str):
        self.minutes, self.start, self.stage = minutes, start_step, stage
        self.t_start, self.t_pace = time.time(), None

    def steps(self, step: int, steps: int) -> int:
        if self.minutes is None:
            return steps
        if step == self.start + 20:
            self.t_pace = time.time()
        elif step == self.start + 70 and self.t_pace is not None:
            pace = (time.time() - self.t_pace) / 50
            steps = min(steps, step + max(1, int((self.minutes * 60 - (time.time() - self.t_start)) / pace)))
            print(f"{self.stage}: {pace:.3f} s/step, {self.minutes} min budget -> {steps} steps", flush=True)
        return steps


def _run_info(dev: torch.device, batch: int, lr: float) -> Dict:
    """What a stage's checkpoint records about how it ran (the model card reports it)."""
    return {"batch": batch, "lr": lr, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__}


def lr_at(step: int, total: int, base: float, warmup: int, final_frac: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def psnr_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0,1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1 / mse)


def load_train_images(shards: Optional[List[int]] = None, limit: Optional[int] = None, every: int = 1):
    from .data import read_tinyimagenet
    x, y, _ = read_tinyimagenet("train", shards=shards, limit=limit, every=every)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)  # uint8 NCHW


def load_val_images(n: int = VAL_SLICE):
    from .data import read_tinyimagenet
    x, y, _ = read_tinyimagenet("val", limit=n)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


def batch_indices(n: int, step: int, batch: int, seed: int) -> np.ndarray:
    """Deterministic epoch-wise shuffling: the indices of ``step`` depend only on (seed, step)."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ValueError(f"batch {batch} is larger than the {n} training images or maps: pass a smaller --batch "
                         "or use more images (--limit/--every/--shards)")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng(seed * 100003 + epoch).permutation(n)
    return perm[k * batch:(k + 1) * batch]


def _config(args) -> PriorConfig:
    cfg = named_config(args.config)
    if args.patch_nums:
        pn = tuple(int(v) for v in args.patch_nums.split(","))
        cfg.tokenizer.patch_nums = pn
        cfg.transformer.patch_nums = pn
    if args.tokenizer_ch:
        cfg.tokenizer.ch = args.tokenizer_ch
    if args.tokenizer_res_blocks:
        cfg.tokenizer.num_res_blocks = args.tokenizer_res_blocks
    if args.decoder_ch:
        cfg.tokenizer.decoder_ch = args.decoder_ch
    if args.vocab_size:
        cfg.tokenizer.vocab_size = args.vocab_size
        cfg.transformer.vocab_size = args.vocab_size
    if args.cvae:
        cfg.tokenizer.Cvae = args.cvae
        cfg.transformer.Cvae = args.cvae
    if args.znorm:
        cfg.tokenizer.using_znorm = True
    return cfg


TOKENIZER_LOSSES = ("l1+l2", "l2", "l1")
LR_SCHEDULES = ("cosine", "constant")


def crop_schedule(patch_nums: Sequence[int], image_size: int, crop: int, downsample: int) -> Tuple[int, ...]:
    """The scale schedule for a ``crop x crop`` training crop: each scale shrunk by crop / image_size (at
    least 1), so the number of scales, their phi convolutions and the finest scale's resolution match."""
    if crop % downsample or not 0 < crop < image_size:
        raise ValueError(f"crop {crop} must be a multiple of the tokenizer's down-sampling ({downsample}) "
                         f"and smaller than the image ({image_size} px); e.g. --crop {image_size // 2}")
    return tuple(max(1, round(p * crop / image_size)) for p in patch_nums)


def random_crops(x: torch.Tensor, crop: int, multiple: int, g: torch.Generator) -> torch.Tensor:
    """One ``crop x crop`` window per image at offsets that are multiples of ``multiple`` (the latent grid)."""
    B, _, H, W = x.shape
    oy = torch.randint(0, (H - crop) // multiple + 1, (B,), generator=g) * multiple
    ox = torch.randint(0, (W - crop) // multiple + 1, (B,), generator=g) * multiple
    return torch.stack([x[i, :, oy[i]:oy[i] + crop, ox[i]:ox[i] + crop] for i in range(B)])


# -- stage 1: tokenizer ----------------------------------------------------------------------------
def train_tokenizer(out: Path, cfg: PriorConfig, steps: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                    shards: Optional[List[int]] = None, limit: Optional[int] = None, ckpt_every: int = 200,
                    restart_every: int = 100, bf16: bool = True, device: str = "cpu",
                    minutes: Optional[float] = None, init_weights: Optional[str] = None, loss_kind: str = "l1+l2",
                    lr_schedule: str = "cosine", crop: Optional[int] = None, crop_fraction: float = 1.0) -> Path:
    """Multi-scale VQ tokenizer on the training images (``tokenizer_ckpt.pt``); ``minutes``: see :class:`WallBudget`.

    ``loss_kind``: reconstruction loss, one of ``TOKENIZER_LOSSES`` (plus the VQ loss); ``lr_schedule``: cosine
    decay to a tenth or constant after the warm-up; ``crop``: train on random ``crop x crop`` windows with the
    schedule shrunk to them (:func:`crop_schedule`), fewer pixels per step for more steps per hour, for the
    first ``crop_fraction`` of the steps (whole images after that).

    ``init_weights``: continue a shipped prior's tokenizer (all of it, fresh optimizer) for ``steps`` more
    steps instead of starting from scratch; ``cfg`` may change its schedule or enlarge its codebook
    (:func:`continuation_state`). A capacity experiment: the new token maps need a new transformer."""
    if loss_kind not in TOKENIZER_LOSSES:
        raise ValueError(f"unknown tokenizer loss {loss_kind!r}; choose one of {', '.join(TOKENIZER_LOSSES)}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction {crop_fraction} must be in (0, 1]: the share of the steps trained on crops")
    crop = crop or None  # 0: whole images
    if crop and crop_fraction < 1 and minutes:
        raise ValueError("a wall budget (--minutes) times the steps on crops only; give --steps with --crop-fraction, "
                         "or --crop N alone (crops throughout) or --crop 0 (whole images) with --minutes")
    train_pn = crop_schedule(cfg.tokenizer.patch_nums, cfg.image_size, crop, cfg.tokenizer.downsample) if crop else None
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "tokenizer_ckpt.pt"
    torch.manual_seed(seed)
    dev = torch.device(device)
    prior = build_prior(cfg)
    tok = prior.tokenizer
    run_info = {**_run_info(dev, batch, lr), "seed": seed, "loss": loss_kind, "lr_schedule": lr_schedule, "crop": crop,
                **({"crop_fraction": crop_fraction} if crop and crop_fraction < 1 else {})}
    if init_weights and not ckpt_path.exists():
        from .prior.loading import load_prior
        src = load_prior(init_weights)  # verifies the checksums
        tok.load_state_dict(continuation_state(src.tokenizer.state_dict(), tok.state_dict()))
        run_info.update(init_weights=init_weights,
                         init_steps=int(src.metadata.get("metrics", {}).get("tokenizer", {}).get("steps", 0)))
    tok = tok.to(dev).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    step, elapsed0, ck = _resume(ckpt_path, opt, tok)
    for key in ("seed", "loss", "lr_schedule", "crop", "crop_fraction"):
        if key in ck and ck[key] != run_info.get(key):
            raise ValueError(f"{ckpt_path} was trained with {key}={ck[key]!r}, not {run_info.get(key)!r}: resume it "
                             "with the options it started with, or give another --out")
    run_info.update({k: v for k, v in ck.items() if k in ("init_weights", "init_steps")})  # a resumed continuation
    if step >= steps:
        return ckpt_path
    images, _ = load_train_images(shards, limit)
    log = CsvLog(out / "tokenizer_log.csv", ["step", "elapsed_s", "lr", "loss", "l1", "vq", "psnr", "codes_used"],
                 step)
    t0 = time.time()
    V = cfg.tokenizer.vocab_size
    hits_window = torch.zeros(V, device=dev)
    bar = tqdm(total=steps, initial=step, desc="tokenizer", unit="step")
    budget = WallBudget(minutes, step, "tokenizer")
    while step < steps:
        steps = budget.steps(step, steps)
        bar.total = steps
        idx = batch_indices(len(images), step, batch, seed)
        g = torch.Generator().manual_seed(seed * 7919 + step)  # on the CPU: the same draws on any device
        x = images[idx].float().div(255)
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x) * 2 - 1
        cropped = bool(crop) and step < crop_fraction * steps
        if cropped:
            x = random_crops(x, crop, cfg.tokenizer.downsample, g)
        x = x.to(dev)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(100, steps // 10 + 1),
                                final_frac=1.0 if lr_schedule == "constant" else 0.1)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            rec, vq_loss, hits = tok(x, train_pn if cropped else None)
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        l2 = F.mse_loss(rec, x)
        loss = {"l1+l2": l1 + l2, "l2": l2, "l1": l1}[loss_kind] + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hits_window += torch.stack(hits).sum(0).float()
        step += 1
        if step % restart_every == 0:
            _restart_dead_codes(tok, x, hits_window, g, train_pn if cropped else None)
            used = int((hits_window > 0).sum())
            hits_window.zero_()
        else:
            used = ""
        if step % 10 == 0 or step == steps:
            with torch.no_grad():
                psnr = float(psnr_batch((rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2).mean())
            log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1), lr=f"{opt.param_groups[0]['lr']:.2e}",
                      loss=f"{loss.item():.4f}", l1=f"{l1.item():.4f}", vq=f"{vq_loss.item():.4f}", psnr=f"{psnr:.2f}",
                      codes_used=used)
            bar.set_postfix(loss=f"{loss.item():.3f}", psnr=f"{psnr:.1f}")
        bar.update(1)
        if step % ckpt_every == 0 or step == steps:
            _atomic_save({"model": tok.state_dict(), "opt": opt.state_dict(), "step": step,
                          "elapsed": elapsed0 + time.time() - t0, "config": cfg.to_dict(), **run_info}, ckpt_path)
    bar.close()
    return ckpt_path


def continuation_state(src: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A trained tokenizer's state dict fitted to another schedule or a larger codebook of the same
    architecture: code-usage statistics start afresh, the trained codes are kept as the first codes and
    the extra ones keep their fresh initialisation (the dead-code restarts seed them with residuals)."""
    state = dict(src)
    for key, value in own.items():
        if key not in state or state[key].shape == value.shape:
            continue
        if key.endswith("ema_vocab_hit_SV"):
            state[key] = value
        elif key.endswith("embedding.weight") and value.shape[1] == state[key].shape[1] and value.shape[0] > state[key].shape[0]:
            grown = value.clone()
            grown[:state[key].shape[0]] = state[key]
            state[key] = grown
        else:
            raise ValueError(f"cannot continue tokenizer weights: {key} has shape {tuple(state[key].shape)}, the "
                             f"configuration needs {tuple(value.shape)}; only the schedule and a larger codebook may change")
    return state


@torch.no_grad()
def _restart_dead_codes(tok, x: torch.Tensor, hits: torch.Tensor, g: torch.Generator,
                        patch_nums: Optional[Sequence[int]] = None) -> int:
    """Re-initialise codes unused over the last window to residual vectors seen in this batch
    (``patch_nums``: the schedule of ``x``'s size, when it is a crop)."""
    dead = torch.nonzero(hits == 0).flatten()
    if len(dead) == 0:
        return 0
    q = tok.quantize
    f = tok.encode_latent(x).float()
    B, C, H, W = f.shape
    patch_nums = tuple(patch_nums or q.patch_nums)
    SN = len(patch_nums)
    rest, pool = f.clone(), []
    for si, pn in enumerate(patch_nums):
        r = F.interpolate(rest, size=(pn, pn), mode="area") if si != SN - 1 else rest
        pool.append(r.permute(0, 2, 3, 1).reshape(-1, C))
        idx = q.nearest_codes(pool[-1]).view(B, pn, pn)
        rest = rest - q.upsample_codes(si, q.embedding(idx).permute(0, 3, 1, 2), H, SN)
    pool = torch.cat(pool)
    pick = torch.randint(0, len(pool), (len(dead),), generator=g).to(pool.device)
    q.embedding.weight.data[dead] = pool[pick] + 1e-3 * torch.randn(len(dead), C, generator=g).to(pool.device)
    return len(dead)


def init_from_weights(out: Path, name: str) -> Path:
    """Start run ``out`` from a shipped prior's tokenizer (encoder, codebook and fine-tuned decoder): writes
    ``tokenizer_ckpt.pt`` (no optimizer state) unless the run has one. The decoder stage then continues that
    decoder with a fresh optimizer, and the tokens are the shipped prior's, so its transformer stays valid."""
    from .prior.loading import load_prior
    path = out / "tokenizer_ckpt.pt"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    prior = load_prior(name)  # verifies the checksums; metadata["metrics"] is its metrics.json
    tk = prior.metadata.get("metrics", {}).get("tokenizer", {})
    history = list(tk.get("decoder_history", [])) + ([{
        "steps": tk["decoder_finetune_steps"], "wall_s": tk.get("decoder_finetune_wall_s"),
        "batch": tk.get("decoder_batch", 32), "lr": tk.get("decoder_lr", 6e-4), "device": tk.get("decoder_device", "cpu"),
        **{key: tk[f"decoder_{key}"] for key in ("train_images", "train_selection") if f"decoder_{key}" in tk}}]
        if "decoder_finetune_steps" in tk else [])
    _atomic_save({"model": prior.tokenizer.state_dict(), "step": tk.get("steps", 0), "elapsed": tk.get("train_wall_s", 0.0),
                  "config": prior.config.to_dict(), "init_weights": name, "decoder_history": history}, path)
    return path


def load_tokenizer_from_ckpt(out: Path, cfg: PriorConfig) -> Prior:
    prior = build_prior(cfg)
    ck = torch.load(out / "tokenizer_ckpt.pt", map_location="cpu", weights_only=False)
    state, own = dict(ck["model"]), prior.tokenizer.state_dict()
    if cfg.tokenizer.decoder_ch not in (None, cfg.tokenizer.ch):
        # a decoder of another width: it starts from scratch (or from decoder_ckpt.pt below), the rest is kept
        state.update({k: v for k, v in own.items() if k.startswith("decoder.")})
    # code-usage statistics are kept per scale: a tokenizer reused with another schedule starts them afresh
    for key in [k for k in state if k.endswith("ema_vocab_hit_SV")]:
        if state[key].shape != own[key].shape:
            state[key] = own[key]
    if (out / "decoder_ckpt.pt").exists():  # the fine-tuned decoder (stage `decoder`) replaces its part
        state.update(torch.load(out / "decoder_ckpt.pt", map_location="cpu", weights_only=False)["model"])
    prior.tokenizer.load_state_dict(state)
    prior.tokenizer.eval()
    prior.metadata["decoder_history"] = ck.get("decoder_history", [])  # earlier decoder runs (--init-weights)
    return prior


# -- stage 2: tokenising -----------------------------------------------------------------------------
@torch.no_grad()
def tokenize_split(out: Path, cfg: PriorConfig, split: str, shards=None, limit=None, batch: int = 256,
                   device: str = "cpu", every: int = 1) -> Path:
    """Token maps of a split -> ``tokens_{split}.npz`` (uint16 (N, L) and labels)."""
    path = out / f"tokens_{split}.npz"
    if path.exists():
        return path
    dev = torch.device(device)
    prior = load_tokenizer_from_ckpt(out, cfg).to(dev)
    images, labels = (load_train_images(shards, limit, every) if split == "train"
                      else load_val_images(limit or VAL_SLICE))
    rows = []
    for i in tqdm(range(0, len(images), batch), desc=f"tokenize {split}", unit="batch"):
        x = (images[i:i + batch].float().div(255) * 2 - 1).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            f = prior.tokenizer.encode_latent(x)
        toks = prior.tokenizer.quantize.f_to_tokens(f.float())
        rows.append(torch.cat([t.flatten(1) for t in toks], 1).to(torch.int32).cpu().numpy().astype(np.uint16))
    tmp = out / f"tokens_{split}.tmp.npz"
    np.savez(tmp, tokens=np.concatenate(rows), labels=labels.numpy(), patch_nums=np.asarray(cfg.tokenizer.patch_nums))
    os.replace(tmp, path)
    return path


def split_tokens(flat: torch.Tensor, patch_nums: Sequence[int]) -> List[torch.Tensor]:
    """(B, L) token sequence -> list of (B, pn, pn) maps."""
    out, cur = [], 0
    for pn in patch_nums:
        out.append(flat[:, cur:cur + pn * pn].reshape(-1, pn, pn))
        cur += pn * pn
    return out


# -- stage 2b: decoder fine-tuning ------------------------------------------------------------------------
DECODER_PARTS = ("decoder.", "post_quant_conv.")  # what the decoder stage trains; encoder and codebook stay frozen


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
    prior = load_tokenizer_from_ckpt(out, cfg)  # includes an earlier decoder checkpoint when resuming
    tok = prior.tokenizer.to(dev)
    tok.eval()
    params = [p for n, p in tok.named_parameters() if n.startswith(DECODER_PARTS)]
    for n, p in tok.named_parameters():
        p.requires_grad_(n.startswith(DECODER_PARTS))
    tok.decoder.train()
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    step, elapsed0, _ = _resume(ckpt_path, opt)  # the decoder weights came with load_tokenizer_from_ckpt
    if step >= steps:
        return ckpt_path
    data = np.load(out / "tokens_train.npz")
    tokens = torch.from_numpy(data["tokens"].astype(np.int64))
    images, image_labels = load_train_images(shards, limit, every)
    # the maps are stored in image order, shard by shard: a run on the first shard(s) uses their prefix
    prefix_ok = len(images) < len(tokens) and np.array_equal(data["labels"][:len(images)], image_labels.numpy())
    if len(images) != len(tokens) and not prefix_ok:
        raise ValueError(f"{out / 'tokens_train.npz'} holds {len(tokens)} token maps but the training split has "
                         f"{len(images)} images: run the decoder stage with the same --shards/--every/--limit as `tokenize`")
    tokens = tokens[:len(images)]
    from .data import train_selection
    run_info = {**_run_info(dev, batch, lr), "train_images": len(images),
                "train_selection": train_selection(shards, every, limit),
                "history": prior.metadata["decoder_history"]}  # earlier decoder runs this one continues
    pn = cfg.tokenizer.patch_nums
    q = tok.quantize
    log = CsvLog(out / "decoder_log.csv", ["step", "elapsed_s", "lr", "loss", "psnr"], step)
    t0 = time.time()
    bar = tqdm(total=steps, initial=step, desc="decoder", unit="step")
    budget = WallBudget(minutes, step, "decoder")
    while step < steps:
        steps = budget.steps(step, steps)
        bar.total = steps
        idx = batch_indices(len(tokens), step, batch, seed + 1)
        x = (images[idx].float().div(255) * 2 - 1).to(dev)
        with torch.no_grad():
            f_hat = q.tokens_to_fhat(split_tokens(tokens[idx].to(dev), pn))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(50, steps // 10 + 1))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            rec = tok.fhat_to_img(f_hat, clamp=False)
        rec = rec.float()
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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
            _atomic_save({"model": state, "opt": opt.state_dict(), "step": step,
                          "elapsed": elapsed0 + time.time() - t0, **run_info}, ckpt_path)
    bar.close()
    return ckpt_path


# -- stage 3: transformer ------------------------------------------------------------------------------
def train_transformer(out: Path, cfg: PriorConfig, steps: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                      ckpt_every: int = 100, bf16: bool = True, label_smoothing: float = 0.0,
                      device: str = "cpu", minutes: Optional[float] = None, holdout: int = 0,
                      eval_every: int = 500) -> Path:
    """Next-scale transformer on the stored token maps (``tokens_train.npz``); ``device`` may be "cuda"
    (only the token maps and the tokenizer checkpoint are needed, no images).

    ``minutes``: a wall-clock budget (for a GPU lease): the pace of steps 20-70 fixes the step
    count (printed and logged; ``--steps`` with that count reproduces the run). ``holdout``: a seeded random
    ``holdout`` of the training images is kept out and scored (teacher-forced NLL) every ``eval_every``
    steps into ``transformer_eval.csv``; the best state so far goes to ``transformer_best.pt`` (fp16
    weights only), so a long run can stop early without touching ``tinyimagenet-val``."""
    ckpt_path = out / "transformer_ckpt.pt"
    torch.manual_seed(seed)
    dev = torch.device(device)
    prior = load_tokenizer_from_ckpt(out, cfg).to(dev)
    tr = prior.transformer.train()
    decay = [p for n, p in tr.named_parameters() if p.ndim >= 2 and "emb" not in n and "pos" not in n]
    no_decay = [p for n, p in tr.named_parameters() if not (p.ndim >= 2 and "emb" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    step, elapsed0, _ = _resume(ckpt_path, opt, tr)
    if step >= steps:
        return ckpt_path
    data = np.load(out / "tokens_train.npz")
    tokens = torch.from_numpy(data["tokens"].astype(np.int64))
    labels = torch.from_numpy(data["labels"].astype(np.int64))
    if holdout:
        if not 0 < holdout < len(tokens) // 2:
            raise ValueError(f"holdout={holdout} must be between 1 and half the {len(tokens)} training maps")
        # the maps are stored class by class: a seeded random subset covers the classes
        perm = torch.from_numpy(np.random.default_rng(seed + 12345).permutation(len(tokens)))
        kept = perm[holdout:].sort().values
        ho_tokens, ho_labels = tokens[perm[:holdout]].to(dev), labels[perm[:holdout]].to(dev)
        tokens, labels = tokens[kept], labels[kept]
        eval_log = CsvLog(out / "transformer_eval.csv", ["step", "elapsed_s", "holdout_nll"], step)
    pn = cfg.tokenizer.patch_nums
    log = CsvLog(out / "transformer_log.csv", ["step", "elapsed_s", "lr", "loss", "acc"], step)
    t0 = time.time()
    bar = tqdm(total=steps, initial=step, desc="transformer", unit="step")
    q = prior.tokenizer.quantize
    best = float("inf")  # a resumed run keeps the best state of its earlier part unless it beats it
    if holdout and (out / "transformer_best.pt").exists():
        best = torch.load(out / "transformer_best.pt", map_location="cpu", weights_only=False)["holdout_nll"]
    budget = WallBudget(minutes, step, "transformer")
    run_info = _run_info(dev, batch, lr)
    while step < steps:
        steps = budget.steps(step, steps)
        bar.total = steps
        idx = batch_indices(len(tokens), step, batch, seed)
        torch.manual_seed(seed * 7919 + step)  # class dropout draws
        seq, lab = tokens[idx].to(dev), labels[idx].to(dev)
        with torch.no_grad():
            x_in = q.tokens_to_teacher_input(split_tokens(seq, pn))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(200, steps // 10 + 1))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = tr(lab, x_in)
        loss = F.cross_entropy(logits.float().reshape(-1, tr.V), seq.reshape(-1), label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 2.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == steps:
            acc = float((logits.argmax(-1) == seq).float().mean())
            log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1), lr=f"{opt.param_groups[0]['lr']:.2e}",
                      loss=f"{loss.item():.4f}", acc=f"{acc:.4f}")
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
        bar.update(1)
        if holdout and (step % eval_every == 0 or step == steps):
            nll = holdout_nll(tr, q, ho_tokens, ho_labels, pn, bf16)
            tr.train()
            eval_log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1), holdout_nll=f"{nll:.4f}")
            if nll < best:
                best = nll
                _atomic_save({"model": {k: v.half().cpu() for k, v in tr.state_dict().items()}, "step": step,
                              "holdout_nll": nll, "elapsed": elapsed0 + time.time() - t0, **run_info,
                              "holdout": holdout}, out / "transformer_best.pt")
        if step % ckpt_every == 0 or step == steps:
            _atomic_save({"model": tr.state_dict(), "opt": opt.state_dict(), "step": step,
                          "elapsed": elapsed0 + time.time() - t0, **run_info}, ckpt_path)
    bar.close()
    return ckpt_path


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


def pack_for_transfer(out: Path, dest: Path) -> Path:
    """Copy what the transformer stage needs, as small as it goes, to ``dest``: the tokenizer (and
    fine-tuned decoder) checkpoints without optimizer state, and the token maps compressed. For
    training the transformer on another machine (a GPU call carries at most 64 MiB)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_ckpt.pt", "decoder_ckpt.pt"):
        if (out / name).exists():
            ck = torch.load(out / name, map_location="cpu", weights_only=False)
            ck["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}  # shipped as fp16
            _atomic_save({k: v for k, v in ck.items() if k != "opt"}, dest / name)
    if not (out / "tokens_train.npz").exists():  # a tokenizer-only run (e.g. trained on a GPU, tokenised later)
        return dest
    data = np.load(out / "tokens_train.npz")
    tmp = dest / "tokens_train.tmp.npz"
    np.savez_compressed(tmp, **{k: data[k] for k in data.files})
    os.replace(tmp, dest / "tokens_train.npz")
    return dest


def transformer_ckpt_path(out: Path) -> Path:
    """The transformer state a run ships: the best held-out one when the run kept a holdout, else the last."""
    best = out / "transformer_best.pt"
    return best if best.exists() else out / "transformer_ckpt.pt"


def seed_run(src: Path, out: Path) -> None:
    """Copy the tokenizer side of run ``src`` (checkpoints, token maps, training logs) into ``out``, where missing."""
    import shutil
    need = ("tokenizer_ckpt.pt", "tokens_train.npz")
    missing = [n for n in need if not (src / n).exists()]
    if missing:
        raise FileNotFoundError(f"--from {src}: {', '.join(missing)} missing; run the tokenizer stages there first "
                                "(make prior, or python -m varlib.train tokenizer/tokenize --out " + str(src) + ")")
    for name in need + ("decoder_ckpt.pt", "tokens_val.npz", "tokenizer_log.csv", "decoder_log.csv"):  # logs: the figures
        if (src / name).exists() and not (out / name).exists():
            shutil.copyfile(src / name, out / f"{name}.tmp")
            os.replace(out / f"{name}.tmp", out / name)


def assemble_prior(out: Path, cfg: PriorConfig) -> Prior:
    prior = load_tokenizer_from_ckpt(out, cfg)
    ck = torch.load(transformer_ckpt_path(out), map_location="cpu", weights_only=False)
    prior.transformer.load_state_dict(ck["model"])  # copies fp16 values (transformer_best.pt) into fp32 parameters
    prior.transformer.eval()
    return prior


# -- stage 4: evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_tokenizer(prior: Prior, n: int = VAL_SLICE) -> Dict:
    """Held-out PSNR (all scales and per number of scales kept) and codebook usage."""
    images, _ = load_val_images(n)
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


@torch.no_grad()  # without it every batch's graph stays alive through the running sums
def evaluate_transformer(prior: Prior, out: Path, batch: int = 50) -> Dict:
    """Teacher-forced NLL / top-1 accuracy per scale on held-out tokens, beside two baselines:
    unigram (per-scale code frequencies of the training split) and "copy the coarser scale"
    (the training split's conditional frequency of a code given the code at the same place one
    scale coarser, add-one smoothed; its top-1 is the most frequent such code)."""
    cfg = prior.config
    pn = cfg.tokenizer.patch_nums
    V = cfg.tokenizer.vocab_size
    tr_npz = np.load(out / "tokens_train.npz")
    tr_tok, tr_lab = torch.from_numpy(tr_npz["tokens"].astype(np.int64)), torch.from_numpy(tr_npz["labels"].astype(np.int64))
    va = np.load(tokenize_split(out, cfg, "val"))
    va_tok, va_lab = torch.from_numpy(va["tokens"].astype(np.int64)), torch.from_numpy(va["labels"])
    tr_maps, va_maps = split_tokens(tr_tok, pn), split_tokens(va_tok, pn)
    res = {"scales": list(pn), "model_nll": [], "model_acc": [], "model_nll_uncond": [], "unigram_nll": [],
           "unigram_acc": [], "copy_nll": [], "copy_acc": []}
    # model
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
    res["model_nll"] = (nll_c / n).tolist(); res["model_acc"] = (acc_c / n).tolist(); res["model_nll_uncond"] = (nll_u / n).tolist()
    for s in range(len(pn)):
        freq = torch.bincount(tr_maps[s].flatten(), minlength=V).float() + 1
        logp = (freq / freq.sum()).log()
        tgt = va_maps[s].flatten()
        res["unigram_nll"].append(float(-logp[tgt].mean()))
        res["unigram_acc"].append(float((tgt == logp.argmax()).float().mean()))
        if s == 0:
            res["copy_nll"].append(res["unigram_nll"][-1]); res["copy_acc"].append(res["unigram_acc"][-1])
            continue
        def coarse_of(maps):
            return F.interpolate(maps[s - 1][:, None].float(), size=(pn[s], pn[s]), mode="nearest")[:, 0].long().flatten()
        table = torch.ones(V, V)
        table.index_put_((coarse_of(tr_maps), tr_maps[s].flatten()), torch.ones(tr_maps[s].numel()), accumulate=True)
        logp_tab = (table / table.sum(1, keepdim=True)).log()
        c_va = coarse_of(va_maps)
        res["copy_nll"].append(float(-logp_tab[c_va, tgt].mean()))
        res["copy_acc"].append(float((logp_tab[c_va].argmax(1) == tgt).float().mean()))
    res.update(class_unigram_baseline(tr_maps, tr_lab, va_maps, va_lab.long(), cfg.transformer.num_classes, V))
    res["val_images"] = n
    return res


def class_unigram_baseline(tr_maps, tr_lab, va_maps, va_lab, num_classes: int, vocab: int) -> Dict:
    """Per-scale :func:`class_unigram_nll` as metrics entries."""
    fits = [class_unigram_nll(t, tr_lab, v, va_lab, num_classes, vocab) for t, v in zip(tr_maps, va_maps)]
    return {"class_unigram_nll": [f[0] for f in fits], "class_unigram_beta": [f[1] for f in fits]}


@torch.no_grad()
def time_sampling(prior: Prior, repeats: int = 3) -> Dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for cache in (True, False):
        prior.sample([0], cfg=1.5, top_k=0, top_p=0.0, generator=g, use_kv_cache=cache)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            prior.sample([0], cfg=1.5, generator=g, use_kv_cache=cache)
        out["seconds_per_image_kv_cache" if cache else "seconds_per_image_no_cache"] = (time.perf_counter() - t) / repeats
    return out


def evaluate(out: Path, cfg: PriorConfig) -> Dict:
    prior = assemble_prior(out, cfg)
    metrics = {"tokenizer": evaluate_tokenizer(prior), "transformer": evaluate_transformer(prior, out),
               "sampling_cpu": time_sampling(prior)}
    tr_path = transformer_ckpt_path(out)
    for stage, path in (("tokenizer", out / "tokenizer_ckpt.pt"), ("transformer", tr_path)):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        metrics[stage]["steps"] = ck["step"]
        metrics[stage]["train_wall_s"] = round(ck.get("elapsed", 0.0), 1)
        for key in ("batch", "lr", "device", "torch", "holdout", "holdout_nll", "init_weights", "init_steps",
                    "loss", "lr_schedule", "crop", "crop_fraction"):
            if key in ck:
                metrics[stage][key] = ck[key]
    if tr_path.name == "transformer_best.pt" and (out / "transformer_log.csv").exists():
        with open(out / "transformer_log.csv") as f:
            metrics["transformer"]["steps_run"] = max(int(r["step"]) for r in csv.DictReader(f))
    if (out / "decoder_ckpt.pt").exists():
        ck = torch.load(out / "decoder_ckpt.pt", map_location="cpu", weights_only=False)
        metrics["tokenizer"]["decoder_finetune_steps"] = ck["step"]
        metrics["tokenizer"]["decoder_finetune_wall_s"] = round(ck.get("elapsed", 0.0), 1)
        for key in ("batch", "lr", "device", "train_images", "train_selection", "history"):
            if key in ck:
                metrics["tokenizer"][f"decoder_{key}"] = ck[key]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def token_map_fingerprint(prior: Prior) -> str:
    """sha256 of the tokenizer weights that decide the token maps: all but ``DECODER_PARTS`` (encoder, quant_conv,
    codebook and phi convolutions, which the decoder stage keeps frozen), rounded to fp16 as shipped. Two priors
    with the same fingerprint tokenise every image the same way, so their transformers' NLLs are comparable;
    tiny64-gpu records the one it was built on."""
    import hashlib
    h = hashlib.sha256()
    for name, t in sorted(prior.tokenizer.state_dict().items()):
        if not name.startswith(DECODER_PARTS) and t.is_floating_point() and "ema_vocab_hit" not in name:
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float16).numpy().tobytes())
    return h.hexdigest()


def export(out: Path, cfg: PriorConfig, dest: Path) -> Path:
    """Ship the trained prior: fp16 safetensors, config, metrics, SHA256SUMS and MODEL_CARD.md."""
    prior = assemble_prior(out, cfg)
    save_prior(prior, dest, half=True)
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
    if metrics is not None:
        metrics["tokenizer"]["token_map_sha256"] = token_map_fingerprint(prior)
        (dest / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (dest / "MODEL_CARD.md").write_text(model_card(prior, metrics, dest))
    return dest


def model_card(prior: Prior, metrics: Optional[Dict], dest: Path) -> str:
    import platform
    c = prior.config
    n_tok = sum(p.numel() for p in prior.tokenizer.parameters())
    n_tr = sum(p.numel() for p in prior.transformer.parameters())
    sums = (dest / "SHA256SUMS").read_text().strip()
    gpu = metrics is not None and any(d != "cpu" for d in (metrics["transformer"].get("device", "cpu"),
                                                           metrics["tokenizer"].get("decoder_device", "cpu")))
    intro = ("A small class-conditional VAR (multi-scale VQ tokenizer + next-scale transformer)"
             + (": tiny64's encoder and codebook (`make prior`, 2-core CPU) with a decoder and a transformer trained "
                "further on one GPU (`make prior-gpu`); an alternative to the embedded default prior tiny64."
                if gpu else " trained by `python -m varlib.train all` (`make prior`) on a 2-core CPU; the embedded "
                "default prior of varlib."))
    fingerprint = (metrics or {}).get("tokenizer", {}).get("token_map_sha256")
    if gpu and fingerprint:
        intro += (f"\n\nIts encoder and codebook, and so its token maps (fingerprint `{fingerprint[:16]}`, "
                  "`varlib.train.token_map_fingerprint`), are those of the tiny64 whose `metrics.json` records the "
                  "same fingerprint. A tiny64 retrained since tokenises differently; `make prior-gpu` after "
                  "`make prior` rebuilds this prior on it.")
    lines = [f"# Model card: {c.name}", "",
             intro, "",
             "## Data", "",
             "- Training: `tinyimagenet-train`, all three shards (60,600 images, 202 classes, 64x64), horizontal flips "
             "for the tokenizer; the transformer sees the un-flipped token maps. 10 % of labels replaced by the null "
             "class (classifier-free guidance).",
             f"- Held out: the first {VAL_SLICE} images of `tinyimagenet-val` (by index) for every metric below; "
             "never trained or tuned on.", "",
             "## Architecture", "",
             f"- Tokenizer: {n_tok / 1e6:.2f} M parameters; conv widths {c.tokenizer.ch} x {c.tokenizer.ch_mult}, "
             f"{c.tokenizer.num_res_blocks} residual block(s) per level, {c.tokenizer.downsample}x down-sampling, "
             f"codebook {c.tokenizer.vocab_size} x {c.tokenizer.Cvae}, scale schedule {c.tokenizer.patch_nums} "
             f"({sum(p * p for p in c.tokenizer.patch_nums)} tokens per image), 4 shared phi convolutions.",
             f"- Transformer: {n_tr / 1e6:.2f} M parameters; depth {c.transformer.depth}, width {c.transformer.width}, "
             f"{c.transformer.num_heads} heads, {c.transformer.num_classes} classes + null class.", ""]
    if metrics:
        tk, tr, sm = metrics["tokenizer"], metrics["transformer"], metrics.get("sampling_cpu", {})
        where = "2-core CPU" if tr.get("device", "cpu") == "cpu" else f"2-core CPU and one {tr['device']}"
        lines += [f"## Training ({where}, bf16 autocast)", "",
                  f"- Tokenizer: {_continued(tk)}{tk['steps']} steps of batch {tk.get('batch', 32)}, "
                  f"{tokenizer_recipe_words(tk)}, dead-code restarts every 100 steps; "
                  f"{tk['train_wall_s'] / 60:.0f} min wall.",
                  *decoder_card_lines(tk),
                  *transformer_card_lines(tr),
                  f"- Hardware: {platform.processor() or platform.machine()}, 2 cores"
                  + f", torch {torch.__version__}"
                  + (f" (tokenizer); {'decoder and ' if tk.get('decoder_device', 'cpu') != 'cpu' else ''}transformer "
                     f"on one {tr['device']}, torch {tr.get('torch', '?')}" if tr.get("device", "cpu") != "cpu" else "")
                  + ".", "",
                  "## Metrics (held-out)", "",
                  f"- Tokenizer PSNR over all scales: **{tk['psnr']:.2f} dB** on {tk['val_images']} images "
                  f"(bicubic x4 down/up: {tk.get('bicubic_x4_psnr', float('nan')):.2f} dB, x2: "
                  f"{tk.get('bicubic_x2_psnr', float('nan')):.2f} dB).",
                  "- PSNR after 1..S scales: " + ", ".join(f"{v:.2f}" for v in tk["psnr_per_scales"]) + " dB.",
                  f"- Codebook usage: {tk['codes_used_val']} of {tk['vocab_size']} codes on the held-out images.", "",
                  "Teacher-forced transformer metrics per scale (nats/token; top-1 accuracy):", "",
                  "| scale | model NLL | model NLL (null class) | unigram NLL | copy-coarser NLL | class-unigram NLL | "
                  "model acc | unigram acc | copy acc |",
                  "|---|---|---|---|---|---|---|---|---|"]
        cls = tr.get("class_unigram_nll") or [float("nan")] * len(tr["scales"])
        for i, pn in enumerate(tr["scales"]):
            lines.append(f"| {pn}x{pn} | {tr['model_nll'][i]:.3f} | {tr['model_nll_uncond'][i]:.3f} | {tr['unigram_nll'][i]:.3f} | "
                         f"{tr['copy_nll'][i]:.3f} | {cls[i]:.3f} | {100 * tr['model_acc'][i]:.1f} % | "
                         f"{100 * tr['unigram_acc'][i]:.1f} % | {100 * tr['copy_acc'][i]:.1f} % |")
        lines += ["", "The class-unigram baseline is per-class code frequencies (shrunk towards the unigram, "
                      "shrinkage chosen by cross-validation on the training split): the NLL that knowing only the "
                      "class gives. At the 1x1 scale the transformer sees nothing but the class, so this count table "
                      "is about the best it can do there (a gap to it would be under-training of the class embedding): "
                      f"here the transformer is {tr['model_nll'][0] - cls[0]:+.3f} nats from it."]
        if sm:
            lines += ["", f"Sampling one image on this CPU (cfg 1.5): {sm['seconds_per_image_kv_cache']:.3f} s with the KV "
                          f"cache, {sm['seconds_per_image_no_cache']:.3f} s without."]
    lines += ["", "## Files and checksums (sha256)", "", "```", sums, "```", "",
              "Loading verifies these checksums; a corrupted or missing file is refused with the command that rebuilds "
              "it (`make prior`). Weights are stored in fp16 and loaded as fp32.", ""]
    return "\n".join(lines)


def tokenizer_recipe_words(tk: Dict) -> str:
    """The tokenizer's optimiser, loss and crops as the model card states them (``tk``: metrics["tokenizer"];
    runs from before these choices were recorded used the defaults)."""
    lr = tk.get("lr", 1e-3)
    schedule = f"cosine to {_sci(lr / 10)}" if tk.get("lr_schedule", "cosine") == "cosine" else "constant"
    loss = {"l1+l2": "L1 + L2", "l2": "L2", "l1": "L1"}[tk.get("loss", "l1+l2")]
    words = f"AdamW lr {_sci(lr)} {schedule}, {loss} + VQ loss"
    if tk.get("crop"):
        words += f", random {tk['crop']} px crops for the first {tk.get('crop_fraction', 1.0):.0%} of the steps"
    return words


def _continued(tk: Dict) -> str:
    """Model-card prefix of a tokenizer continued from shipped weights (``tokenizer --init-weights``)."""
    return f"{tk['init_weights']}'s tokenizer ({tk.get('init_steps', '?')} steps) continued " if "init_weights" in tk else ""


def _sci(v: float) -> str:
    return f"{v:.0e}".replace("e-0", "e-")  # 6e-4, as the card writes learning rates


def decoder_card_lines(tk: Dict) -> List[str]:
    """The model card's decoder fine-tuning lines: earlier runs it continued (``decoder_history``), then its own."""
    if "decoder_finetune_steps" not in tk:
        return []
    runs = list(tk.get("decoder_history", [])) + [
        {"steps": tk["decoder_finetune_steps"], "wall_s": tk["decoder_finetune_wall_s"], "batch": tk.get("decoder_batch", 32),
         "lr": tk.get("decoder_lr", 6e-4), "device": tk.get("decoder_device", "cpu"),
         "train_images": tk.get("decoder_train_images"), "train_selection": tk.get("decoder_train_selection")}]
    lines = []
    for i, r in enumerate(runs):
        lr = r.get("lr", 6e-4)
        where = "" if r.get("device", "cpu") == "cpu" else f" on one {r['device']}"
        data = _decoder_data_words(r.get("train_images") or 3 * SHARD_IMAGES, r.get("train_selection"))
        head = "- Decoder fine-tuning on the frozen token maps" if i == 0 else "- Then, continuing that decoder"
        lines.append(f"{head}: {r['steps']} steps of batch {r['batch']}{data}, AdamW lr {_sci(lr)} cosine to {_sci(lr / 10)}, "
                     f"L1 + L2 loss; {(r.get('wall_s') or 0) / 60:.0f} min wall{where} "
                     "(encoder, codebook and tokens unchanged).")
    return lines


def _decoder_data_words(n: int, selection: Optional[Dict]) -> str:
    """' on ...' naming the training images a decoder run saw ('' for the whole split)."""
    sel = (selection or {}).get("subset_of", selection)  # a carried subset: the selection it was cut from
    if sel and sel.get("every", 1) > 1:
        shards = sel.get("shards", [0, 1, 2])
        cut = f", the first {n}" if sel.get("limit") else ""
        return (f" on {n} training images (every {sel['every']}th of each shard's images in name order, shards "
                f"{shards[0]}-{shards[-1]}{cut}; `python -m varlib.train subset`)")
    if n >= 3 * SHARD_IMAGES:
        return ""
    shards = f" (shard{'s 0-' if n > SHARD_IMAGES else ' '}{n // SHARD_IMAGES - 1 if n > SHARD_IMAGES else 0})" \
        if n % SHARD_IMAGES == 0 else ""
    return f" on the first {n} training images{shards}"


def transformer_card_lines(tr: Dict) -> List[str]:
    lr = tr.get("lr", 1e-3)
    line = (f"- Transformer: {tr['steps']} steps of batch {tr.get('batch', 32)}, AdamW lr {lr:g} (warm-up, cosine), "
            f"weight decay 0.05; {tr['train_wall_s'] / 60:.1f} min wall")
    if "holdout" in tr:
        line += (f", on {tr.get('device', 'cpu')}. Of a {tr.get('steps_run', tr['steps'])}-step run, the state with the "
                 f"lowest NLL on {tr['holdout']} training images kept out of training ({tr['holdout_nll']:.3f} nats per "
                 "token): later steps over-fitted")
    return [line + "."]


# -- command line -----------------------------------------------------------------------------------------
RECIPES = {  # the CPU recipe that produced the shipped weights (steps chosen from measured 2-core speeds)
    # 32 px crops for 90 % of the tokenizer's steps, whole images for the rest (README, "Crops at the recipe's
    # full tokenizer budget"); no decoder stage: its minutes gave the tokenizer more held-out PSNR as tokenizer
    # steps (README, "Giving the decoder fine-tuning's minutes to the tokenizer"); the transformer gets what is
    # left of 2.5 h at 2.2 s per step (thirteenth session's machine)
    "tiny64": dict(tokenizer_steps=11500, tokenizer_crop=32, tokenizer_crop_fraction=0.9, decoder_steps=0,
                   transformer_steps=1900, batch=32),
}
# A recipe may crop the tokenizer's images (keys tokenizer_crop, tokenizer_crop_fraction; see recipe_crop).
# The GPU recipe of tiny64-gpu is `make prior-gpu`: tiny64's tokenizer and token maps, the transformer stage
# with --device cuda --batch 256 --steps 4500 --holdout 1000, and tiny64's shipped decoder continued with
# --batch 128 --lr 3e-4 --steps 4460 on the 10,000 images of `subset --every 6 --limit 10000` (read back as
# shard 0); side by side on one H200, 6.5 min in all (scripts/prior_gpu_device.sh; README, "The GPU recipe").


def recipe_crop(recipe: Dict, crop: Optional[int], crop_fraction: Optional[float]) -> Tuple[Optional[int], float]:
    """The tokenizer's crop size and crop share: the recipe's unless ``--crop`` is given (0: whole images);
    an explicit ``--crop`` without ``--crop-fraction`` crops every step."""
    if crop is None:
        crop = recipe.get("tokenizer_crop")
        if crop_fraction is None:
            crop_fraction = recipe.get("tokenizer_crop_fraction", 1.0)
    return (crop or None), (1.0 if crop_fraction is None else crop_fraction)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diffusion"]:  # the embedded diffusion prior has its own options (issue 7)
        from .diffusion.train import main as diffusion_main
        return diffusion_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m varlib.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["tokenizer", "tokenize", "decoder", "transformer", "evaluate", "export", "pack",
                                      "subset", "all"],
                    help="stage of the VAR prior; `python -m varlib.train diffusion --help` for the diffusion prior")
    ap.add_argument("--out", default="runs/tiny64", help="run directory (checkpoints, logs, tokens)")
    ap.add_argument("--config", default="tiny64")
    ap.add_argument("--patch-nums", default=None, help="override the scale schedule, e.g. 1,2,4,8,16")
    ap.add_argument("--tokenizer-ch", type=int, default=None,
                    help="override the tokenizer's base conv width (a tokenizer variant; every stage of the run needs it)")
    ap.add_argument("--tokenizer-res-blocks", type=int, default=None,
                    help="override the tokenizer's residual blocks per level")
    ap.add_argument("--decoder-ch", type=int, default=None,
                    help="decoder stage: a decoder of this base width, trained from scratch on the frozen tokens")
    ap.add_argument("--vocab-size", type=int, default=None,
                    help="override the codebook size (with tokenizer --init-weights: grow the shipped codebook)")
    ap.add_argument("--cvae", type=int, default=None, help="override the latent and code dimension (tokenizer variant)")
    ap.add_argument("--znorm", action="store_true",
                    help="tokenizer variant: look codes up by cosine similarity (l2-normalised) instead of l2 distance")
    ap.add_argument("--loss", default="l1+l2", choices=TOKENIZER_LOSSES, help="tokenizer: reconstruction loss")
    ap.add_argument("--lr-schedule", default="cosine", choices=LR_SCHEDULES,
                    help="tokenizer: cosine decay to a tenth after the warm-up, or constant")
    ap.add_argument("--crop", type=int, default=None,
                    help="tokenizer: train on random CROP x CROP windows (a multiple of the down-sampling, e.g. 32); "
                         "default: the recipe's (whole images for tiny64); 0: whole images")
    ap.add_argument("--crop-fraction", type=float, default=None,
                    help="tokenizer with --crop: the share of the steps on crops, whole images after that "
                         "(default: the recipe's with its crop, else 1)")
    ap.add_argument("--steps", type=int, default=None, help="steps of the chosen stage (default: the recipe)")
    ap.add_argument("--tokenizer-steps", type=int, default=None)
    ap.add_argument("--decoder-steps", type=int, default=None)
    ap.add_argument("--transformer-steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", default=None, help="comma-separated train shards (default 0,1,2)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images (tests)")
    ap.add_argument("--every", type=int, default=1,
                    help="tokenize/decoder/subset: only every N-th training image of each shard (name order)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--device", default="cpu", help="device of the tokenizer, decoder and transformer stages (e.g. cuda)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="tokenizer, decoder, transformer: wall budget; the pace of steps 20-70 fixes the step count")
    ap.add_argument("--holdout", type=int, default=0,
                    help="transformer: keep N random training maps out, score them every --eval-every steps, "
                         "keep the best state in transformer_best.pt")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--ckpt-every", type=int, default=100, help="transformer: steps between resumable checkpoints")
    ap.add_argument("--dest", default=None, help="export directory (default varlib/weights/<config>); pack, subset: their target")
    ap.add_argument("--from", dest="from_run", default=None,
                    help="start --out from another run's tokenizer, decoder and token maps (e.g. the GPU recipe)")
    ap.add_argument("--init-weights", default=None,
                    help="start --out from a shipped prior's tokenizer (e.g. tiny64): the decoder stage continues its "
                         "decoder on its tokens; the tokenizer stage continues all of it, for --steps more steps")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = _config(a)
    recipe = RECIPES.get(a.config, dict(tokenizer_steps=200, decoder_steps=0, transformer_steps=200, batch=a.batch))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.from_run:
        seed_run(Path(a.from_run), out)
    if a.init_weights and a.stage not in ("tokenizer", "all"):  # those continue the whole tokenizer instead
        init_from_weights(out, a.init_weights)
    shards = [int(s) for s in a.shards.split(",")] if a.shards else None
    tok_steps = a.tokenizer_steps or (a.steps if a.stage == "tokenizer" else None) or recipe["tokenizer_steps"]
    tr_steps = a.transformer_steps or (a.steps if a.stage == "transformer" else None) or recipe["transformer_steps"]
    dec_steps = a.decoder_steps if a.decoder_steps is not None else (
        a.steps if a.stage == "decoder" and a.steps is not None else recipe.get("decoder_steps", 0))
    bf16 = not a.no_bf16
    crop, crop_fraction = recipe_crop(recipe, a.crop, a.crop_fraction)
    if a.stage in ("tokenizer", "all"):
        train_tokenizer(out, cfg, tok_steps, a.batch, a.lr or 1e-3, a.seed, shards, a.limit, bf16=bf16, device=a.device,
                        minutes=a.minutes, init_weights=a.init_weights, loss_kind=a.loss,
                        lr_schedule=a.lr_schedule, crop=crop, crop_fraction=crop_fraction)
    if a.stage in ("tokenize", "all"):
        tokenize_split(out, cfg, "train", shards, a.limit, device=a.device, every=a.every)
    if a.stage in ("decoder", "all") and dec_steps > 0:
        train_decoder(out, cfg, dec_steps, a.batch, a.lr or 6e-4, a.seed, shards, a.limit, bf16=bf16, device=a.device,
                      minutes=a.minutes, every=a.every)
    if a.stage in ("transformer", "all"):
        train_transformer(out, cfg, tr_steps, a.batch, a.lr or 1e-3, a.seed, bf16=bf16, device=a.device,
                          minutes=a.minutes, holdout=a.holdout, eval_every=a.eval_every,
                          ckpt_every=a.ckpt_every)
    if a.stage in ("evaluate", "all"):
        print(json.dumps(evaluate(out, cfg), indent=1))
    if a.stage == "subset":
        if not a.dest:
            raise SystemExit("subset needs --dest, the data folder to write (read it with VARLIB_DATA_DIR=DEST --shards 0)")
        from .data import write_train_subset
        print("wrote", write_train_subset(Path(a.dest), shards, a.every, a.limit))
    if a.stage == "pack":
        if not a.dest:
            raise SystemExit("pack needs --dest, the folder to write the small copy to")
        print("packed to", pack_for_transfer(out, Path(a.dest)))
    if a.stage in ("export", "all"):
        dest = Path(a.dest) if a.dest else Path(__file__).resolve().parent / "weights" / cfg.name
        print("exported to", export(out, cfg, dest))


if __name__ == "__main__":
    main()
