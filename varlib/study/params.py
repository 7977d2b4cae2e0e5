"""The params schema and its one loader (used by the notebooks, the runner and the command line).

A params file (``params/*.yaml``) describes one run::

    run: default                      # results/<run>/ (default: the file's name); letters, digits, _.+-
    description: ...                  # optional free text (also `notes`)
    prior: tiny64                     # VAR prior: a name (varlib.KNOWN_PRIORS) or a checkpoint folder
    diffusion_prior: tiny64-diffusion # for dps / diffpir: a name under varlib/weights or a folder
    device: auto                      # network methods: auto (cuda when available) | cpu | cuda[:N]
    images: {set: embedded, image_size: 64, limit: null}   # set: a name of varlib.data.IMAGE_SETS or a folder
    tasks: [inpaint_box, sr4]         # or `all` (the default): varlib.operators.TASKS
    noise_sigma: 0.025                # on the [0, 1] image scale
    seed: 0                           # operators (masks, kernels, noise) and samplers
    use_labels: false                 # or true, or [false, true]: the VAR methods run both ways
    batch_size: 8                     # images per call of the batched (network) methods
    methods:                          # varlib.study.methods.METHODS; label names the row
      - init
      - {name: var, label: var-8samples, settings: {num_samples: 8, decode: sample}}
      - {name: dps, limit: 10}        # a slow method on the first 10 images of the set only
    gallery: {image: astronaut, task: inpaint_box, max_images: 6}    # optional
    ladder: [init, var-vq, var-injection, var-guided, var-latent-dc, var]  # optional: labels of `methods`,
                                      # each adding one component to the last (varlib.study.ladder)
    ablation:                         # optional: where and how notebooks 02 and 03 sweep a method
      images: {set: embedded, limit: 1}   # merged onto `images`
      tasks: [sr4]                    # default: the benchmark's; also seed, noise_sigma, use_labels
      method: var                     # name or label of the swept `methods` entry (its settings stay)
      settings: {dc_latent_steps: 0}  # fixed at every sweep point, on top of the method's
      injection_depths: all           # or a list; all = 0 .. number of scales of the prior
      guidance_strengths: [0, 0.5, 1, 2]
      guidance_steps: [1, 3]
      lowpass: [none, reference]

Strings may use ``${ENV_VAR}`` or ``${ENV_VAR:-default}``. :func:`load_params` returns the checked
params with every default filled in, the tasks as a list and each method as ``{name, label,
settings}``; :class:`ParamsError` names the key, the problem and the valid values.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml

from ..operators import DEFAULT_NOISE_SIGMA, TASKS
from .methods import METHODS, MethodSpec, method_label
from .paths import REPO_ROOT, RESULTS_ENV

Overrides = Union[None, Mapping[str, Any], Sequence[str]]


class ParamsError(ValueError):
    """A params file that cannot be used; the message says what to change."""


#: top-level keys and their defaults (``images`` and ``methods`` are required)
DEFAULTS: Dict[str, Any] = dict(
    run=None, description=None, notes=None, prior="tiny64", diffusion_prior="tiny64-diffusion", device="auto",
    images=None, tasks="all", noise_sigma=DEFAULT_NOISE_SIGMA, seed=0, use_labels=False, batch_size=8, methods=None,
    gallery=None, ladder=None, ablation=None,
)
REQUIRED = ("images", "methods")
IMAGE_DEFAULTS: Dict[str, Any] = dict(set=None, image_size=64, limit=None)
METHOD_KEYS = ("name", "label", "settings", "limit")
GALLERY_KEYS = ("image", "task", "max_images")
ABLATION_KEYS = ("images", "tasks", "method", "settings", "injection_depths", "guidance_strengths", "guidance_steps",
                 "lowpass", "seed", "noise_sigma", "use_labels")
#: what one benchmark pass reads (the rest is for the notebooks)
BENCH_KEYS = ("run", "prior", "diffusion_prior", "device", "images", "tasks", "noise_sigma", "seed", "use_labels",
              "batch_size", "methods")
LABELS_SUFFIX = " +labels"


# ==================================================================================================
# reading
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


def _dotted(key: str, value: Any) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


def parse_overrides(overrides: Overrides) -> Dict[str, Any]:
    """Overrides as a nested dict, from a nested dict, ``{"images.limit": 2}`` or
    ``["images.limit=2", "tasks=[sr4]"]`` (values in YAML)."""
    if overrides is None:
        return {}
    out: Dict[str, Any] = {}
    if isinstance(overrides, Mapping):
        for k, v in overrides.items():
            _deep_update(out, _dotted(str(k), v))
        return out
    for item in overrides:
        if "=" not in item:
            raise ParamsError(f"override {item!r} must look like key=value or a.b=value")
        k, v = item.split("=", 1)
        _deep_update(out, _dotted(k.strip(), yaml.safe_load(v)))
    return out


def _read(source: Union[str, os.PathLike, Mapping[str, Any]]) -> tuple:
    """(raw dict, where, path or None) of a YAML file or a mapping."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), "params", None
    src = resolve_params_path(source)
    try:
        raw = yaml.safe_load(src.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{src} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ParamsError(f"{src} must hold a YAML mapping (key: value lines), got {type(raw).__name__}")
    return raw, str(src), src


def load_params(source: Union[str, os.PathLike, Mapping[str, Any]], overrides: Overrides = None,
                run: Optional[str] = None, limit: Optional[int] = None) -> Dict[str, Any]:
    """Read a params file (a YAML path, or a mapping of the same keys) and return it checked, with
    every default filled in (see the module docstring).

    ``overrides``: nested dict, ``{"images.limit": 2}`` or ``["images.limit=2"]``. ``run`` replaces
    the file's ``run`` (default: the file's name, ``default`` for a mapping). ``limit`` sets the number
    of benchmark images and caps that of the ablation images. ``_source`` (the file) is added.
    """
    raw, where, src = _read(source)
    raw = {k: v for k, v in raw.items() if not str(k).startswith("_")}
    raw = _expand_env(_deep_update(raw, parse_overrides(overrides)), src.name if src else where)
    if run:
        raw["run"] = str(run)
    raw.setdefault("run", src.stem if src else "default")
    if limit is not None:
        if isinstance(raw.get("images"), dict):
            raw["images"]["limit"] = int(limit)
        abl = raw.get("ablation")
        if isinstance(abl, dict) and isinstance(abl.get("images"), dict):
            old = abl["images"].get("limit")
            abl["images"]["limit"] = int(limit) if old is None else min(int(old), int(limit))
    params = check_params(raw, where)
    params["_source"] = str(src) if src else where
    return params


# ==================================================================================================
# checking
# ==================================================================================================
def _did_you_mean(word: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(keys, valid: Sequence[str], what: str, where: str) -> None:
    bad = [k for k in keys if k not in valid]
    if bad:
        hint = _did_you_mean(bad[0], valid) if len(bad) == 1 else ""
        raise ParamsError(f"{where}: unknown {what}(s) {', '.join(map(str, bad))}{hint}; known: {', '.join(valid)}")


def _typed(value: Any, kind, key: str, where: str, what: str) -> Any:
    """``value`` if it is a ``kind`` (bool is not an int here), else a ParamsError."""
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        ok = False
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ParamsError(f"{where}: {key} must be {what}, got {value!r}")
    return value


def labels_modes(params: Mapping[str, Any], where: str = "params") -> List[bool]:
    """``use_labels`` as a list: ``[False]``, ``[True]`` or both, in the given order."""
    u = params.get("use_labels", False)
    modes = list(u) if isinstance(u, list) else [u]
    if not modes or not all(isinstance(v, bool) for v in modes) or len(set(modes)) != len(modes):
        raise ParamsError(f"{where}: use_labels must be true, false or [false, true], got {u!r}")
    return modes


def check_params(raw: Mapping[str, Any], where: str = "params") -> Dict[str, Any]:
    """The checked and normalised params of ``raw`` (already read and env-expanded); raises
    :class:`ParamsError`. Also used for the derived passes (with class labels, ablations)."""
    if "results_dir" in raw:
        raise ParamsError(f"{where}: results_dir is not a params key; set the environment variable "
                          f"{RESULTS_ENV} (or pass --results-dir) to write somewhere else than results/")
    _unknown(raw, list(DEFAULTS), "key", where)
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise ParamsError(f"{where}: missing key(s) {', '.join(missing)} (see params/default.yaml)")
    p = {k: copy.deepcopy(raw[k]) if k in raw else copy.deepcopy(v) for k, v in DEFAULTS.items()}
    p = {k: v for k, v in p.items() if v is not None or k in REQUIRED}
    run = str(p.get("run") or "default")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", run):
        raise ParamsError(f"{where}: run name {run!r} must be a plain folder name (letters, digits, _.+-)")
    p["run"] = run
    for key in ("prior", "diffusion_prior", "device"):
        p[key] = str(_typed(p[key], str, key, where, "a string"))
    if p["device"] not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", p["device"]):
        raise ParamsError(f"{where}: device must be 'auto', 'cpu' or 'cuda[:N]', got {p['device']!r}")
    p["images"] = check_images(p["images"], where, "images")
    p["tasks"] = check_tasks(p["tasks"], where, "tasks")
    p["noise_sigma"] = float(_typed(p["noise_sigma"], (int, float), "noise_sigma", where, "a number"))
    p["seed"] = int(_typed(p["seed"], int, "seed", where, "an integer"))
    p["batch_size"] = int(_typed(p["batch_size"], int, "batch_size", where, "an integer"))
    if p["batch_size"] < 1 or p["noise_sigma"] < 0:
        raise ParamsError(f"{where}: batch_size must be >= 1 and noise_sigma >= 0")
    labels_modes(p, where)
    p["methods"] = check_methods(p["methods"], p, where)
    if "gallery" in p:
        _unknown(_typed(p["gallery"], dict, "gallery", where, "a mapping"), GALLERY_KEYS, "gallery key", where)
    if "ladder" in p:
        labels = [m["label"] for m in p["methods"]]
        rungs = _typed(p["ladder"], list, "ladder", where, "a list of method labels")
        bad = [r for r in rungs if r not in labels]
        if bad or len(rungs) < 2 or len(set(rungs)) != len(rungs):
            raise ParamsError(f"{where}: ladder must list at least two distinct labels of `methods`, got {rungs!r}"
                              + (f" ({bad} not among {labels})" if bad else ""))
    if "ablation" in p:
        check_ablation(p["ablation"], p, where)
    return p


def check_images(images: Any, where: str, key: str = "images", base: Optional[Mapping[str, Any]] = None
                 ) -> Dict[str, Any]:
    """``images`` with its defaults (or ``base``'s values) filled in; the set must exist."""
    from ..data import IMAGE_SETS

    _typed(images, dict, key, where, "a mapping such as {set: embedded, image_size: 64}")
    _unknown(images, list(IMAGE_DEFAULTS), f"{key} key", where)
    im = {**IMAGE_DEFAULTS, **(base or {}), **images}
    s = im["set"]
    if not isinstance(s, str) or not (s.lower() in IMAGE_SETS or Path(s).expanduser().is_dir()):
        raise ParamsError(f"{where}: unknown image set {s!r} in {key}.set; valid sets: {', '.join(IMAGE_SETS)} "
                          f"(or an existing folder)")
    size = im["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 4:
        raise ParamsError(f"{where}: {key}.image_size must be an integer >= 16 divisible by 4, got {size!r}")
    lim = im["limit"]
    if lim is not None and (isinstance(lim, bool) or not isinstance(lim, int) or lim < 1):
        raise ParamsError(f"{where}: {key}.limit must be null or a positive integer, got {lim!r}")
    return im


def check_tasks(tasks: Any, where: str, key: str = "tasks") -> List[str]:
    """``tasks`` as a list (``all`` = every task); unknown or repeated tasks are errors."""
    if isinstance(tasks, str):
        tasks = list(TASKS) if tasks == "all" else [tasks]
    if not isinstance(tasks, list) or not tasks:
        raise ParamsError(f"{where}: {key} must be `all` or a non-empty list of tasks ({', '.join(TASKS)})")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ParamsError(f"{where}: unknown task(s) {bad} in {key}{_did_you_mean(bad[0], TASKS)}; "
                          f"valid tasks: {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ParamsError(f"{where}: tasks listed twice in {key}: {tasks}")
    return list(tasks)


def _method_entry(entry: Any, i: int, where: str) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ParamsError(f"{where}: methods[{i}] must be a method name or a mapping with `name`, got {entry!r}")
    _unknown(entry, METHOD_KEYS, f"key of methods[{i}]", where)
    name = str(entry["name"])
    if name not in METHODS:
        raise ParamsError(f"{where}: unknown method {name!r}{_did_you_mean(name, list(METHODS))}; "
                          f"valid methods: {', '.join(METHODS)}")
    settings = entry.get("settings") or {}
    if not isinstance(settings, dict):
        raise ParamsError(f"{where}: settings of method {name!r} must be a mapping, got {settings!r}")
    limit = entry.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ParamsError(f"{where}: limit of method {name!r} must be null or a positive integer (the first N "
                          f"images of the set), got {limit!r}")
    return MethodSpec(name=name, label=method_label({**entry, "name": name}), settings=dict(settings), limit=limit)


def check_methods(methods: Any, p: Mapping[str, Any], where: str) -> List[Dict[str, Any]]:
    """The method entries as ``{name, label, settings}`` (and ``limit``, the first N images, where given);
    every setting is checked on every task."""
    if not isinstance(methods, list) or not methods:
        raise ParamsError(f"{where}: methods must be a non-empty list of names or {{name, label, settings}}; "
                          f"valid methods: {', '.join(METHODS)}")
    specs = [_method_entry(m, i, where) for i, m in enumerate(methods)]
    labels = [m.label for m in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ParamsError(f"{where}: method label(s) {dup} used twice; give each entry its own `label:`")
    for m in specs:
        for task in p["tasks"]:
            try:
                m.method.resolve(m.settings, task, p["prior"], str(p["images"]["set"]))
            except ValueError as e:
                raise ParamsError(f"{where}: method {m.label!r}: {e}") from None
    if any(m.kind == "var" for m in specs):
        from ..prior import KNOWN_PRIORS

        if p["prior"] not in KNOWN_PRIORS and not Path(p["prior"]).exists():
            raise ParamsError(f"{where}: unknown prior {p['prior']!r}; known: {', '.join(KNOWN_PRIORS)} "
                              f"(or a checkpoint folder)")
    return [dict(name=m.name, label=m.label, settings=m.settings, **({"limit": m.limit} if m.limit else {}))
            for m in specs]


def check_ablation(abl: Any, p: Mapping[str, Any], where: str) -> None:
    """Check the ``ablation`` mapping's keys and types (its sweeps are checked when they run)."""
    where = f"{where}: ablation"
    _typed(abl, dict, "ablation", where, "a mapping")
    _unknown(abl, ABLATION_KEYS, "ablation key", where)
    if "images" in abl:
        check_images(abl["images"], where, "images", base=p["images"])
    if "tasks" in abl:
        check_tasks(abl["tasks"], where, "tasks")
    for key, kind, what in (("seed", int, "an integer"), ("noise_sigma", (int, float), "a number"),
                            ("use_labels", bool, "true or false"), ("settings", dict, "a mapping"),
                            ("method", str, "a method name or label")):
        if key in abl:
            _typed(abl[key], kind, key, where, what)
    for key, kind, what in (("guidance_strengths", (int, float), "numbers"), ("guidance_steps", int, "integers"),
                            ("lowpass", str, "strings"), ("injection_depths", int, "integers (or all)")):
        v = abl.get(key)
        if v is None or (key == "injection_depths" and v == "all"):
            continue
        if not isinstance(v, list) or not v or not all(isinstance(x, kind) and not isinstance(x, bool) for x in v):
            raise ParamsError(f"{where}: {key} must be a non-empty list of {what}, got {v!r}")
    want = abl.get("method", "var")
    names = [m["name"] for m in p["methods"]] + [m["label"] for m in p["methods"]]
    if want not in names and want not in ("var", "var-reference", "var-injection"):
        raise ParamsError(f"{where}: method {want!r} is not among the methods "
                          f"({', '.join(m['label'] for m in p['methods'])})")


# ==================================================================================================
# derived
# ==================================================================================================
def method_labels(params: Mapping[str, Any]) -> List[str]:
    """The benchmark's row labels in order, with the ``+labels`` variants of the VAR methods when
    ``use_labels`` is ``[false, true]``."""
    base = [method_label(m) for m in params["methods"]]
    modes = labels_modes(params)
    if len(modes) > 1:
        suffix = LABELS_SUFFIX if modes[1] else " -labels"
        base += [method_label(m) + suffix for m in params["methods"] if METHODS[m["name"]].kind == "var"]
    return base


def bench_params(params: Mapping[str, Any], use_labels: Optional[bool] = None) -> Dict[str, Any]:
    """The keys one benchmark pass reads, with one ``use_labels`` value (the first of a list unless
    ``use_labels`` is given)."""
    p = {k: copy.deepcopy(params[k]) for k in BENCH_KEYS if k in params}
    p["use_labels"] = labels_modes(params)[0] if use_labels is None else bool(use_labels)
    return p
