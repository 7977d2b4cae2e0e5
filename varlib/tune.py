"""Choosing the VAR solver's per-task defaults on a slice of the *training* split.

    python -m varlib.tune --prior tiny64 --images 8
    python -m varlib.tune --prior tiny64 --images 16 --keys dc_pixel_rho,dc_pixel_prior_weight
    python -m varlib.tune --prior faces64 --images 8            # on celeba-train faces
    python -m varlib.tune --prior tiny64 --settings reference --keys injection_depth   # the reference's depth
    python -m varlib.tune --prior faces64 --settings posterior --images 2    # temperature / top-p of the samples

Coordinate search over the solver settings, one task at a time, on ``--images`` images of the prior's
training split (``tinyimagenet-train`` shard 2, or ``celeba-train`` for a face prior; evenly spaced, never
the reported validation, held-out or embedded images):
each setting in ``SEARCH`` (or only those named by ``--keys``) is swept in turn with the others
fixed at the best values so far.
``--settings posterior`` tunes the sampling instead (:func:`search_sampling`): every pair of
``SAMPLE_SEARCH``'s temperature and top-p is scored by the PSNR of the samples' mean and the coverage of
their per-pixel std; the chosen pair is the one whose coverage is nearest a calibrated posterior's
(0.954 at 2 std) among the pairs within ``PSNR_SLACK_DB`` of the best mean's PSNR.
``--settings`` picks the named solver settings to tune (``default``, the published ``reference``,
``injection_only``, ``guided``, ``latent_dc``: the rungs of the component ladder); settings a named
set switches off are skipped (guidance strength without guidance steps, latent weights without
latent steps, pixel settings without the pixel step). For ``reference`` only its one unstated value,
the injection depth, should be searched (``--keys injection_depth``): the rest is published.
Writes every evaluation to ``results/tuning/var_tuning_<prior>[_<settings>].csv`` and the chosen values to
``varlib/tuned_settings.json`` (entry ``<prior>`` for ``default``, ``<prior>/<settings>`` otherwise),
which :mod:`varlib.solver` reads as the per-task values of those settings.
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
from .metrics import CALIBRATED_COVERAGE, coverage, psnr
from .operators import TASKS, make_operator
from .prior import load_prior
from .solver import NAMED_SETTINGS, TUNED_SETTINGS_FILE, resolve_settings, solve, task_defaults, tuned_key

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
# swept last for inpainting: whether the pixel step keeps the prior's image in the hole
INPAINT_LAST = {"dc_pixel_hole": ["blend", "prior"]}
SEARCHABLE = (*INPAINT_SEARCH, *SEARCH, *INPAINT_LAST)
# posterior sampling: a full grid (the two interact); samples at temperature 1 agree more than their
# error warrants (coverage far below 0.95), so the grid reaches above it
SAMPLE_SEARCH: Dict[str, list] = {"temperature": [1.0, 2.0], "top_p": [0.9, 1.0]}
PSNR_SLACK_DB = 0.5  # how much of the mean's PSNR a better-calibrated spread may cost
TUNING_SETS = ("tinyimagenet-train", "celeba-train")


def _candidate(value, num_scales: int):
    if value == "all":
        return num_scales
    if value == "all-1":
        return num_scales - 1
    return value


def _moot(key: str, best: Dict, num_scales: int) -> bool:
    """True when ``key`` cannot change the result given the values chosen so far (``best``: the full
    settings, or the swept ones; missing keys count as switched on)."""
    generated = best.get("injection_depth", 0) < num_scales
    if key in ("guidance_strength", "guidance_steps", "decode", "partial_injection_depth") and not generated:
        return True
    if key == "guidance_steps" and best.get("guidance_strength", 1.0) == 0:
        return True
    if key == "guidance_strength" and best.get("guidance_steps", 1) == 0:
        return True
    if key == "dc_latent_weight" and best.get("dc_latent_steps", 1) == 0:
        return True
    if key.startswith("dc_pixel_") and not best.get("dc_pixel", True):
        return True
    if key == "dc_pixel_hole" and best.get("dc_pixel_prior_weight", 1.0) == 1.0:
        return True
    return False


def tuning_images(n: int, image_set: str = "tinyimagenet-train"):
    """``n`` evenly spaced training images (B, 3, 64, 64) in [0, 1], their labels and names: from shard 2 of
    ``tinyimagenet-train``, or from ``celeba-train`` (files 000001-009000)."""
    from .training.common import evenly_spaced
    if image_set not in TUNING_SETS:
        raise ValueError(f"tuning images come from a training split: {' or '.join(map(repr, TUNING_SETS))}, "
                         f"not {image_set!r}")
    x, y, names = evenly_spaced(image_set.split("-")[0], "train", n, shards=[2])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(y), names


def evaluate(prior, x, labels, task: str, settings: Dict, seed: int = 0) -> Dict:
    """Mean PSNR and seconds per image of ``settings`` on ``x``; with several samples also the coverage
    and mean of their per-pixel std."""
    op = make_operator(task, prior.image_size, seed=seed)
    y = op.measure(x)
    res = solve(y, op, prior, dict(settings), class_labels=labels)
    out = {"psnr": float(np.mean(psnr(res.image, x))), "seconds": res.seconds / len(x)}
    if res.std is not None:
        out.update(coverage=coverage(res.image, res.std, x), mean_std=float(res.std.mean()))
    return out


def search_sampling(prior, x, task: str, rows: List[Dict]) -> Dict:
    """Grid search of the ``posterior`` settings' temperature and top-p on one task; appends every
    evaluation to ``rows`` and returns the chosen pair (see the module docstring for the rule)."""
    grid = [dict(temperature=t, top_p=p) for t in SAMPLE_SEARCH["temperature"] for p in SAMPLE_SEARCH["top_p"]]
    scored = []
    for pair in tqdm(grid, desc=f"{task}: temperature x top_p", leave=False):
        r = evaluate(prior, x, None, task, {"base": "posterior", **pair})
        if "coverage" not in r:
            raise ValueError(f"the posterior settings of {prior.name!r} on {task} draw one sample: the search "
                             "needs num_samples > 1")
        scored.append((pair, r))
        rows.append({"task": task, "swept": "temperature,top_p", **pair, **r})
    best_psnr = max(r["psnr"] for _, r in scored)
    eligible = [(pair, r) for pair, r in scored if r["psnr"] >= best_psnr - PSNR_SLACK_DB]
    pair, r = min(eligible, key=lambda pr: abs(pr[1]["coverage"] - CALIBRATED_COVERAGE))
    print(f"{task}: {pair} -> mean {r['psnr']:.2f} dB (best {best_psnr:.2f}), coverage {r['coverage']:.2f}", flush=True)
    return pair


def task_search(task: str, keys: List[str]) -> Dict[str, list]:
    """The swept settings of ``task`` in order: for inpainting, partial injection first (it decides what the
    transformer paints) and the hole's anchor last; only the ``keys`` asked for."""
    search = dict(INPAINT_SEARCH, **SEARCH, **INPAINT_LAST) if task.startswith("inpaint") else dict(SEARCH)
    return {k: v for k, v in search.items() if k in keys}


def search_task(prior, x, labels, task: str, keys: List[str], rows: List[Dict], named: str = "default") -> Dict:
    """Coordinate search of one task's ``named`` settings from the prior's current per-task values (so it
    refines rather than restarts); appends every evaluation to ``rows`` and returns the chosen values."""
    start = resolve_settings(named, task, prior_name=prior.name)
    best = {k: v for k, v in start.items() if k in SEARCHABLE}
    best["base"] = named
    best_score = None
    for key, values in task_search(task, keys).items():
        if _moot(key, {**start, **best}, prior.num_scales):
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
    # the prior's (or its fallback's) values of the keys not swept stay part of what was scored
    tuned = task_defaults(prior.name, task, named)  # read once: it parses tuned_settings.json
    return {**tuned, **{k: v for k, v in best.items() if k != "base" and (k in keys or k in tuned)}}


def record(entry: str, chosen: Dict[str, Dict], note: str, partial: bool) -> None:
    """Merge the chosen per-task values into ``tuned_settings.json`` under ``entry`` (:func:`tuned_key`;
    values this search did not cover are kept) with how they were chosen: the note replaces the entry's,
    or adds to it for a ``partial`` search."""
    import fcntl

    # two searches (e.g. two priors side by side) may finish together: read-modify-write under a lock
    with open(TUNED_SETTINGS_FILE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(TUNED_SETTINGS_FILE.read_text()) if TUNED_SETTINGS_FILE.exists() else {}
        for task, values in chosen.items():
            current.setdefault(entry, {}).setdefault(task, {}).update(values)
        notes = current.setdefault("_notes", {})
        notes[entry] = f"{notes.get(entry, '')}; then {note}".lstrip("; ") if partial else note
        atomic_write_text(TUNED_SETTINGS_FILE, json.dumps(current, indent=1))  # running solvers read the file


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m varlib.tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="tiny64")
    ap.add_argument("--settings", default="default", choices=list(NAMED_SETTINGS),
                    help="the named solver settings whose per-task values are tuned (default: the solver's own)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--image-set", default=None, choices=TUNING_SETS,
                    help="training split to tune on (default: the one the prior was trained on)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default="results/tuning")
    ap.add_argument("--use-labels", action="store_true", help="give the solver the true class labels")
    ap.add_argument("--keys", default=None,
                    help=f"comma-separated settings to sweep (default: all of {', '.join(SEARCHABLE)}); the others "
                         f"keep their current per-task values")
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.settings == "posterior":
        if a.keys is not None:
            ap.error("--settings posterior searches temperature and top-p together; --keys does not apply")
        keys = list(SAMPLE_SEARCH)
    else:
        keys = list(SEARCHABLE) if a.keys is None else a.keys.split(",")
        unknown = set(keys) - set(SEARCHABLE)
        if unknown:
            ap.error(f"unknown --keys {sorted(unknown)}; choose from {', '.join(SEARCHABLE)}")
    prior = load_prior(a.prior)
    from .training.common import image_set_of
    image_set = a.image_set or image_set_of(prior.name, "train")  # the split the prior was trained on
    x, labels, _ = tuning_images(a.images, image_set)
    labels = labels if a.use_labels else None
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if a.settings == "default" else f"_{a.settings}"
    where = "shard 2, evenly spaced" if image_set == "tinyimagenet-train" else "files 000001-009000, evenly spaced"
    note = (f"{', '.join(keys)} chosen by python -m varlib.tune on {a.images} {image_set} images ({where}), "
            f"labels={'yes' if a.use_labels else 'no'}")
    rows: List[Dict] = []
    chosen: Dict[str, Dict] = {}
    for task in a.tasks.split(","):
        chosen[task] = search_sampling(prior, x, task, rows) if a.settings == "posterior" \
            else search_task(prior, x, labels, task, keys, rows, a.settings)
        # each task is kept as soon as it is chosen, so an interrupted search loses only the task it was on
        atomic_write_text(out / f"var_tuning_{prior.name}{suffix}.csv", pd.DataFrame(rows).to_csv(index=False))
        record(tuned_key(prior.name, a.settings), {task: chosen[task]}, note, partial=a.keys is not None)
    print(json.dumps(chosen, indent=1))


if __name__ == "__main__":
    main()
