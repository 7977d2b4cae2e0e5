"""DPS, DiffPIR and PnP-UNet with the embedded diffusion prior (the benchmark's ``dps``, ``diffpir``, ``pnp-unet``).

Both reuse the wiring of :func:`varlib.baselines.dps` / :func:`varlib.baselines.diffpir`, which run
deepinv's implementations (``deepinv.sampling.DPS``: VP schedule with beta 0.1 .. 20, DDPM ancestral
solver, guidance ``zeta * grad ||y - A x0_hat||``; ``deepinv.sampling.DiffPIR``: HQS with the L2
data prox solved by conjugate gradients on ``deepinv.physics.LinearPhysics(A=op.A,
A_adjoint=op.A_adjoint)``) around any denoiser ``D(x, sigma)`` on [0, 1] images, with the operator's
[0, 1] range check off during the solve (``op.unchecked_range()``) and the denoiser calls counted;
``op`` may be a deepinv ``LinearPhysics`` (:func:`varlib.operators.as_operator`). The embedded
:class:`~varlib.diffusion.model.DiffusionPrior` is such a denoiser, and its discrete DDPM schedule
(betas 1e-4 .. 0.02 over 1000 steps) is the one deepinv's VP schedule and DiffPIR assume, so the
algorithms run unchanged: the comparison with the downloaded ImageNet networks differs only in the
network.

Cost per reconstruction (``denoiser_evals``, from the counter): DPS with ``steps`` time steps
evaluates the network ``steps - 1`` times, each with a backward pass through it for the guidance
(the last step lands on t = 0 and needs none); DiffPIR evaluates it ``steps`` times, without
gradients, plus ``steps - 1`` conjugate-gradient solves of the data step.

``pnp-unet`` is DPIR (Zhang et al., 2021): the half-quadratic splitting of
:func:`varlib.baselines.hqs_loop` with the prior's one-step denoiser ``D(x, sigma)`` (the clean-image
estimate of the DDPM network at the matching time step) in place of DPIR's DRUNet, and DPIR's
schedule: ``iters`` denoiser levels falling geometrically from ``sigma_max`` = 49/255 to the
measurement's noise level (``sigma_den``, default ``op.noise_sigma``), the data step weighted
``lam * noise^2 / sigma_k^2`` with DPIR's ``lam`` = 0.23, 8 iterations. It evaluates the network
``iters`` times, without gradients.

The hyper-parameters in :data:`EMBEDDED_SETTINGS` are the papers' defaults (:data:`PAPER_SETTINGS`)
overridden per task by the values tuned on training images (``tuned_settings.json`` beside this file).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..operators import TASKS, range_free
from ..result import Result
from .model import DiffusionPrior, load_diffusion_prior

#: the papers' defaults: DPS ``weight`` is the step size zeta of Chung et al. (2023) (1.0 in the
#: paper's FFHQ/ImageNet settings); DiffPIR ``lambda_`` / ``zeta`` of Zhu et al. (2023) (7 and 0.3; 1.0
#: for inpainting as in the baselines)
PAPER_SETTINGS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "dps": {t: dict(weight=1.0) for t in TASKS},
    "diffpir": {t: dict(lambda_=7.0, zeta=(1.0 if t.startswith("inpaint") else 0.3)) for t in TASKS},
    "pnp-unet": {t: dict(iters=8, lam=0.23, sigma_max=49 / 255) for t in TASKS},
}
#: per-task values tuned for tiny64-diffusion on Tiny ImageNet *train* images by
#: ``python -m varlib.tune_baselines --methods diffpir dps --name diffusion --write-defaults``
TUNED_SETTINGS_FILE = Path(__file__).resolve().parent / "tuned_settings.json"


def _settings_table() -> Dict[str, Dict[str, Dict[str, Any]]]:
    table = copy.deepcopy(PAPER_SETTINGS)
    if TUNED_SETTINGS_FILE.exists():
        for method, per_task in json.loads(TUNED_SETTINGS_FILE.read_text()).get("chosen", {}).items():
            for task, values in per_task.items():
                table.setdefault(method, {}).setdefault(task, {}).update(values)
    return table


#: the settings in use: the papers' defaults, overridden by the tuned values where there are any
EMBEDDED_SETTINGS: Dict[str, Dict[str, Dict[str, Any]]] = _settings_table()


def embedded_settings(method: str, task: Optional[str], domain: Optional[str] = None) -> Dict[str, Any]:
    """The settings of ``method`` on ``task``: tuned for the Tiny ImageNet prior, with the values
    tuned in image ``domain`` (``varlib.baselines.domain_settings``: faces with faces64-diffusion) on top."""
    from ..baselines import domain_settings

    table = EMBEDDED_SETTINGS[method]
    return {**copy.deepcopy(table.get(task, table["gaussian_blur"])), **domain_settings(method, task, domain)}


class _frozen:
    """Context: the prior in eval mode with parameters that do not require gradients (DPS then
    differentiates only through the input) and the requested bf16 autocast, restored afterwards."""

    def __init__(self, prior: DiffusionPrior, bf16: bool = False):
        self.prior, self.bf16 = prior, bool(bf16)

    def __enter__(self):
        self.training, self.was_bf16 = self.prior.training, getattr(self.prior, "bf16", False)
        self.flags = [p.requires_grad for p in self.prior.parameters()]
        self.prior.eval().requires_grad_(False)
        self.prior.bf16 = self.bf16
        return self.prior

    def __exit__(self, *exc):
        for p, f in zip(self.prior.parameters(), self.flags):
            p.requires_grad_(f)
        self.prior.train(self.training)
        self.prior.bf16 = self.was_bf16
        return False


def _prior(prior: Optional[DiffusionPrior], device) -> DiffusionPrior:
    if prior is None:
        return load_diffusion_prior("tiny64-diffusion", device=device or "cpu")
    if isinstance(prior, (str, bytes)) or hasattr(prior, "__fspath__"):
        return load_diffusion_prior(prior, device=device or "cpu")
    return prior


def _finish(res: Result, t0: float, prior: DiffusionPrior, method: str, settings: Dict[str, Any]) -> Result:
    res.seconds = time.perf_counter() - t0
    res.extras.setdefault("settings", {})
    res.extras["settings"] = {**res.extras["settings"], **settings, "model": prior.config.name}
    res.extras["method"] = method
    res.extras["prior_parameters"] = prior.num_parameters
    return res


def dps_embedded(y: torch.Tensor, op, prior: Optional[DiffusionPrior] = None, steps: int = 1000,
                 weight: Optional[float] = None, bf16: bool = True, seed: int = 0, device=None, **_: Any) -> Result:
    """Diffusion posterior sampling (Chung et al., 2023) with the embedded prior.

    ``prior``: a :class:`DiffusionPrior`, a name or directory for :func:`load_diffusion_prior`, or None
    for ``"tiny64-diffusion"`` (``FileNotFoundError`` with the build command while it is not built).
    ``steps``: DDPM time steps (1000 in the paper); ``weight``: zeta (default
    :data:`EMBEDDED_SETTINGS`); ``bf16``: run the network under bfloat16 autocast on the CPU (about 2x
    faster there; denoiser outputs differ from fp32 by < 0.01 on the [0, 1] scale; ignored on a GPU).
    The result is seeded by ``seed``; ``denoiser_evals`` counts network calls.
    """
    from .. import baselines as bl

    t0 = time.perf_counter()
    prior = _prior(prior, device)
    s = embedded_settings("dps", getattr(op, "task", None))
    if weight is not None:
        s["weight"] = float(weight)
    with _frozen(prior, bf16):
        res = bl.dps(y, op, num_steps=int(steps), weight=float(s["weight"]), denoiser=prior, seed=int(seed),
                     download=False, device=device)
    return _finish(res, t0, prior, "dps", {"num_steps": int(steps), "weight": float(s["weight"]), "bf16": bool(bf16),
                                           "seed": int(seed)})


def diffpir_embedded(y: torch.Tensor, op, prior: Optional[DiffusionPrior] = None, steps: int = 100,
                     lambda_: Optional[float] = None, zeta: Optional[float] = None, bf16: bool = True, seed: int = 0,
                     device=None, **_: Any) -> Result:
    """DiffPIR (Zhu et al., 2023) with the embedded prior, started from ``op.init_estimate``.

    ``steps``: iterations (100 in the paper); ``lambda_`` weighs the data prox (rho_t = lambda
    sigma_n^2 / sigma_t^2) and ``zeta`` mixes fresh noise into each step (defaults:
    :data:`EMBEDDED_SETTINGS`). ``prior``, ``bf16``, ``seed``: as in :func:`dps_embedded`.
    """
    from .. import baselines as bl

    t0 = time.perf_counter()
    prior = _prior(prior, device)
    s = embedded_settings("diffpir", getattr(op, "task", None))
    if lambda_ is not None:
        s["lambda_"] = float(lambda_)
    if zeta is not None:
        s["zeta"] = float(zeta)
    with _frozen(prior, bf16):
        res = bl.diffpir(y, op, max_iter=int(steps), lambda_=float(s["lambda_"]), zeta=float(s["zeta"]),
                         denoiser=prior, seed=int(seed), download=False, device=device)
    return _finish(res, t0, prior, "diffpir", {"max_iter": int(steps), **s, "bf16": bool(bf16), "seed": int(seed)})


@range_free
def pnp_unet_embedded(y: torch.Tensor, op, prior: Optional[DiffusionPrior] = None, iters: Optional[int] = None,
                      lam: Optional[float] = None, sigma_max: Optional[float] = None, sigma_den: Optional[float] = None,
                      cg_iters: int = 30, bf16: bool = True, seed: int = 0, device=None, **_: Any) -> Result:
    """DPIR's plug-and-play HQS with the embedded diffusion network as the Gaussian denoiser.

    ``iters`` denoiser levels from ``sigma_max`` down to ``sigma_den`` (default: the operator's noise
    level), geometric; data weight ``lam`` (defaults: :data:`EMBEDDED_SETTINGS`); ``cg_iters``
    conjugate-gradient steps per data step. ``prior``, ``bf16``: as in :func:`dps_embedded`.
    Deterministic (``seed`` is accepted for the benchmark's uniform call and recorded only).
    """
    from .. import baselines as bl

    t0 = time.perf_counter()
    prior = _prior(prior, device)
    s = embedded_settings("pnp-unet", getattr(op, "task", None))
    s.update({k: v for k, v in dict(iters=iters, lam=lam, sigma_max=sigma_max).items() if v is not None})
    den = float(sigma_den) if sigma_den is not None else max(float(op.noise_sigma), 1e-3)
    sigmas = bl.pnp_sigma_schedule(float(s["sigma_max"]), den, int(s["iters"]))
    with _frozen(prior, bf16), torch.no_grad():
        z = bl.hqs_loop(y, op, lambda x, sk: prior.denoise(x, sk, clip=True), sigmas, float(s["lam"]), int(cg_iters))
    res = Result(image=z, denoiser_evals=len(sigmas), residual_per_scale=[],
                 extras={"iterations": len(sigmas), "sigmas": sigmas})
    return _finish(res, t0, prior, "pnp-unet", {**s, "sigma_den": den, "cg_iters": int(cg_iters), "bf16": bool(bf16),
                                                 "seed": int(seed)})


#: drop-in reconstruction functions ``fn(y, op, **settings)`` for the benchmark's diffusion-prior methods
METHODS = {"dps": dps_embedded, "diffpir": diffpir_embedded, "pnp-unet": pnp_unet_embedded}
