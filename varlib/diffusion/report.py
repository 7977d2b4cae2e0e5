"""Figures and numbers that show what the embedded diffusion prior learned.

    python -m varlib.diffusion.report [--prior tiny64-diffusion] [--images 64] [--out results/prior]

* ``diffusion_samples.{png,pdf}``: unconditional DDIM samples (50 steps, fixed seed);
* ``diffusion_denoising.{png,pdf,csv,md}``: held-out denoising PSNR against the noise level, on the
  first ``--images`` ``tinyimagenet-val`` images (the embedded photos when the data set is absent),
  beside the noisy input and BM3D at the same (known) noise level.

Run single-threaded it takes about 2 minutes on a CPU.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

SIGMAS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4)  # on the [0, 1] image scale


def _save(fig, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        tmp = out / f"{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
        os.replace(tmp, out / f"{name}.{ext}")


def samples_figure(prior, out: Path, n: int = 32, steps: int = 50, seed: int = 0):
    """A grid of ``n`` unconditional samples (DDIM, ``steps`` network evaluations, seed ``seed``)."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    with torch.no_grad():
        x = prior.sample(n, steps=steps, generator=seed)
    grid = make_grid(x, nrow=8, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()
    fig, ax = plt.subplots(figsize=(8, 4.4))
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    step = prior.metadata.get("training_steps") or prior.metadata.get("step")
    ax.set_title(f"{prior.config.name}: {n} unconditional samples, DDIM {steps} steps, seed {seed}"
                 + (f" (trained {step} steps)" if step else ""), fontsize=10)
    _save(fig, out, "diffusion_samples")
    return fig


def held_out_images(n: int) -> tuple:
    """(images (n, 3, 64, 64) in [0, 1], description): tinyimagenet-val, else the embedded photos."""
    from ..data import load_images
    try:
        return load_images("tinyimagenet-val", 64, limit=n), f"first {n} tinyimagenet-val images"
    except (FileNotFoundError, OSError, ValueError):
        x = load_images("embedded", 64)
        return x, f"the {len(x)} embedded photos (tinyimagenet-val not found)"


def denoising_table(prior, x: torch.Tensor, sigmas: Sequence[float] = SIGMAS, seed: int = 0,
                    with_bm3d: bool = True, batch: int = 16) -> pd.DataFrame:
    """PSNR (mean and std over images) of the noisy input, the prior's denoiser and BM3D per noise level."""
    from tqdm.auto import tqdm

    from ..baselines import bm3d_denoise
    from ..metrics import psnr

    rows = []
    g = torch.Generator().manual_seed(seed)
    for sigma in tqdm(sigmas, desc="denoising", leave=False):
        noisy = x + sigma * torch.randn(x.shape, generator=g)
        with torch.no_grad():
            den = torch.cat([prior(noisy[k:k + batch], sigma) for k in range(0, len(x), batch)]).clamp(0, 1)
        results = {"noisy input": psnr(noisy.clamp(0, 1), x), prior.config.name: psnr(den, x)}
        if with_bm3d:
            b = torch.cat([bm3d_denoise(noisy[k:k + 1], sigma) for k in range(len(x))]).clamp(0, 1)
            results["BM3D (known sigma)"] = psnr(b, x)
        for method, p in results.items():
            p = np.asarray(p, dtype=float)
            rows.append(dict(sigma=sigma, method=method, psnr_mean=float(p.mean()), psnr_std=float(p.std(ddof=1)),
                             n=len(p)))
    return pd.DataFrame(rows)


def denoising_figure(table: pd.DataFrame, out: Path, images: str, name: str = "diffusion_denoising"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"noisy input": dict(color="0.5", ls="--", marker="o"), "BM3D (known sigma)": dict(color="tab:green", marker="s")}
    for method, d in table.groupby("method", sort=False):
        ax.errorbar(d["sigma"], d["psnr_mean"], yerr=d["psnr_std"], capsize=3, label=method,
                    **styles.get(method, dict(color="tab:blue", marker="D")))
    ax.set_xscale("log")
    ax.set_xticks(sorted(table["sigma"].unique()))
    ax.set_xticklabels([f"{v:g}" for v in sorted(table["sigma"].unique())])
    ax.minorticks_off()
    ax.set_xlabel("noise std sigma (image scale [0, 1])")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Held-out denoising: {images}\n(mean ± std over images)", fontsize=10)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    _save(fig, out, name)
    table.to_csv(out / f"{name}.csv", index=False)
    wide = table.pivot_table(index="sigma", columns="method", values="psnr_mean", sort=False)
    (out / f"{name}.md").write_text(wide.round(2).to_markdown() + f"\n\nPSNR (dB), mean over {images}.\n")
    return fig


CARD_SECTION = "## Held-out denoising"


def write_card_metrics(weights_dir: Path, table: pd.DataFrame, images: str) -> Path:
    """Put the denoising table into the model card (replacing the section if the card has one)."""
    card = Path(weights_dir) / "MODEL_CARD.md"
    text = card.read_text()
    if CARD_SECTION in text:
        head, _, rest = text.partition(CARD_SECTION)
        nxt = rest.find("\n## ")
        text = head.rstrip() + "\n\n" + (rest[nxt + 1:] if nxt >= 0 else "")
    wide = table.pivot_table(index="sigma", columns="method", values="psnr_mean", sort=False).round(2)
    section = f"{CARD_SECTION}\n\nPSNR (dB), mean over {images} (`python -m varlib.diffusion.report`):\n\n" \
              f"{wide.to_markdown()}\n"
    tmp = card.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip() + "\n\n" + section)
    os.replace(tmp, card)
    return card


def main(argv=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from .model import load_diffusion_prior

    ap = argparse.ArgumentParser(prog="python -m varlib.diffusion.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="tiny64-diffusion", help="a name under varlib/weights or a folder")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("results/prior"))
    ap.add_argument("--no-bm3d", action="store_true")
    a = ap.parse_args(argv)
    prior = load_diffusion_prior(a.prior)
    card = Path(prior.metadata["path"]) / "MODEL_CARD.md"
    found = re.search(r"^- steps: (\d+)", card.read_text(), re.M) if card.exists() else None
    prior.metadata["training_steps"] = int(found.group(1)) if found else None
    samples_figure(prior, a.out)
    x, desc = held_out_images(a.images)
    table = denoising_table(prior, x, with_bm3d=not a.no_bm3d)
    denoising_figure(table, a.out, desc)
    write_card_metrics(Path(prior.metadata["path"]), table, desc)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
