"""Stage ``tokenize``: the token maps of a split, and a small copy of a run for training elsewhere (``pack``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..io import atomic_path, atomic_torch_save
from ..prior import PriorConfig
from .common import VAL_SLICE, load_train_images, load_val_images, training_data
from .rundir import load_tokenizer_from_ckpt


@torch.no_grad()
def tokenize_split(out: Path, cfg: PriorConfig, split: str, shards=None, limit=None, batch: int = 256,
                   device: str = "cpu", every: int = 1) -> Path:
    """Token maps of a split -> ``tokens_{split}.npz`` (uint16 (N, L) and labels); kept if it exists."""
    path = out / f"tokens_{split}.npz"
    if path.exists():
        return path
    dev = torch.device(device)
    prior = load_tokenizer_from_ckpt(out, cfg).to(dev)
    dataset = training_data(cfg.name)
    images, labels = (load_train_images(shards, limit, every, dataset) if split == "train"
                      else load_val_images(limit or VAL_SLICE, dataset))
    rows = []
    for i in tqdm(range(0, len(images), batch), desc=f"tokenize {split}", unit="batch"):
        x = (images[i:i + batch].float().div(255) * 2 - 1).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            f = prior.tokenizer.encode_latent(x)
        toks = prior.tokenizer.quantize.f_to_tokens(f.float())
        rows.append(torch.cat([t.flatten(1) for t in toks], 1).to(torch.int32).cpu().numpy().astype(np.uint16))
    with atomic_path(path) as tmp:
        np.savez(tmp, tokens=np.concatenate(rows), labels=labels.numpy(), patch_nums=np.asarray(cfg.tokenizer.patch_nums))
    return path


def load_tokens(path: Path) -> tuple:
    """(tokens (N, L) int64, labels (N,) int64) of a ``tokens_*.npz``."""
    data = np.load(path)
    return torch.from_numpy(data["tokens"].astype(np.int64)), torch.from_numpy(data["labels"].astype(np.int64))


def split_tokens(flat: torch.Tensor, patch_nums: Sequence[int]) -> List[torch.Tensor]:
    """(B, L) token sequence -> list of (B, pn, pn) maps."""
    out, cur = [], 0
    for pn in patch_nums:
        out.append(flat[:, cur:cur + pn * pn].reshape(-1, pn, pn))
        cur += pn * pn
    return out


def pack_for_transfer(out: Path, dest: Path) -> Path:
    """Copy what the transformer stage needs, as small as it goes, to ``dest``: the tokenizer (and
    fine-tuned decoder) checkpoints without optimizer state, and the token maps compressed. For
    training the transformer on another machine (a transfer of at most 64 MiB)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_ckpt.pt", "decoder_ckpt.pt"):
        if (out / name).exists():
            ck = torch.load(out / name, map_location="cpu", weights_only=False)
            ck["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}  # shipped as fp16
            atomic_torch_save({k: v for k, v in ck.items() if k != "opt"}, dest / name)
    if not (out / "tokens_train.npz").exists():  # a tokenizer-only run (e.g. trained on a GPU, tokenised later)
        return dest
    data = np.load(out / "tokens_train.npz")
    with atomic_path(dest / "tokens_train.npz") as tmp:
        np.savez_compressed(tmp, **{k: data[k] for k in data.files})
    return dest
