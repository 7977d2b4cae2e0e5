"""What every training stage shares: data loading and batch order, the learning-rate schedule, CSV
logs, wall-clock budgets, resuming from a checkpoint and what a checkpoint records about its run.

The batch of step ``k`` depends only on ``(seed, k)`` (:func:`batch_indices`), so a resumed run sees
the same batches as an uninterrupted one; :class:`CsvLog` drops rows logged past the checkpoint a
run resumes from.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..io import atomic_path

SHARD_IMAGES = 20200  # tinyimagenet-train images per tar shard (3 shards)
VAL_SLICE = 500  # first 500 tinyimagenet-val images (by index): the held-out slice for prior metrics


def resume_checkpoint(ckpt_path: Path, opt: torch.optim.Optimizer, model: Optional[torch.nn.Module] = None) -> tuple:
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
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([self.fields] + kept)

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.fields])


class WallBudget:
    """Fix a stage's step count from a wall-clock budget: the pace of the 50 steps after a 20-step
    warm-up (CUDA start, autotuning) decides how many steps fit. The count is printed, so ``--steps``
    with it reproduces the run."""

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


def run_info(dev: torch.device, batch: int, lr: float) -> Dict:
    """What a stage's checkpoint records about how it ran (the model card reports it)."""
    return {"batch": batch, "lr": lr, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__}


def lr_at(step: int, total: int, base: float, warmup: int, final_frac: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final_frac * base`` at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def psnr_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0,1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1 / mse)


#: The image sets a configuration trains on (``tinyimagenet`` unless listed here).
TRAINING_DATA = {"faces64": "celeba", "faces64-diffusion": "celeba"}
DATASETS = ("tinyimagenet", "celeba")


def training_data(config_name: str) -> str:
    """The dataset configuration ``config_name`` trains and is evaluated on: ``tinyimagenet`` or ``celeba``."""
    return TRAINING_DATA.get(config_name, "tinyimagenet")


def image_set_of(config_name: str, split: str) -> str:
    """The :func:`varlib.data.load_images` set of a configuration's ``split`` ("train" or "val"), e.g.
    ``celeba-val`` for faces64, ``tinyimagenet-train`` for tiny64."""
    return f"{training_data(config_name)}-{split}"


def read_split(dataset: str, split: str, shards: Optional[List[int]] = None, limit: Optional[int] = None,
               every: int = 1) -> tuple:
    """(uint8 images (N, 64, 64, 3), int64 labels (N,), names) of a ``dataset``'s ``split``: Tiny ImageNet
    (:func:`varlib.data.read_tinyimagenet`; ``shards`` and ``every`` apply to "train") or the CelebA faces
    (:func:`varlib.data.read_celeba`; one class, label 0; ``shards`` ignored)."""
    from ..data import read_celeba, read_tinyimagenet
    if dataset == "celeba":
        x, names = read_celeba(split, limit=limit, every=every)
        return x, np.zeros(len(x), dtype=np.int64), names
    if dataset == "tinyimagenet":
        if split == "train":
            return read_tinyimagenet("train", shards=shards, limit=limit, every=every)
        return read_tinyimagenet(split, limit=limit)
    raise ValueError(f"unknown training dataset {dataset!r}; use one of {', '.join(DATASETS)}")



def evenly_spaced(dataset: str, split: str, n: int, shards: Optional[List[int]] = None) -> tuple:
    """``n`` evenly spaced images of :func:`read_split`'s ``(dataset, split)``: (uint8 (n, 64, 64, 3),
    labels, names), the tuners' images."""
    x, y, names = read_split(dataset, split, shards=shards)
    idx = np.linspace(0, len(x) - 1, n).round().astype(int)
    return x[idx], y[idx], [names[i] for i in idx]

def _nchw(x: np.ndarray, y: np.ndarray) -> tuple:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


def load_train_images(shards: Optional[List[int]] = None, limit: Optional[int] = None, every: int = 1,
                      dataset: str = "tinyimagenet"):
    """(uint8 NCHW images, labels) of a training split: ``tinyimagenet-train`` (``shards``, ``limit``,
    ``every``: see :func:`varlib.data.read_tinyimagenet`) or, for ``dataset="celeba"``, the CelebA
    training faces (:func:`read_split`)."""
    return _nchw(*read_split(dataset, "train", shards, limit, every)[:2])


def load_val_images(n: int = VAL_SLICE, dataset: str = "tinyimagenet"):
    """(uint8 NCHW images, labels) of the first ``n`` held-out images: ``tinyimagenet-val``, or the
    held-out CelebA faces (009001 on, label 0) for ``dataset="celeba"``."""
    return _nchw(*read_split(dataset, "val", limit=n)[:2])


def batch_indices(n: int, step: int, batch: int, seed: int) -> np.ndarray:
    """Deterministic epoch-wise shuffling: the indices of ``step`` depend only on (seed, step)."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ValueError(f"batch {batch} is larger than the {n} training images or maps: pass a smaller --batch "
                         "or use more images (--limit/--every/--shards)")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng(seed * 100003 + epoch).permutation(n)
    return perm[k * batch:(k + 1) * batch]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of ``step``'s flips, crops and noise: the same draws on any device."""
    return torch.Generator().manual_seed(seed * 7919 + step)


def flipped(images: torch.Tensor, idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
    """``images[idx]`` (uint8) in [-1, 1], each horizontally flipped with probability 1/2 (draws from ``g``)."""
    x = images[idx].float().div(255)
    flip = torch.rand(len(idx), generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x) * 2 - 1
