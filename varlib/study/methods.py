"""The benchmark's methods: one registry from a method name to how it runs and what it accepts.

Each :class:`Method` says

* its ``kind``: ``baseline`` (:mod:`varlib.baselines`), ``diffusion`` (DPS / DiffPIR / PnP-UNet with the
  embedded diffusion prior, :mod:`varlib.diffusion.solvers`) or ``var`` (:func:`varlib.solver.solve` with one of
  the solver's named settings);
* the settings it accepts (``None`` for the VAR methods: the solver checks its own settings);
* how its *full* settings on a task are resolved (its per-task defaults with the params' overrides on
  top). The full settings are recorded with every case and enter its cache key, so the rules below
  are frozen: the ImageNet diffusion baselines, for instance, record only their overrides because
  their functions fill the standard step counts themselves;
* whether it is batched on the benchmark's device (network methods) or run one image at a time on
  the CPU, and which network prior of the params it runs (``prior`` or ``diffusion_prior``).

The methods are called with the *overrides* only (not the full settings): every function resolves
its own defaults, exactly as when it is called directly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

#: (settings overrides, task, prior name, image set) -> full settings
Resolver = Callable[[Mapping[str, Any], str, Optional[str], Optional[str]], Dict[str, Any]]
#: (settings overrides, y, operator, network prior or None, class labels or None, seed) -> varlib.Result
Caller = Callable[..., Any]


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`."""

    name: str
    kind: str                                # "baseline", "diffusion" or "var"
    target: str                              # function / solver key / named solver settings
    accepts: Optional[Tuple[str, ...]]       # setting names it accepts; None: checked by the VAR solver
    full_settings: Resolver
    call: Caller
    batched: bool = False                    # batched on the benchmark's device (it runs a network)
    prior: Optional[str] = None              # params key of the network prior it runs

    def resolve(self, settings: Mapping[str, Any], task: str, prior_name: Optional[str] = None,
                image_set: Optional[str] = None) -> Dict[str, Any]:
        """The full settings on ``task`` (per-task defaults: the VAR solver's tuned for ``prior_name``,
        the baselines' tuned for the domain of ``image_set``; then ``settings``); ``ValueError`` names
        unknown settings."""
        if self.accepts is not None:
            bad = sorted(set(settings) - set(self.accepts))
            if bad:
                raise ValueError(f"unknown setting(s) {bad} for method {self.name!r}; "
                                 f"valid: {', '.join(self.accepts) or '(none)'}")
        return self.full_settings(settings, task, prior_name, image_set)


# -- baselines ----------------------------------------------------------------------------------------
def _baseline_resolver(tuned: Optional[str]) -> Resolver:
    def resolve(settings, task, prior_name=None, image_set=None):
        from .. import baselines
        from ..data import image_domain

        return {**(baselines.baseline_settings(tuned, task, image_domain(image_set)) if tuned else {}), **settings}
    return resolve


def _baseline_caller(function: str, seeded: bool) -> Caller:
    def call(settings, y, op, model=None, labels=None, seed=0):
        from .. import baselines

        kw = dict(settings)
        if seeded:
            kw.setdefault("seed", seed)
        return getattr(baselines, function)(y, op, **kw)
    return call


def _baseline(name: str, function: str, accepts: Sequence[str], tuned: Optional[str] = None,
              seeded: bool = False, batched: bool = False) -> Method:
    return Method(name=name, kind="baseline", target=function, accepts=tuple(accepts),
                  full_settings=_baseline_resolver(tuned), call=_baseline_caller(function, seeded), batched=batched)


# -- diffusion prior (DPS / DiffPIR with the embedded prior) --------------------------------------------
def _diffusion(name: str, steps: Optional[int], accepts: Sequence[str]) -> Method:
    """``steps``: the sampler's step count recorded in the full settings (None: its settings carry
    their own iteration count)."""
    def resolve(settings, task, prior_name=None, image_set=None):
        from ..data import image_domain
        from ..diffusion.solvers import embedded_settings

        fixed = {"steps": steps} if steps is not None else {}
        return {**fixed, "bf16": True, **embedded_settings(name, task, image_domain(image_set)), **settings}

    def call(settings, y, op, model=None, labels=None, seed=0):  # unconditional: class labels do not apply
        from ..diffusion.solvers import METHODS as SOLVERS

        return SOLVERS[name](y, op, prior=model, seed=seed, device=y.device, **settings)

    return Method(name=name, kind="diffusion", target=name, accepts=tuple(accepts), full_settings=resolve, call=call,
                  batched=True, prior="diffusion_prior")


# -- the VAR solver -------------------------------------------------------------------------------------
def _var(name: str, named: str) -> Method:
    def resolve(settings, task, prior_name=None, image_set=None):
        from ..solver import resolve_settings

        over = {k: v for k, v in settings.items() if k != "class_labels"}
        s = resolve_settings(named, task, prior_name=prior_name, **over)  # per-task tuned values of the prior
        return {k: v for k, v in s.items() if k != "class_labels"}

    def call(settings, y, op, model=None, labels=None, seed=0):
        from ..solver import solve

        kw = dict(settings)
        kw.setdefault("seed", seed)
        if labels is not None:
            kw["class_labels"] = labels
        return solve(y, op, model, named, **kw)

    return Method(name=name, kind="var", target=named, accepts=None, full_settings=resolve, call=call, batched=True,
                  prior="prior")


_DEEPINV_DIFFUSION = ("denoiser", "model", "class_labels", "seed", "download", "device")

#: every method a params file can name (tests/test_bench.py checks ``accepts`` against the signatures)
METHODS: Dict[str, Method] = {m.name: m for m in (
    _baseline("init", "initial_estimate", ()),
    _baseline("tv", "tv_reconstruction", ("lam", "iters"), tuned="tv"),
    _baseline("pnp-bm3d", "pnp_bm3d", ("sigma_den", "iters", "lam", "sigma_max", "cg_iters"), tuned="pnp-bm3d"),
    _diffusion("dps", 1000, ("steps", "weight", "bf16")),
    _diffusion("diffpir", 100, ("steps", "lambda_", "zeta", "bf16")),
    _diffusion("pnp-unet", None, ("iters", "lam", "sigma_max", "sigma_den", "cg_iters", "bf16")),
    # deepinv's downloaded 256 px ImageNet networks; their functions fill the standard counts themselves
    _baseline("dps-imagenet", "dps", ("num_steps", "weight", *_DEEPINV_DIFFUSION), seeded=True, batched=True),
    _baseline("diffpir-imagenet", "diffpir", ("max_iter", "lambda_", "zeta", *_DEEPINV_DIFFUSION), seeded=True,
              batched=True),
    _var("var", "default"),
    _var("var-reference", "reference"),
    _var("var-injection", "injection_only"),
    _var("var-guided", "guided"),          # the ladder's rungs between var-injection and var
    _var("var-latent-dc", "latent_dc"),
    _var("var-posterior", "posterior"),    # 8 posterior samples, their mean and per-pixel std
)}


def compact(d: Mapping[str, Any]) -> str:
    """``d`` as compact JSON with sorted keys (labels, cache keys and the ``settings`` columns)."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def method_label(entry: Mapping[str, Any]) -> str:
    """The row label of a method entry: its ``label``, else its name followed by its settings when it
    has any (``tv{"iters":5}``)."""
    settings = entry.get("settings") or {}
    if entry.get("label"):
        return str(entry["label"])
    return str(entry["name"]) + (compact(settings) if settings else "")


@dataclass(frozen=True)
class MethodSpec:
    """A method entry of the params: the registry's method with a row label and settings overrides."""

    name: str
    label: str
    settings: Dict[str, Any] = field(default_factory=dict)
    limit: Optional[int] = None   # run on the first ``limit`` images of the set only (a slow method)

    @property
    def method(self) -> Method:
        return METHODS[self.name]

    @property
    def kind(self) -> str:
        return self.method.kind


def method_specs(params: Mapping[str, Any]) -> List[MethodSpec]:
    """The checked params' method entries as :class:`MethodSpec`."""
    return [MethodSpec(name=m["name"], label=m["label"], settings=dict(m.get("settings") or {}), limit=m.get("limit"))
            for m in params["methods"]]
