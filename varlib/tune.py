"""Choosing the VAR solver's per-task defaults on a slice of the *training* split.

    python -m varlib.tune --prior tiny64 --images 8
    python -m varlib.tune --prior tiny64 --images 16 --keys dc_pixel_rho,dc_pixel_prior_weight

Coordinate search over the solver settings, one task at a time, on ``--images`` images of
``tinyimagenet-train`` (shard 2, evenly spaced, never the reported validation or embedded images):
each setting in ``SEARCH`` (or only those named by ``--keys``) is swept in turn with the others
fixed at the best values so far.
Writes every evaluation to ``results/tuning/var_tuning.csv`` and the chosen values to
``varlib/tuned_settings.json``, which :mod:`varlib.solver` reads as the per-task defaults.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .io import atomic_write_text
from .metrics import psnr
from .operators import TASKS, make_operator
from .prior import load_prior
from .solver import TUNED_SETTINGS_FILE, resolve_settings, solve

# swept in this order; each list holds the candidate values
# ("all-1" = every scale of the prior's schedule but the last): the solver is injection *then*
# guided generation, so at least one scale is left to the transformer; full injection (the
# tokenised initial estimate, decoder and data consistency only) is measured by the injection
# ablation of the study instead. Guidance settings are skipped once they have no effect.
SEARCH: Dict[str, list] = {
    "injection_depth": [0, 1, 2, 3, "all-1"],
    "guidance_strength": [0.0, 0.5, 1.0, 2.0],
    "decode": ["argmax", "soft"],
    "dc_latent_weight": [0.1, 1.0],
    "dc_pixel_rho": [0.05, 0.1, 0.25, 0.5, 1.0],
    "dc_pixel_prior_weight": [0.25, 0.5, 0.75, 1.0],
}
INPAINT_SEARCH = {"partial_injection_depth": [0, "all"]}


def _candidate(value, num_scales: int):
    if value == "all":
        return num_scales
    if value == "all-1":
        return num_scales - 1
    return value


def _moot(key: str, best: Dict, num_scales: int) -> bool:
    """True when ``key`` cannot change the result given the values chosen so far."""
    guided = best.get("injection_depth", 0) < num_scales
    if key in ("guidance_strength", "guidance_steps", "decode", "partial_injection_depth"):
        if not guided:
            return True
    if key in ("guidance_steps",) and best.get("guidance_strength", 1.0) == 0:
        return True
    return False


def tuning_images(n: int, shard: int = 2):
    from .data import read_tinyimagenet
    x, y, names = read_tinyimagenet("train", shards=[shard])
    idx = np.linspace(0, len(x) - 1, n).round().astype(int)
    return torch.from_numpy(x[idx]).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(y[idx]), [names[i] for i in idx]


def evaluate(prior, x, labels, task: str, settings: Dict, seed: int = 0) -> Dict:
    op = make_operator(task, prior.image_size, seed=seed)
    y = op.measure(x)
    res = solve(y, op, prior, dict(settings), class_labels=labels)
    return {"psnr": float(np.mean(psnr(res.image, x))), "seconds": res.seconds / len(x)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m varlib.tune")
    ap.add_argument("--prior", default="tiny64")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default="results/tuning")
    ap.add_argument("--use-labels", action="store_true", help="give the solver the true class labels")
    ap.add_argument("--keys", default=None,
                    help=f"comma-separated settings to sweep (default: all of {', '.join(SEARCH)}); the others keep "
                         f"their current per-task values")
    a = ap.parse_args(argv)
    searchable = [*SEARCH, *INPAINT_SEARCH]
    keys = searchable if a.keys is None else a.keys.split(",")
    unknown = set(keys) - set(searchable)
    if unknown:
        ap.error(f"unknown --keys {sorted(unknown)}; choose from {', '.join(searchable)}")
    prior = load_prior(a.prior)
    x, labels, _ = tuning_images(a.images)
    labels = labels if a.use_labels else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []
    chosen: Dict[str, Dict] = {}
    tasks = a.tasks.split(",")
    for task in tasks:
        # start from the current per-task defaults, so the search refines rather than restarts
        start = resolve_settings("default", task, prior_name=prior.name)
        best = {k: v for k, v in start.items() if k in set(SEARCH) | set(INPAINT_SEARCH)}
        best["base"] = "default"
        search = dict(SEARCH, **(INPAINT_SEARCH if task.startswith("inpaint") else {}))
        search = {k: v for k, v in search.items() if k in keys}
        best_score = None
        for key, values in search.items():
            if _moot(key, best, prior.num_scales):
                print(f"{task}: {key} skipped (no effect with {best})", flush=True)
                continue
            scores = {}
            if best_score is not None:  # the current value competes with the candidates
                scores[best[key]] = best_score
            else:  # first swept key: measure the current value too
                values = [best[key], *values]
            values = [v for v in dict.fromkeys(_candidate(v, prior.num_scales) for v in values) if v not in scores]
            if key == "injection_depth":
                values = [v for v in values if v < prior.num_scales]
            for v in tqdm(values, desc=f"{task}: {key}", leave=False):
                trial = dict(best, **{key: v})
                r = evaluate(prior, x, labels, task, trial)
                scores[v] = r["psnr"]
                rows.append({"task": task, "swept": key, "value": v, **{k: trial[k] for k in trial if k != "base"}, **r})
            best[key] = max(scores, key=scores.get)
            best_score = scores[best[key]]
            print(f"{task}: {key} -> {best[key]} ({scores[best[key]]:.2f} dB; tried {scores})", flush=True)
        chosen[task] = {k: v for k, v in best.items() if k != "base"}
    df = pd.DataFrame(rows)
    atomic_write_text(out / "var_tuning.csv", df.to_csv(index=False))
    current = json.loads(TUNED_SETTINGS_FILE.read_text()) if TUNED_SETTINGS_FILE.exists() else {}
    for task, values in chosen.items():  # keep per-task values this search does not cover
        current.setdefault(prior.name, {}).setdefault(task, {}).update(values)
    notes = current.setdefault("_notes", {})  # how each prior's values were chosen
    note = (f"{', '.join(keys)} chosen by python -m varlib.tune on {a.images} tinyimagenet-train images "
            f"(shard 2, evenly spaced), labels={'yes' if a.use_labels else 'no'}")
    if a.keys is None:
        notes[prior.name] = note + "; other per-task values kept from earlier searches (results/tuning/)"
    else:  # a partial search adds to the prior's note
        notes[prior.name] = f"{notes.get(prior.name, '')}; then {note}".lstrip("; ")
    atomic_write_text(TUNED_SETTINGS_FILE, json.dumps(current, indent=1))  # running solvers read the file
    print(json.dumps(chosen, indent=1))


if __name__ == "__main__":
    main()
