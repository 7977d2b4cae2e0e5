"""Image sets as (N, 3, H, W) float tensors in [0, 1], in a deterministic order."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image


def data_dir() -> Path:
    """The data directory: ``$VARLIB_DATA_DIR``, else ``../shared/data`` beside the project if present."""
    env = os.environ.get("VARLIB_DATA_DIR")
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return guess


def _tiny_dir() -> Path:
    d = data_dir() / "tinyimagenet"
    if not (d / "wnids.txt").exists():
        raise FileNotFoundError(
            f"Tiny ImageNet not found in {d}. Put train-000.tar, train-001.tar, train-002.tar, val.tar, wnids.txt "
            "and words.txt there (see the README, section Data) and set VARLIB_DATA_DIR to their parent folder.")
    return d


def tinyimagenet_classes() -> List[str]:
    """The WNIDs in label order (label k = line k of wnids.txt)."""
    return (_tiny_dir() / "wnids.txt").read_text().split()


def _decode(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.uint8)


def read_tinyimagenet(split: str, shards: Optional[List[int]] = None, limit: Optional[int] = None
                      ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read Tiny ImageNet straight from its tar files.

    Returns (uint8 images (N, 64, 64, 3), int64 labels (N,), member names). ``split`` is
    ``"train"`` (shards 0..2, members sorted by name) or ``"val"`` (sorted by image index).
    """
    d = _tiny_dir()
    wnid_to_label = {w: i for i, w in enumerate(tinyimagenet_classes())}
    images, labels, names = [], [], []
    if split == "train":
        for s in (shards if shards is not None else [0, 1, 2]):
            with tarfile.open(d / f"train-{s:03d}.tar") as tf:
                members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".jpeg")),
                                 key=lambda m: m.name)
                for m in members:
                    if limit is not None and len(images) >= limit:
                        break
                    wnid = Path(m.name).parent.name
                    images.append(_decode(tf.extractfile(m).read()))
                    labels.append(wnid_to_label[wnid])
                    names.append(m.name)
    elif split == "val":
        with tarfile.open(d / "val.tar") as tf:
            ann = {}
            for m in tf.getmembers():
                if m.name.endswith("val_annotations.txt"):
                    for line in tf.extractfile(m).read().decode().splitlines():
                        parts = line.split("\t")
                        if len(parts) >= 2:
                            ann[parts[0]] = parts[1]
            members = [m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".jpeg")]
            members.sort(key=lambda m: int(Path(m.name).stem.split("_")[-1]))
            for m in members:
                if limit is not None and len(images) >= limit:
                    break
                images.append(_decode(tf.extractfile(m).read()))
                labels.append(wnid_to_label[ann[Path(m.name).name]])
                names.append(Path(m.name).name)
    else:
        raise ValueError(f"unknown Tiny ImageNet split {split!r}; use 'train' or 'val'")
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(255)
