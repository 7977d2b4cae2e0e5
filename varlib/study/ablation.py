"""The ablations (notebooks 02 and 03): one method entry of the params swept over one setting.

Each sweep is a list of benchmark method entries (the ablated entry with one setting changed per
entry); :func:`ablation_params` makes it a benchmark pass of its own on the images, tasks and seed
given under ``ablation:`` (default: the benchmark's), run into ``<run>/ablation/<which>/`` by
:func:`run_ablation`.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..operators import TASK_TITLES
from .methods import METHODS, method_label
from .params import ParamsError, bench_params, check_params
from .paths import study_paths
from .runner import run_cases
from .tables import DIGITS, METRICS, fmt_mean_std, images_label, plural, save_table, task_order


def num_scales(prior: Union[str, os.PathLike]) -> int:
    """Number of scales of a prior (name or checkpoint directory), without loading its weights."""
    from ..prior.configs import PriorConfig, named_config

    p = Path(str(prior))
    cfg_file = p / "config.json" if p.is_dir() else None
    if cfg_file is not None and cfg_file.exists():
        cfg = PriorConfig.from_dict(json.loads(cfg_file.read_text()))
    else:
        cfg = named_config(str(prior))
    return len(cfg.tokenizer.patch_nums)


def ablated_method(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The method entry ``ablation.method`` names (a name or label of ``methods``; a bare VAR method
    name that is not among them means that method with its default settings)."""
    want = (params.get("ablation") or {}).get("method", "var")
    for m in params["methods"]:
        if want in (m["name"], method_label(m)):
            return copy.deepcopy(m)
    if want in METHODS and METHODS[want].kind == "var":
        return {"name": want, "label": want, "settings": {}}
    raise ParamsError(f"ablation.method {want!r} is not among the methods "
                      f"({', '.join(method_label(m) for m in params['methods'])})")


def default_settings(params: Mapping[str, Any], task: str) -> Dict[str, Any]:
    """The full settings the ablated method runs with on ``task`` in the main benchmark (the chosen
    values the ablation figures mark)."""
    m = ablated_method(params)
    return METHODS[m["name"]].resolve(m.get("settings") or {}, task, str(params.get("prior", "")),
                                      str((params.get("images") or {}).get("set", "")))


def _sweep_base(params: Mapping[str, Any]) -> Dict[str, Any]:
    m = ablated_method(params)
    fixed = (params.get("ablation") or {}).get("settings") or {}
    return {"name": m["name"], "settings": {**(m.get("settings") or {}), **fixed}}


def injection_sweep(params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Method entries of the injection-depth ablation: the ablated method with ``injection_depth`` =
    each of ``ablation.injection_depths`` (``all``: 0 .. number of scales of the prior)."""
    depths = (params.get("ablation") or {}).get("injection_depths", "all")
    if depths == "all" or depths is None:
        depths = list(range(num_scales(params.get("prior", "tiny64")) + 1))
    base = _sweep_base(params)
    return [{"name": base["name"], "label": f"depth {int(d)}",
             "settings": {**base["settings"], "injection_depth": int(d)}} for d in depths]


def guidance_sweep(params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Method entries of the guidance ablation: ``ablation.guidance_strengths`` x
    ``ablation.guidance_steps`` (strength 0, no guidance, is run once)."""
    abl = params.get("ablation") or {}
    strengths = abl.get("guidance_strengths", [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    steps = abl.get("guidance_steps", [1, 3])
    base = _sweep_base(params)
    out = []
    for k in steps:
        for s in strengths:
            if float(s) == 0 and k != steps[0]:
                continue
            out.append({"name": base["name"], "label": f"strength {float(s):g}, steps {int(k)}",
                        "settings": {**base["settings"], "guidance_strength": float(s), "guidance_steps": int(k)}})
    return out


def lowpass_sweep(params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Method entries of the residual low-pass ablation: the ablated method with ``lowpass`` = each
    of ``ablation.lowpass`` (default ``none``, the raw measurement, and ``reference``: ``A(x)`` and
    ``y`` low-passed at coarse scales as the reference method does)."""
    values = (params.get("ablation") or {}).get("lowpass", ["none", "reference"])
    base = _sweep_base(params)
    return [{"name": base["name"], "label": f"low-pass {v}", "settings": {**base["settings"], "lowpass": str(v)}}
            for v in values]


SWEEPS = {"injection": injection_sweep, "guidance": guidance_sweep, "lowpass": lowpass_sweep}
#: the swept settings of each ablation (its table's rows)
SWEPT = {"injection": ["injection_depth"], "guidance": ["guidance_steps", "guidance_strength"],
         "lowpass": ["lowpass"]}


def ablation_params(params: Mapping[str, Any], which: str) -> Dict[str, Any]:
    """The checked benchmark params of one ablation (``injection``, ``guidance`` or ``lowpass``): the
    images, tasks, seed, noise and ``use_labels`` given under ``ablation:`` (default: the
    benchmark's), the sweep as the methods, run name ``which``."""
    if which not in SWEEPS:
        raise ValueError(f"unknown ablation {which!r}; use one of {', '.join(SWEEPS)}")
    abl = params.get("ablation") or {}
    p = bench_params(params, abl.get("use_labels"))
    for key in ("tasks", "seed", "noise_sigma"):
        if key in abl:
            p[key] = copy.deepcopy(abl[key])
    if isinstance(abl.get("images"), dict):
        p["images"] = {**p["images"], **abl["images"]}
    p["methods"] = SWEEPS[which](params)
    p["run"] = which
    return check_params(p, f"{params.get('_source', 'params')} (ablation {which})")


def annotate_sweep(df: pd.DataFrame, methods: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Add the swept settings (from the method entries, by label) as columns: ``injection_depth``,
    ``guidance_strength``, ``guidance_steps`` (numbers), ``lowpass`` (strings)."""
    df = df.copy()
    by_label = {m["label"]: m["settings"] for m in methods}
    for key in ("injection_depth", "guidance_strength", "guidance_steps"):
        vals = [by_label.get(lbl, {}).get(key, np.nan) for lbl in df["method"]]
        if not all(pd.isna(v) for v in vals):
            df[key] = pd.to_numeric(pd.Series(vals, index=df.index))
    lowpass = [by_label.get(lbl, {}).get("lowpass") for lbl in df["method"]]
    if any(v is not None for v in lowpass):
        df["lowpass"] = lowpass
    return df


def run_ablation(params: Mapping[str, Any], which: str, limit: Optional[int] = None,
                 progress: bool = False) -> pd.DataFrame:
    """Run (or resume) one ablation into ``<run>/ablation/<which>/``; returns its cases with the swept
    settings as columns (:func:`annotate_sweep`)."""
    p = ablation_params(params, which)
    df = run_cases(p, study_paths(params).ablation(which), limit=limit, progress=progress,
                   name=f"{params['run']}/ablation/{which}")
    return annotate_sweep(df, p["methods"])


def load_ablation(params: Mapping[str, Any], which: str) -> pd.DataFrame:
    """The cases of a finished ablation, annotated like :func:`run_ablation`'s."""
    path = study_paths(params).ablation(which) / "tables" / "cases.csv"
    if not path.exists():
        raise FileNotFoundError(f"no {which} ablation in {path.parent.parent}: run the ablation notebook first")
    return annotate_sweep(pd.read_csv(path), ablation_params(params, which)["methods"])


def ablation_table(df: pd.DataFrame, params: Mapping[str, Any], which: str, metric: str = "psnr") -> pd.DataFrame:
    """The ablation as a table (rows = sweep points, columns = tasks + mean time per image), written
    as ``tables/ablation_<which>``; returns the display version."""
    keys = SWEPT[which]
    tasks = task_order(df, params)
    v = pd.to_numeric(df[metric], errors="coerce")
    g = v.groupby([*(df[k] for k in keys), df["task"]])
    mean, std = g.mean().unstack("task").reindex(columns=tasks), g.std(ddof=1).unstack("task").reindex(columns=tasks)
    sec = pd.to_numeric(df["seconds"], errors="coerce").groupby([df[k] for k in keys]).mean()
    numbers = pd.concat({f"{metric} mean": mean, f"{metric} std": std}, axis=1)
    numbers.columns = [f"{t} {stat.split(' ')[1]}" for stat, t in numbers.columns]
    numbers["seconds mean"] = sec
    display = pd.DataFrame(index=mean.index)
    digits = DIGITS.get(metric, 3)
    for t in tasks:
        display[TASK_TITLES.get(t, t)] = [fmt_mean_std(a, b, digits) for a, b in zip(mean[t], std[t])]
    display["time per image (s)"] = [f"{x:.2f}" for x in sec.reindex(mean.index)]
    names = {"injection_depth": "injection depth", "guidance_steps": "steps", "guidance_strength": "strength",
             "lowpass": "residual low-pass"}
    display.index = display.index.set_names([names[k] for k in keys])
    display = display.reset_index()
    for k in keys:
        display[names[k]] = display[names[k]].map(lambda v: v if isinstance(v, str) else f"{v:g}")
    cap = (f"{METRICS[metric][0]} (mean ± std over {plural(df['image'].nunique(), 'image')}, "
           f"{images_label(params, 'ablation')}) for each {' and '.join(names[k] for k in keys)}.")
    save_table(numbers, f"ablation_{which}", params, display=display, caption=cap)
    return display
