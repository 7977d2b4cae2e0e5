"""The study's stated targets, each measured on a run's cases and reported met or not.

:data:`TARGETS` holds them: PSNR gaps between two methods on one task (or the mean over tasks), and
time ratios between two methods measured side by side in the same run, on the images both ran. The
face targets apply to runs on CelebA faces only; the others to any run that has both methods.
:func:`targets_table` returns the rows a run can measure (``tables/targets.*`` from notebook 01).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import pandas as pd

MEAN = "mean"  # the task field of a target on the mean over tasks


@dataclass(frozen=True)
class Target:
    """``kind`` "psnr_gap": PSNR(a) - PSNR(b) >= ``threshold`` dB; "time_ratio": seconds(a) / seconds(b)
    <= ``threshold``, per image, on the images both methods ran."""

    text: str
    kind: str
    a: str
    b: str
    task: str
    threshold: float
    faces_only: bool = False


TARGETS = (
    Target("var above TV on box inpainting", "psnr_gap", "var", "tv", "inpaint_box", 1.5, True),
    Target("var above PnP-BM3D on box inpainting", "psnr_gap", "var", "pnp-bm3d", "inpaint_box", 1.5, True),
    Target("var above TV on 4x super-resolution", "psnr_gap", "var", "tv", "sr4", 0.5, True),
    Target("var above PnP-BM3D on 4x super-resolution", "psnr_gap", "var", "pnp-bm3d", "sr4", 0.5, True),
    Target("var above DiffPIR (same-budget prior), mean over tasks", "psnr_gap", "var", "diffpir", MEAN, 0.0, True),
    Target("var-no-dc above init on box inpainting", "psnr_gap", "var-no-dc", "init", "inpaint_box", 0.0, True),
    Target("var-no-dc above init on 4x super-resolution", "psnr_gap", "var-no-dc", "init", "sr4", 0.0, True),
    Target("var time per image at most 1/10 of DPS's", "time_ratio", "var", "dps", MEAN, 0.1),
    Target("var time per image at most PnP-BM3D's", "time_ratio", "var", "pnp-bm3d", MEAN, 1.0),
    Target("var PSNR at least PnP-BM3D's, mean over tasks", "psnr_gap", "var", "pnp-bm3d", MEAN, 0.0),
)


def _paired(cases: pd.DataFrame, a: str, b: str, task: str, column: str) -> Optional[tuple]:
    """(mean ``column`` of a, of b, number of images) over the (image, task) pairs both ran (per task,
    then over tasks for :data:`MEAN`); None when they share none."""
    d = cases[cases["method"].isin([a, b])]
    if task != MEAN:
        d = d[d["task"] == task]
    wide = d.pivot_table(index=["task", "image"], columns="method", values=column, aggfunc="mean")
    if a not in wide or b not in wide:
        return None
    wide = wide[[a, b]].dropna()
    if wide.empty:
        return None
    per_task = wide.groupby(level="task").mean()
    return float(per_task[a].mean()), float(per_task[b].mean()), wide.index.get_level_values("image").nunique()


def measure(target: Target, cases: pd.DataFrame) -> Optional[dict]:
    """One row of :func:`targets_table`, or None when the run lacks a method or task of the target."""
    column = "psnr" if target.kind == "psnr_gap" else "seconds"
    pair = _paired(cases, target.a, target.b, target.task, column)
    if pair is None:
        return None
    va, vb, n = pair
    if target.kind == "psnr_gap":
        value, shown = va - vb, f"{va:.2f} vs {vb:.2f} dB: {va - vb:+.2f} dB"
        met, want = value >= target.threshold, f">= {target.threshold:+.1f} dB"
    else:
        value = va / vb if vb > 0 else float("inf")
        shown, met, want = f"{va:.2f} s vs {vb:.2f} s: x{value:.3f}", value <= target.threshold, f"<= x{target.threshold:g}"
    return {"target": target.text, "measured": shown, "aim": want, "met": "yes" if met else "no",
            "value": round(value, 4), "images": n}


def targets_table(cases: pd.DataFrame) -> pd.DataFrame:
    """The targets this run can measure (columns target, measured, aim, met, value, images)."""
    faces = cases["image_set"].astype(str).str.startswith("celeba").any()
    rows: List[dict] = []
    for t in TARGETS:
        if t.faces_only and not faces:
            continue
        row = measure(t, cases)
        if row is not None:
            rows.append(row)
    return pd.DataFrame(rows, columns=["target", "measured", "aim", "met", "value", "images"])
