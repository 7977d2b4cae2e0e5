"""The benchmark runner: images x tasks x methods, resumable, with tidy tables.

    python -m varlib.bench --params params/default.yaml [--run NAME] [--limit N] [--results-dir DIR]

Parameters (YAML or a dict; see ``params/default.yaml``)::

    run: default                 # results/<run>/
    results_dir: results         # optional, parent of the run folder (relative to the working dir)
    prior: tiny64                # for the VAR methods ("test" = random-weight test prior)
    diffusion_prior: tiny64-diffusion   # for dps / diffpir (a name under varlib/weights or a folder)
    device: auto                 # VAR and diffusion methods: "auto" (cuda when available), "cpu", "cuda"
    images: {set: embedded, image_size: 64, limit: 6}
    tasks: [inpaint_box, inpaint_random, gaussian_blur, motion_blur, nonuniform_blur, sr4]
    noise_sigma: 0.025
    seed: 0                      # operator seed (masks, kernels, noise) and the samplers' seed
    use_labels: false            # pass the set's class labels to the VAR prior
    batch_size: 8                # images per call for the batched methods (VAR and diffusion methods)
    methods:
      - {name: init}
      - {name: var, label: var-8samples, settings: {num_samples: 8}}

Methods (:data:`METHODS`): baselines ``init``, ``tv``, ``pnp-bm3d`` (:mod:`varlib.baselines`, per-task
settings from ``BASELINE_SETTINGS``); ``dps`` and ``diffpir`` with the embedded diffusion prior
(:mod:`varlib.diffusion.solvers`, per-task settings from ``EMBEDDED_SETTINGS``, unconditional, so
class labels do not apply); ``dps-imagenet`` and ``diffpir-imagenet`` with deepinv's downloaded 256 px
ImageNet network (:func:`varlib.baselines.dps` / ``diffpir``); and the VAR solver
``var`` (named settings "default"), ``var-reference`` ("reference"), ``var-injection``
("injection_only"). ``settings`` are overrides; ``label`` names the row (default: the method name,
followed by the overrides when there are any).

Caching. A *case* is (image, task, method label, settings). Its key is a hash of the image set and
name, task, method, label, fully resolved settings (less solver options added later that sit at their
neutral value, ``solver.NEUTRAL_SETTINGS``), prior (VAR methods only -- baselines do not use
it -- as name plus a hash of its checkpoint files, see :func:`prior_fingerprint`), seed, noise_sigma,
image size and the operator's ``describe()``. Each finished case is appended at once to
``results/<run>/cache/cases.jsonl`` (write, flush, fsync); a rerun skips cases whose key is there, so
an interrupted run resumes without duplicates and a changed setting gets a new key. Reconstructions
are saved as ``cache/images/<key>.png``; ground truth and measurement once per image (x task) as
``cache/images/gt_*.png`` / ``meas_*.png``; with ``num_samples > 1`` the VAR std map as
``cache/images/<key>_std.npy``.

Tables (written atomically: ``.tmp`` then ``os.replace``): ``tables/cases.csv`` (the rows of this
configuration), ``tables/summary.csv``, ``summary.md``, ``summary.tex`` (mean +- std per task x
method of psnr, ssim, lpips, seconds, network evaluations).

Columns of a case row: run, key, image_set, image_index, image, class_label, task, method (the row
label), method_name, settings (JSON of the overrides), settings_full (JSON of the resolved
settings), psnr, ssim, lpips (empty when LPIPS is unavailable), seconds (wall time per image; for a
batched call the call's time divided by the batch size), transformer_evals, decoder_evals,
denoiser_evals, network_evals (per image), peak_mem_mb, mem_kind, residual (||y - A x||_2 per
image), seed, noise_sigma, image_size, prior, prior_id (name@checkpoint hash), device, git_commit, created, recon_path, gt_path,
measurement_path, std_path.

Peak memory (``peak_mem_mb``, ``mem_kind``): on CUDA, ``torch.cuda.max_memory_allocated`` during the
call minus the allocation before it (``cuda_max_allocated``); on the CPU, the peak resident set size
of the process during the call above its size at the start, sampled every 5 ms from
``/proc/self/statm`` by a helper thread (``rss_sampled``); where ``/proc`` is missing, the growth of
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (``maxrss_delta``, 0 once the process has been larger
before). Python's ``tracemalloc`` is not used: it does not see PyTorch's tensor allocations. For a
batched call the value is the whole batch's.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import hashlib
import inspect
import json
import math
import os
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

#: method name -> ("baseline", function name in varlib.baselines), ("var", named solver settings) or
#: ("diffusion", key of varlib.diffusion.solvers.METHODS: DPS/DiffPIR with the embedded diffusion prior)
METHODS: Dict[str, tuple] = {
    "init": ("baseline", "initial_estimate"),
    "tv": ("baseline", "tv_reconstruction"),
    "pnp-bm3d": ("baseline", "pnp_bm3d"),
    "dps": ("diffusion", "dps"),
    "diffpir": ("diffusion", "diffpir"),
    "dps-imagenet": ("baseline", "dps"),
    "diffpir-imagenet": ("baseline", "diffpir"),
    "var": ("var", "default"),
    "var-reference": ("var", "reference"),
    "var-injection": ("var", "injection_only"),
}

DEFAULTS: Dict[str, Any] = dict(
    run="default", results_dir="results", prior="tiny64", diffusion_prior="tiny64-diffusion", device="auto",
    images=dict(set="embedded", image_size=64, limit=None),
    tasks=None, noise_sigma=None, seed=0, use_labels=False, batch_size=8, methods=None,
)

CASE_COLUMNS = [
    "run", "key", "image_set", "image_index", "image", "class_label", "task", "method", "method_name",
    "settings", "settings_full", "psnr", "ssim", "lpips", "seconds", "transformer_evals", "decoder_evals",
    "denoiser_evals", "network_evals", "peak_mem_mb", "mem_kind", "residual", "seed", "noise_sigma",
    "image_size", "prior", "prior_id", "device", "git_commit", "created", "recon_path", "gt_path", "measurement_path",
    "std_path",
]

#: baselines that run a neural network: batched and on the benchmark's ``device`` like the VAR methods
NETWORK_BASELINES = ("dps-imagenet", "diffpir-imagenet")

SUMMARY_METRICS = ("psnr", "ssim", "lpips", "seconds", "network_evals")


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------
@dataclass
class MethodSpec:
    name: str
    label: str
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return METHODS[self.name][0]

    @property
    def target(self) -> str:
        return METHODS[self.name][1]


def _compact(d: Dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def load_params(params: Union[str, os.PathLike, Dict[str, Any]]) -> Dict[str, Any]:
    """Read (YAML path or dict), fill defaults and validate the parameters; raises ``ValueError``."""
    if isinstance(params, (str, os.PathLike)):
        import yaml
        path = Path(params)
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
    elif isinstance(params, dict):
        raw = json.loads(json.dumps(params, default=str))  # deep copy, plain types
    else:
        raise TypeError(f"params must be a dict or a path to a YAML file, got {type(params).__name__}")
    if not isinstance(raw, dict):
        raise ValueError("the parameters must be a mapping (YAML dict)")
    # a parameter file may carry keys for other tools (e.g. `gallery`, `ablation` for varlib.study):
    # they are ignored, unless they look like a misspelt benchmark key
    unknown = sorted(set(raw) - set(DEFAULTS))
    for k in unknown:
        close = difflib.get_close_matches(str(k), list(DEFAULTS), n=1, cutoff=0.75)
        if close:
            raise ValueError(f"unknown parameter {k!r} (did you mean {close[0]!r}?); valid: {sorted(DEFAULTS)}")
    if unknown:
        warnings.warn(f"varlib.bench ignores the parameter(s) {unknown}", stacklevel=2)
    raw = {k: v for k, v in raw.items() if k in DEFAULTS}
    if isinstance(raw.get("use_labels"), list):  # varlib.study runs both; the benchmark alone runs the first
        modes = raw["use_labels"]
        if not modes:
            raise ValueError("use_labels must be true, false or a non-empty list of them")
        if len(modes) > 1:
            warnings.warn(f"use_labels={modes}: varlib.bench runs use_labels={modes[0]} only "
                          "(varlib.study.run_benchmark runs every value)", stacklevel=2)
        raw["use_labels"] = modes[0]
    p = {**json.loads(json.dumps(DEFAULTS)), **raw}
    images = {**DEFAULTS["images"], **(raw.get("images") or {})}
    bad = set(images) - set(DEFAULTS["images"])
    if bad:
        raise ValueError(f"unknown images parameter(s) {sorted(bad)}; valid: {sorted(DEFAULTS['images'])}")
    if isinstance(images.get("set"), str):
        images["set"] = os.path.expandvars(images["set"])
    p["images"] = images
    p["use_labels"] = bool(p["use_labels"])
    _validate(p)
    return p


def _validate(p: Dict[str, Any]) -> None:
    from .data import IMAGE_SETS
    from .operators import DEFAULT_NOISE_SIGMA, TASKS

    s = str(p["images"]["set"])
    if s.lower() not in IMAGE_SETS and not Path(s).expanduser().is_dir():
        raise ValueError(f"unknown image set {s!r}; valid sets: {', '.join(IMAGE_SETS)} (or an existing folder)")
    size = p["images"]["image_size"]
    if not isinstance(size, int) or size < 16 or size % 4:
        raise ValueError(f"images.image_size must be an integer >= 16 divisible by 4, got {size!r}")
    if p["tasks"] is None:
        p["tasks"] = list(TASKS)
    if isinstance(p["tasks"], str):
        p["tasks"] = [p["tasks"]]
    bad = [t for t in p["tasks"] if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; valid tasks: {', '.join(TASKS)}")
    if len(set(p["tasks"])) != len(p["tasks"]):
        raise ValueError(f"tasks listed twice in {p['tasks']}")
    if p["noise_sigma"] is None:
        p["noise_sigma"] = DEFAULT_NOISE_SIGMA
    p["noise_sigma"] = float(p["noise_sigma"])
    p["seed"] = int(p["seed"])
    p["batch_size"] = max(1, int(p["batch_size"]))
    if p["device"] not in ("auto", "cpu", "cuda") and not str(p["device"]).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {p['device']!r}")
    if not p["methods"]:
        raise ValueError(f"no methods given; valid methods: {', '.join(METHODS)}")
    specs = [_method_spec(m) for m in p["methods"]]
    labels = [m.label for m in specs]
    dup = sorted({l for l in labels if labels.count(l) > 1})
    if dup:
        raise ValueError(f"method label(s) {dup} used twice; give the entries distinct `label`s")
    for m in specs:
        for task in p["tasks"]:
            resolve_method_settings(m, task, str(p.get("prior", "")))  # raises on unknown settings
    if any(m.kind == "var" for m in specs):
        from .prior import KNOWN_PRIORS
        prior = str(p["prior"])
        if prior not in KNOWN_PRIORS and not Path(prior).exists():
            raise ValueError(f"unknown prior {prior!r}; known: {', '.join(KNOWN_PRIORS)} (or a checkpoint folder)")
    p["methods"] = [dict(name=m.name, label=m.label, settings=m.settings) for m in specs]


def _method_spec(entry: Any) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"a method entry must be a name or a mapping with `name`, got {entry!r}")
    bad = set(entry) - {"name", "label", "settings"}
    if bad:
        raise ValueError(f"unknown key(s) {sorted(bad)} in method entry {entry!r}; valid: name, label, settings")
    name = str(entry["name"])
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    settings = entry.get("settings") or {}
    if not isinstance(settings, dict):
        raise ValueError(f"settings of method {name!r} must be a mapping, got {settings!r}")
    label = entry.get("label") or (name if not settings else f"{name}{_compact(settings)}")
    return MethodSpec(name=name, label=str(label), settings=dict(settings))


def _key_settings(full: Dict[str, Any]) -> Dict[str, Any]:
    """``full`` without the solver settings that sit at their neutral value (see NEUTRAL_SETTINGS)."""
    from .solver import NEUTRAL_SETTINGS
    return {k: v for k, v in full.items() if not (k in NEUTRAL_SETTINGS and v == NEUTRAL_SETTINGS[k])}


def resolve_method_settings(m: MethodSpec, task: str, prior_name: Optional[str] = None) -> Dict[str, Any]:
    """The full settings a method runs with on ``task`` (tuned/named defaults + overrides); validates keys.

    ``prior_name`` selects the VAR solver's per-task tuned defaults, so that they enter the cache key."""
    if m.kind == "diffusion":
        from .diffusion.solvers import METHODS as DIFFUSION_METHODS, embedded_settings
        sig = inspect.signature(DIFFUSION_METHODS[m.target]).parameters
        valid = [k for k, v in sig.items() if k not in ("y", "op", "prior", "device", "seed")
                 and v.kind is not inspect.Parameter.VAR_KEYWORD]
        bad = set(m.settings) - set(valid)
        if bad:
            raise ValueError(f"unknown setting(s) {sorted(bad)} for method {m.name!r}; valid: {', '.join(valid)}")
        return {"steps": sig["steps"].default, "bf16": sig["bf16"].default, **embedded_settings(m.target, task),
                **m.settings}
    if m.kind == "baseline":
        from . import baselines as bl
        fn = getattr(bl, m.target)
        valid = [k for k, v in inspect.signature(fn).parameters.items()
                 if k not in ("y", "op") and v.kind is not inspect.Parameter.VAR_KEYWORD]
        bad = set(m.settings) - set(valid)
        if bad:
            raise ValueError(f"unknown setting(s) {sorted(bad)} for method {m.name!r}; valid: {', '.join(valid)}")
        base = bl.baseline_settings(m.name, task) if m.name in bl.BASELINE_SETTINGS else {}
        return {**base, **m.settings}
    from .solver import resolve_settings  # lazy: the solver is optional for baseline-only runs
    over = {k: v for k, v in m.settings.items() if k != "class_labels"}
    try:
        s = resolve_settings(m.target, task, prior_name=prior_name, **over)
    except ValueError as e:
        raise ValueError(f"method {m.label!r}: {e}") from None
    return {k: v for k, v in s.items() if k != "class_labels"}


# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------
def git_commit() -> str:
    """Short hash of the repository holding this package, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except Exception:
        return "unknown"


def case_key(**fields: Any) -> str:
    """Stable 16-hex-digit hash of the case's identifying fields."""
    return hashlib.sha256(_compact(fields).encode()).hexdigest()[:16]


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_png(x: torch.Tensor, path: Path) -> None:
    """(3,H,W) in [0,1] -> 8-bit PNG, atomically."""
    from PIL import Image
    arr = (x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(arr).save(tmp)
    os.replace(tmp, path)


class _PeakMemory:
    """Peak memory of a block of code (see the module docstring for what is measured)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0
        self.kind = ""

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.kind = "cuda_max_allocated"
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        if os.path.exists("/proc/self/statm"):
            self.kind = "rss_sampled"
            self._start = self._rss()
            self._peak = self._start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:  # pragma: no cover - non-Linux
            import resource
            self.kind = "maxrss_delta"
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc):
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2 ** 20
        elif self.kind == "rss_sampled":
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            self.peak_mb = (self._peak - self._start) / 2 ** 20
        else:  # pragma: no cover
            import resource
            grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start
            self.peak_mb = grow / 1024 if os.uname().sysname != "Darwin" else grow / 2 ** 20
        return False


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prior_fingerprint(name: str) -> str:
    """``name@<hash of the weights>`` for a prior stored locally (embedded or a folder), so that
    retrained weights give new case keys; the bare name for "test" and not-yet-downloaded official priors.

    A folder with ``SHA256SUMS`` is identified by that file (it lists the weight and config files), so that
    editing a model card or metrics file does not change the identity of the weights."""
    if name == "test":
        return name
    from .prior.loading import PACKAGE_WEIGHTS  # the diffusion prior's weights live beside the VAR prior's
    path = Path(name) if Path(name).exists() else PACKAGE_WEIGHTS / name
    if not path.exists():
        return name
    if path.is_dir() and (path / "SHA256SUMS").is_file():
        files = [path / "SHA256SUMS"]
    else:
        files = sorted(f for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        st = f.stat()
        if st.st_size <= 512 * 2 ** 20:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(2 ** 22), b""):
                    h.update(chunk)
        else:  # very large official checkpoints: size and modification time only
            h.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{name}@{h.hexdigest()[:12]}"


def _load_prior(name: str, device: torch.device):
    if name == "test":  # random weights, for tests
        from .prior import build_prior
        torch.manual_seed(0)
        return build_prior("test", device=device)
    from .prior import load_prior
    return load_prior(name, device=device)


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------
def run_dir_of(params: Dict[str, Any]) -> Path:
    return Path(params["results_dir"]) / str(params["run"])


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: that case is simply recomputed
    return rows


def load_cases(run_dir: Union[str, os.PathLike]):
    """All cached case rows of a run folder (``results/<run>``) as a DataFrame (latest row per key)."""
    import pandas as pd
    rows = _read_jsonl(Path(run_dir) / "cache" / "cases.jsonl")
    df = pd.DataFrame(rows, columns=CASE_COLUMNS if not rows else None)
    if len(df):
        df = df.drop_duplicates("key", keep="last").reset_index(drop=True)
        df = df[[c for c in CASE_COLUMNS if c in df.columns] + [c for c in df.columns if c not in CASE_COLUMNS]]
    return df


def _append_jsonl(path: Path, row: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def _num(v) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------
def _call_method(m: MethodSpec, y: torch.Tensor, op, prior, labels: Optional[torch.Tensor], seed: int,
                 diffusion_prior=None):
    if m.kind == "diffusion":  # unconditional prior: class labels do not apply
        from .diffusion.solvers import METHODS as DIFFUSION_METHODS
        return DIFFUSION_METHODS[m.target](y, op, prior=diffusion_prior, seed=seed, device=y.device, **m.settings)
    if m.kind == "baseline":
        from . import baselines as bl
        fn = getattr(bl, m.target)
        kw = dict(m.settings)
        if "seed" in inspect.signature(fn).parameters:
            kw.setdefault("seed", seed)
        if "class_labels" in inspect.signature(fn).parameters and labels is not None:
            kw.setdefault("class_labels", labels)
        return fn(y, op, **kw)
    from .solver import solve  # lazy import
    kw = dict(m.settings)
    kw.setdefault("seed", seed)
    if labels is not None:
        kw["class_labels"] = labels
    return solve(y, op, prior, m.target, **kw)


def plan_cases(params: Dict[str, Any], names: Sequence[str], labels: Sequence[int]) -> List[Dict[str, Any]]:
    """One dict per case of the configuration (image x task x method), with its key."""
    from .operators import make_operator
    specs = [MethodSpec(**m) for m in params["methods"]]
    prior_id = prior_fingerprint(str(params["prior"])) if any(m.kind == "var" for m in specs) else ""
    diffusion_id = (prior_fingerprint(str(params["diffusion_prior"])) if any(m.kind == "diffusion" for m in specs)
                    else "")
    out = []
    for task in params["tasks"]:
        op_desc = make_operator(task, params["images"]["image_size"], seed=params["seed"],
                                noise_sigma=params["noise_sigma"]).describe()
        for m in specs:
            full = resolve_method_settings(m, task, str(params["prior"]))
            uses_labels = m.kind == "var" and bool(params["use_labels"])
            if uses_labels:
                full = {**full, "use_labels": True}
            for i, name in enumerate(names):
                pid = {"var": prior_id, "diffusion": diffusion_id}.get(m.kind, "")
                ident = dict(image_set=str(params["images"]["set"]), image=name, task=task, method=m.name,
                             label=m.label, settings=_key_settings(full), prior=pid,
                             seed=params["seed"], noise_sigma=params["noise_sigma"],
                             image_size=params["images"]["image_size"], operator=op_desc)
                out.append(dict(key=case_key(**ident), index=i, image=name, task=task, spec=m, full=full,
                                class_label=int(labels[i]), uses_labels=uses_labels, prior_id=ident["prior"]))
    return out


def run_benchmark(params: Union[str, os.PathLike, Dict[str, Any]], limit: Optional[int] = None,
                  run: Optional[str] = None, progress: bool = True, results_dir: Optional[str] = None):
    """Run (or resume) a benchmark configuration; returns the DataFrame of all its case rows.

    ``limit`` keeps the first N images (a smaller cap in the params wins); ``run`` and
    ``results_dir`` override the params' values.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .data import load_images
    from .metrics import lpips as lpips_fn, lpips_available, psnr, ssim
    from .operators import make_operator

    p = load_params(params)
    if run is not None:
        p["run"] = str(run)
    if results_dir is not None:
        p["results_dir"] = str(results_dir)
    if limit is not None:
        p["images"]["limit"] = int(limit) if p["images"]["limit"] is None else min(int(limit), int(p["images"]["limit"]))
    rd = run_dir_of(p)
    cache = rd / "cache"
    img_dir = cache / "images"
    jsonl = cache / "cases.jsonl"
    size = int(p["images"]["image_size"])
    images, labels, names = load_images(p["images"]["set"], size, limit=p["images"]["limit"],
                                        with_labels=True, with_names=True)
    names = [str(n) for n in names]
    cases = plan_cases(p, names, labels)
    done = {r["key"] for r in _read_jsonl(jsonl)}
    todo = [c for c in cases if c["key"] not in done]
    specs = [MethodSpec(**m) for m in p["methods"]]
    var_device = _device(p["device"])
    prior = None
    if any(c["spec"].kind == "var" for c in todo):
        prior = _load_prior(str(p["prior"]), var_device)
        if prior.image_size != size:
            raise ValueError(f"prior {p['prior']!r} works at {prior.image_size} px but images.image_size is {size}")
    diffusion_prior = None
    if any(c["spec"].kind == "diffusion" for c in todo):
        from .diffusion.model import load_diffusion_prior
        diffusion_prior = load_diffusion_prior(str(p["diffusion_prior"]), device=var_device)
        if diffusion_prior.config.image_size != size:
            raise ValueError(f"diffusion prior {p['diffusion_prior']!r} was trained at {diffusion_prior.config.image_size}"
                             f" px but images.image_size is {size}")
    commit = git_commit()
    have_lpips = lpips_available()[0]
    set_tag = hashlib.sha256(str(p["images"]["set"]).encode()).hexdigest()[:8]
    bar = tqdm(total=len(todo), desc=f"bench {p['run']}", disable=not progress or not todo, unit="case")
    try:
        for task in p["tasks"]:
            task_todo = [c for c in todo if c["task"] == task]
            if not task_todo:
                continue
            op_cpu = make_operator(task, size, seed=p["seed"], noise_sigma=p["noise_sigma"])
            idx_needed = sorted({c["index"] for c in task_todo})
            # the measurement of each (image, task) is drawn once (noise seeded by the image index)
            y_all = op_cpu.measure(images[idx_needed], indices=idx_needed)
            y_of = {i: y_all[k:k + 1] for k, i in enumerate(idx_needed)}
            paths = {}
            for i in idx_needed:
                stem = f"{set_tag}_{case_key(image=names[i], size=size)}"
                gt = img_dir / f"gt_{stem}.png"
                mkey = case_key(image=names[i], index=i, operator=op_cpu.describe())
                meas = img_dir / f"meas_{task}_{mkey}_{stem}.png"
                if not gt.exists():
                    _save_png(images[i], gt)
                if not meas.exists():
                    _save_png(y_of[i][0], meas)
                paths[i] = (str(gt.relative_to(rd)), str(meas.relative_to(rd)))
            op_var = None
            for m in specs:
                mc = [c for c in task_todo if c["spec"].label == m.label]
                if not mc:
                    continue
                if m.kind in ("var", "diffusion") or m.name in NETWORK_BASELINES:
                    if op_var is None:
                        op_var = make_operator(task, size, seed=p["seed"], noise_sigma=p["noise_sigma"],
                                               device=var_device)
                    groups = [mc[k:k + p["batch_size"]] for k in range(0, len(mc), p["batch_size"])]
                    op, dev = op_var, var_device
                else:
                    groups = [[c] for c in mc]
                    op, dev = op_cpu, torch.device("cpu")
                for group in groups:
                    idx = [c["index"] for c in group]
                    y = torch.cat([y_of[i] for i in idx]).to(dev)
                    lab = torch.as_tensor([int(labels[i]) for i in idx]) if group[0]["uses_labels"] else None
                    t0 = time.perf_counter()
                    with _PeakMemory(dev) as mem:
                        res = _call_method(m, y, op, prior, lab, p["seed"], diffusion_prior)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    wall = time.perf_counter() - t0
                    xhat = res.image.detach().float().cpu().clamp(0, 1)
                    ref = images[idx]
                    ps, ss = psnr(xhat, ref), ssim(xhat, ref)
                    lp = lpips_fn(xhat, ref) if have_lpips else None
                    with torch.no_grad():
                        resid = (op_cpu.A(xhat) - y.cpu()).flatten(1).norm(dim=1).tolist()
                    B = len(group)
                    for b, c in enumerate(group):
                        rec = img_dir / f"{c['key']}.png"
                        _save_png(xhat[b], rec)
                        std_path = ""
                        if res.std is not None:
                            sp = img_dir / f"{c['key']}_std.npy"
                            tmp = sp.with_name(sp.name + ".tmp.npy")
                            np.save(tmp, res.std[b].detach().float().cpu().numpy())
                            os.replace(tmp, sp)
                            std_path = str(sp.relative_to(rd))
                        row = dict(
                            run=p["run"], key=c["key"], image_set=str(p["images"]["set"]), image_index=c["index"],
                            image=c["image"], class_label=c["class_label"], task=task, method=m.label,
                            method_name=m.name, settings=_compact(m.settings), settings_full=_compact(c["full"]),
                            psnr=_num(ps[b]), ssim=_num(ss[b]), lpips=_num(lp[b]) if lp is not None else None,
                            seconds=wall / B, transformer_evals=int(res.transformer_evals),
                            decoder_evals=int(res.decoder_evals), denoiser_evals=int(res.denoiser_evals),
                            network_evals=int(res.network_evals), peak_mem_mb=round(mem.peak_mb, 2),
                            mem_kind=mem.kind, residual=float(resid[b]), seed=p["seed"],
                            noise_sigma=p["noise_sigma"], image_size=size,
                            prior={"var": str(p["prior"]), "diffusion": str(p["diffusion_prior"])}.get(m.kind, ""),
                            prior_id=c["prior_id"],
                            device=str(dev),
                            git_commit=commit, created=_dt.datetime.now().isoformat(timespec="seconds"),
                            recon_path=str(rec.relative_to(rd)), gt_path=paths[c["index"]][0],
                            measurement_path=paths[c["index"]][1], std_path=std_path)
                        _append_jsonl(jsonl, row)
                        bar.update(1)
    finally:
        bar.close()
    df = load_cases(rd)
    keys = [c["key"] for c in cases]
    df = df[df["key"].isin(set(keys))].copy()
    order = {k: n for n, k in enumerate(keys)}
    df = df.sort_values("key", key=lambda s: s.map(order)).reset_index(drop=True)
    write_tables(df, rd, task_order=p["tasks"], method_order=[m.label for m in specs])
    return df


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
def summarize(df, task_order: Optional[Sequence[str]] = None, method_order: Optional[Sequence[str]] = None):
    """Mean and std per (task, method) of psnr, ssim, lpips, seconds and network_evals, plus the count."""
    import pandas as pd
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


_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.3f}", "lpips": "{:.3f}", "seconds": "{:.2f}", "network_evals": "{:.0f}"}


def _pm(mean, std, fmt, sep) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{fmt.format(mean)}{sep}{fmt.format(0.0 if std is None or math.isnan(std) else std)}"


def _formatted(summary, sep: str):
    import pandas as pd
    rows = []
    for _, r in summary.iterrows():
        row = {"task": r["task"], "method": r["method"], "n": int(r["n"])}
        for c in SUMMARY_METRICS:
            if f"{c}_mean" in summary.columns:
                row[c] = _pm(r[f"{c}_mean"], r[f"{c}_std"], _FORMATS[c], sep)
        rows.append(row)
    return pd.DataFrame(rows)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def summary_latex(summary) -> str:
    f = _formatted(summary, r" $\pm$ ")
    cols = list(f.columns)
    lines = [r"\begin{tabular}{" + "ll" + "r" * (len(cols) - 2) + "}", r"\toprule",
             " & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    prev = None
    for _, r in f.iterrows():
        if prev is not None and r["task"] != prev:
            lines.append(r"\midrule")
        prev = r["task"]
        cells = [_latex_escape(str(r[c])) if c in ("task", "method") else str(r[c]) for c in cols]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_tables(df, run_dir: Union[str, os.PathLike], task_order=None, method_order=None):
    """Write tables/cases.csv and tables/summary.{csv,md,tex} of ``df`` atomically; returns the summary."""
    tdir = Path(run_dir) / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    summary = summarize(df, task_order, method_order)
    _atomic_write_text(tdir / "cases.csv", df.to_csv(index=False))
    _atomic_write_text(tdir / "summary.csv", summary.to_csv(index=False))
    md = _formatted(summary, " ± ").to_markdown(index=False) if len(summary) else "(no cases)"
    _atomic_write_text(tdir / "summary.md", md + "\n")
    _atomic_write_text(tdir / "summary.tex", summary_latex(summary))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run the varlib benchmark (resumable).")
    ap.add_argument("--params", required=True, help="YAML parameter file (see params/default.yaml)")
    ap.add_argument("--run", default=None, help="run name (results/<run>/), overrides the file's `run`")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--results-dir", default=None, help="parent folder of the run folder (default: results)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    df = run_benchmark(args.params, limit=args.limit, run=args.run, progress=not args.no_progress,
                       results_dir=args.results_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = load_params(args.params)
    rd = Path(args.results_dir or p["results_dir"]) / (args.run or str(p["run"]))
    print(f"{len(df)} cases -> {rd / 'tables'}")
    print((rd / "tables" / "summary.md").read_text())


if __name__ == "__main__":
    main()
