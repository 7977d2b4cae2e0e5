"""The reproducible study: everything the notebooks in ``notebooks/`` do, as plain functions.

The notebooks stay thin (a ``parameters`` cell for papermill, a few calls into this module, the
plots shown inline); all logic lives here so that it is tested and reusable:

* :func:`load_params` reads a params YAML (``params/*.yaml``), expands ``${ENV_VARS}``, applies
  overrides and checks the keys;
* :func:`study_paths` says where a run writes: ``<results root>/<run>/{tables,figures,notebooks,html,
  ablation}``; the results root is ``$VARLIB_RESULTS_DIR`` or ``results/`` in the repository;
* :func:`run_benchmark` runs (or resumes, through the benchmark's cache) the main benchmark with
  :func:`varlib.bench.run_benchmark`;
* :func:`injection_sweep` / :func:`guidance_sweep` build the ablations as benchmark method lists,
  and :func:`run_ablation` runs one on the images the params name under ``ablation:``;
* :func:`main_tables` (mean +- std per method x task), :func:`gallery_figure`,
  :func:`injection_figure`, :func:`guidance_figure`, :func:`runtime_figure`,
  :func:`quality_time_figure` draw the report's tables and figures.

Every figure is written as PNG and PDF under ``<run>/figures/``; every table as CSV, Markdown and
LaTeX under ``<run>/tables/``. Files are written to a temporary name and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file behind.

The params file (see ``params/default.yaml``)::

    run: default                      # results/<run>/ (the file's name when absent)
    prior: tiny64                     # name or checkpoint directory
    images: {set: embedded, image_size: 64, limit: null}
    tasks: [inpaint_box, ...]
    noise_sigma: 0.025
    seed: 0
    use_labels: false                 # or [false, true]: the VAR methods run both ways
    methods:                          # benchmark methods; label = name in tables and figures
      - {name: init}
      - {name: var, label: VAR (ours), settings: {guidance_steps: 3}}
    ablation:                         # optional; where and how the ablations run
      images: {set: tinyimagenet-train, image_size: 64, limit: 16}
      tasks: [inpaint_box, sr4]       # default: the benchmark's tasks
      method: var                     # which entry of `methods` is ablated (its name or label)
      settings: {dc_latent_steps: 0}  # fixed under every sweep point (on top of the method's)
      injection_depths: all           # or a list; all = 0..number of scales of the prior
      guidance_strengths: [0, 0.5, 1, 2]
      guidance_steps: [1, 3]
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import yaml

# tqdm.auto warns in notebooks without ipywidgets; the study does not use its widgets
warnings.filterwarnings("ignore", message="IProgress not found")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_ENV = "VARLIB_RESULTS_DIR"

TASK_TITLES = {
    "inpaint_box": "box inpainting",
    "inpaint_random": "random inpainting",
    "gaussian_blur": "Gaussian blur",
    "motion_blur": "motion blur",
    "nonuniform_blur": "non-uniform blur",
    "sr4": "4x super-resolution",
}

#: the tasks, in the order of varlib.operators.TASKS (kept here so that reading params and drawing
#: figures does not import torch; tests/test_study.py checks that the two agree)
TASKS = tuple(TASK_TITLES)

#: metric column -> (axis / table label, higher is better)
METRICS = {
    "psnr": ("PSNR (dB)", True),
    "ssim": ("SSIM", True),
    "lpips": ("LPIPS", False),
    "seconds": ("time per image (s)", False),
    "network_evals": ("network evaluations per image", False),
}

REQUIRED_KEYS = ("images", "tasks", "methods")
KNOWN_KEYS = {"run", "prior", "diffusion_prior", "images", "tasks", "noise_sigma", "seed", "use_labels", "methods", "ablation",
              "device", "description", "batch_size", "notes", "gallery"}
ABLATION_KEYS = {"images", "tasks", "method", "settings", "injection_depths", "guidance_strengths",
                 "guidance_steps", "lowpass", "seed", "noise_sigma", "use_labels"}


class ParamsError(ValueError):
    """A params file that cannot be used; the message says what to change."""


# ==================================================================================================
# params
# ==================================================================================================
def resolve_params_path(path: Union[str, os.PathLike]) -> Path:
    """``path`` as given if it exists, else relative to the repository root (notebooks run in
    ``notebooks/`` under JupyterLab but the params paths are written relative to the root)."""
    p = Path(path).expanduser()
    if p.exists():
        return p.resolve()
    if not p.is_absolute() and (REPO_ROOT / p).exists():
        return (REPO_ROOT / p).resolve()
    known = sorted(q.relative_to(REPO_ROOT).as_posix() for q in (REPO_ROOT / "params").glob("*.yaml"))
    raise FileNotFoundError(f"params file {str(path)!r} not found (looked in {Path.cwd()} and {REPO_ROOT}); "
                            f"available: {', '.join(known) or 'none'}")


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, where: str) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string; an unset VAR without default is an error."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        raise ParamsError(f"{where} uses ${{{name}}} but the environment variable {name} is not set; "
                          f"set it (e.g. `export {name}=/path/to/folder`) before running")

    return _ENV_PATTERN.sub(sub, value)


def _deep_update(base: Dict[str, Any], new: Mapping[str, Any]) -> Dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _parse_overrides(overrides: Union[None, Mapping[str, Any], Sequence[str]]) -> Dict[str, Any]:
    """Overrides as a nested dict; also accepts ``["images.limit=2", "tasks=[sr4]"]`` (YAML values)."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        out: Dict[str, Any] = {}
        for k, v in overrides.items():
            _deep_update(out, _dotted(str(k), v))
        return out
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ParamsError(f"override {item!r} must look like key=value or a.b=value")
        k, v = item.split("=", 1)
        _deep_update(out, _dotted(k.strip(), yaml.safe_load(v)))
    return out


def _dotted(key: str, value: Any) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


def load_params(path: Union[str, os.PathLike], overrides: Union[None, Mapping[str, Any], Sequence[str]] = None,
                run: Optional[str] = None, limit: Optional[int] = None) -> Dict[str, Any]:
    """Read a params YAML and return the checked dict the rest of this module takes.

    ``overrides``: nested dict, or ``{"images.limit": 2}``, or ``["images.limit=2"]``.
    ``run`` (results/<run>/) defaults to the file's ``run:`` key, else the file name without suffix.
    ``limit`` caps the number of images of the benchmark (and of the ablation images).
    The dict gets ``_source`` (the file) added.
    """
    src = resolve_params_path(path)
    try:
        raw = yaml.safe_load(src.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{src} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ParamsError(f"{src} must hold a YAML mapping (key: value lines), got {type(raw).__name__}")
    params = _deep_update(raw, _parse_overrides(overrides))
    params = _expand_env(params, src.name)
    if run:
        params["run"] = str(run)
    params.setdefault("run", src.stem)
    if limit is not None:
        params.setdefault("images", {})["limit"] = int(limit)
        if isinstance(params.get("ablation"), dict) and isinstance(params["ablation"].get("images"), dict):
            old = params["ablation"]["images"].get("limit")
            params["ablation"]["images"]["limit"] = int(limit) if old is None else min(int(old), int(limit))
    check_params(params, where=str(src))
    params["_source"] = str(src)
    return params


def check_params(params: Dict[str, Any], where: str = "params") -> None:
    """Raise :class:`ParamsError` naming the problem when ``params`` cannot drive the study."""
    missing = [k for k in REQUIRED_KEYS if k not in params]
    if missing:
        raise ParamsError(f"{where}: missing key(s) {', '.join(missing)} (see params/default.yaml)")
    if "results_dir" in params:
        raise ParamsError(f"{where}: results_dir is not used by the study; set the environment variable "
                          f"{RESULTS_ENV} to write somewhere else than results/")
    _labels_modes(params)
    unknown = sorted(set(params) - KNOWN_KEYS - {"_source"})
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(params["run"])):
        raise ParamsError(f"{where}: run name {params['run']!r} must be a plain folder name (letters, digits, _.+-)")
    images = params["images"]
    if not isinstance(images, dict) or "set" not in images:
        raise ParamsError(f"{where}: images must be a mapping with at least `set:` (e.g. {{set: embedded, image_size: 64}})")
    tasks = params["tasks"]
    if isinstance(tasks, str):
        tasks = params["tasks"] = list(TASKS) if tasks == "all" else [tasks]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ParamsError(f"{where}: unknown task(s) {bad or '(none given)'}; valid: {', '.join(TASKS)}")
    methods = params["methods"]
    if not isinstance(methods, list) or not methods:
        raise ParamsError(f"{where}: methods must be a non-empty list of {{name: ..., label: ..., settings: ...}}")
    for i, m in enumerate(methods):
        if isinstance(m, str):
            methods[i] = m = {"name": m}
        if not isinstance(m, dict) or "name" not in m:
            raise ParamsError(f"{where}: methods[{i}] must be a mapping with a `name`, got {m!r}")
    labels = [method_label(m) for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ParamsError(f"{where}: method label(s) {dup} appear twice; give each entry its own `label:`")
    abl = params.get("ablation")
    if abl is not None:
        if not isinstance(abl, dict):
            raise ParamsError(f"{where}: ablation must be a mapping")
        unknown = sorted(set(abl) - ABLATION_KEYS)
        if unknown:
            raise ParamsError(f"{where}: unknown ablation key(s) {', '.join(unknown)}; known: {', '.join(sorted(ABLATION_KEYS))}")
        bad = [t for t in abl.get("tasks", []) if t not in TASKS]
        if bad:
            raise ParamsError(f"{where}: unknown ablation task(s) {bad}; valid: {', '.join(TASKS)}")


def method_label(method: Mapping[str, Any]) -> str:
    """The row label the benchmark gives a method entry (its ``label``, else the name, followed by
    the settings when there are any)."""
    settings = method.get("settings") or {}
    if method.get("label"):
        return str(method["label"])
    if not settings:
        return str(method["name"])
    return str(method["name"]) + json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def public_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The params without private keys (those starting with ``_``), for bench and for display."""
    return {k: copy.deepcopy(v) for k, v in params.items() if not str(k).startswith("_")}


# ==================================================================================================
# paths and atomic writing
# ==================================================================================================
def results_root() -> Path:
    """``$VARLIB_RESULTS_DIR`` when set, else ``results/`` in the repository."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "results"


@dataclass(frozen=True)
class StudyPaths:
    run: str
    root: Path

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def html(self) -> Path:
        return self.root / "html"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def ablation(self, which: str) -> Path:
        return self.root / "ablation" / which


def study_paths(params_or_run: Union[Mapping[str, Any], str]) -> StudyPaths:
    run = params_or_run if isinstance(params_or_run, str) else str(params_or_run["run"])
    return StudyPaths(run=run, root=results_root() / run)


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success move it onto ``path`` (os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    with _atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(fig, name: str, params_or_run, dpi: int = 150) -> Dict[str, Path]:
    """Save ``fig`` as ``<run>/figures/<name>.png`` and ``.pdf`` (atomically); returns the paths."""
    out = study_paths(params_or_run).figures
    paths = {}
    for fmt in ("png", "pdf"):
        path = out / f"{name}.{fmt}"
        with _atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths[fmt] = path
    return paths


def _latex_escape(s: str) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b)
    return s


def _cell_latex(v: Any) -> str:
    s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    bold = s.startswith("**") and s.endswith("**") and len(s) > 4
    if bold:
        s = s[2:-2]
    s = _latex_escape(s).replace("±", r"$\pm$")
    return r"\textbf{" + s + "}" if bold else s


def to_latex(df: pd.DataFrame, caption: Optional[str] = None, label: Optional[str] = None) -> str:
    """A booktabs table; cells written ``**x**`` (Markdown bold) become ``\\textbf{x}``."""
    d = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in d.columns]
    lines = []
    if caption or label:
        lines += [r"\begin{table}[t]", r"\centering"]
        if caption:
            lines.append(r"\caption{" + _latex_escape(caption).replace("±", r"$\pm$") + "}")
        if label:
            lines.append(r"\label{" + label + "}")
    lines.append(r"\begin{tabular}{l" + "c" * (len(cols) - 1) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(_latex_escape(c) for c in cols) + r" \\")
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
    formatted version, default ``df``), each atomically. Returns the paths."""
    out = study_paths(params_or_run).tables
    shown = df if display is None else display
    keep_index = not isinstance(shown.index, pd.RangeIndex)
    md = shown.to_markdown(index=keep_index)
    if caption:
        md = f"{md}\n\n{caption}"
    paths = {
        "csv": atomic_write_text(out / f"{name}.csv", df.to_csv(index=not isinstance(df.index, pd.RangeIndex))),
        "md": atomic_write_text(out / f"{name}.md", md + "\n"),
        "tex": atomic_write_text(out / f"{name}.tex", to_latex(shown, caption=caption, label=f"tab:{name}")),
    }
    return paths


# ==================================================================================================
# running the benchmark and the ablations
# ==================================================================================================
def _bench():
    from . import bench

    return bench


def _labels_modes(params: Mapping[str, Any]) -> List[bool]:
    u = params.get("use_labels", False)
    modes = list(u) if isinstance(u, list) else [u]
    if not modes or not all(isinstance(v, bool) for v in modes) or len(set(modes)) != len(modes):
        raise ParamsError(f"use_labels must be true, false or [false, true], got {u!r}")
    return modes


LABELS_SUFFIX = " +labels"


def bench_params(params: Mapping[str, Any], use_labels: Optional[bool] = None) -> Dict[str, Any]:
    """The params as :func:`varlib.bench.run_benchmark` takes them: only the keys it knows, and one
    ``use_labels`` value (the first of a list unless ``use_labels`` is given)."""
    allowed = set(_bench().DEFAULTS) - {"results_dir"}
    p = {k: copy.deepcopy(v) for k, v in public_params(params).items() if k in allowed}
    p["use_labels"] = _labels_modes(params)[0] if use_labels is None else bool(use_labels)
    return p


def _run_bench(bparams: Dict[str, Any], run_dir: Path, limit: Optional[int] = None,
               progress: bool = False) -> pd.DataFrame:
    """Run the benchmark with its output in ``run_dir`` (tables/, cache/)."""
    bparams = {**bparams, "run": run_dir.name, "results_dir": str(run_dir.parent)}
    return _bench().run_benchmark(bparams, limit=limit, progress=progress)


def run_benchmark(params: Mapping[str, Any], limit: Optional[int] = None, progress: bool = False) -> pd.DataFrame:
    """Run (or resume: finished cases come from the benchmark's cache) the benchmark of ``params``;
    returns the tidy per-case table (one row per image x task x method).

    With ``use_labels: [false, true]`` the VAR methods run a second time with the images' class labels
    (into ``<run>/with-labels/``); those rows get the method label suffixed ``" +labels"``. The
    combined table is written to ``<run>/tables/cases_all.csv``.
    """
    root = study_paths(params).root
    modes = _labels_modes(params)
    df = _run_bench(bench_params(params, modes[0]), root, limit=limit, progress=progress)
    if len(modes) == 1:
        return df
    p = bench_params(params, modes[1])
    p["methods"] = [m for m in p["methods"] if str(m["name"]).startswith("var")]
    if not p["methods"]:
        return df
    other = _run_bench(p, root / "with-labels", limit=limit, progress=progress)
    suffix = LABELS_SUFFIX if modes[1] else " -labels"
    other = other.assign(method=other["method"] + suffix)
    for col in ("recon_path", "gt_path", "measurement_path", "std_path"):  # relative to <run>/ like the others
        if col in other.columns:
            other[col] = other[col].map(lambda v: f"with-labels/{v}" if isinstance(v, str) and v else v)
    both = pd.concat([df, other], ignore_index=True)
    atomic_write_text(root / "tables" / "cases_all.csv", both.to_csv(index=False))
    return both


def method_labels(params: Mapping[str, Any]) -> List[str]:
    """The method labels of the benchmark, in order (with the ``+labels`` variants)."""
    base = [method_label(m) for m in params["methods"]]
    modes = _labels_modes(params)
    if len(modes) > 1:
        suffix = LABELS_SUFFIX if modes[1] else " -labels"
        base += [method_label(m) + suffix for m in params["methods"] if str(m["name"]).startswith("var")]
    return base


def load_cases(params_or_run) -> pd.DataFrame:
    """The per-case table of a finished benchmark run (``<run>/tables/cases_all.csv`` when the run
    has class-label variants, else ``cases.csv``)."""
    root = study_paths(params_or_run).root
    for name in ("cases_all.csv", "cases.csv"):
        path = root / "tables" / name
        if path.exists():
            if name == "cases_all.csv" and not isinstance(params_or_run, str) \
                    and len(_labels_modes(params_or_run)) == 1:
                continue
            return pd.read_csv(path)
    raise FileNotFoundError(f"no benchmark results in {root}: run notebooks/01_benchmark.ipynb first "
                            f"(make benchmark PARAMS=...)")


def num_scales(prior: Union[str, os.PathLike]) -> int:
    """Number of scales of a prior (name or checkpoint directory), without loading its weights."""
    from .prior.configs import PriorConfig, named_config

    p = Path(str(prior))
    cfg_file = p / "config.json" if p.is_dir() else None
    if cfg_file is not None and cfg_file.exists():
        cfg = PriorConfig.from_dict(json.loads(cfg_file.read_text()))
    else:
        cfg = named_config(str(prior))
    return len(cfg.tokenizer.patch_nums)


def _ablated_method(params: Mapping[str, Any]) -> Dict[str, Any]:
    abl = params.get("ablation") or {}
    want = abl.get("method", "var")
    for m in params["methods"]:
        if want in (m["name"], method_label(m)):
            return copy.deepcopy(m)
    if want in ("var", "var-reference", "var-injection"):
        return {"name": want}
    raise ParamsError(f"ablation.method {want!r} is not among the methods "
                      f"({', '.join(method_label(m) for m in params['methods'])})")


def default_settings(params: Mapping[str, Any], task: str) -> Dict[str, Any]:
    """The solver settings the ablated method uses on ``task`` in the main benchmark (the chosen
    defaults that the ablation figures mark)."""
    from .solver import resolve_settings

    m = _ablated_method(params)
    base = {"var": "default", "var-reference": "reference", "var-injection": "injection_only"}.get(m["name"], "default")
    settings = m.get("settings") or {}
    prior_name = str(params.get("prior", ""))  # per-task tuned defaults belong to a prior
    if isinstance(settings, str):
        return resolve_settings(settings, task, prior_name=prior_name)
    return resolve_settings({"base": settings.get("base", base), **{k: v for k, v in settings.items() if k != "base"}},
                            task, prior_name=prior_name)


def _sweep_base(params: Mapping[str, Any]) -> Dict[str, Any]:
    m = _ablated_method(params)
    settings = m.get("settings") or {}
    if isinstance(settings, str):
        settings = {"base": settings}
    return {"name": m["name"], "settings": {**settings, **((params.get("ablation") or {}).get("settings") or {})}}


def injection_sweep(params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Benchmark methods for the injection-depth ablation: the ablated method with
    ``injection_depth`` = each of ``ablation.injection_depths`` (``all``: 0..number of scales)."""
    depths = (params.get("ablation") or {}).get("injection_depths", "all")
    if depths == "all" or depths is None:
        depths = list(range(num_scales(params.get("prior", "tiny64")) + 1))
    base = _sweep_base(params)
    return [{"name": base["name"], "label": f"depth {int(d)}",
             "settings": {**base["settings"], "injection_depth": int(d)}} for d in depths]


def guidance_sweep(params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Benchmark methods for the guidance ablation: ``ablation.guidance_strengths`` x
    ``ablation.guidance_steps`` (strength 0 is run once: no guidance)."""
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
    """Benchmark methods for the residual low-pass ablation: the ablated method with ``lowpass`` =
    each of ``ablation.lowpass`` (default ``none``: the raw measurement, and ``reference``: both
    ``A(x)`` and ``y`` low-passed at coarse scales as the reference method does)."""
    values = (params.get("ablation") or {}).get("lowpass", ["none", "reference"])
    base = _sweep_base(params)
    return [{"name": base["name"], "label": f"low-pass {v}", "settings": {**base["settings"], "lowpass": str(v)}}
            for v in values]


SWEEPS = {"injection": injection_sweep, "guidance": guidance_sweep, "lowpass": lowpass_sweep}


def ablation_params(params: Mapping[str, Any], which: str) -> Dict[str, Any]:
    """The benchmark params of one ablation (``injection`` or ``guidance``): the images, tasks and
    seed given under ``ablation:`` (default: the benchmark's), the sweep as methods."""
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
    return p


def run_ablation(params: Mapping[str, Any], which: str, limit: Optional[int] = None,
                 progress: bool = False) -> pd.DataFrame:
    """Run (or resume) one ablation; results in ``<run>/ablation/<which>/tables/cases.csv``.
    Adds the swept settings as columns (``injection_depth`` / ``guidance_strength``, ``guidance_steps``)."""
    p = ablation_params(params, which)
    run_dir = study_paths(params).ablation(which)
    df = _run_bench(p, run_dir, limit=limit, progress=progress)
    return annotate_sweep(df, p["methods"])


def load_ablation(params: Mapping[str, Any], which: str) -> pd.DataFrame:
    path = study_paths(params).ablation(which) / "tables" / "cases.csv"
    if not path.exists():
        raise FileNotFoundError(f"no {which} ablation in {path.parent.parent}: run the ablation notebook first")
    return annotate_sweep(pd.read_csv(path), ablation_params(params, which)["methods"])


def annotate_sweep(df: pd.DataFrame, methods: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Add the swept settings (from the method list, by label) as numeric columns."""
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


# ==================================================================================================
# tables
# ==================================================================================================
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
    present = set(df["task"])
    order = list(params["tasks"]) if params is not None else list(TASKS)
    return [t for t in order if t in present] + sorted(present - set(order))


def summary_long(df: pd.DataFrame, metrics: Iterable[str] = ("psnr", "ssim", "lpips", "seconds", "network_evals")
                 ) -> pd.DataFrame:
    """Mean, std and count per method x task x metric (long format)."""
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


def _fmt(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "seconds": 2, "network_evals": 0}


def metric_table(df: pd.DataFrame, metric: str, params: Optional[Mapping[str, Any]] = None,
                 bold_best: bool = True) -> tuple:
    """(numbers, display): rows = methods, columns = tasks + ``mean`` (over tasks).
    ``numbers`` holds ``<task> mean`` / ``<task> std`` columns; ``display`` holds "mean ± std"
    strings over images, the best method per task in ``**bold**``."""
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
            c = _fmt(m[meth], s[meth], digits)
            if bold_best and best is not None and len(methods) > 1 and not pd.isna(m[meth]) \
                    and round(m[meth], digits) == round(best, digits):
                c = f"**{c}**"
            cells.append(c)
        name = TASK_TITLES.get(col, col) if col != "mean" else "mean over tasks"
        display[name] = cells
        numbers[f"{col} mean"] = m.values
        numbers[f"{col} std"] = s.values
    return numbers, display


def main_tables(df: pd.DataFrame, params: Mapping[str, Any],
                metrics: Sequence[str] = ("psnr", "ssim", "lpips", "seconds")) -> Dict[str, pd.DataFrame]:
    """Write ``main_<metric>`` tables (mean ± std over images, per method x task) and
    ``summary_long``; returns the display tables by metric (metrics without values are skipped)."""
    out = {}
    n_images = df["image"].nunique() if "image" in df.columns else None
    long = summary_long(df)
    save_table(long, "summary_long", params)
    for metric in metrics:
        if metric not in df.columns or pd.to_numeric(df[metric], errors="coerce").notna().sum() == 0:
            continue
        numbers, display = metric_table(df, metric, params)
        label, higher = METRICS[metric]
        cap = (f"{label}, mean ± std over {_n(n_images, 'image')} per task ({'higher' if higher else 'lower'} is better; "
               f"best in bold). Run {params['run']}, prior {params.get('prior', '?')}, "
               f"{params['images'].get('image_size', '?')} px, images {params['images'].get('set')}.")
        save_table(numbers, f"main_{metric}", params, display=display, caption=cap)
        out[metric] = display
    return out


# ==================================================================================================
# figures
# ==================================================================================================
def _plt():
    import matplotlib

    if "MPLBACKEND" not in os.environ and "ipykernel" not in str(matplotlib.get_backend()).lower() \
            and "inline" not in str(matplotlib.get_backend()).lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    return plt, sns


def method_palette(methods: Sequence[str]) -> Dict[str, Any]:
    """A fixed colour per method (same in every figure of a run)."""
    import seaborn as sns

    colors = sns.color_palette("tab10", n_colors=max(10, len(methods)))
    return {m: colors[i % len(colors)] for i, m in enumerate(methods)}


MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p"]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def _nearest_up(img: np.ndarray, size: int) -> np.ndarray:
    h = img.shape[0]
    if h == size or size % h:
        return img
    f = size // h
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def ground_truth_and_measurement(params: Mapping[str, Any], task: str, image_index: int) -> tuple:
    """(ground truth, measurement for display) as (H, W, 3) arrays: the measurement of ``sr4`` is
    up-sampled by pixel repetition, that of inpainting has the unobserved pixels set to black."""
    from .data import load_images
    from .operators import DEFAULT_NOISE_SIGMA, make_operator

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
        from .operators import make_operator

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
    plt, _ = _plt()
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
        sub = df[(df["image"] == im) & (df["task"] == t)]
        first = sub.iloc[0].to_dict() if len(sub) else {}
        gt_p = root / str(first.get("gt_path", "")) if first.get("gt_path") else None
        me_p = root / str(first.get("measurement_path", "")) if first.get("measurement_path") else None
        if gt_p is not None and gt_p.is_file() and me_p is not None and me_p.is_file():
            gt = _read_png(gt_p)
            meas = _display_measurement(_read_png(me_p), params, t, index_of.get(im, 0))
        else:
            gt, meas = ground_truth_and_measurement(params, t, index_of.get(im, 0))
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
        for c, (title, arr, p) in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if arr is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8, color="0.4",
                        transform=ax.transAxes)
                ax.set_facecolor("0.93")
            else:
                ax.imshow(arr, interpolation="nearest")
            if r == 0:  # long labels ("var-reference +labels") break before their suffix instead of overlapping
                ax.set_title(title.replace(" +", "\n+") if len(title) > 14 else title, fontsize=9, fontweight="bold")
            if p is not None and not pd.isna(p):
                ax.set_xlabel(f"{float(p):.2f} dB", fontsize=8, labelpad=2)
            elif c == 1 and t == "sr4":
                ax.set_xlabel("x4 low-res (shown big)", fontsize=7, labelpad=2)
            elif c == 1 and t.startswith("inpaint"):
                ax.set_xlabel("black = missing", fontsize=7, labelpad=2)
        label = TASK_TITLES.get(t, t) if rows == "tasks" else str(im)
        axes[r, 0].set_ylabel(label, fontsize=9, fontweight="bold")
    what = f"image {image}" if rows == "tasks" else TASK_TITLES.get(task, task)
    fig.suptitle(f"Reconstructions: {what} (PSNR in dB under each output)", fontsize=10)
    fig.tight_layout(h_pad=0.8, w_pad=0.2)
    save_figure(fig, name, params)
    return fig


def _image_indices(df: pd.DataFrame) -> Dict[Any, int]:
    """Image name -> index in the image set (``image_index`` column if present, else order of appearance)."""
    if "image_index" in df.columns:
        return {im: int(i) for im, i in zip(df["image"], df["image_index"])}
    return {im: i for i, im in enumerate(dict.fromkeys(df["image"]))}


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}" + ("" if int(k) == 1 else "s")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


def _facet_grid(n: int, ncol_max: int = 3, w: float = 4.0, h: float = 3.0):
    plt, _ = _plt()
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
    plt, _ = _plt()
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
    fig.suptitle(f"Injection depth ablation ({_n(n_img, 'image')} per task, {_images_label(params, 'ablation')})",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, name, params)
    return fig


def _images_label(params: Mapping[str, Any], which: str = "main") -> str:
    im = params["images"]
    if which == "ablation" and isinstance((params.get("ablation") or {}).get("images"), dict):
        im = {**im, **params["ablation"]["images"]}
    return f"{im.get('set')}, {im.get('image_size', '?')} px"


def guidance_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: str = "ablation_guidance"):
    """Quality against the guidance strength, one line per number of guidance steps, one panel per
    task; the chosen default (strength, steps) is marked by a vertical line and a star."""
    plt, sns = _plt()
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
                             color=colors[k], label=f"{_n(int(k), 'guidance step')}")
            legend.setdefault(ln.get_label(), ln)
        dflt = default_settings(params, t)
        s0, k0 = float(dflt["guidance_strength"]), int(dflt["guidance_steps"])
        vl = ax.axvline(s0, color="0.3", ls=":", lw=1.5, label="default strength")
        legend.setdefault(vl.get_label(), vl)
        hit = d[(d["guidance_strength"] == s0) & (d["guidance_steps"] == k0)]
        if len(hit):
            (st,) = ax.plot([s0], [pd.to_numeric(hit[metric]).mean()], marker="*", ms=15, color="gold",
                            mec="k", ls="none", zorder=5, label=f"default ({_n(k0, 'step')})")
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
    fig.suptitle(f"Guidance ablation ({_n(df['image'].nunique(), 'image')} per task, {_images_label(params, 'ablation')};"
                 f" mean ± std)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, name, params)
    return fig


def lowpass_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr", name: str = "ablation_lowpass"):
    """Quality per task with the guidance residual low-passed (reference) or raw, as grouped bars
    (mean ± std over the ablation images); the default's choice is named in the legend."""
    plt, sns = _plt()
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
    ax.set_title(f"Guidance on the low-passed or the raw measurement ({_n(df['image'].nunique(), 'image')} per task, "
                 f"{_images_label(params, 'ablation')}; mean ± std)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, name, params)
    return fig


RUNTIME_COLUMNS = {"seconds": "time per image (s)", "network_evals": "network evaluations",
                   "transformer_evals": "transformer", "decoder_evals": "decoder", "denoiser_evals": "denoiser",
                   "peak_mem_mb": "peak memory (MB)"}


def _devices(df: pd.DataFrame, params: Mapping[str, Any]) -> str:
    if "device" in df.columns and df["device"].notna().any():
        return "device " + ", ".join(sorted(str(d) for d in df["device"].dropna().unique()))
    return f"device {params.get('device', 'cpu')}"


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
    plt, sns = _plt()
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
    fig.suptitle(f"Runtime per image ({_devices(df, params)}, {params['images'].get('image_size', '?')} px; "
                 f"bars: mean over tasks, whiskers: fastest to slowest task)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, name, params)
    return fig


def quality_time_figure(df: pd.DataFrame, params: Mapping[str, Any], metric: str = "psnr",
                        per_task: bool = True, name: str = "quality_vs_time"):
    """Quality against time per image (log x), one marker per method; one panel per task plus the
    mean over tasks (``per_task``), or only the mean."""
    plt, _ = _plt()
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
    fig.suptitle(f"Quality versus time (mean over {_n(df['image'].nunique(), 'image')}; up and left is better)",
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
    plt, sns = _plt()
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
    ax.set_title(f"{METRICS[metric][0]} per task (mean ± std over {_n(df['image'].nunique(), 'image')})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, name or f"bars_{metric}", params)
    return fig


# ==================================================================================================
# report
# ==================================================================================================
def write_benchmark_outputs(df: pd.DataFrame, params: Mapping[str, Any]) -> Dict[str, Any]:
    """What notebook 01 writes: the main tables, PSNR bars and the two galleries."""
    tables = main_tables(df, params)
    figs = {"bars_psnr": metric_bars_figure(df, params, "psnr")}
    g = params.get("gallery") or {}
    figs["gallery_tasks"] = gallery_figure(df, params, rows="tasks", image=g.get("image"), name="gallery_tasks")
    figs["gallery_images"] = gallery_figure(df, params, rows="images", task=g.get("task"), name="gallery_images",
                                            max_images=int(g.get("max_images", 6)))
    return {"tables": tables, "figures": figs}


def write_runtime_outputs(df: pd.DataFrame, params: Mapping[str, Any]) -> Dict[str, Any]:
    """What notebook 04 writes: the runtime table, runtime bars and quality-versus-time scatter."""
    t = runtime_table(df, params)
    disp = t.copy()
    for c in disp.columns:
        disp[c] = disp[c].map(lambda v, c=c: "–" if pd.isna(v) else (f"{v:.3g}" if c == "seconds" else f"{v:,.0f}"))
    disp = disp.rename(columns=RUNTIME_COLUMNS)
    save_table(t, "runtime", params, display=disp,
               caption=f"Mean per image over all tasks and images (run {params['run']}, {_devices(df, params)}; "
                       "peak memory: growth of the process during the call, for the whole batch).")
    return {"table": disp, "figures": {"runtime": runtime_figure(df, params),
                                       "quality_vs_time": quality_time_figure(df, params)}}


def run_info(params: Mapping[str, Any]) -> pd.DataFrame:
    """A small table describing the run (for the report)."""
    im = params["images"]
    rows = [("run", params["run"]), ("params file", Path(params.get("_source", "?")).name),
            ("prior", params.get("prior", "tiny64")),
            ("images", f"{im.get('set')} (limit {im.get('limit')}), {im.get('image_size', '?')} px"),
            ("tasks", ", ".join(params["tasks"])), ("noise sigma ([0, 1] scale)", params.get("noise_sigma", 0.025)),
            ("seed", params.get("seed", 0)), ("class labels", params.get("use_labels", False)),
            ("methods", ", ".join(method_label(m) for m in params["methods"]))]
    if params.get("ablation"):
        rows.append(("ablation images", _images_label(params, "ablation") +
                     f" (limit {(params['ablation'].get('images') or {}).get('limit', im.get('limit'))})"))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def ablation_table(df: pd.DataFrame, params: Mapping[str, Any], which: str, metric: str = "psnr") -> pd.DataFrame:
    """The ablation as a table (rows = sweep points, columns = tasks + mean time per image), written
    as ``tables/ablation_<which>``; returns the display version."""
    keys = {"injection": ["injection_depth"], "guidance": ["guidance_steps", "guidance_strength"],
            "lowpass": ["lowpass"]}[which]
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
        display[TASK_TITLES.get(t, t)] = [_fmt(a, b, digits) for a, b in zip(mean[t], std[t])]
    display["time per image (s)"] = [f"{x:.2f}" for x in sec.reindex(mean.index)]
    names = {"injection_depth": "injection depth", "guidance_steps": "steps", "guidance_strength": "strength",
             "lowpass": "residual low-pass"}
    display.index = display.index.set_names([names[k] for k in keys])
    display = display.reset_index()
    for k in keys:
        display[names[k]] = display[names[k]].map(lambda v: v if isinstance(v, str) else f"{v:g}")
    cap = (f"{METRICS[metric][0]} (mean ± std over {_n(df['image'].nunique(), 'image')}, "
           f"{_images_label(params, 'ablation')}) for each {' and '.join(names[k] for k in keys)}.")
    save_table(numbers, f"ablation_{which}", params, display=display, caption=cap)
    return display


#: what each notebook writes (relative to results/<run>/); the tests check these exist
NOTEBOOK_OUTPUTS: Dict[str, List[str]] = {
    "01_benchmark": ["tables/cases.csv", "tables/main_psnr.md", "tables/main_psnr.tex", "tables/main_psnr.csv",
                     "tables/main_ssim.md", "tables/summary_long.csv", "figures/bars_psnr.png",
                     "figures/bars_psnr.pdf", "figures/gallery_tasks.png", "figures/gallery_tasks.pdf",
                     "figures/gallery_images.png", "tables/uncertainty.md", "figures/uncertainty.png"],
    "02_ablation_injection": ["ablation/injection/tables/cases.csv", "tables/ablation_injection.csv",
                              "tables/ablation_injection.md", "tables/ablation_injection.tex",
                              "figures/ablation_injection.png", "figures/ablation_injection.pdf"],
    "03_ablation_guidance": ["ablation/guidance/tables/cases.csv", "tables/ablation_guidance.csv",
                             "tables/ablation_guidance.md", "tables/ablation_guidance.tex",
                             "figures/ablation_guidance.png", "figures/ablation_guidance.pdf",
                             "ablation/lowpass/tables/cases.csv", "tables/ablation_lowpass.md",
                             "figures/ablation_lowpass.png"],
    "04_runtime": ["tables/runtime.csv", "tables/runtime.md", "tables/runtime.tex", "figures/runtime.png",
                   "figures/runtime.pdf", "figures/quality_vs_time.png", "figures/quality_vs_time.pdf"],
    "05_report": [],
}


def show(params: Mapping[str, Any], relpath: str, width: Optional[int] = None) -> None:
    """Display a figure (PNG) or a Markdown table of the run in a notebook; says which notebook
    makes it when it is missing."""
    from IPython.display import Image, Markdown, display

    path = study_paths(params).root / relpath
    if not path.is_file():
        maker = next((nb for nb, outs in NOTEBOOK_OUTPUTS.items() if relpath in outs), None)
        hint = f" (run notebooks/{maker}.ipynb)" if maker else ""
        display(Markdown(f"*`{relpath}` is missing{hint}.*"))
        return
    if path.suffix == ".png":
        display(Image(filename=str(path), width=width, alt=path.stem.replace("_", " ")))
    elif path.suffix == ".md":
        display(Markdown(path.read_text()))
    else:
        display(Markdown(f"```\n{path.read_text()}\n```"))
