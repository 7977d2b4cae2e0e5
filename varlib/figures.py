"""Figures. ``python -m varlib.figures operators --out results/figures/operators.png``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .data import load_images  # noqa: E402
from .metrics import psnr  # noqa: E402
from .operators import DEFAULT_NOISE_SIGMA, TASKS, make_operator  # noqa: E402

from .study import TASK_TITLES  # noqa: E402  (one list of task titles for every figure)


def _img(t: torch.Tensor) -> np.ndarray:
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _kernel_panel(ax, op) -> str:
    """Draw the kernel / mask of ``op`` on ``ax``; returns a caption."""
    d = op.describe()
    if op.task.startswith("inpaint"):
        ax.imshow(op.observed_mask[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        extra = ""
        if op.task == "inpaint_box":
            extra = f"\nbox {d['box_size']}px at ({d['box_top']},{d['box_left']})"
        return f"mask (white = observed)\n{100 * d['missing_fraction']:.0f}% missing{extra}"
    if op.task == "nonuniform_blur":
        ks = op.kernels.cpu().numpy()
        k = ks.shape[-1]
        gy, gx = op.grid
        sep = max(1, k // 10)
        canvas = np.full((gy * k + (gy - 1) * sep, gx * k + (gx - 1) * sep), np.nan)
        for i in range(gy):
            for j in range(gx):
                kk = ks[i * gx + j]
                canvas[i * (k + sep):i * (k + sep) + k, j * (k + sep):j * (k + sep) + k] = kk / kk.max()
        cmap = plt.get_cmap("inferno").copy()
        cmap.set_bad("white")
        ax.imshow(canvas, cmap=cmap, interpolation="nearest")
        return f"{ks.shape[0]} kernels {k}x{k} (corners)\nsmooth partition of unity"
    if op.task == "sr4":
        f = op.filter.cpu().numpy()
        v = np.abs(f).max()
        ax.imshow(f, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        return f"bicubic AA filter {f.shape[0]}x{f.shape[1]}\nstride 4"
    k = op.kernel.cpu().numpy()
    ax.imshow(k / k.max(), cmap="inferno", interpolation="nearest")
    if op.task == "gaussian_blur":
        return f"kernel {k.shape[0]}x{k.shape[1]}, std {d['kernel_std']:g}"
    return f"kernel {k.shape[0]}x{k.shape[1]}, intensity {d['motion_intensity']:g}"


def operators_figure(path, image_size: int = 256, seed: int = 0, image: str = "astronaut",
                     noise_sigma: float = DEFAULT_NOISE_SIGMA, dpi: int = 150) -> Path:
    """Ground truth, then per task: measurement y, initial estimate, and the kernel or mask.

    Saves ``path`` (PNG) and the same figure as PDF next to it; returns the PNG path.
    """
    from .data import EMBEDDED_IMAGES
    idx = EMBEDDED_IMAGES.index(image)
    x = load_images("embedded", image_size, limit=idx + 1)[idx:idx + 1].double()
    ncol = len(TASKS) + 1
    fig, axes = plt.subplots(3, ncol, figsize=(2.05 * ncol, 2.05 * 3 + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(_img(x[0]), interpolation="nearest")
    axes[0, 0].set_title("ground truth", fontsize=10, fontweight="bold")
    axes[0, 0].set_xlabel(f"{image}, {image_size}x{image_size}", fontsize=8)
    for r in (1, 2):
        axes[r, 0].axis("off")
    axes[1, 0].text(0.5, 0.5, f"seed {seed}\nnoise sigma {noise_sigma:g}\non [0, 1] scale\n(= {2 * noise_sigma:g} on [-1, 1])",
                    ha="center", va="center", fontsize=8, transform=axes[1, 0].transAxes)
    for c, task in enumerate(TASKS, start=1):
        op = make_operator(task, image_size, seed=seed, noise_sigma=noise_sigma)
        y = op.measure(x)
        x0 = op.init_estimate(y)
        p_y = psnr(y, x)[0] if y.shape == x.shape else None
        p_0 = psnr(x0, x)[0]
        ax = axes[0, c]
        ax.imshow(_img(y[0]), interpolation="nearest")
        ax.set_title(TASK_TITLES[task], fontsize=10, fontweight="bold")
        label = f"y {tuple(y.shape[-2:])[0]}x{tuple(y.shape[-2:])[1]}"
        ax.set_xlabel(label + (f", {p_y:.1f} dB" if p_y is not None else ""), fontsize=8)
        ax = axes[1, c]
        ax.imshow(_img(x0[0]), interpolation="nearest")
        init = {"inpaint_box": "hole filling", "inpaint_random": "hole filling", "sr4": "bicubic up-sampling"}.get(task, "Wiener")
        ax.set_xlabel(f"init: {init}, {p_0:.1f} dB", fontsize=8)
        axes[2, c].set_xlabel(_kernel_panel(axes[2, c], op), fontsize=7.5)
    axes[0, 1].set_ylabel("measurement y", fontsize=10)
    axes[1, 1].set_ylabel("initial estimate", fontsize=10)
    axes[2, 1].set_ylabel("kernel / mask", fontsize=10)
    fig.suptitle(f"Measurement operators at {image_size} px (PSNR against the ground truth)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def main(argv: Optional[list] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m varlib.figures", description=__doc__)
    sub = ap.add_subparsers(dest="figure", required=True)
    p = sub.add_parser("operators", help="the six degradations: measurement, initial estimate, kernel/mask")
    p.add_argument("--out", default="results/figures/operators.png")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", default="astronaut")
    p.add_argument("--noise-sigma", type=float, default=DEFAULT_NOISE_SIGMA)
    a = ap.parse_args(argv)
    if a.figure == "operators":
        out = operators_figure(a.out, image_size=a.image_size, seed=a.seed, image=a.image, noise_sigma=a.noise_sigma)
        print(f"wrote {out} and {out.with_suffix('.pdf')}")


if __name__ == "__main__":
    main()
