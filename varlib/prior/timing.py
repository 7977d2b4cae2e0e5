"""CPU cost of sampling one image from a prior, with and without the KV cache.

Usage::

    OMP_NUM_THREADS=1 python -m varlib.prior.timing                    # var-d16 and tiny64
    OMP_NUM_THREADS=1 python -m varlib.prior.timing --models tiny64    # only the small one

Weights are random (``build_prior``): the cost of sampling does not depend on their values, so no
checkpoint is needed. Each row samples a single image (batch 1) under ``torch.no_grad()`` with
classifier-free guidance (so the transformer runs on a batch of 2) and decodes it with the tokenizer.
Reported: process CPU seconds (all threads together) and wall seconds, for one sample after one
untimed warm-up sample, plus the model build time.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List

import torch

from .loading import build_prior

DEFAULT_MODELS = ("var-d16", "tiny64")


def _clock():
    return time.process_time(), time.perf_counter()


def time_model(name: str, cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96, repeats: int = 1,
               warmup: bool = True, seed: int = 0) -> List[Dict]:
    c0, w0 = _clock()
    torch.manual_seed(seed)
    prior = build_prior(name)
    c1, w1 = _clock()
    n_params = sum(p.numel() for p in prior.transformer.parameters())
    rows = []
    for use_kv_cache in (True, False):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if warmup:
                prior.sample(class_labels=[1], cfg=cfg, top_k=top_k, top_p=top_p, generator=gen, use_kv_cache=use_kv_cache)
            cpu, wall = [], []
            for _ in range(repeats):
                c_a, w_a = _clock()
                img = prior.sample(class_labels=[1], cfg=cfg, top_k=top_k, top_p=top_p, generator=gen,
                                   use_kv_cache=use_kv_cache)
                c_b, w_b = _clock()
                cpu.append(c_b - c_a)
                wall.append(w_b - w_a)
        rows.append({"model": name, "image": f"{img.shape[-1]}px", "transformer_params_M": n_params / 1e6,
                     "kv_cache": "on" if use_kv_cache else "off", "cpu_s": min(cpu), "wall_s": min(wall),
                     "build_s": w1 - w0})
    return rows


def format_table(rows: List[Dict]) -> str:
    head = f"{'model':<10} {'image':>6} {'params(M)':>10} {'kv cache':>9} {'cpu s':>9} {'wall s':>9} {'build s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<10} {r['image']:>6} {r['transformer_params_M']:>10.1f} {r['kv_cache']:>9} "
                     f"{r['cpu_s']:>9.2f} {r['wall_s']:>9.2f} {r['build_s']:>8.1f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated prior names (default: %(default)s)")
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--top-k", type=int, default=900)
    ap.add_argument("--top-p", type=float, default=0.96)
    ap.add_argument("--repeats", type=int, default=1, help="timed samples per setting (the minimum is reported)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up sample")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); cfg={args.cfg}, top_k={args.top_k}, "
          f"top_p={args.top_p}; batch 1, random weights", flush=True)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += time_model(name, args.cfg, args.top_k, args.top_p, args.repeats, not args.no_warmup)
        for r in rows[-2:]:
            print(f"  {name}: kv cache {r['kv_cache']}: {r['cpu_s']:.2f} CPU s, {r['wall_s']:.2f} wall s", flush=True)
    print(format_table(rows))


if __name__ == "__main__":
    main()
