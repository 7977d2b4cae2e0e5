"""Cost per image of sampling from a VAR prior (with and without the KV cache), of one VAR solve, and of
the DPS / DiffPIR baselines.

Usage::

    OMP_NUM_THREADS=1 python -m varlib.study.timing                    # var-d16 and tiny64 on the CPU
    OMP_NUM_THREADS=1 python -m varlib.study.timing --models tiny64    # only the small one
    python -m varlib.study.timing --device cuda --repeats 3 --solve sr4,gaussian_blur   # on a GPU, plus solver runs
    python -m varlib.study.timing --device cuda --models var-d16 --solve sr4 --diffusion sr4   # beside DPS/DiffPIR

Weights are random (``build_prior``): the cost of sampling does not depend on their values, so no
checkpoint is needed. Each row samples a single image (batch 1) under ``torch.no_grad()`` with
classifier-free guidance (so the transformer runs on a batch of 2) and decodes it with the tokenizer.
Reported: process CPU seconds (all threads together) and wall seconds, for one sample after one
untimed warm-up sample, plus the model build time. On a GPU the clock stops after the device has
finished (``torch.cuda.synchronize``) and peak GPU memory is reported. ``--solve`` also times
:func:`varlib.solve` (default settings, one image, batch 1) per task at the model's image size.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..prior import build_prior

DEFAULT_MODELS = ("var-d16", "tiny64")


def _clock(device: torch.device = torch.device("cpu")):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time(), time.perf_counter()


def _peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")


def _timed(run, dev: torch.device, repeats: int, warmup: bool) -> tuple:
    """``({"cpu_s", "wall_s", "peak_gpu_gb"}, the last result)`` of ``run()``: best of ``repeats`` after an
    optional untimed call; peak GPU memory over the timed calls only."""
    if warmup:
        run()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    cpu, wall = [], []
    for _ in range(repeats):
        c_a, w_a = _clock(dev)
        result = run()
        c_b, w_b = _clock(dev)
        cpu.append(c_b - c_a)
        wall.append(w_b - w_a)
    return {"cpu_s": min(cpu), "wall_s": min(wall), "peak_gpu_gb": _peak_gb(dev)}, result


def time_model(name: str, cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96, repeats: int = 1,
               warmup: bool = True, seed: int = 0, device: str = "cpu", solve_tasks: Sequence[str] = ()) -> List[Dict]:
    """Rows for prior ``name`` built with random weights: one sample (batch 1) with and without the KV
    cache, then one :func:`varlib.solve` (default settings) per task of ``solve_tasks``. Each row has
    ``cpu_s`` (process CPU seconds, all threads), ``wall_s``, ``peak_gpu_gb`` (NaN on the CPU) and
    ``build_s`` (building the model)."""
    dev = torch.device(device)
    c0, w0 = _clock(dev)
    torch.manual_seed(seed)
    prior = build_prior(name).to(dev)
    c1, w1 = _clock(dev)
    n_params = sum(p.numel() for p in prior.transformer.parameters())
    base = {"model": name, "image": f"{prior.image_size}px", "transformer_params_M": n_params / 1e6,
            "device": dev.type, "build_s": w1 - w0}

    rows = []
    for use_kv_cache in (True, False):
        gen = torch.Generator(device=dev).manual_seed(seed)
        with torch.no_grad():
            t, _ = _timed(lambda: prior.sample(class_labels=[1], cfg=cfg, top_k=top_k, top_p=top_p, generator=gen,
                                               use_kv_cache=use_kv_cache), dev, repeats, warmup)
        rows.append({**base, "run": "sample", "kv_cache": "on" if use_kv_cache else "off", **t})
    if solve_tasks:
        from ..operators import make_operator
        from ..solver import solve
        x = torch.rand(1, 3, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(seed))
        for task in solve_tasks:
            op = make_operator(task, prior.image_size, device=dev)
            y = op.measure(x.to(dev))
            t, _ = _timed(lambda: solve(y, op, prior), dev, repeats, warmup)
            rows.append({**base, "run": f"solve {task}", "kv_cache": "on", **t})
    return rows


def time_diffusion(image_size: int, tasks: Sequence[str], methods: Sequence[str] = ("diffpir", "dps"),
                   device: str = "cpu", repeats: int = 1, seed: int = 0, net: Optional[torch.nn.Module] = None,
                   **steps) -> List[Dict]:
    """Wall time of the diffusion baselines on one image (batch 1) at ``image_size``, with a random-weight
    network of the pretrained one's architecture (deepinv's DiffUNet at 256 px, ADMUNet at 64 px): the
    cost does not depend on the weights. ``steps``: e.g. ``num_steps=`` (DPS) or ``max_iter=`` (DiffPIR)
    to override the standard counts (for tests). One short untimed DiffPIR call warms up first; with
    repeats > 1, each method's first call is left untimed too."""
    import deepinv as dinv

    from .. import baselines
    from ..operators import make_operator

    dev = torch.device(device)
    torch.manual_seed(seed)
    conditional = False  # only the class-conditional ADM takes a label
    if net is not None:  # any deepinv-style denoiser net(x, sigma), e.g. for tests
        name = type(net).__name__
    elif image_size <= 64:
        net, name = dinv.models.ADMUNet(img_resolution=64, label_dim=1000, pretrained=None), "adm-imagenet64"
        conditional = True
    else:
        net, name = dinv.models.DiffUNet(large_model=True, pretrained=None), "diffunet-256"
    net = net.eval().to(dev)
    den = baselines.EvalCounter(net, conditional=conditional)
    n_params = sum(p.numel() for p in net.parameters())
    x = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    rows = []
    warm_op = make_operator(tasks[0], image_size, device=dev)  # first-call costs (cuDNN set-up) left out
    baselines.diffpir(warm_op.measure(x.to(dev)), warm_op, denoiser=den, max_iter=2, device=dev)
    for task in tasks:
        op = make_operator(task, image_size, device=dev)
        y = op.measure(x.to(dev))
        for method in methods:
            fn = baselines.BASELINES[method]
            kw = {k: v for k, v in steps.items() if k in ({"num_steps"} if method == "dps" else {"max_iter"})}
            t, res = _timed(lambda: fn(y, op, denoiser=den, seed=seed, device=dev, **kw), dev, repeats,
                            warmup=repeats > 1)
            rows.append({"model": name, "image": f"{image_size}px", "transformer_params_M": n_params / 1e6,
                         "device": dev.type, "run": f"{method} {task} ({res.denoiser_evals} NFE)", "kv_cache": "-",
                         **t, "build_s": 0.0})
            print(f"  {name}: {rows[-1]['run']}: {rows[-1]['wall_s']:.2f} wall s", flush=True)  # a cut-off run keeps it
    return rows


def format_table(rows: List[Dict]) -> str:
    """The rows as a fixed-width text table."""
    head = (f"{'model':<10} {'image':>6} {'params(M)':>10} {'device':>6} {'run':<22} {'kv cache':>9} {'cpu s':>9} "
            f"{'wall s':>9} {'peak GB':>8} {'build s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<10} {r['image']:>6} {r['transformer_params_M']:>10.1f} {r['device']:>6} {r['run']:<22} "
                     f"{r['kv_cache']:>9} {r['cpu_s']:>9.2f} {r['wall_s']:>9.3f} {r['peak_gpu_gb']:>8.2f} {r['build_s']:>8.1f}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m varlib.study.timing [--models ...] [--solve TASKS] [--diffusion TASKS]`` (``varlib timing``)."""
    ap = argparse.ArgumentParser(prog="python -m varlib.study.timing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated prior names (default: %(default)s)")
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--top-k", type=int, default=900)
    ap.add_argument("--top-p", type=float, default=0.96)
    ap.add_argument("--repeats", type=int, default=1, help="timed samples per setting (the minimum is reported)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up sample")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--solve", default="", help="comma-separated tasks to time varlib.solve on (default: none)")
    ap.add_argument("--diffusion", default="", help="comma-separated tasks to time DiffPIR and DPS on (random-weight "
                                                    "network of the pretrained one's size, at --diffusion-size px)")
    ap.add_argument("--diffusion-size", type=int, default=256)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} CPU thread(s)"
    print(f"torch {torch.__version__}, {where}; cfg={args.cfg}, top_k={args.top_k}, "
          f"top_p={args.top_p}; batch 1, random weights", flush=True)
    tasks = [t.strip() for t in args.solve.split(",") if t.strip()]
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        new = time_model(name, args.cfg, args.top_k, args.top_p, args.repeats, not args.no_warmup,
                         device=args.device, solve_tasks=tasks)
        for r in new:
            print(f"  {name}: {r['run']} (kv cache {r['kv_cache']}): {r['cpu_s']:.2f} CPU s, {r['wall_s']:.3f} wall s",
                  flush=True)
        rows += new
    dtasks = [t.strip() for t in args.diffusion.split(",") if t.strip()]
    if dtasks:
        rows += time_diffusion(args.diffusion_size, dtasks, device=args.device, repeats=args.repeats)
    print(format_table(rows))


if __name__ == "__main__":
    main()
