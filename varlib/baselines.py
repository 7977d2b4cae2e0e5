"""Baselines for the benchmark, all on the same operators as the VAR solver.

Every function takes a measurement ``y`` and an operator -- one from
:func:`varlib.operators.make_operator` or a deepinv ``LinearPhysics`` (wrapped on entry by
:func:`varlib.operators.as_operator`) -- and returns a :class:`varlib.result.Result` whose ``image``
is (B,3,H,W) in [0,1]. A measurement with NaN or infinite entries is refused with a ``ValueError``.

- :func:`initial_estimate`: the operator's own initial estimate (what the VAR solver starts from).
- :func:`tv_reconstruction`: 0.5 ||A x - y||^2 + lam TV(x) on [0,1] by the Chambolle-Pock
  primal-dual algorithm (written here; see its docstring for why not deepinv's PGD + TVPrior).
- :func:`pnp_bm3d`: plug-and-play half-quadratic splitting (:func:`hqs_loop`, DPIR's iterations) with
  BM3D as denoiser and a decreasing denoiser noise level; the data step solves
  (A^T A + a I) x = A^T y + a z by conjugate gradients. ``pnp-unet`` runs the same loop with the
  embedded diffusion UNet as the denoiser (:func:`varlib.diffusion.solvers.pnp_unet_embedded`).
- :func:`dps` and :func:`diffpir`: diffusion baselines through deepinv (``deepinv.sampling.DPS``,
  ``deepinv.sampling.DiffPIR``) with deepinv's pretrained ImageNet diffusion networks. They need
  downloaded weights (see :data:`DIFFUSION_WEIGHTS`); without them they raise a ``RuntimeError`` that
  says which file is needed and where to put it. They never wait on an unreachable network.

Per-task hyper-parameters live in :data:`BASELINE_SETTINGS` (``BASELINE_SETTINGS[method][task]``);
the classical ones were tuned with ``python -m varlib.tune_baselines`` on Tiny ImageNet *train*
images (results in ``results/tuning/baselines.csv``). An image domain with its own tuning (faces:
``varlib.data.DOMAIN_TRAIN_SETS``) overrides them from :data:`DOMAIN_SETTINGS_FILE`
(``baseline_settings(method, task, domain="celeba")``; the benchmark passes the domain of its
image set), so that the baselines are tuned on the same training images as the VAR solver.
"""
from __future__ import annotations

import copy
import functools
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from . import linalg
from .operators import TASKS, range_free
from .result import Result

# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------

# TV: lam = weight of the (colour isotropic) TV term, iters = primal-dual iterations.
# Tuned by varlib/tune_baselines.py on 8 Tiny ImageNet train images (results/tuning/baselines.csv).
_TV = {
    "inpaint_box": dict(lam=0.001, iters=500),
    "inpaint_random": dict(lam=0.001, iters=300),
    "gaussian_blur": dict(lam=0.003, iters=300),
    "motion_blur": dict(lam=0.003, iters=300),
    "nonuniform_blur": dict(lam=0.003, iters=300),
    "sr4": dict(lam=0.003, iters=300),
}
# PnP-BM3D: sigma_max -> sigma_den geometric schedule of the denoiser's noise level over `iters`
# iterations; the data step weight is lam * noise_sigma^2 / sigma_k^2 (as in DPIR). Tuned likewise.
_PNP = {
    "inpaint_box": dict(sigma_den=0.03, iters=12, lam=0.1, sigma_max=0.2),
    "inpaint_random": dict(sigma_den=0.015, iters=12, lam=0.1, sigma_max=0.2),
    "gaussian_blur": dict(sigma_den=0.015, iters=12, lam=0.3, sigma_max=0.2),
    "motion_blur": dict(sigma_den=0.05, iters=12, lam=0.3, sigma_max=0.2),
    "nonuniform_blur": dict(sigma_den=0.015, iters=12, lam=0.3, sigma_max=0.2),
    "sr4": dict(sigma_den=0.05, iters=12, lam=0.3, sigma_max=0.2),
}
# Diffusion baselines: the standard step counts of the papers, not tuned here (no weights offline).
_DPS = {t: dict(num_steps=1000, weight=1.0) for t in TASKS}
_DIFFPIR = {t: dict(max_iter=100, lambda_=7.0, zeta=0.3) for t in TASKS}
_DIFFPIR["inpaint_box"]["zeta"] = 1.0
_DIFFPIR["inpaint_random"]["zeta"] = 1.0

BASELINE_SETTINGS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "tv": _TV,
    "pnp-bm3d": _PNP,
    "dps": _DPS,
    "diffpir": _DIFFPIR,
}


#: per-domain tuned values of the baselines (classical and embedded-diffusion ones):
#: ``{domain: {"notes": {method: command}, "chosen": {method: {task: settings}}}}``, written by
#: ``python -m varlib.tune_baselines --image-set celeba-train --write-domain``
DOMAIN_SETTINGS_FILE = Path(__file__).resolve().parent / "tuned_baselines.json"


@functools.lru_cache(maxsize=None)
def _domain_table() -> Dict[str, Any]:
    import json

    return json.loads(DOMAIN_SETTINGS_FILE.read_text()) if DOMAIN_SETTINGS_FILE.exists() else {}


def domain_settings(method: str, task: Optional[str], domain: Optional[str]) -> Dict[str, Any]:
    """The values tuned for ``method`` on ``task`` in image ``domain`` (empty when there are none)."""
    if not domain:
        return {}
    chosen = _domain_table().get(domain, {}).get("chosen", {}).get(method, {})
    return copy.deepcopy(chosen.get(task, {}))


def baseline_settings(method: str, task: Optional[str], domain: Optional[str] = None) -> Dict[str, Any]:
    """A copy of the tuned settings of ``method`` for ``task`` (the gaussian_blur ones for unknown
    tasks), with the values tuned for image ``domain`` on top when it has any."""
    if method not in BASELINE_SETTINGS:
        raise ValueError(f"no settings for baseline {method!r}; known: {', '.join(BASELINE_SETTINGS)}")
    table = BASELINE_SETTINGS[method]
    return {**copy.deepcopy(table.get(task, table["gaussian_blur"])), **domain_settings(method, task, domain)}


def _resolve(method: str, op, given: Dict[str, Any]) -> Dict[str, Any]:
    s = baseline_settings(method, getattr(op, "task", None))
    s.update({k: v for k, v in given.items() if v is not None})
    return s


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def _residual(x: torch.Tensor, y: torch.Tensor, op) -> list:
    """Per image ||y - A x||_2."""
    return (op.A(x) - y).flatten(1).norm(dim=1).tolist()


def _physics(op, noise: bool = False):
    """A plain deepinv ``LinearPhysics`` view of ``op`` whose noise model only tells DPS / DiffPIR the level.

    ``op`` is a ``LinearPhysics`` itself, but this view keeps the level those samplers read fixed at
    ``max(noise_sigma, 1e-3)`` (they divide by it) whatever ``op.noise_model`` is."""
    import deepinv as dinv

    noise_model = dinv.physics.GaussianNoise(sigma=max(float(op.noise_sigma), 1e-3)) if noise \
        else dinv.physics.ZeroNoise()
    return dinv.physics.LinearPhysics(A=op.A, A_adjoint=op.A_adjoint, noise_model=noise_model)


# --------------------------------------------------------------------------------------------------
# Initial estimate
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
@range_free
def initial_estimate(y: torch.Tensor, op, **_: Any) -> Result:
    """The operator's initial estimate, whatever ``op.init_estimate`` does (hole filling for inpainting,
    Wiener deconvolution for the blurs, bicubic up-sampling for super-resolution)."""
    t0 = time.perf_counter()
    x = op.init_estimate(y).clamp(0, 1)
    return Result(image=x, seconds=time.perf_counter() - t0,
                  extras={"settings": {}, "final_residual": _residual(x, y, op)})


# --------------------------------------------------------------------------------------------------
# TV
# --------------------------------------------------------------------------------------------------
def _grad(x: torch.Tensor) -> torch.Tensor:
    """Forward differences (Neumann boundary): (B,C,H,W) -> (B,C,2,H,W)."""
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return torch.stack((dx, dy), dim=2)


def _grad_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad` (minus the divergence)."""
    gx, gy = g[:, :, 0], g[:, :, 1]
    out = torch.zeros_like(gx)
    out[..., :, :-1] -= gx[..., :, :-1]
    out[..., :, 1:] += gx[..., :, :-1]
    out[..., :-1, :] -= gy[..., :-1, :]
    out[..., 1:, :] += gy[..., :-1, :]
    return out


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """Colour isotropic TV per image: sum over pixels of the l2 norm over channels and directions."""
    return _grad(x).pow(2).sum(dim=(1, 2)).sqrt().flatten(1).sum(1)


@torch.no_grad()
@range_free
def tv_reconstruction(y: torch.Tensor, op, lam: Optional[float] = None, iters: Optional[int] = None,
                      **_: Any) -> Result:
    """TV-regularised least squares ``min_{x in [0,1]} 0.5 ||A x - y||^2 + lam TV(x)``.

    TV is the colour isotropic total variation (:func:`tv_norm`). Solved by the primal-dual algorithm of
    Chambolle and Pock with K = (A / ||A||, grad): the data term is rescaled by ||A||^2 (power method)
    so that both blocks of K have norm ~1 whatever the operator (the minimiser is unchanged), and
    step sizes tau = sigma = 0.99 / ||K||. Started from ``op.init_estimate``. ``lam``/``iters`` default
    to ``BASELINE_SETTINGS["tv"][task]``.

    (deepinv's ``PGD`` + ``TVPrior`` was tried first: with a large null space -- inpainting, x4
    super-resolution -- the unobserved pixels only move through the TV prox with threshold
    step * lam, so it barely leaves the initial estimate in a few hundred iterations.)
    """
    t0 = time.perf_counter()
    s = _resolve("tv", op, dict(lam=lam, iters=iters))
    x = op.init_estimate(y).clamp(0, 1)
    L = linalg.operator_sqnorm(op.A, op.A_adjoint, x.shape[1:])
    a = math.sqrt(max(L, 1e-12))
    lam_s = float(s["lam"]) / a ** 2          # lam in the units of the rescaled data term
    yn = y / a
    step = 0.99 / math.sqrt(1.0 + 8.0)      # ||K||^2 <= ||A/a||^2 + ||grad||^2 <= 1 + 8
    p = torch.zeros_like(y)                  # dual of the data term
    q = torch.zeros_like(_grad(x))           # dual of TV
    xbar = x
    for _ in range(int(s["iters"])):
        p = (p + step * (op.A(xbar) / a - yn)) / (1.0 + step)
        q = q + step * _grad(xbar)
        q = q / (q.pow(2).sum(dim=(1, 2), keepdim=True).sqrt() / max(lam_s, 1e-12)).clamp_min(1.0)
        x_new = (x - step * (op.A_adjoint(p) / a + _grad_adjoint(q))).clamp(0, 1)
        xbar = 2 * x_new - x
        x = x_new
    obj = 0.5 * (op.A(x) - y).flatten(1).pow(2).sum(1) + float(s["lam"]) * tv_norm(x)
    return Result(image=x, seconds=time.perf_counter() - t0,
                  extras={"settings": s, "iterations": int(s["iters"]), "operator_sqnorm": L,
                          "objective": obj.tolist(), "final_residual": _residual(x, y, op)})


# --------------------------------------------------------------------------------------------------
# PnP-BM3D
# --------------------------------------------------------------------------------------------------
def _bm3d_profile():
    """BM3D's default 'np' profile with a smaller search window (enough at 64 px), a single thread and a
    16-point FFT domain for the noise statistics: ~0.1 s per 64 px colour image instead of ~1-3 s."""
    import bm3d

    p = bm3d.BM3DProfile()
    p.num_threads = 1
    p.search_window_ht = 19
    p.search_window_wiener = 19
    p.nf = 16
    return p


def bm3d_denoise(x: torch.Tensor, sigma: float, profile=None) -> torch.Tensor:
    """BM3D (colour, opponent space) on each image of a (B,3,H,W) batch, noise std ``sigma`` in [0,1] units."""
    import bm3d

    profile = profile or _bm3d_profile()
    out = []
    for img in x.detach().cpu().numpy().astype(np.float64):
        d = bm3d.bm3d_rgb(np.ascontiguousarray(img.transpose(1, 2, 0)), float(sigma), profile=profile)
        out.append(torch.from_numpy(np.ascontiguousarray(d.transpose(2, 0, 1))))
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


def pnp_sigma_schedule(sigma_max: float, sigma_den: float, iters: int) -> list:
    """Geometric decrease of the denoiser noise level from ``sigma_max`` to ``sigma_den``."""
    if iters <= 1:
        return [float(sigma_den)]
    return [float(v) for v in np.geomspace(sigma_max, sigma_den, iters)]


def hqs_loop(y: torch.Tensor, op, denoise: Callable[[torch.Tensor, float], torch.Tensor], sigmas: list,
             lam: float, cg_iters: int = 30) -> torch.Tensor:
    """The plug-and-play half-quadratic splitting iterations of DPIR (Zhang et al., 2021), any denoiser.

    From ``z = op.init_estimate(y)``, for each denoiser level ``sigma_k`` in ``sigmas``:
    ``a_k = lam * noise_sigma^2 / sigma_k^2``; x = argmin ||A x - y||^2 + a_k ||x - z||^2 by ``cg_iters``
    conjugate-gradient steps on (A^T A + a_k I) x = A^T y + a_k z (warm-started at z);
    z = ``denoise(x, sigma_k)`` clamped to [0, 1]. Returns the last z, (B, 3, H, W) in [0, 1].
    """
    noise = max(float(op.noise_sigma), 1e-3)
    z = op.init_estimate(y).clamp(0, 1)
    Aty = op.A_adjoint(y)
    from torch.profiler import record_function  # named stages for varlib.study.profile

    for sk in sigmas:
        a = max(float(lam) * noise ** 2 / sk ** 2, 1e-6)
        with record_function("pnp.data_step"):
            x = linalg.cg_solve(lambda v: op.A_adjoint(op.A(v)) + a * v, Aty + a * z, z, int(cg_iters))
        with record_function("pnp.denoiser"):
            z = denoise(x.clamp(-0.5, 1.5), sk).clamp(0, 1)
    return z


@torch.no_grad()
@range_free
def pnp_bm3d(y: torch.Tensor, op, sigma_den: Optional[float] = None, iters: Optional[int] = None,
             lam: Optional[float] = None, sigma_max: Optional[float] = None, cg_iters: int = 30,
             **_: Any) -> Result:
    """Plug-and-play half-quadratic splitting (:func:`hqs_loop`) with BM3D as the denoiser, started from
    ``op.init_estimate``; the denoiser level falls geometrically from ``sigma_max`` to ``sigma_den``
    over ``iters`` iterations. ``denoiser_evals`` counts BM3D calls per image.
    """
    t0 = time.perf_counter()
    s = _resolve("pnp-bm3d", op, dict(sigma_den=sigma_den, iters=iters, lam=lam, sigma_max=sigma_max))
    sigmas = pnp_sigma_schedule(float(s["sigma_max"]), float(s["sigma_den"]), int(s["iters"]))
    profile = _bm3d_profile()
    z = hqs_loop(y, op, lambda x, sk: bm3d_denoise(x, sk, profile), sigmas, float(s["lam"]), int(cg_iters))
    return Result(image=z, seconds=time.perf_counter() - t0, denoiser_evals=len(sigmas),
                  residual_per_scale=[], extras={"settings": {**s, "cg_iters": int(cg_iters)},
                                                 "iterations": len(sigmas), "sigmas": sigmas,
                                                 "final_residual": _residual(z, y, op)})


# --------------------------------------------------------------------------------------------------
# Diffusion baselines (deepinv)
# --------------------------------------------------------------------------------------------------
_HF = "https://huggingface.co/deepinv"
DIFFUSION_WEIGHTS: Dict[str, Dict[str, Any]] = {
    # EDM-preconditioned ADM trained on ImageNet 64x64, class-conditional (deepinv.models.ADMUNet)
    "adm-imagenet64-cond": dict(file="adm-imagenet64-cond.pt", url=f"{_HF}/edm/resolve/main/adm-imagenet64-cond.pt",
                                resolution=64, size="~1.2 GB", network="deepinv.models.ADMUNet"),
    # OpenAI guided-diffusion 256x256 unconditional ImageNet model (deepinv.models.DiffUNet(large_model=True))
    "diffunet-imagenet256": dict(file="diffusion_openai.pt", url=f"{_HF}/diffunet/resolve/main/diffusion_openai.pt",
                                 resolution=256, size="~2.1 GB", network="deepinv.models.DiffUNet(large_model=True)"),
}


def default_diffusion_model(image_size: int) -> str:
    """The ImageNet network matching the working size: the 64 px ADM at <= 64 px, else the 256 px UNet."""
    return "adm-imagenet64-cond" if image_size <= 64 else "diffunet-imagenet256"


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _candidate_paths(file: str) -> list:
    paths = []
    env = os.environ.get("VARLIB_DIFFUSION_DIR")
    if env:
        paths.append(Path(env) / file)
    paths.append(_hub_checkpoint_dir() / file)
    return paths


def _network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host`` opens within ``timeout`` s (DNS included; never blocks longer)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
            os.environ.get("VARLIB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    ok = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout + 0.5)
    return bool(ok)


def diffusion_weights_path(name: str, download: bool = True) -> Path:
    """Local path of the weights of diffusion network ``name`` (see :data:`DIFFUSION_WEIGHTS`).

    Looks in ``$VARLIB_DIFFUSION_DIR`` and the torch hub cache (``torch.hub.get_dir()/checkpoints``).
    When absent and ``download`` is true and huggingface.co answers within a few seconds, downloads the
    file into the torch hub cache; otherwise raises ``RuntimeError`` with instructions.
    """
    if name not in DIFFUSION_WEIGHTS:
        raise ValueError(f"unknown diffusion network {name!r}; known: {', '.join(DIFFUSION_WEIGHTS)}")
    info = DIFFUSION_WEIGHTS[name]
    for p in _candidate_paths(info["file"]):
        if p.is_file():
            return p
    target = _hub_checkpoint_dir() / info["file"]
    if download and _network_reachable():
        target.parent.mkdir(parents=True, exist_ok=True)
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)
        try:
            torch.hub.download_url_to_file(info["url"], str(target), progress=True)
        except Exception as exc:  # network errors of any kind -> the same clear message
            raise RuntimeError(_missing_message(name, target, f"the download failed: {exc}")) from exc
        finally:
            socket.setdefaulttimeout(old)
        return target
    why = "downloading is disabled" if not download else "huggingface.co is not reachable (offline?)"
    raise RuntimeError(_missing_message(name, target, why))


def _missing_message(name: str, target: Path, why: str) -> str:
    info = DIFFUSION_WEIGHTS[name]
    return (f"the diffusion baselines need the pretrained network {name!r} ({info['network']}, "
            f"{info['resolution']} px ImageNet, {info['size']}), file {info['file']!r}, which is not cached and "
            f"{why}. Download it from {info['url']} and put it at {target} (the torch hub cache) or in a folder "
            f"named by $VARLIB_DIFFUSION_DIR; or pass your own deepinv denoiser with denoiser=...")


class EvalCounter(torch.nn.Module):
    """Wraps a deepinv-style denoiser ``net(x, sigma)``; counts batched calls and supplies ADM class labels.

    ``class_labels``: (B,) ImageNet-1k class ids for a class-conditional network, or None (zero label
    embedding, i.e. no class information).
    """

    def __init__(self, net: torch.nn.Module, conditional: bool = False, num_classes: int = 1000,
                 class_labels: Optional[torch.Tensor] = None):
        super().__init__()
        self.net = net
        self.conditional = conditional
        self.num_classes = num_classes
        self.class_labels = class_labels
        self.calls = 0

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        if not self.conditional:
            return self.net(x, sigma)
        onehot = torch.zeros(x.shape[0], self.num_classes, device=x.device)
        if self.class_labels is not None:
            lab = torch.as_tensor(self.class_labels, device=x.device).long().reshape(-1)
            lab = lab.repeat((x.shape[0] + lab.numel() - 1) // lab.numel())[: x.shape[0]]
            valid = lab >= 0
            onehot[valid.nonzero().flatten(), lab[valid]] = 1.0
        return self.net(x, sigma, class_labels=onehot)


def load_diffusion_denoiser(name: Optional[str] = None, image_size: int = 64, device="cpu",
                            download: bool = True) -> tuple:
    """(network, conditional) for the deepinv ImageNet diffusion network ``name`` (see :data:`DIFFUSION_WEIGHTS`)."""
    import deepinv as dinv

    name = name or default_diffusion_model(image_size)
    path = diffusion_weights_path(name, download=download)
    if name == "adm-imagenet64-cond":
        net = dinv.models.ADMUNet(img_resolution=64, label_dim=1000, pretrained=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        net._was_trained_on_minus_one_one = True  # as deepinv's own download branch sets
        net.pixel_std = 0.5
        conditional = True
    else:
        net = dinv.models.DiffUNet(large_model=True, pretrained=str(path))
        conditional = False
    return net.eval().to(device), conditional


def _diffusion_denoiser(denoiser, model, image_size, device, class_labels, download) -> EvalCounter:
    if denoiser is None:
        net, conditional = load_diffusion_denoiser(model, image_size, device, download)
        return EvalCounter(net, conditional=conditional, class_labels=class_labels)
    if isinstance(denoiser, EvalCounter):
        denoiser.calls = 0
        return denoiser
    return EvalCounter(denoiser.to(device))


@range_free
def dps(y: torch.Tensor, op, num_steps: Optional[int] = None, weight: Optional[float] = None,
        denoiser: Optional[torch.nn.Module] = None, model: Optional[str] = None, class_labels=None,
        seed: int = 0, download: bool = True, device=None, **_: Any) -> Result:
    """Diffusion Posterior Sampling (deepinv ``DPS``: VP schedule, DDPM solver, norm guidance).

    ``denoiser``: any deepinv denoiser ``D(x, sigma)`` on [0,1] images (e.g. our own diffusion model);
    otherwise deepinv's pretrained ImageNet network ``model`` (default: :func:`default_diffusion_model`).
    Standard ``num_steps`` = 1000; ``weight`` is the DPS step size zeta.
    """
    import deepinv as dinv

    t0 = time.perf_counter()
    s = _resolve("dps", op, dict(num_steps=num_steps, weight=weight))
    device = device or y.device
    H = int(op.img_size[-1])
    net = _diffusion_denoiser(denoiser, model, H, device, class_labels, download)
    B = y.shape[0]
    sampler = dinv.sampling.DPS(net, num_steps=int(s["num_steps"]), weight=float(s["weight"]),
                                device=device, rng=torch.Generator(device=device).manual_seed(int(seed)))
    x = sampler(y.to(device), _physics(op, noise=True), x_init=(B, *op.img_size), seed=int(seed))
    x = x.float().clamp(0, 1)
    return Result(image=x, seconds=time.perf_counter() - t0, denoiser_evals=net.calls,
                  extras={"settings": {**s, "model": model or ("custom" if denoiser is not None else
                                                                default_diffusion_model(H))},
                          "final_residual": _residual(x, y.to(device), op)})


@range_free
def diffpir(y: torch.Tensor, op, max_iter: Optional[int] = None, lambda_: Optional[float] = None,
            zeta: Optional[float] = None, denoiser: Optional[torch.nn.Module] = None, model: Optional[str] = None,
            class_labels=None, seed: int = 0, download: bool = True, device=None, **_: Any) -> Result:
    """DiffPIR (deepinv ``DiffPIR``, L2 data fidelity solved by the physics' prox), started from
    ``op.init_estimate``. Standard ``max_iter`` = 100. ``denoiser``/``model`` as in :func:`dps`."""
    import deepinv as dinv

    t0 = time.perf_counter()
    s = _resolve("diffpir", op, dict(max_iter=max_iter, lambda_=lambda_, zeta=zeta))
    device = device or y.device
    H = int(op.img_size[-1])
    net = _diffusion_denoiser(denoiser, model, H, device, class_labels, download)
    sampler = dinv.sampling.DiffPIR(net, data_fidelity=dinv.optim.data_fidelity.L2(),
                                    sigma=max(float(op.noise_sigma), 1e-3), max_iter=int(s["max_iter"]),
                                    zeta=float(s["zeta"]), lambda_=float(s["lambda_"]), device=device)
    torch.manual_seed(int(seed))  # DiffPIR draws from the global generator
    x0 = op.init_estimate(y).clamp(0, 1).to(device)
    x = sampler(y.to(device), _physics(op, noise=True), x_init=x0)
    x = x.float().clamp(0, 1)
    return Result(image=x, seconds=time.perf_counter() - t0, denoiser_evals=net.calls,
                  extras={"settings": {**s, "model": model or ("custom" if denoiser is not None else
                                                                default_diffusion_model(H))},
                          "final_residual": _residual(x, y.to(device), op)})


BASELINES = {
    "init": initial_estimate,
    "tv": tv_reconstruction,
    "pnp-bm3d": pnp_bm3d,
    "dps": dps,
    "diffpir": diffpir,
}
