"""The component ladder: what each part of the VAR solver adds, rung by rung.

The params' ``ladder`` lists method labels in order, each rung adding one component to the one
before it; in the shipped params:

1. ``init``: the operator's initial estimate;
2. ``var-vq``: that estimate tokenised and decoded with every scale injected (the tokenizer's
   ceiling: no transformer, no data consistency);
3. ``var-injection``: coarse scales injected, the transformer predicts the others, unguided;
4. ``var-guided``: + the measurement gradient on the logits (guidance);
5. ``var-latent-dc``: + the latent data-consistency step;
6. ``var``: + the pixel data-consistency step (the full solver).

Each rung runs at its own tuned per-task settings (``python -m varlib.tune --settings <name>``).
:func:`ladder_table` writes ``tables/ladder`` (per task and rung: PSNR, SSIM, HaarPSI, seconds and the
PSNR gained over the rung below) and :func:`ladder_figure` ``figures/ladder`` (PSNR per rung, one line
per task); :func:`ladder_gains` names the rung that adds the most per task.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from ..operators import TASK_TITLES
from .figures import save_figure, themed_pyplot
from .tables import plural, save_table, task_order

LADDER_METRICS = ("psnr", "ssim", "haarpsi", "seconds")


def ladder_numbers(df: pd.DataFrame, params: Mapping[str, Any]) -> Optional[pd.DataFrame]:
    """One row per (task, rung): the rung's position, mean of each metric over the images every rung
    ran on, and ``gain_db`` (PSNR over the rung below). None without a ``ladder`` in the params."""
    rungs = list(params.get("ladder") or [])
    d = df[df["method"].isin(rungs)]
    if len(rungs) < 2 or d.empty:
        return None
    common = set.intersection(*(set(d.loc[d["method"] == r, "image"]) for r in rungs if (d["method"] == r).any()))
    d = d[d["image"].isin(common)]
    rows = []
    for task in task_order(d, params):
        prev = None
        for k, rung in enumerate(rungs):
            cur = d[(d["task"] == task) & (d["method"] == rung)]
            if cur.empty:
                continue
            means = {m: float(pd.to_numeric(cur[m], errors="coerce").mean()) for m in LADDER_METRICS if m in cur}
            rows.append({"task": task, "rung": k, "method": rung, "n": len(cur), **means,
                         "gain_db": np.nan if prev is None else means["psnr"] - prev})
            prev = means["psnr"]
    return pd.DataFrame(rows)


def ladder_gains(numbers: pd.DataFrame) -> pd.DataFrame:
    """Per task: the rung with the largest PSNR gain over the one below, and that gain (dB)."""
    steps = numbers.dropna(subset=["gain_db"])
    best = steps.loc[steps.groupby("task", sort=False)["gain_db"].idxmax()]
    return best[["task", "method", "gain_db"]].rename(columns={"method": "largest gain from"}).reset_index(drop=True)


def ladder_table(df: pd.DataFrame, params: Mapping[str, Any]) -> Optional[pd.DataFrame]:
    """Write ``tables/ladder`` and return its display (None without a ladder)."""
    numbers = ladder_numbers(df, params)
    if numbers is None:
        return None
    fmt = {"psnr": "{:.2f}", "ssim": "{:.3f}", "haarpsi": "{:.3f}", "seconds": "{:.2f}"}
    display = pd.DataFrame({
        "task": [TASK_TITLES.get(t, t) for t in numbers["task"]], "rung": numbers["method"],
        **{label: numbers[m].map(lambda v, f=fmt[m]: "–" if pd.isna(v) else f.format(v))
           for m, label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("haarpsi", "HaarPSI"),
                            ("seconds", "s / image")) if m in numbers},
        "PSNR gain over the rung below (dB)": numbers["gain_db"].map(lambda v: "" if pd.isna(v) else f"{v:+.2f}"),
    })
    n = int(numbers["n"].min())
    cap = (f"The component ladder: each rung adds one part of the VAR solver to the one above it, each at its "
           f"own tuned settings; means over the {plural(n, 'image')} every rung ran on. "
           f"Rungs: {', '.join(params['ladder'])}.")
    save_table(numbers, "ladder", params, display=display, caption=cap)
    return display


def ladder_figure(df: pd.DataFrame, params: Mapping[str, Any], name: str = "ladder"):
    """PSNR of each rung, one line per task (None without a ladder)."""
    numbers = ladder_numbers(df, params)
    if numbers is None:
        return None
    plt, sns = themed_pyplot()
    rungs = list(params["ladder"])
    tasks = list(dict.fromkeys(numbers["task"]))
    colors = dict(zip(tasks, sns.color_palette("tab10", n_colors=len(tasks))))
    fig, ax = plt.subplots(figsize=(1.3 * len(rungs) + 3, 4.2))
    for t in tasks:
        d = numbers[numbers["task"] == t]
        ax.plot(d["rung"], d["psnr"], marker="o", color=colors[t], label=TASK_TITLES.get(t, t))
    ax.set_xticks(range(len(rungs)))
    ax.set_xticklabels(rungs, rotation=20, ha="right")
    ax.set_xlabel("rung (each adds one component to the one on its left)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"What each part of the solver adds: prior {params.get('prior')}, "
                 f"{plural(int(numbers['n'].min()), 'image')} of {params['images']['set']}", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_figure(fig, name, params)
    return fig
