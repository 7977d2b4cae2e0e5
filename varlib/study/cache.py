"""The benchmark's case cache: keys, the ``cases.jsonl`` rows, the saved images, prior fingerprints.

A *case* is (image, task, method label, settings). Its key (:func:`case_key`) is a hash of the image
set and name, task, method, label, fully resolved settings (less solver options added later that
sit at their neutral value, :func:`key_settings`), network prior (as name plus a hash of its weight
files, :func:`prior_fingerprint`; empty for methods without one), seed, noise sigma, image size and
the operator's ``describe()``. Each finished case is appended at once to
``<run>/cache/cases.jsonl`` (write, flush, fsync; a shard of a sharded run appends to its own
``cases.shard-<i>-of-<n>.jsonl``, :mod:`varlib.study.shards`, and every such file counts): a rerun skips the cases whose key is there, so an
interrupted run resumes without duplicates, and a changed setting gets a new key. Reconstructions are
``cache/images/<key>.png``; ground truth and measurement are saved once per image (and task) as
``gt_*.png`` / ``meas_*.png``; with ``num_samples > 1`` the VAR std map is ``<key>_std.npy``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from ..io import atomic_path
from .methods import compact
from .shards import SHARD_FILE_RE

#: the columns of a case row, in the order of tables/cases.csv
CASE_COLUMNS = [
    "run", "key", "image_set", "image_index", "image", "class_label", "task", "method", "method_name",
    "settings", "settings_full", "psnr", "ssim", "haarpsi", "lpips", "seconds", "transformer_evals", "decoder_evals",
    "denoiser_evals", "network_evals", "peak_mem_mb", "mem_kind", "residual", "seed", "noise_sigma",
    "image_size", "prior", "prior_id", "device", "git_commit", "created", "recon_path", "gt_path", "measurement_path",
    "std_path",
]


# -- keys -----------------------------------------------------------------------------------------------
def case_key(**fields: Any) -> str:
    """Stable 16-hex-digit hash of the case's identifying fields."""
    return hashlib.sha256(compact(fields).encode()).hexdigest()[:16]


def key_settings(full: Mapping[str, Any]) -> Dict[str, Any]:
    """``full`` without the solver settings that sit at their neutral value (``solver.NEUTRAL_SETTINGS``):
    options added after caches were filled leave the earlier keys valid."""
    from ..solver import NEUTRAL_SETTINGS

    return {k: v for k, v in full.items() if not (k in NEUTRAL_SETTINGS and v == NEUTRAL_SETTINGS[k])}


def prior_fingerprint(name: str) -> str:
    """``name@<hash of the weights>`` for a prior stored locally (embedded or a folder), so that
    retrained weights give new case keys; the bare name for "test" and not-yet-downloaded official priors.

    A folder with ``SHA256SUMS`` is identified by that file (it lists the weight and config files), so
    that editing a model card or metrics file does not change the identity of the weights."""
    if name == "test":
        return name
    from ..prior.loading import PACKAGE_WEIGHTS  # the diffusion prior's weights live beside the VAR prior's

    path = Path(name) if Path(name).exists() else PACKAGE_WEIGHTS / name
    if not path.exists():
        return name
    if path.is_dir() and (path / "SHA256SUMS").is_file():
        files = [path / "SHA256SUMS"]
    else:
        files = sorted(f for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file())
    h = hashlib.sha256()  # one hash over names and contents: not varlib.io.sha256_file per file
    for f in files:
        h.update(f.name.encode())
        st = f.stat()
        if st.st_size <= 512 * 2 ** 20:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(2 ** 22), b""):
                    h.update(chunk)
        else:  # very large official checkpoints: size and modification time only
            h.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{name}@{h.hexdigest()[:12]}"


def gt_png_name(image_set: str, image: str, size: int) -> str:
    """File name of an image's ground truth in ``cache/images/`` (shared by its tasks and methods)."""
    return f"gt_{_image_stem(image_set, image, size)}.png"


def measurement_png_name(image_set: str, image: str, index: int, size: int, task: str,
                         operator: Mapping[str, Any]) -> str:
    """File name of an image's measurement on a task (``operator``: its ``describe()``); the noise is
    drawn from the image's index, so the index is part of the name."""
    mkey = case_key(image=image, index=index, operator=operator)
    return f"meas_{task}_{mkey}_{_image_stem(image_set, image, size)}.png"


def _image_stem(image_set: str, image: str, size: int) -> str:
    set_tag = hashlib.sha256(str(image_set).encode()).hexdigest()[:8]
    return f"{set_tag}_{case_key(image=image, size=size)}"


# -- the jsonl rows ----------------------------------------------------------------------------------------
def read_rows(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The rows of a ``cases.jsonl`` (none when it does not exist); a line cut short by a crash is skipped,
    so that case is simply recomputed."""
    path = Path(path)
    rows: List[Dict[str, Any]] = []
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def cache_files(run_dir: Union[str, os.PathLike]) -> List[Path]:
    """The case files of a run folder that exist: ``cache/cases.jsonl`` and every shard's file."""
    folder = Path(run_dir) / "cache"
    main = [folder / "cases.jsonl"] if (folder / "cases.jsonl").is_file() else []
    shards = sorted(f for f in folder.glob("cases.shard-*.jsonl") if SHARD_FILE_RE.match(f.name)) \
        if folder.is_dir() else []
    return main + shards


def read_run_rows(run_dir: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The rows of every case file of a run folder (:func:`cache_files`), ``cases.jsonl`` first."""
    return [r for f in cache_files(run_dir) for r in read_rows(f)]


def read_cache(run_dir: Union[str, os.PathLike]):
    """Every cached case row of a run folder (``<results>/<run>``, every case file, also rows of
    settings no longer in its params) as a DataFrame, the latest row per key (a key found in two
    shards' files counts once), columns in :data:`CASE_COLUMNS` order."""
    import pandas as pd

    rows = read_run_rows(run_dir)
    df = pd.DataFrame(rows, columns=CASE_COLUMNS if not rows else None)
    if len(df):
        df = df.drop_duplicates("key", keep="last").reset_index(drop=True)
        df = df[[c for c in CASE_COLUMNS if c in df.columns] + [c for c in df.columns if c not in CASE_COLUMNS]]
    return df


def append_row(path: Path, row: Mapping[str, Any]) -> None:
    """Append one case row to ``cases.jsonl`` and make it durable before the next case starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(o):
    import torch

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def number(v) -> Optional[float]:
    """``float(v)``, or None for None and NaN (empty in the tables)."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


# -- images and provenance ------------------------------------------------------------------------------------
def save_png(x, path: Path) -> None:
    """(3, H, W) tensor in [0, 1] -> 8-bit RGB PNG, atomically."""
    from PIL import Image

    arr = (x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def read_png(path: Path) -> np.ndarray:
    """A saved RGB PNG as a float64 (3, H, W) array in [0, 1] (the inverse of :func:`save_png`)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0


def save_npy(arr: np.ndarray, path: Path) -> None:
    """``np.save`` atomically (the std maps)."""
    with atomic_path(path) as tmp:
        np.save(tmp, arr)


def git_commit() -> str:
    """Short hash of the repository holding this package, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except Exception:
        return "unknown"
