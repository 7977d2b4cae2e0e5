"""Stage ``tokenizer``: the multi-scale VQ tokenizer, trained on (crops of) the training images."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io import atomic_torch_save
from ..prior import PriorConfig, build_prior
from .common import (CsvLog, WallBudget, batch_indices, flipped, load_train_images, lr_at, psnr_batch,
                     resume_checkpoint, run_info, set_lr, step_generator, training_data)

TOKENIZER_LOSSES = ("l1+l2", "l2", "l1")
LR_SCHEDULES = ("cosine", "constant")
LOG_FIELDS = ["step", "elapsed_s", "lr", "loss", "l1", "vq", "psnr", "codes_used"]
RECORDED = ("seed", "loss", "lr_schedule", "crop", "crop_fraction")  # a resumed run must keep these


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
def restart_dead_codes(tok, x: torch.Tensor, hits: torch.Tensor, g: torch.Generator,
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


def _check_options(cfg: PriorConfig, loss_kind: str, lr_schedule: str, crop: Optional[int], crop_fraction: float,
                   minutes: Optional[float]) -> Tuple[Optional[int], Optional[Tuple[int, ...]]]:
    """Validate the tokenizer's training choices; (crop or None, the crops' scale schedule or None)."""
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
    return crop, train_pn


def _continue_shipped(tok, init_weights: str, info: Dict) -> None:
    """Load a shipped prior's tokenizer into ``tok`` (``--init-weights``) and record it in ``info``."""
    from ..prior.loading import load_prior
    src = load_prior(init_weights)  # verifies the checksums
    tok.load_state_dict(continuation_state(src.tokenizer.state_dict(), tok.state_dict()))
    info.update(init_weights=init_weights,
                init_steps=int(src.metadata.get("metrics", {}).get("tokenizer", {}).get("steps", 0)))


def _check_resumed(ckpt_path: Path, ck: Dict, info: Dict) -> None:
    """Refuse to resume a checkpoint trained with other choices; a resumed continuation keeps its origin."""
    for key in RECORDED:
        if key in ck and ck[key] != info.get(key):
            raise ValueError(f"{ckpt_path} was trained with {key}={ck[key]!r}, not {info.get(key)!r}: resume it "
                             "with the options it started with, or give another --out")
    info.update({k: v for k, v in ck.items() if k in ("init_weights", "init_steps")})


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
    crop, train_pn = _check_options(cfg, loss_kind, lr_schedule, crop, crop_fraction, minutes)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "tokenizer_ckpt.pt"
    torch.manual_seed(seed)
    dev = torch.device(device)
    tok = build_prior(cfg).tokenizer
    info = {**run_info(dev, batch, lr), "seed": seed, "loss": loss_kind, "lr_schedule": lr_schedule, "crop": crop,
            **({"crop_fraction": crop_fraction} if crop and crop_fraction < 1 else {})}
    if init_weights and not ckpt_path.exists():
        _continue_shipped(tok, init_weights, info)
    tok = tok.to(dev).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    step, elapsed0, ck = resume_checkpoint(ckpt_path, opt, tok)
    _check_resumed(ckpt_path, ck, info)
    if step >= steps:
        return ckpt_path
    images, _ = load_train_images(shards, limit, dataset=training_data(cfg.name))
    log = CsvLog(out / "tokenizer_log.csv", LOG_FIELDS, step)
    t0 = time.time()
    hits_window = torch.zeros(cfg.tokenizer.vocab_size, device=dev)
    bar = tqdm(total=steps, initial=step, desc="tokenizer", unit="step")
    budget = WallBudget(minutes, step, "tokenizer")
    while step < steps:
        steps = budget.steps(step, steps)
        bar.total = steps
        g = step_generator(seed, step)  # on the CPU: the same draws on any device
        x = flipped(images, batch_indices(len(images), step, batch, seed), g)
        pn = train_pn if bool(crop) and step < crop_fraction * steps else None  # the crops' schedule
        if pn is not None:
            x = random_crops(x, crop, cfg.tokenizer.downsample, g)
        x = x.to(dev)
        set_lr(opt, lr_at(step, steps, lr, warmup=min(100, steps // 10 + 1),
                          final_frac=1.0 if lr_schedule == "constant" else 0.1))
        loss, l1, vq_loss, rec, hits = _tokenizer_step(tok, opt, x, pn, loss_kind, dev, bf16)
        hits_window += torch.stack(hits).sum(0).float()
        step += 1
        used = ""
        if step % restart_every == 0:
            restart_dead_codes(tok, x, hits_window, g, pn)
            used = int((hits_window > 0).sum())
            hits_window.zero_()
        if step % 10 == 0 or step == steps:
            with torch.no_grad():
                psnr = float(psnr_batch((rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2).mean())
            log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1), lr=f"{opt.param_groups[0]['lr']:.2e}",
                      loss=f"{loss.item():.4f}", l1=f"{l1.item():.4f}", vq=f"{vq_loss.item():.4f}", psnr=f"{psnr:.2f}",
                      codes_used=used)
            bar.set_postfix(loss=f"{loss.item():.3f}", psnr=f"{psnr:.1f}")
        bar.update(1)
        if step % ckpt_every == 0 or step == steps:
            atomic_torch_save({"model": tok.state_dict(), "opt": opt.state_dict(), "step": step,
                               "elapsed": elapsed0 + time.time() - t0, "config": cfg.to_dict(), **info}, ckpt_path)
    bar.close()
    return ckpt_path


def _tokenizer_step(tok, opt, x: torch.Tensor, patch_nums, loss_kind: str, dev: torch.device, bf16: bool) -> tuple:
    """One optimiser step on the batch ``x``; (loss, L1, VQ loss, reconstruction, per-scale code hits)."""
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        rec, vq_loss, hits = tok(x, patch_nums)
    rec = rec.float()
    l1 = (rec - x).abs().mean()
    l2 = F.mse_loss(rec, x)
    loss = {"l1+l2": l1 + l2, "l2": l2, "l1": l1}[loss_kind] + vq_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, l1, vq_loss, rec, hits
