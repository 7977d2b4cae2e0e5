"""The study's tables: per-case summaries, the main method x task tables, runtime, LaTeX.

Every table is written as ``<run>/tables/<name>.csv`` (the numbers) and ``.md`` / ``.tex`` (the
formatted version: mean ± std, best in bold), atomically through :mod:`varlib.io`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from ..io import atomic_write_text, latex_escape
from ..operators import TASK_TITLES, TASKS
from .params import method_labels
from .paths import study_paths

#: metric column -> (axis / table label, higher is better)
METRICS: Dict[str, Tuple[str, bool]] = {
    "psnr": ("PSNR (dB)", True),
    "ssim": ("SSIM", True),
    "haarpsi": ("HaarPSI", True),
    "lpips": ("LPIPS", False),
    "seconds": ("time per image (s)", False),
    "network_evals": ("network evaluations per image", False),
}
#: decimals of each metric in the formatted tables
DIGITS = {"psnr": 2, "ssim": 3, "haarpsi": 3, "lpips": 3, "seconds": 2, "network_evals": 0}
RUNTIME_COLUMNS = {"seconds": "time per image (s)", "network_evals": "network evaluations",
                   "transformer_evals": "transformer", "decoder_evals": "decoder", "denoiser_evals": "denoiser",
                   "peak_mem_mb": "peak memory (MB)"}
SUMMARY_METRICS = ("psnr", "ssim", "haarpsi", "lpips", "seconds", "network_evals")


# ==================================================================================================
# small helpers
# ==================================================================================================
def fmt_mean_std(mean: float, std: float, digits: int) -> str:
    """``"m ± s"`` with ``digits`` decimals; ``–`` without a mean, the mean alone without a std."""
    if pd.isna(mean):
        return "–"
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def plural(k: int, noun: str) -> str:
    """``"1 image"``, ``"5 images"``."""
    return f"{k} {noun}" + ("" if int(k) == 1 else "s")


def images_label(params: Mapping[str, Any], which: str = "main") -> str:
    """``"<set>, <size> px"`` of the benchmark's images or (``which="ablation"``) the ablation's."""
    im = params["images"]
    if which == "ablation" and isinstance((params.get("ablation") or {}).get("images"), dict):
        im = {**im, **params["ablation"]["images"]}
    return f"{im.get('set')}, {im.get('image_size', '?')} px"


def devices(df: pd.DataFrame, params: Mapping[str, Any]) -> str:
    """``"device cpu"`` (or every device of the rows)."""
    if "device" in df.columns and df["device"].notna().any():
        return "device " + ", ".join(sorted(str(d) for d in df["device"].dropna().unique()))
    return f"device {params.get('device', 'cpu')}"


def add_network_evals(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``network_evals`` = the sum of the ``*_evals`` columns (transformer, decoder, denoiser)."""
    df = df.copy()
    cols = [c for c in df.columns if c.endswith("_evals") and c != "network_evals"]
    if "network_evals" not in df.columns:
        df["network_evals"] = df[cols].fillna(0).sum(axis=1) if cols else np.nan
    return df


def method_order(df: pd.DataFrame, params: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Methods in the order of the params' method list (then any others in order of appearance)."""
    present = list(dict.fromkeys(df["method"]))
    if params is None:
        return present
    order = method_labels(params) if "methods" in params else []
    return [m for m in order if m in present] + [m for m in present if m not in order]


def task_order(df: pd.DataFrame, params: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Tasks in the order of the params (then any others, sorted)."""
    present = set(df["task"])
    order = list(params["tasks"]) if params is not None else list(TASKS)
    return [t for t in order if t in present] + sorted(present - set(order))


# ==================================================================================================
# writing
# ==================================================================================================
def _cell_latex(v: Any) -> str:
    s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    bold = s.startswith("**") and s.endswith("**") and len(s) > 4
    if bold:
        s = s[2:-2]
    s = latex_escape(s).replace("±", r"$\pm$")
    return r"\textbf{" + s + "}" if bold else s


def to_latex(df: pd.DataFrame, caption: Optional[str] = None, label: Optional[str] = None) -> str:
    """A booktabs table; cells written ``**x**`` (Markdown bold) become ``\\textbf{x}``."""
    d = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in d.columns]
    lines = []
    if caption or label:
        lines += [r"\begin{table}[t]", r"\centering"]
        if caption:
            lines.append(r"\caption{" + latex_escape(caption).replace("±", r"$\pm$") + "}")
        if label:
            lines.append(r"\label{" + label + "}")
    lines.append(r"\begin{tabular}{l" + "c" * (len(cols) - 1) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(latex_escape(c) for c in cols) + r" \\")
    lines.append(r"\midrule")
    for row in d.itertuples(index=False):
        lines.append(" & ".join(_cell_latex(v) for v in row) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    if caption or label:
        lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, name: str, params_or_run, display: Optional[pd.DataFrame] = None,
               caption: Optional[str] = None) -> Dict[str, Path]:
    """Write ``<run>/tables/<name>.csv`` (``df``, numbers) and ``.md`` / ``.tex`` (``display``, the
    formatted version, default ``df``), each atomically. Returns the paths by format."""
    out = study_paths(params_or_run).tables
    shown = df if display is None else display
    keep_index = not isinstance(shown.index, pd.RangeIndex)
    md = shown.to_markdown(index=keep_index)
    if caption:
        md = f"{md}\n\n{caption}"
    return {
        "csv": atomic_write_text(out / f"{name}.csv", df.to_csv(index=not isinstance(df.index, pd.RangeIndex))),
        "md": atomic_write_text(out / f"{name}.md", md + "\n"),
        "tex": atomic_write_text(out / f"{name}.tex", to_latex(shown, caption=caption, label=f"tab:{name}")),
    }


# ==================================================================================================
# the benchmark's own summary (tables/summary.*, written by every benchmark pass)
# ==================================================================================================
def summarize(df: pd.DataFrame, task_order: Optional[Sequence[str]] = None,
              method_order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Mean and std (ddof 0) per (task, method) of psnr, ssim, haarpsi, lpips, seconds and network_evals, and
    the count ``n``; rows in task then method order."""
    cols = [c for c in SUMMARY_METRICS if c in df.columns]
    if not len(df):
        return pd.DataFrame(columns=["task", "method", "n"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")])
    d = df.copy()
    for c in cols:
        d[c] = pd.to_numeric(d[c], errors="coerce")
    g = d.groupby(["task", "method"], sort=False)
    out = g.size().rename("n").to_frame()
    for c in cols:
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_std"] = g[c].std(ddof=0)
    out = out.reset_index()
    tasks = list(task_order) if task_order else list(dict.fromkeys(d["task"]))
    methods = list(method_order) if method_order else list(dict.fromkeys(d["method"]))
    out["_t"] = out["task"].map({t: i for i, t in enumerate(tasks)}).fillna(len(tasks))
    out["_m"] = out["method"].map({m: i for i, m in enumerate(methods)}).fillna(len(methods))
    return out.sort_values(["_t", "_m"]).drop(columns=["_t", "_m"]).reset_index(drop=True)


_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.3f}", "haarpsi": "{:.3f}", "lpips": "{:.3f}", "seconds": "{:.2f}", "network_evals": "{:.0f}"}


def _pm(mean, std, fmt: str, sep: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{fmt.format(mean)}{sep}{fmt.format(0.0 if std is None or math.isnan(std) else std)}"


def _formatted(summary: pd.DataFrame, sep: str) -> pd.DataFrame:
    rows = []
    for _, r in summary.iterrows():
        row = {"task": r["task"], "method": r["method"], "n": int(r["n"])}
        for c in SUMMARY_METRICS:
            if f"{c}_mean" in summary.columns:
                row[c] = _pm(r[f"{c}_mean"], r[f"{c}_std"], _FORMATS[c], sep)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_latex(summary: pd.DataFrame) -> str:
    """The summary as a booktabs tabular, a rule between tasks."""
    f = _formatted(summary, r" $\pm$ ")
    cols = list(f.columns)
    lines = [r"\begin{tabular}{" + "ll" + "r" * (len(cols) - 2) + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    prev = None
    for _, r in f.iterrows():
        if prev is not None and r["task"] != prev:
            lines.append(r"\midrule")
        prev = r["task"]
        cells = [latex_escape(str(r[c])) if c in ("task", "method") else str(r[c]) for c in cols]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_tables(df: pd.DataFrame, run_dir: Union[str, os.PathLike], task_order: Optional[Sequence[str]] = None,
                 method_order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Write ``tables/cases.csv`` and ``tables/summary.{csv,md,tex}`` of ``df`` under ``run_dir``
    atomically; returns the summary."""
    tdir = Path(run_dir) / "tables"
    summary = summarize(df, task_order, method_order)
    atomic_write_text(tdir / "cases.csv", df.to_csv(index=False))
    atomic_write_text(tdir / "summary.csv", summary.to_csv(index=False))
    md = _formatted(summary, " ± ").to_markdown(index=False) if len(summary) else "(no cases)"
    atomic_write_text(tdir / "summary.md", md + "\n")
    atomic_write_text(tdir / "summary.tex", summary_latex(summary))
    return summary


# ==================================================================================================
# the report's tables
# ==================================================================================================
def summary_long(df: pd.DataFrame, metrics: Iterable[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Mean, std (ddof 1) and count per method x task x metric (long format)."""
    df = add_network_evals(df)
    rows = []
    for metric in metrics:
        if metric not in df.columns:
            continue
        vals = pd.to_numeric(df[metric], errors="coerce")
        if vals.notna().sum() == 0:
            continue
        g = vals.groupby([df["method"], df["task"]], sort=False)
        s = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
        s.insert(2, "metric", metric)
        rows.append(s)
    if not rows:
        return pd.DataFrame(columns=["method", "task", "metric", "mean", "std", "n"])
    return pd.concat(rows, ignore_index=True)


def metric_table(df: pd.DataFrame, metric: str, params: Optional[Mapping[str, Any]] = None,
                 bold_best: bool = True) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, display): rows = methods, columns = tasks + ``mean`` (over tasks).

    ``numbers`` holds ``<task> mean`` / ``<task> std`` columns (std over images, ddof 1; the mean
    column's std is over the images' per-image means); ``display`` holds "mean ± std" strings, the
    best method per column in ``**bold**``."""
    df = add_network_evals(df)
    methods, tasks = method_order(df, params), task_order(df, params)
    vals = pd.to_numeric(df[metric], errors="coerce")
    g = vals.groupby([df["method"], df["task"]])
    mean = g.mean().unstack("task").reindex(index=methods, columns=tasks)
    std = g.std(ddof=1).unstack("task").reindex(index=methods, columns=tasks)
    per_image = vals.groupby([df["method"], df["image"]]).mean() if "image" in df.columns else None
    overall_mean = mean.mean(axis=1)
    overall_std = (per_image.groupby(level=0).std(ddof=1).reindex(methods) if per_image is not None
                   else pd.Series(np.nan, index=methods))
    digits = DIGITS.get(metric, 3)
    higher = METRICS.get(metric, (metric, True))[1]
    display = pd.DataFrame(index=pd.Index(methods, name="method"))
    numbers = pd.DataFrame(index=pd.Index(methods, name="method"))
    for col, m, s in [*[(t, mean[t], std[t]) for t in tasks], ("mean", overall_mean, overall_std)]:
        best = (m.max() if higher else m.min()) if m.notna().any() else None
        cells = []
        for meth in methods:
            c = fmt_mean_std(m[meth], s[meth], digits)
            if bold_best and best is not None and len(methods) > 1 and not pd.isna(m[meth]) \
                    and round(m[meth], digits) == round(best, digits):
                c = f"**{c}**"
            cells.append(c)
        name = TASK_TITLES.get(col, col) if col != "mean" else "mean over tasks"
        display[name] = cells
        numbers[f"{col} mean"] = m.values
        numbers[f"{col} std"] = s.values
    return numbers, display


def _subset_note(df: pd.DataFrame, n_images: Optional[int]) -> str:
    """``" (dps: first 10)"`` for the methods that ran on fewer images than the set (a ``limit``); else ""."""
    if n_images is None or "method" not in df.columns:
        return ""
    counts = df.groupby("method", sort=False)["image"].nunique()
    fewer = [f"{m}: first {int(n)}" for m, n in counts.items() if n < n_images]
    return f" ({', '.join(fewer)})" if fewer else ""


def main_tables(df: pd.DataFrame, params: Mapping[str, Any],
                metrics: Sequence[str] = ("psnr", "ssim", "haarpsi", "lpips", "seconds")) -> Dict[str, pd.DataFrame]:
    """Write ``main_<metric>`` tables (mean ± std over images, per method x task) and
    ``summary_long``; returns the display tables by metric (metrics without values are skipped)."""
    out = {}
    n_images = df["image"].nunique() if "image" in df.columns else None
    subset = _subset_note(df, n_images)
    save_table(summary_long(df), "summary_long", params)
    for metric in metrics:
        if metric not in df.columns or pd.to_numeric(df[metric], errors="coerce").notna().sum() == 0:
            continue
        numbers, display = metric_table(df, metric, params)
        label, higher = METRICS[metric]
        cap = (f"{label}, mean ± std over {plural(n_images, 'image')} per task{subset} "
               f"({'higher' if higher else 'lower'} is better; best in bold). Run {params['run']}, prior {params.get('prior', '?')}, "
               f"{params['images'].get('image_size', '?')} px, images {params['images'].get('set')}.")
        save_table(numbers, f"main_{metric}", params, display=display, caption=cap)
        out[metric] = display
    return out


def runtime_table(df: pd.DataFrame, params: Optional[Mapping[str, Any]] = None) -> pd.DataFrame:
    """Per method: mean seconds, network evaluations (total and by kind) and peak memory per image."""
    df = add_network_evals(df)
    cols = ["seconds", "network_evals"] + [c for c in df.columns if c.endswith("_evals") and c != "network_evals"] \
        + [c for c in df.columns if "memory" in c or c.startswith("peak")]
    cols = list(dict.fromkeys(c for c in cols if c in df.columns))
    num = df[cols].apply(pd.to_numeric, errors="coerce")
    t = num.groupby(df["method"]).mean().reindex(method_order(df, params))
    t.index.name = "method"
    return t


def write_runtime_table(df: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
    """Write ``tables/runtime`` (the numbers of :func:`runtime_table`, formatted); returns the display."""
    t = runtime_table(df, params)
    disp = t.copy()
    for c in disp.columns:
        disp[c] = disp[c].map(lambda v, c=c: "–" if pd.isna(v) else (f"{v:.3g}" if c == "seconds" else f"{v:,.0f}"))
    disp = disp.rename(columns=RUNTIME_COLUMNS)
    save_table(t, "runtime", params, display=disp,
               caption=f"Mean per image over all tasks and images (run {params['run']}, {devices(df, params)}; "
                       "peak memory: growth of the process during the call, for the whole batch).")
    return disp
