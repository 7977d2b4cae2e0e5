"""Where a solve spends its time: the named stages of the VAR solver and of the PnP loop, profiled.

    python -m varlib.study.profile                              # tiny64, var / pnp-bm3d / pnp-unet, 5 photos
    python -m varlib.study.profile --methods var --tasks sr4 --images 2

The solver marks its stages with ``torch.profiler.record_function`` (``var.encode``: the initial
estimate's tokens; ``var.transformer``: the next-scale logits; ``var.guidance``: the measurement
gradient on them, a decoder forward and backward per step; ``var.track_residual``: decoding after each
scale to record the residual; ``var.latent_dc`` and ``var.pixel_dc``: the two data-consistency steps;
``var.decode``: the final decode), and the PnP loop its data step (``pnp.data_step``, conjugate
gradients) and denoiser (``pnp.denoiser``). Per method and task this runs one untimed warm-up call, one
plain timed call (``wall_s``) and one call under the profiler, and reports each stage's inclusive CPU
time as a share of the profiled call (the profiler's own overhead falls on the small operations, so the
shares are the finding, ``wall_s`` the time). Writes ``results/runtime/tables/profile.{csv,md,tex}``.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Optional, Sequence

import pandas as pd
import torch

STAGES = ("var.encode", "var.transformer", "var.guidance", "var.track_residual", "var.latent_dc", "var.decode",
          "var.pixel_dc", "pnp.data_step", "pnp.denoiser")
PROFILED_METHODS = ("var", "pnp-bm3d", "pnp-unet")


def stage_times(run: Callable[[], object]) -> Dict[str, float]:
    """``{"total": profiled seconds, <stage>: inclusive CPU seconds}`` of one call of ``run``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run()
        total = time.perf_counter() - t0
    out = {"total": total}
    for ev in prof.key_averages():
        if ev.key in STAGES:
            out[ev.key] = out.get(ev.key, 0.0) + ev.cpu_time_total / 1e6
    return out


def _runner(method: str, y, op, prior, dprior):
    from .. import baselines
    from ..diffusion.solvers import pnp_unet_embedded
    from ..solver import solve

    if method == "var":
        return lambda: solve(y, op, prior, "default")
    if method == "pnp-bm3d":
        return lambda: [baselines.pnp_bm3d(y[i:i + 1], op) for i in range(y.shape[0])]
    if method == "pnp-unet":
        return lambda: pnp_unet_embedded(y, op, prior=dprior)
    raise ValueError(f"profiling knows {', '.join(PROFILED_METHODS)}, not {method!r}")


def profile_methods(methods: Sequence[str] = PROFILED_METHODS, tasks: Optional[Sequence[str]] = None,
                    prior: str = "tiny64", diffusion_prior: str = "tiny64-diffusion", image_set: str = "embedded",
                    n_images: int = 5, seed: int = 0) -> pd.DataFrame:
    """One row per (method, task, stage): seconds and share of the profiled call, and the plain call's
    wall time per image (``wall_s_per_image``). The batch is the first ``n_images`` of ``image_set``."""
    from tqdm.auto import tqdm

    from ..data import load_images
    from ..diffusion.model import load_diffusion_prior
    from ..operators import TASKS, make_operator
    from ..prior import load_prior

    tasks = list(tasks or TASKS)
    var_prior = load_prior(prior) if "var" in methods else None
    dprior = load_diffusion_prior(diffusion_prior) if "pnp-unet" in methods else None
    size = var_prior.image_size if var_prior is not None else 64
    x = load_images(image_set, size, limit=n_images)
    rows: List[Dict] = []
    for method in tqdm(list(methods), desc="profile"):
        for task in tasks:
            op = make_operator(task, size, seed=seed)
            y = op.measure(x, indices=range(x.shape[0]))
            run = _runner(method, y, op, var_prior, dprior)
            run()  # warm-up: first-call allocations and lazy imports
            t0 = time.perf_counter()
            run()
            wall = (time.perf_counter() - t0) / x.shape[0]
            times = stage_times(run)
            total = times.pop("total")
            for stage, sec in [*times.items(), ("other", max(total - sum(times.values()), 0.0))]:
                rows.append({"method": method, "task": task, "stage": stage, "seconds": sec, "share": sec / total,
                             "wall_s_per_image": wall, "images": x.shape[0]})
    return pd.DataFrame(rows)


def profile_table(rows: pd.DataFrame, run: str = "runtime") -> pd.DataFrame:
    """Write ``results/<run>/tables/profile`` (share of each stage per method, mean over tasks, and the
    wall time per image) and return its display."""
    from .tables import save_table

    share = rows.groupby(["method", "stage"], sort=False)["share"].mean().unstack("stage").fillna(0.0)
    wall = rows.groupby("method", sort=False)["wall_s_per_image"].mean()
    display = share.map(lambda v: f"{100 * v:.0f} %" if v >= 0.005 else "–")
    display.insert(0, "s / image", wall.map("{:.2f}".format))
    n = int(rows["images"].iloc[0])
    cap = (f"Where the time goes: share of each named stage in one profiled call (mean over "
           f"{rows['task'].nunique()} tasks, batch of {n} images; `varlib.study.profile`), and the plain "
           "call's wall time per image. Stages: docstring of varlib/study/profile.py.")
    save_table(rows, "profile", run, display=display, caption=cap)
    return display


def main(argv: Optional[List[str]] = None) -> None:
    from ..operators import TASKS

    ap = argparse.ArgumentParser(prog="python -m varlib.study.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(PROFILED_METHODS))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--prior", default="tiny64")
    ap.add_argument("--diffusion-prior", default="tiny64-diffusion")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--run", default="runtime", help="results/<run>/tables/ receives profile.*")
    a = ap.parse_args(argv)
    bad = set(a.methods.split(",")) - set(PROFILED_METHODS)
    if bad:
        ap.error(f"unknown --methods {sorted(bad)}; choose from {', '.join(PROFILED_METHODS)}")
    rows = profile_methods(a.methods.split(","), a.tasks.split(","), a.prior, a.diffusion_prior, n_images=a.images)
    print(profile_table(rows, a.run).to_markdown())


if __name__ == "__main__":
    main()
