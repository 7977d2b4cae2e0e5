"""Tune the baselines' per-task hyper-parameters on training images (Tiny ImageNet, or CelebA faces).

    python -m varlib.tune_baselines [--images 8] [--methods tv pnp-bm3d] [--tasks ...] [--out results/tuning]
    python -m varlib.tune_baselines --image-set celeba-train --diffusion-prior faces64-diffusion \
        --methods tv pnp-bm3d pnp-unet diffpir --name faces --write-domain     # the face domain's values

Images: ``--images`` images of training shard 0 (``read_tinyimagenet('train', shards=[0])``), one
per class, classes spread evenly over the shard -- never the validation split or the embedded
photos that the benchmark reports; with ``--image-set celeba-train``, evenly spaced faces of the
CelebA training files (000001-009000), never the held-out ones. Each task's operator uses seed 0 and
the default noise level. ``--write-domain`` stores the chosen values as that domain's
(``varlib/tuned_baselines.json``, :func:`varlib.baselines.domain_settings`), which the benchmark
uses for image sets of the domain (``celeba-val``).

A handful of values per task (coordinate-wise, cheap):

* ``tv``: ``lam`` in :data:`TV_LAMS` at the default iteration count;
* ``pnp-bm3d``: ``lam`` in :data:`PNP_LAMS`, then ``sigma_den`` in :data:`PNP_SIGMA_DENS` with the
  best ``lam``, then (inpainting only, where the holes need a stronger start) ``sigma_max`` in
  :data:`PNP_SIGMA_MAXS` with the best pair;
* ``diffpir`` (embedded diffusion prior, 100 steps): ``lambda_`` in :data:`DIFFPIR_LAMBDAS`, then
  ``zeta`` in :data:`DIFFPIR_ZETAS`;
* ``pnp-unet`` (DPIR's HQS with the embedded diffusion network as denoiser): ``lam`` in
  :data:`PNP_UNET_LAMS`, then ``sigma_max`` in :data:`PNP_UNET_SIGMA_MAXS`, then ``iters`` in
  :data:`PNP_UNET_ITERS`;
* ``dps`` (embedded diffusion prior, 1000 steps): the step size ``weight`` in :data:`DPS_WEIGHTS`.
  The grid reaches far above the paper's zeta = 1 because deepinv adds the guidance to the score,
  so each step applies it scaled by the step's noise variance, much less than the paper's
  constant step: on our 64 px images PSNR kept rising up to the largest values tried.
  DPS costs about a minute per image on one core, so ``--dps-tasks`` can restrict its search to a
  few tasks; the other tasks then take the value chosen on the most similar tuned task
  (inpainting from inpainting, the rest from the blurs).

The diffusion methods are tuned with ``--name diffusion`` so that their files do not replace the
classical baselines' ones.

Every trial is appended to ``<out>/baselines_trials.jsonl`` as soon as it finishes, so an
interrupted tuning resumes where it stopped.

Writes ``<out>/baselines.csv`` (one row per method x task x tried setting: mean/std PSNR over the
images, seconds per image, ``chosen``) and ``<out>/baselines_chosen.json`` (the chosen settings,
to copy into ``varlib.baselines.BASELINE_SETTINGS``). Run it single-threaded
(``OMP_NUM_THREADS=1``); it takes ~15 minutes on an idle 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from . import baselines as bl
from .io import atomic_write_text

TV_LAMS = (0.001, 0.003, 0.01, 0.03)
PNP_LAMS = (0.1, 0.3, 1.0)
PNP_SIGMA_DENS = (0.015, 0.03, 0.05)  # 0.03 is the starting value
PNP_SIGMA_MAXS = (0.2, 0.4)
DIFFPIR_LAMBDAS = (1.0, 7.0, 25.0)
DIFFPIR_ZETAS = (0.1, 0.3, 1.0)
DPS_WEIGHTS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
PNP_UNET_LAMS = (0.1, 0.23, 1.0)       # DPIR's lambda is 0.23
PNP_UNET_SIGMA_MAXS = (0.1, 49 / 255, 0.4)  # DPIR starts at 49/255
PNP_UNET_ITERS = (8, 24)                  # DPIR: 8 for deblurring, 24 for super-resolution
DIFFUSION_METHODS = ("dps", "diffpir", "pnp-unet")


TUNING_SETS = ("tinyimagenet-train", "celeba-train")


def tuning_images(n: int = 8, image_size: int = 64, image_set: str = "tinyimagenet-train") -> tuple:
    """``n`` training images; (images, names): of Tiny ImageNet shard 0, one per class, classes evenly
    spread, or (``celeba-train``) evenly spaced CelebA training faces."""
    from .data import read_tinyimagenet, to_tensor, resize_center_crop
    if image_set not in TUNING_SETS:
        raise ValueError(f"tuning images come from a training split: {' or '.join(map(repr, TUNING_SETS))}, "
                         f"not {image_set!r}")
    if image_set == "celeba-train":
        from .training.common import evenly_spaced
        raw, _, names = evenly_spaced("celeba", "train", n)
        return to_tensor(raw), names
    raw, labels, names = read_tinyimagenet("train", shards=[0])
    classes = np.unique(labels)
    picks = [int(np.flatnonzero(labels == c)[0]) for c in classes[np.linspace(0, len(classes) - 1, n).astype(int)]]
    arrays = raw[picks]
    if image_size != arrays.shape[1]:
        from PIL import Image
        arrays = np.stack([resize_center_crop(Image.fromarray(a), image_size) for a in arrays])
    return to_tensor(arrays), [names[i] for i in picks]


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    from .metrics import psnr
    return psnr(x, ref)


def evaluate(method: str, settings: Dict[str, Any], x: torch.Tensor, y: torch.Tensor, op,
             diffusion_prior=None) -> Dict[str, Any]:
    """Mean/std PSNR and seconds per image of ``method`` with ``settings`` on the batch."""
    t0 = time.perf_counter()
    if method in DIFFUSION_METHODS:  # batched, with the embedded diffusion prior
        from .diffusion.solvers import METHODS
        est = METHODS[method](y, op, prior=diffusion_prior, seed=0, **settings).image
    elif method == "tv":  # TV is batched
        est = bl.BASELINES[method](y, op, **settings).image
    else:
        fn = bl.BASELINES[method]
        est = torch.cat([fn(y[i:i + 1], op, **settings).image for i in range(y.shape[0])])
    sec = (time.perf_counter() - t0) / y.shape[0]
    p = _psnr(est, x)
    return {"psnr_mean": float(p.mean()), "psnr_std": float(p.std()), "seconds_per_image": sec}


def _trial_cache(path: Path) -> Dict[str, Dict[str, Any]]:
    cache = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                cache[r["id"]] = r["result"]
            except (json.JSONDecodeError, KeyError):
                continue
    return cache


def _borrow(task: str, tuned: Dict[str, Any]) -> Any:
    """The setting of the most similar tuned task: inpainting from inpainting, else from the blurs/SR."""
    same = [t for t in tuned if t.startswith("inpaint") == task.startswith("inpaint")]
    return tuned[(same or list(tuned))[0]]


def _search(method: str, task: str, base: Dict[str, Any], trial) -> Dict[str, Any]:
    """The coordinate search of one method on one task from ``base``; ``trial(settings)`` scores a setting."""
    if method == "tv":
        return max(({**base, "lam": v} for v in TV_LAMS), key=trial)
    if method == "pnp-bm3d":
        best = max(({**base, "lam": v} for v in PNP_LAMS), key=trial)
        best = max(({**best, "sigma_den": v} for v in PNP_SIGMA_DENS), key=trial)
        if task.startswith("inpaint"):
            best = max(({**best, "sigma_max": v} for v in PNP_SIGMA_MAXS), key=trial)
        return best
    if method == "diffpir":
        best = max(({**base, "lambda_": v} for v in DIFFPIR_LAMBDAS), key=trial)
        return max(({**best, "zeta": v} for v in DIFFPIR_ZETAS), key=trial)
    if method == "pnp-unet":
        best = max(({**base, "lam": v} for v in PNP_UNET_LAMS), key=trial)
        best = max(({**best, "sigma_max": v} for v in PNP_UNET_SIGMA_MAXS), key=trial)
        return max(({**best, "iters": v} for v in PNP_UNET_ITERS), key=trial)
    if method == "dps":
        return max(({**base, "weight": v} for v in DPS_WEIGHTS), key=trial)
    raise ValueError(f"tuning is implemented for tv, pnp-bm3d, dps, diffpir and pnp-unet, not {method!r}")


def _start_settings(method: str, task: str, domain: Optional[str] = None) -> Dict[str, Any]:
    if method in DIFFUSION_METHODS:
        from .diffusion.solvers import embedded_settings
        return embedded_settings(method, task, domain)
    return bl.baseline_settings(method, task, domain)


class _Trials:
    """Scores settings of one method on one task, reading and appending the resumable trial file."""

    def __init__(self, method, task, x, y, op, dprior, names, image_size, seed, cache, path: Path, log):
        self.method, self.task, self.x, self.y, self.op, self.dprior = method, task, x, y, op, dprior
        self.ident, self.cache, self.path, self.log = (names, image_size, seed, float(op.noise_sigma)), cache, path, log
        self.tried: Dict[str, Dict[str, Any]] = {}

    def __call__(self, s: Dict[str, Any]) -> float:
        key = json.dumps(s, sort_keys=True)
        tid = json.dumps([self.method, self.task, key, *self.ident])
        if key not in self.tried:
            if tid in self.cache:
                self.tried[key] = self.cache[tid]
            else:
                self.tried[key] = evaluate(self.method, s, self.x, self.y, self.op, self.dprior)
                with open(self.path, "a") as f:
                    f.write(json.dumps({"id": tid, "result": self.tried[key]}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            r = self.tried[key]
            self.log(f"[{self.task}] {self.method} {key}: {r['psnr_mean']:.2f} dB ({r['seconds_per_image']:.2f} s/image)")
        return self.tried[key]["psnr_mean"]


def _write_outputs(out: Path, name: str, rows: List[Dict], names: List[str], image_size: int, seed: int,
                   chosen: Dict, image_set: str = "tinyimagenet-train") -> None:
    import pandas as pd
    df = pd.DataFrame(rows)
    df.insert(2, "images", len(names))
    df["image_set"] = ("tinyimagenet-train shard 0 (one image per class, classes evenly spaced)"
                       if image_set == "tinyimagenet-train" else f"{image_set} (evenly spaced)")
    atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    atomic_write_text(out / f"{name}_chosen.json", json.dumps({"images": names, "image_size": image_size,
                                                               "seed": seed, "chosen": chosen}, indent=2))


def tune(methods: List[str], tasks: List[str], n_images: int, out: Path, image_size: int = 64,
         seed: int = 0, log=print, name: str = "baselines", dps_tasks: Optional[List[str]] = None,
         diffusion_prior: str = "tiny64-diffusion", image_set: str = "tinyimagenet-train"
         ) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Search each method's per-task settings (:func:`_search`) on ``n_images`` training images of
    ``image_set``, starting from the values in use for its domain; writes ``<out>/<name>.csv`` and
    ``<out>/<name>_chosen.json`` and returns ``{method: {task: settings}}``."""
    from .data import image_domain
    from .operators import make_operator

    x, names = tuning_images(n_images, image_size, image_set)
    domain = image_domain(image_set)
    log(f"tuning on {len(names)} {image_set} images: {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    dprior = None
    if set(methods) & set(DIFFUSION_METHODS):
        from .diffusion.model import load_diffusion_prior
        dprior = load_diffusion_prior(diffusion_prior)
    trials_path = out / f"{name}_trials.jsonl"
    cache = _trial_cache(trials_path)
    rows, chosen = [], {m: {} for m in methods}
    for task in tasks:
        op = make_operator(task, image_size, seed=seed)
        y = op.measure(x, indices=range(x.shape[0]))
        init_p = _psnr(op.init_estimate(y), x)
        rows.append(dict(method="init", task=task, settings="{}", psnr_mean=float(init_p.mean()),
                         psnr_std=float(init_p.std()), seconds_per_image=0.0, chosen=True))
        log(f"[{task}] init {init_p.mean():.2f} dB")
        for method in methods:
            if method == "dps" and dps_tasks is not None and task not in dps_tasks:
                continue  # filled in below from a tuned task
            trial = _Trials(method, task, x, y, op, dprior, names, image_size, seed, cache, trials_path, log)
            best = _search(method, task, _start_settings(method, task, domain), trial)
            chosen[method][task] = best
            best_key = json.dumps(best, sort_keys=True)
            rows.extend(dict(method=method, task=task, settings=key, **r, chosen=key == best_key)
                        for key, r in trial.tried.items())
            log(f"[{task}] {method} chosen {best_key}")
    if "dps" in methods and dps_tasks is not None and chosen["dps"]:
        for task in tasks:
            if task not in chosen["dps"]:
                chosen["dps"][task] = dict(_borrow(task, {t: chosen["dps"][t] for t in dps_tasks if t in chosen["dps"]}))
                log(f"[{task}] dps not searched; takes {chosen['dps'][task]} from a tuned task")
    _write_outputs(out, name, rows, names, image_size, seed, chosen, image_set)
    return chosen


def write_domain(image_set: str, chosen: Dict[str, Dict[str, Dict[str, Any]]], command: str, n_images: int,
                 trials: Path, diffusion_prior: Optional[str] = None) -> Path:
    """Store ``chosen`` as the domain of ``image_set``'s values in :data:`varlib.baselines.DOMAIN_SETTINGS_FILE`
    (the methods tuned by this call replace theirs; the others stay)."""
    from .data import image_domain
    domain = image_domain(image_set)
    if domain is None:
        raise ValueError(f"{image_set!r} belongs to no domain with its own baseline settings "
                         "(varlib.data.DOMAIN_TRAIN_SETS); its values are the defaults in varlib/baselines.py")
    path = bl.DOMAIN_SETTINGS_FILE
    table = json.loads(path.read_text()) if path.exists() else {}
    entry = table.setdefault(domain, {"notes": {}, "chosen": {}})
    for m, per_task in chosen.items():
        if per_task:
            entry["chosen"][m] = per_task
            entry["notes"][m] = (f"{command}: {n_images} {image_set} images" +
                                 (f", prior {diffusion_prior}" if m in DIFFUSION_METHODS else "") + f", trials in {trials}")
    atomic_write_text(path, json.dumps(table, indent=1) + "\n")
    print("wrote", path)
    return path


def main(argv=None):
    from .operators import TASKS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=["tv", "pnp-bm3d"], choices=["tv", "pnp-bm3d", "dps", "diffpir", "pnp-unet"])
    ap.add_argument("--name", default="baselines", help="output file prefix (use 'diffusion' for dps/diffpir/pnp-unet)")
    ap.add_argument("--dps-tasks", nargs="+", default=None, help="search DPS on these tasks only (it is slow)")
    ap.add_argument("--diffusion-prior", default="tiny64-diffusion")
    ap.add_argument("--write-defaults", action="store_true",
                    help="also write the chosen dps/diffpir/pnp-unet values to varlib/diffusion/tuned_settings.json "
                         "(the defaults of the benchmark's dps / diffpir / pnp-unet)")
    ap.add_argument("--image-set", default="tinyimagenet-train", choices=list(TUNING_SETS),
                    help="the training images searched on (celeba-train: the face domain)")
    ap.add_argument("--write-domain", action="store_true",
                    help="write the chosen values as the image set's domain's (varlib/tuned_baselines.json), "
                         "which the benchmark uses for that domain's image sets (celeba-val)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--out", type=Path, default=Path("results/tuning"))
    args = ap.parse_args(argv)
    if args.write_defaults and args.image_set != "tinyimagenet-train":
        ap.error("--write-defaults stores the Tiny ImageNet defaults; for another image set use --write-domain")
    torch.set_num_threads(1)
    chosen = tune(args.methods, args.tasks, args.images, args.out, args.image_size,
                  log=lambda m: print(m, flush=True), name=args.name, dps_tasks=args.dps_tasks,
                  diffusion_prior=args.diffusion_prior, image_set=args.image_set)
    print(json.dumps(chosen, indent=2))
    command = f"python -m varlib.tune_baselines {' '.join(argv if argv is not None else sys.argv[1:])}"
    if args.write_domain:
        write_domain(args.image_set, chosen, command, args.images, args.out / f"{args.name}.csv",
                     args.diffusion_prior if set(chosen) & set(DIFFUSION_METHODS) else None)
    if args.write_defaults:
        from .diffusion.solvers import TUNED_SETTINGS_FILE
        old = json.loads(TUNED_SETTINGS_FILE.read_text()) if TUNED_SETTINGS_FILE.exists() else {}
        if old.get("prior") not in (None, args.diffusion_prior):
            old = {}  # values tuned for another network do not carry over
        table, notes = old.get("chosen", {}), old.get("notes", {})
        for m, v in chosen.items():  # replaces the methods tuned by this call, keeps the others
            if m in DIFFUSION_METHODS and v:
                table[m] = v
                notes[m] = f"{command}: {args.images} {args.image_set} images, trials in {args.out / (args.name + '.csv')}"
        atomic_write_text(TUNED_SETTINGS_FILE, json.dumps({"prior": args.diffusion_prior, "notes": notes,
                                                          "chosen": table}, indent=1))
        print("wrote", TUNED_SETTINGS_FILE)


if __name__ == "__main__":
    main()
