"""The study's figures, and the operators figure.

Every study figure is drawn from a per-case table (``df``: one row per image x task x method, as
:func:`varlib.study.run_benchmark` returns it) and saved as ``<run>/figures/<name>.png`` and
``.pdf`` (atomically); each function returns the matplotlib figure. The operators figure is not
part of a run:

    python -m varlib.study.figures operators --out results/figures/operators.png [--image-size 256]
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path
from ..operators import DEFAULT_NOISE_SIGMA, TASK_TITLES, TASKS
from .ablation import default_settings
from .cache import read_png
from .paths import study_paths
from .tables import METRICS, add_network_evals, devices, images_label, method_order, plural, task_order


def _pyplot():
    """matplotlib.pyplot, headless (Agg) unless a backend was chosen or this is a notebook kernel."""
    import matplotlib

    if "MPLBACKEND" not in os.environ and "ipykernel" not in str(matplotlib.get_backend()).lower() \
            and "inline" not in str(matplotlib.get_backend()).lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str, params_or_run, dpi: int = 150) -> Dict[str, Path]:
    """Save ``fig`` as ``<run>/figures/<name>.png`` and ``.pdf`` (atomically); returns the paths."""
    out = study_paths(params_or_run).figures
    paths = {}
    for fmt in ("png", "pdf"):
        path = out / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths[fmt] = path
    return paths


def themed_pyplot():
    """(pyplot, seaborn) with the study's theme."""
    plt = _pyplot()
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    return plt, sns


def method_palette(methods: Sequence[str]) -> Dict[str, Any]:
    """A fixed colour per method (same in every figure of a run)."""
    import seaborn as sns

    # tab10 repeats after 10 colours; a run with more methods gets tab20 (20 distinct), then husl
    name = "tab10" if len(methods) <= 10 else ("tab20" if len(methods) <= 20 else "husl")
    colors = sns.color_palette(name, n_colors=max(10, len(methods)))
    return {m: colors[i % len(colors)] for i, m in enumerate(methods)}


MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p"]


def _read_png(path: Path) -> np.ndarray:
    """(H, W, 3) in [0, 1], as matplotlib shows it."""
    return read_png(path).transpose(1, 2, 0)


def _nearest_up(img: np.ndarray, size: int) -> np.ndarray:
    h = img.shape[0]
    if h == size or size % h:
        return img
    f = size // h
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def ground_truth_and_measurement(params: Mapping[str, Any], task: str, image_index: int) -> tuple:
    """(ground truth, measurement for display) as (H, W, 3) arrays: the measurement of ``sr4`` is
    up-sampled by pixel repetition, that of inpainting has the unobserved pixels set to black."""
    from ..data import load_images
    from ..operators import DEFAULT_NOISE_SIGMA, make_operator

    im = params["images"]
    size = int(im.get("image_size", 64))
    x = load_images(im["set"], size, limit=image_index + 1)[image_index:image_index + 1].double()
    op = make_operator(task, size, seed=int(params.get("seed", 0)),
                       noise_sigma=float(params.get("noise_sigma", DEFAULT_NOISE_SIGMA)))
    y = op.measure(x, indices=[image_index])
    if getattr(op, "observed_mask", None) is not None and task.startswith("inpaint"):
        y = y * op.observed_mask.to(y)
    to_np = lambda t: t[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()  # noqa: E731
    return to_np(x), _nearest_up(to_np(y), size)


def _display_measurement(meas: np.ndarray, params: Mapping[str, Any], task: str, image_index: int) -> np.ndarray:
    """Inpainting: unobserved pixels black; sr4: up-sampled by pixel repetition to the image size."""
    size = int(params["images"].get("image_size", 64))
    if task.startswith("inpaint"):
        from ..operators import make_operator

        op = make_operator(task, size, seed=int(params.get("seed", 0)))
        mask = op.observed_mask[0].permute(1, 2, 0).float().cpu().numpy()
        meas = meas * mask
    return _nearest_up(meas, size)


def _case_png(df_row: Mapping[str, Any], root: Path) -> Optional[Path]:
    """The output PNG of one case, from the row's path column or the benchmark's naming."""
    for col in ("recon_path", "image_path", "png"):
        v = df_row.get(col)
        if isinstance(v, str) and v:
            p = Path(v)
            p = p if p.is_absolute() else root / p
            if p.exists():
                return p
    key = df_row.get("key")
    if isinstance(key, str):
        p = root / "cache" / "images" / f"{key}.png"
        if p.exists():
            return p
    return None


def gallery_figure(df: pd.DataFrame, params: Mapping[str, Any], rows: str = "tasks",
                   image: Optional[str] = None, task: Optional[str] = None, methods: Optional[Sequence[str]] = None,
                   name: Optional[str] = None, panel: float = 1.55, max_images: int = 6):
    """Qualitative comparison. ``rows="tasks"``: one image (``image``, default the first), one row per
    task; ``rows="images"``: one task (``task``, default the first), one row per image (the first
    ``max_images``). Columns: ground truth, measurement, then each method's output with its PSNR.
    Saved as ``figures/<name>``."""
    plt, _ = themed_pyplot()
    root = study_paths(params).root
    methods = list(methods) if methods is not None else method_order(df, params)
    images = list(dict.fromkeys(df["image"]))[:max_images]
    tasks = task_order(df, params)
    if rows == "tasks":
        image = image if image is not None else images[0]
        row_keys = [(image, t) for t in tasks]
        name = name or f"gallery_{_slug(str(image))}"
    elif rows == "images":
        task = task if task is not None else tasks[0]
        row_keys = [(im, task) for im in images]
        name = name or f"gallery_{task}"
    else:
        raise ValueError("rows must be 'tasks' or 'images'")
    index_of = _image_indices(df)
    ncol = 2 + len(methods)
    fig, axes = plt.subplots(len(row_keys), ncol, figsize=(panel * ncol, (panel + 0.3) * len(row_keys) + 0.6),
                             squeeze=False)
    for r, (im, t) in enumerate(row_keys):
        cells = _gallery_cells(df[(df["image"] == im) & (df["task"] == t)], params, root, methods, t,
                               index_of.get(im, 0))
        for c, (title, arr, p) in enumerate(cells):
            _gallery_panel(axes[r, c], title if r == 0 else None, arr, p, _measurement_note(t) if c == 1 else None)
        label = TASK_TITLES.get(t, t) if rows == "tasks" else str(im)
        axes[r, 0].set_ylabel(label, fontsize=9, fontweight="bold")
    what = f"image {image}" if rows == "tasks" else TASK_TITLES.get(task, task)
    fig.suptitle(f"Reconstructions: {what} (PSNR in dB under each output)", fontsize=10)
    fig.tight_layout(h_pad=0.8, w_pad=0.2)
    save_figure(fig, name, params)
    return fig


def _gallery_cells(sub: pd.DataFrame, params: Mapping[str, Any], root: Path, methods: Sequence[str], task: str,
                   index: int) -> List[tuple]:
    """(title, (H, W, 3) array or None, PSNR or None) for the ground truth, the measurement and each
    method of one gallery row (``sub``: that image's rows on that task)."""
    first = sub.iloc[0].to_dict() if len(sub) else {}
    gt_p = root / str(first.get("gt_path", "")) if first.get("gt_path") else None
    me_p = root / str(first.get("measurement_path", "")) if first.get("measurement_path") else None
    if gt_p is not None and gt_p.is_file() and me_p is not None and me_p.is_file():
        gt = _read_png(gt_p)
        meas = _display_measurement(_read_png(me_p), params, task, index)
    else:  # not cached here: drawn again from the image set
        gt, meas = ground_truth_and_measurement(params, task, index)
    cells = [("ground truth", gt, None), ("measurement", meas, None)]
    for m in methods:
        hit = sub[sub["method"] == m]
        arr, p = None, None
        if len(hit):
            row = hit.iloc[0].to_dict()
            png = _case_png(row, root)
            arr = _read_png(png) if png is not None else None
            p = row.get("psnr")
        cells.append((m, arr, p))
    return cells


def _measurement_note(task: str) -> Optional[str]:
    """How the measurement of ``task`` is shown (under its panel)."""
    if task == "sr4":
        return "x4 low-res (shown big)"
    return "black = missing" if task.startswith("inpaint") else None


def _gallery_panel(ax, title: Optional[str], arr: Optional[np.ndarray], p, note: Optional[str]) -> None:
    """One gallery image, its column title (first row only), and its PSNR or a note underneath."""
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if arr is None:
        ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes)
        ax.set_facecolor("0.93")
    else:
        ax.imshow(arr, interpolation="nearest")
    if title is not None:  # long labels ("var-reference +labels") break before their suffix instead of overlapping
        ax.set_title(title.replace(" +", "\n+") if len(title) > 14 else title, fontsize=9, fontweight="bold")
    if p is not None and not pd.isna(p):
        ax.set_xlabel(f"{float(p):.2f} dB", fontsize=8, labelpad=2)
    elif note:
        ax.set_xlabel(note, fontsize=7, labelpad=2)


def _image_indices(df: pd.DataFrame) -> Dict[Any, int]:
    """Image name -> index in the image set (``image_index`` column if present, else order of appearance)."""
    if "image_index" in df.columns:
        return {im: int(i) for im, i in zip(df["image"], df["image_index"])}
    return {im: i for i, im in enumerate(dict.fromkeys(df["image"]))}



def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


def _facet_grid(n: int, ncol_max: int = 3, w: float = 4.0, h: float = 3.0):
    plt, _ = themed_pyplot()
    ncol = min(ncol_max, n)
    nrow = int(math.ceil(n / ncol))
    w = w * 1.3 if n == 1 else w
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _mean_std(df: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    v = pd.to_numeric(df[metric], errors="coerce")
    g = v.groupby([df[b] for b in by])
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0)}).reset_index()


def injection_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: str = "ablation_injection"):
    """Quality (left axis, solid) and time per image (right axis, dashed) against the injection
    depth, one panel per task; the default depth is marked by a dotted vertical line."""
    plt, _ = themed_pyplot()
    tasks = task_order(df, params)
    fig, axes = _facet_grid(len(tasks))
    q_label = METRICS[metric][0]
    handles = None
    for ax, t in zip(axes, tasks):
        d = df[df["task"] == t]
        q = _mean_std(d, ["injection_depth"], metric)
        s = _mean_std(d, ["injection_depth"], "seconds")
        l1 = ax.errorbar(q["injection_depth"], q["mean"], yerr=q["std"], marker="o", color="C0", capsize=3,
                         label=f"{METRICS[metric][0].split(' (')[0]} (mean ± std)")
        ax.set_xlabel("injection depth (scales injected)")
        ax.set_ylabel(q_label, color="C0")
        ax.tick_params(axis="y", colors="C0")
        ax.set_xticks(sorted(q["injection_depth"].unique()))
        ax.set_title(TASK_TITLES.get(t, t), fontsize=10, fontweight="bold")
        ax2 = ax.twinx()
        ax2.grid(False)
        (l2,) = ax2.plot(s["injection_depth"], s["mean"], ls="--", marker="s", color="C3", label="time per image")
        ax2.set_ylabel("time per image (s)", color="C3")
        ax2.tick_params(axis="y", colors="C3")
        ax2.set_ylim(bottom=0)
        d0 = default_settings(params, t)["injection_depth"]
        l3 = ax.axvline(d0, color="0.3", ls=":", lw=1.5, label=f"default depth")
        handles = [l1, l2, l3]
    fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="lower center",
               ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.02))
    n_img = df["image"].nunique()
    fig.suptitle(f"Injection depth ablation ({plural(n_img, 'image')} per task, {images_label(params, 'ablation')})",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, name, params)
    return fig



def guidance_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: str = "ablation_guidance"):
    """Quality against the guidance strength, one line per number of guidance steps, one panel per
    task; the chosen default (strength, steps) is marked by a vertical line and a star."""
    plt, sns = themed_pyplot()
    tasks = task_order(df, params)
    fig, axes = _facet_grid(len(tasks))
    steps = sorted(df["guidance_steps"].dropna().unique())
    colors = dict(zip(steps, sns.color_palette("viridis", n_colors=max(len(steps), 2))))
    zero = df[df["guidance_strength"] == 0]
    positive = df["guidance_strength"][df["guidance_strength"] > 0]
    use_symlog = len(positive) and positive.max() / max(positive.min(), 1e-12) >= 8
    legend = {}
    for ax, t in zip(axes, tasks):
        d = df[df["task"] == t]
        for k in steps:
            dk = pd.concat([d[(d["guidance_steps"] == k) & (d["guidance_strength"] > 0)],
                            zero[zero["task"] == t].assign(guidance_steps=k)])
            q = _mean_std(dk, ["guidance_strength"], metric).sort_values("guidance_strength")
            ln = ax.errorbar(q["guidance_strength"], q["mean"], yerr=q["std"], marker="o", capsize=3,
                             color=colors[k], label=f"{plural(int(k), 'guidance step')}")
            legend.setdefault(ln.get_label(), ln)
        dflt = default_settings(params, t)
        s0, k0 = float(dflt["guidance_strength"]), int(dflt["guidance_steps"])
        vl = ax.axvline(s0, color="0.3", ls=":", lw=1.5, label="default strength")
        legend.setdefault(vl.get_label(), vl)
        hit = d[(d["guidance_strength"] == s0) & (d["guidance_steps"] == k0)]
        if len(hit):
            (st,) = ax.plot([s0], [pd.to_numeric(hit[metric]).mean()], marker="*", ms=15, color="gold",
                            mec="k", ls="none", zorder=5, label=f"default ({plural(k0, 'step')})")
            legend.setdefault("default", st)
        if use_symlog:
            ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        ticks = sorted(df["guidance_strength"].dropna().unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{v:g}" for v in ticks])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("guidance strength s")
        ax.set_ylabel(METRICS[metric][0])
        ax.set_title(TASK_TITLES.get(t, t), fontsize=10, fontweight="bold")
    fig.legend(handles=list(legend.values()), labels=[h.get_label() for h in legend.values()],
               loc="lower center", ncol=min(4, len(legend)), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Guidance ablation ({plural(df['image'].nunique(), 'image')} per task, {images_label(params, 'ablation')};"
                 f" mean ± std)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, name, params)
    return fig


def lowpass_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: str = "ablation_lowpass"):
    """Quality per task with the guidance residual low-passed (reference) or raw, as grouped bars
    (mean ± std over the ablation images); the default's choice is named in the legend."""
    plt, sns = themed_pyplot()
    tasks = task_order(df, params)
    values = list(dict.fromkeys(df["lowpass"]))
    q = _mean_std(df, ["task", "lowpass"], metric)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(tasks), 3.6))
    width = 0.8 / max(len(values), 1)
    colors = dict(zip(values, sns.color_palette("Set2", n_colors=max(len(values), 2))))
    default = {str(default_settings(params, t).get("lowpass", "none")) for t in tasks}
    for k, v in enumerate(values):
        d = q[q["lowpass"] == v].set_index("task").reindex(tasks)
        xs = np.arange(len(tasks)) + (k - (len(values) - 1) / 2) * width
        tag = " (default)" if default == {v} else ""
        ax.bar(xs, d["mean"], width, yerr=d["std"], capsize=3, color=colors[v], label=f"residual low-pass: {v}{tag}")
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels([TASK_TITLES.get(t, t) for t in tasks], rotation=15)
    ax.set_ylabel(METRICS[metric][0])
    lo = np.nanmin(q["mean"] - q["std"].fillna(0))
    ax.set_ylim(max(0.0, lo - 2) if metric == "psnr" else None)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Guidance on the low-passed or the raw measurement ({plural(df['image'].nunique(), 'image')} per task, "
                 f"{images_label(params, 'ablation')}; mean ± std)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, name, params)
    return fig



def _plain_log_labels(ax, axis: str = "y") -> None:
    """Log-axis ticks written as plain numbers (0.01, 1, 100) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    few = hi / max(lo, 1e-300) < 40  # under ~1.5 decades: label 1, 2, 5 x 10^k too
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if few else (1.0,)))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def runtime_figure(df: pd.DataFrame, params: Mapping[str, Any], name: str = "runtime"):
    """Bar charts (log axis) of seconds and network evaluations per image per method, mean over
    every image and task with the spread over tasks as error bars."""
    plt, sns = themed_pyplot()
    df = add_network_evals(df)
    methods = method_order(df, params)
    pal = method_palette(methods)
    per_task = df.groupby(["method", "task"], sort=False)[["seconds", "network_evals"]].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(methods) + 4), 4.2))
    for ax, metric, ylabel in ((axes[0], "seconds", "time per image (s, log scale)"),
                               (axes[1], "network_evals", "network evaluations per image\n(log scale)")):
        m = per_task.groupby("method")[metric].agg(["mean", "min", "max"]).reindex(methods)
        x = np.arange(len(methods))
        heights = m["mean"].to_numpy(dtype=float)
        pos = np.where(heights > 0, heights, np.nan)
        ax.bar(x, pos, color=[pal[k] for k in methods], edgecolor="k", lw=0.5)
        err = np.vstack([heights - m["min"].to_numpy(dtype=float), m["max"].to_numpy(dtype=float) - heights])
        ok = heights > 0
        if ok.any() and per_task["task"].nunique() > 1:
            ax.errorbar(x[ok], heights[ok], yerr=err[:, ok], fmt="none", ecolor="k", capsize=3, lw=1)
        ax.set_yscale("log")
        finite = heights[heights > 0]
        if len(finite):
            ax.set_ylim(finite.min() / 10, finite.max() * 5)
        _plain_log_labels(ax)
        tops = m["max"].to_numpy(dtype=float) if per_task["task"].nunique() > 1 else heights
        for xi, h, top in zip(x, heights, tops):
            txt = ("0 (no network)" if metric == "network_evals" else "0") if not h > 0 else \
                (f"{h:.3g}" if metric == "seconds" else f"{h:,.0f}")
            y = ax.get_ylim()[0] * 1.3 if not h > 0 else max(h, top) * 1.12
            ax.text(xi, y, txt, ha="center", va="bottom", fontsize=8, rotation=90 if not h > 0 else 0)
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=30, ha="right")
        ax.set_xlabel("method")
        ax.set_ylabel(ylabel)
    axes[0].set_title("wall time per image", fontsize=10, fontweight="bold")
    axes[1].set_title("transformer + decoder + denoiser calls", fontsize=10, fontweight="bold")
    fig.suptitle(f"Runtime per image ({devices(df, params)}, {params['images'].get('image_size', '?')} px; "
                 f"bars: mean over tasks, whiskers: fastest to slowest task)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, name, params)
    return fig


def _label_points(ax, points, fontsize: float = 7.0) -> None:
    """Name each ``(label, x, y)`` point beside it, moving a label below the point (and further down)
    while it would overlap one placed before."""
    ax.figure.canvas.draw()  # fixes the limits, so data -> display is final
    pt = ax.figure.dpi / 72.0
    line, placed = (fontsize + 2) * pt, []
    for label, x, y in points:
        px, py = ax.transData.transform((x, y))
        width = 0.62 * fontsize * pt * len(str(label))
        dy = 4 * pt
        while any(abs(px - qx) < max(width, qw) and abs(py + dy - qy) < line for qx, qy, qw in placed):
            dy -= line
        placed.append((px, py + dy, width))
        moved = dict(arrowprops=dict(arrowstyle="-", lw=0.5, color="0.45", shrinkA=0, shrinkB=3)) if dy < 0 else {}
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, dy / pt), fontsize=fontsize,
                    va="bottom" if dy > 0 else "top", **moved)  # a moved label keeps a leader line to its point


def frontier_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: str = "frontier"):
    """The quality-versus-time frontier of each method family (the registry name: every ``var`` entry,
    every ``pnp-bm3d`` entry, ...): mean over tasks of each entry, the entries of a family joined in
    order of time and labelled. Returns None when no family has two entries."""
    if "method_name" not in df.columns:
        return None
    g = df.groupby(["method", "task"])[[metric, "seconds"]].mean().groupby("method").mean()
    family = df.groupby("method")["method_name"].first()
    families = [f for f in dict.fromkeys(family[method_order(df, params)]) if (family == f).sum() >= 2]
    if not families:
        return None
    plt, _ = themed_pyplot()
    pal = method_palette(list(dict.fromkeys(family[method_order(df, params)])))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    labelled = []
    for f in dict.fromkeys(family[method_order(df, params)]):
        pts = g.loc[family[family == f].index].sort_values("seconds")
        ax.plot(pts["seconds"], pts[metric], marker="o", color=pal[f], label=f, lw=1.5 if f in families else 0)
        labelled += [(label, r["seconds"], r[metric]) for label, r in pts.iterrows()]
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 2.5)  # room for the labels of the slowest points
    _label_points(ax, labelled)
    _plain_log_labels(ax, "x")
    ax.set_xlabel("time per image (s, log scale)")
    ax.set_ylabel(f"{METRICS[metric][0]}, mean over tasks")
    ax.set_title(f"Quality against time per method family ({plural(df['image'].nunique(), 'image')}, "
                 f"{devices(df, params)}; up and left is better)", fontsize=10)
    ax.legend(frameon=False, fontsize=8, title="method")
    fig.tight_layout()
    save_figure(fig, name, params)
    return fig


def quality_time_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr",
                        per_task: bool = True, name: str = "quality_vs_time"):
    """Quality against time per image (log x), one marker per method; one panel per task plus the
    mean over tasks (``per_task``), or only the mean."""
    plt, _ = themed_pyplot()
    methods = method_order(df, params)
    pal = method_palette(methods)
    mk = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}
    tasks = task_order(df, params)
    panels = (tasks if per_task else []) + ["all"]
    ncol = 4 if len(panels) > 6 else min(3, len(panels))
    fig, axes = _facet_grid(len(panels), ncol_max=ncol, w=3.8, h=3.2)
    for ax, t in zip(axes, panels):
        d = df if t == "all" else df[df["task"] == t]
        g = d.groupby("method")[[metric, "seconds"]].apply(lambda x: x.apply(pd.to_numeric, errors="coerce").mean())
        if t == "all":  # average of the per-task means, so every task weighs the same
            g = d.groupby(["method", "task"])[[metric, "seconds"]].mean().groupby("method").mean()
        for m in methods:
            if m in g.index:
                ax.scatter(g.loc[m, "seconds"], g.loc[m, metric], s=70, marker=mk[m], color=pal[m],
                           edgecolor="k", lw=0.5, label=m, zorder=3)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo / 1.5, hi * 1.5)
        _plain_log_labels(ax, "x")
        ax.set_xlabel("time per image (s, log scale)")
        ax.set_ylabel(METRICS[metric][0])
        ax.set_title("mean over tasks" if t == "all" else TASK_TITLES.get(t, t), fontsize=10, fontweight="bold")
    handles = [plt.Line2D([], [], marker=mk[m], color=pal[m], mec="k", mew=0.5, ls="none", ms=8, label=m)
               for m in methods]
    nrows = int(math.ceil(len(panels) / ncol))
    fig.suptitle(f"Quality versus time (mean over {plural(df['image'].nunique(), 'image')}; up and left is better)",
                 fontsize=11)
    if nrows * ncol > len(panels):  # an empty slot: the legend goes there
        spare = fig.axes[0].get_gridspec()[nrows - 1, ncol - 1]
        lax = fig.add_subplot(spare)
        lax.axis("off")
        lax.legend(handles=handles, loc="center", frameon=False, title="method")
        fig.tight_layout()
    else:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(methods), 6), frameon=False,
                   bbox_to_anchor=(0.5, -0.01), title="method")
        fig.tight_layout(rect=(0, 0.12 / nrows + 0.04, 1, 1))
    save_figure(fig, name, params)
    return fig


def metric_bars_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: Optional[str] = None):
    """Grouped bars: ``metric`` per task (x) and method (colour), mean ± std over images."""
    plt, sns = themed_pyplot()
    methods = method_order(df, params)
    tasks = task_order(df, params)
    d = df.assign(task_title=df["task"].map(lambda t: TASK_TITLES.get(t, t)))
    d[metric] = pd.to_numeric(d[metric], errors="coerce")
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * len(tasks) + 0.25 * len(methods) * len(tasks)), 4.0))
    sns.barplot(data=d, x="task_title", y=metric, hue="method", hue_order=methods,
                order=[TASK_TITLES.get(t, t) for t in tasks], palette=method_palette(methods),
                errorbar="sd", capsize=0.08, err_kws={"linewidth": 1}, ax=ax, edgecolor="k", linewidth=0.4)
    ax.set_xlabel("task")
    ax.set_ylabel(METRICS[metric][0])
    if metric == "psnr":
        lo = d[metric].min()
        ax.set_ylim(max(0, math.floor(lo / 2) * 2 - 2), None)
    ax.legend(title="method", bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    ax.set_title(f"{METRICS[metric][0]} per task (mean ± std over {plural(df['image'].nunique(), 'image')})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, name or f"bars_{metric}", params)
    return fig


# ==================================================================================================
# the operators figure
# ==================================================================================================
def _img(t) -> np.ndarray:
    """(3, H, W) tensor in [0, 1] -> (H, W, 3) array."""
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _kernel_panel(ax, op) -> str:
    """Draw the kernel / mask of ``op`` on ``ax``; returns a caption."""
    plt = _pyplot()
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
    from ..data import EMBEDDED_IMAGES, load_images
    from ..metrics import psnr
    from ..operators import make_operator

    plt = _pyplot()
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
    for target, kw in ((path, {"format": "png", "dpi": dpi}), (path.with_suffix(".pdf"), {"format": "pdf"})):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, **kw)
    plt.close(fig)
    return path


def main(argv: Optional[list] = None) -> None:
    """``python -m varlib.study.figures operators [--out PNG] ...`` (``varlib figures operators``)."""
    ap = argparse.ArgumentParser(prog="python -m varlib.study.figures", description="The operators figure.")
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
