"""Stage ``diffusion``: the embedded diffusion prior (tiny64-diffusion) on Tiny ImageNet, 64 px, CPU.

    python -m varlib.training diffusion --out runs/diffusion64 --steps 2600            # train (resumable)
    python -m varlib.training diffusion --out runs/diffusion64 --steps 2600 --export   # ... then ship it
    python -m varlib.training diffusion --benchmark 3 --threads 1                      # time 3 steps only

The conventions of the VAR stages: seeded; the batch order comes from
:func:`varlib.training.common.batch_indices` and the flips, timesteps and noise of step ``k`` from a
generator seeded by ``(seed, k)``, so a resumed run sees exactly the batches of an uninterrupted one;
``ckpt.pt`` (weights, EMA weights, optimiser state, step, wall time) is written atomically every
``--ckpt-every`` steps and at the end; a progress bar; a CSV log ``log.csv``; bf16 autocast on the CPU.
The learning rate warms up linearly for ``--warmup`` steps and then stays constant (as in DDPM), so
that it never depends on the total number of steps and a run can be extended by re-running with a
larger ``--steps``. ``--export`` writes the EMA weights in fp16 safetensors (<= 25 MB) with config,
model card and SHA256SUMS to ``varlib/weights/tiny64-diffusion`` (or ``--dest``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..diffusion.model import (DiffusionConfig, DiffusionPrior, PACKAGE_WEIGHTS, load_diffusion_prior,
                               named_diffusion_config, save_diffusion_prior)
from ..io import atomic_torch_save
from .common import CsvLog, batch_indices, flipped, load_train_images, step_generator, training_data

CKPT = "ckpt.pt"
LOG_FIELDS = ["step", "elapsed_s", "lr", "loss", "images_per_s"]


def lr_warmup_constant(step: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant: independent of the run's length."""
    return base * min(1.0, (step + 1) / max(1, warmup))


def make_batch(images: torch.Tensor, step: int, batch: int, seed: int, num_steps: int):
    """(x0 in [-1, 1] with random horizontal flips, integer timesteps, noise) of ``step``; depends only
    on (images, step, batch, seed)."""
    idx = batch_indices(len(images), step, batch, seed)
    g = step_generator(seed, step)
    x = flipped(images, idx, g)
    t = torch.randint(0, num_steps, (len(idx),), generator=g)
    noise = torch.randn(x.shape, generator=g)
    return x, t, noise


def train_step(prior: DiffusionPrior, opt, x0, t, noise, lr: float, bf16: bool, clip: float = 1.0) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    x_t = prior.schedule.q_sample(x0, t, noise)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        eps = prior.net(x_t, t.float())
    loss = F.mse_loss(eps.float(), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(prior.net.parameters(), clip)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with the usual warm-up ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


def _resume(ckpt_path: Path, cfg: DiffusionConfig, prior: DiffusionPrior, ema, opt) -> tuple:
    """(step, elapsed seconds) of ``ckpt_path``, loading weights, EMA weights and optimiser state; (0, 0) if none."""
    if not ckpt_path.exists():
        return 0, 0.0
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if ck["config"] != cfg.to_dict():
        raise ValueError(f"{ckpt_path} was written for another configuration ({ck['config']['name']}); "
                         "use another --out or the same --config")
    prior.net.load_state_dict(ck["model"])
    ema.load_state_dict(ck["ema"])
    opt.load_state_dict(ck["opt"])
    return ck["step"], ck.get("elapsed", 0.0)


def _training_images(images, dataset: str, shards, limit, batch: int) -> tuple:
    """(uint8 training images, how the model card names them)."""
    if images is None:
        images, _ = load_train_images(shards, limit, dataset=dataset)
        where = ("celeba-train (files 000001-009000, 74x74 face crop to 64 px)" if dataset == "celeba" else
                 f"tinyimagenet-train shards {','.join(str(v) for v in (shards or [0, 1, 2]))}")
        data_desc = where + (f", first {limit} images" if limit else "") + f" ({len(images)} images)"
    else:
        data_desc = f"{len(images)} images given in memory"
    if len(images) < batch:
        raise ValueError(f"{len(images)} training images for a batch of {batch}")
    return images, data_desc


def train(out: Path, cfg: DiffusionConfig, steps: int, batch: int = 32, lr: float = 2e-4, seed: int = 0,
          images: Optional[torch.Tensor] = None, shards: Optional[List[int]] = None, limit: Optional[int] = None,
          ckpt_every: int = 200, warmup: int = 200, ema_decay: float = 0.999, bf16: bool = True,
          log_every: int = 10, progress: bool = True, init_weights: Optional[str] = None) -> Path:
    """Train (or resume) to ``steps`` steps in ``out``; returns the checkpoint path.

    ``images``: uint8 (N, 3, H, W) training images; by default the Tiny ImageNet training split
    (``shards``/``limit`` as in :func:`varlib.training.common.load_train_images`), or the CelebA training
    faces for a face configuration. ``init_weights``: start from a shipped diffusion prior of the same
    network (for example ``tiny64-diffusion``) instead of random weights; its EMA starts there too.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CKPT
    torch.manual_seed(seed)
    prior = DiffusionPrior(cfg).train()
    ema = copy.deepcopy(prior.net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(prior.net.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    step, elapsed0 = _resume(ckpt_path, cfg, prior, ema, opt)
    if init_weights and step == 0:
        start = load_diffusion_prior(init_weights).net.state_dict()
        prior.net.load_state_dict(start)
        ema.load_state_dict(start)
    if step >= steps:
        return ckpt_path
    images, data_desc = _training_images(images, training_data(cfg.name), shards, limit, batch)
    hparams = dict(batch=batch, lr=lr, seed=seed, warmup=warmup, ema_decay=ema_decay, bf16=bf16, data=data_desc,
                   shards=shards, limit=limit, init_weights=init_weights)
    log = CsvLog(out / "log.csv", LOG_FIELDS, step)
    t0 = time.time()
    bar = tqdm(total=steps, initial=step, desc="diffusion", unit="step", disable=not progress)
    while step < steps:
        ts = time.time()
        x0, t, noise = make_batch(images, step, batch, seed, cfg.schedule.num_steps)
        torch.manual_seed(seed * 7919 + step)  # dropout draws, if any
        cur_lr = lr_warmup_constant(step, lr, warmup)
        loss = train_step(prior, opt, x0, t, noise, cur_lr, bf16)
        ema_update(ema, prior.net, ema_decay_at(step, ema_decay))
        step += 1
        if step % log_every == 0 or step == steps:
            log.write(step=step, elapsed_s=round(elapsed0 + time.time() - t0, 1), lr=f"{cur_lr:.2e}",
                      loss=f"{loss:.4f}", images_per_s=f"{batch / max(time.time() - ts, 1e-9):.2f}")
            bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)
        if step % ckpt_every == 0 or step == steps:
            atomic_torch_save({"model": prior.net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                               "step": step, "elapsed": elapsed0 + time.time() - t0, "config": cfg.to_dict(),
                               "hparams": hparams}, ckpt_path)
    bar.close()
    return ckpt_path


def load_from_ckpt(out: Path, use_ema: bool = True) -> DiffusionPrior:
    ck = torch.load(Path(out) / CKPT, map_location="cpu", weights_only=False)
    prior = DiffusionPrior(DiffusionConfig.from_dict(ck["config"]))
    prior.net.load_state_dict(ck["ema" if use_ema else "model"])
    prior.metadata = {"step": ck["step"], "elapsed": ck.get("elapsed", 0.0), "hparams": ck.get("hparams", {})}
    return prior.eval()


def export(out: Path, dest: Path) -> Path:
    """Ship the EMA weights of ``out/ckpt.pt``: fp16 safetensors, config, model card, SHA256SUMS."""
    prior = load_from_ckpt(out)
    hp = prior.metadata.get("hparams", {})
    cmd = f"python -m varlib.training diffusion --out {out} --config {prior.config.name} --steps {prior.metadata['step']}"
    if hp.get("shards"):
        cmd += " --shards " + ",".join(str(v) for v in hp["shards"])
    if hp.get("limit"):
        cmd += f" --limit {hp['limit']}"
    if hp.get("warmup", 200) != 200:
        cmd += f" --warmup {hp['warmup']}"
    if hp.get("init_weights"):
        cmd += f" --init-weights {hp['init_weights']}"
    training = {"data": f"{hp.get('data', 'tinyimagenet-train')}, random horizontal flips",
                **({"initial weights": f"the shipped {hp['init_weights']}"} if hp.get("init_weights") else {}),
                "steps": prior.metadata["step"], "batch": hp.get("batch"), "optimiser":
                f"AdamW lr {hp.get('lr')} (linear warm-up {hp.get('warmup')} steps, then constant), grad clip 1.0",
                "EMA decay": hp.get("ema_decay"), "bf16 autocast": hp.get("bf16"), "seed": hp.get("seed"),
                "wall time (s)": round(prior.metadata.get("elapsed", 0.0), 1),
                "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
                "command": cmd + " --export"}
    return save_diffusion_prior(prior, dest, half=True, training=training)


def benchmark(cfg: DiffusionConfig, steps: int = 3, batch: int = 32, bf16: bool = True, seed: int = 0) -> Dict:
    """Seconds per training step on random 64 px images (the first, warm-up step is reported apart)."""
    torch.manual_seed(seed)
    prior = DiffusionPrior(cfg).train()
    opt = torch.optim.AdamW(prior.net.parameters(), lr=1e-4)
    S = cfg.image_size
    images = torch.randint(0, 256, (max(batch, 64), 3, S, S), dtype=torch.uint8)
    times, cpu = [], []
    for k in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        x0, t, noise = make_batch(images, k, batch, seed, cfg.schedule.num_steps)
        train_step(prior, opt, x0, t, noise, 1e-4, bf16)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    later, later_cpu = (times[1:], cpu[1:]) if steps > 1 else (times, cpu)
    return {"config": cfg.name, "parameters": prior.num_parameters, "batch": batch, "bf16": bf16,
            "threads": torch.get_num_threads(), "step_wall_s": [round(v, 2) for v in times],
            "step_cpu_s": [round(v, 2) for v in cpu],
            "wall_s_per_step": round(sum(later) / len(later), 2),
            "cpu_s_per_step": round(sum(later_cpu) / len(later_cpu), 2)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m varlib.training diffusion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/diffusion64", help="run directory (ckpt.pt, log.csv)")
    ap.add_argument("--config", default="tiny64-diffusion")
    ap.add_argument("--steps", type=int, default=None, help="train up to this many steps (resumes from ckpt.pt)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", default=None, help="comma-separated train shards (default 0,1,2)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--init-weights", default=None,
                    help="start from a shipped diffusion prior of the same network (e.g. tiny64-diffusion)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--export", action="store_true", help="export the EMA weights after training")
    ap.add_argument("--dest", default=None, help="export directory (default varlib/weights/<config>)")
    ap.add_argument("--benchmark", type=int, default=None, metavar="K",
                    help="only time K training steps on random images and print JSON")
    return ap


def main(argv=None) -> None:
    """``python -m varlib.training diffusion ...`` (``argv``: the options after ``diffusion``)."""
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = named_diffusion_config(a.config)
    if a.benchmark:
        print(json.dumps(benchmark(cfg, a.benchmark, a.batch, not a.no_bf16, a.seed)))
        return
    out = Path(a.out)
    if a.steps is not None:
        shards = [int(s) for s in a.shards.split(",")] if a.shards else None
        train(out, cfg, a.steps, a.batch, a.lr, a.seed, shards=shards, limit=a.limit, ckpt_every=a.ckpt_every,
              warmup=a.warmup, ema_decay=a.ema, bf16=not a.no_bf16, init_weights=a.init_weights)
    elif not a.export:
        ap.error("give --steps N (train), --export, or --benchmark K")
    if a.export:
        dest = Path(a.dest) if a.dest else PACKAGE_WEIGHTS / cfg.name
        print("exported to", export(out, dest))
