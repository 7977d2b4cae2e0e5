"""The training-free VAR solver: hard token injection + measurement-guided logit refinement.

Over the prior's scale schedule (coarse to fine):

1. **Hard token injection** at the first ``injection_depth`` scales: the operator's initial estimate
   is tokenised and its tokens are used instead of sampling. With ``partial_injection_depth`` and an
   inpainting operator, deeper scales are injected only at the token cells whose pixels are mostly
   observed (a per-scale mask), as the reference method does.
2. **Logit refinement** at later scales: the transformer's logits ``z`` for the scale are refined by
   ``guidance_steps`` steps of ``z <- z - s * g / rms(g)``, where ``g`` is the gradient of
   ``||y - A(D(f_hat + phi(up(softmax(z / tau) @ codebook))))||^2`` (soft code map added to the
   detached accumulated latent ``f_hat`` and decoded by ``D``). Normalising by the gradient's RMS
   makes one strength ``s`` meaningful across tasks. Then tokens are sampled or taken by argmax.
3. Optional **data consistency** after the last scale (beyond the reference): a few Adam steps on
   the continuous latent to fit the measurement while staying near the prior's output, then a
   pixel-space proximal step ``argmin ||y - A x||^2 + rho ||x - a||^2`` solved by conjugate
   gradients, anchored at ``a = w x_prior + (1 - w) x_init`` (``dc_pixel_prior_weight`` w; w < 1
   shrinks the prior's guess toward the operator's initial estimate, where the two err
   differently). This breaks the ceiling set by the tokenizer's reconstruction quality.
4. Optional **several samples** per measurement (batched): mean (MMSE estimate), per-pixel
   standard deviation (uncertainty) and best-of-N by measurement residual.

``reference`` reproduces the published settings of the reference method (a ``var_inv`` package):
per-scale ratio r = si / (S - 1); CFG 1.5 r; step 0 for r < 0.05 else 0.05 + 0.3 r; one step per
scale; logits divided by their std; Gumbel-softmax with temperature 1 - 0.75 r; residual low-passed
by a box filter of size 9 -> 1 and an average-pool/up-sample factor 4 -> 1 in r; gradient clipped
to [-2, 2]; top-k/top-p sampling.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch.profiler import record_function  # named stages for varlib.study.profile (free when not profiling)

from .linalg import cg_solve
from .operators import Operator, as_operator
from .prior.model import Prior, check_images
from .prior.sampling import filter_logits, sample_tokens
from .result import Result

# Settings shared by every named configuration; a named configuration overrides some of them.
BASE_SETTINGS: Dict[str, Any] = dict(
    injection_depth=2,            # scales fully injected from the initial estimate
    partial_injection_depth=0,    # scales injected only where observed (inpainting); 0 = off
    partial_injection_threshold=0.9,  # observed fraction a token cell needs to be injected
    guidance_steps=3,
    guidance_strength=1.0,        # step on (std-normalised) logits per unit-RMS gradient
    guidance_schedule="constant",  # "constant" or "reference" (0 for r < .05, else .05 + .3 r, times strength)
    tau=1.0,                      # softmax temperature of the soft code map
    tau_schedule="constant",      # "constant" or "reference" (1 -> 0.25 in r)
    gumbel=False,                 # Gumbel-softmax relaxation (reference) instead of plain softmax
    normalize_logits=True,        # divide logits by their std before the relaxation
    lowpass="none",               # "none" or "reference" (box 9->1 and pool 4->1 in r, at 256 px)
    grad_clip=None,               # clamp the logit gradient elementwise (reference: 2.0)
    cfg=0.0,                      # classifier-free guidance at the last scale (ramp from 0)
    decode="argmax",              # "argmax", "sample", or "soft" (commit the expected code under softmax(logits / temperature))
    top_k=0, top_p=0.0, temperature=1.0,
    dc_latent_steps=0,            # data consistency: Adam steps on the continuous latent
    dc_latent_lr=0.1,
    dc_latent_weight=0.001,       # weight of the latent change relative to the data term (see latent_data_consistency)
    dc_pixel=False,               # final proximal step on ||y - A x||^2 in pixels (CG)
    dc_pixel_rho=None,            # proximal weight; None = 100 sigma^2 (from the noise level)
    dc_pixel_iters=30,
    dc_pixel_prior_weight=1.0,    # anchor of the pixel step: this weight on the prior's image, the rest on the
                                  # operator's initial estimate (< 1 shrinks the prior's guess toward it)
    dc_pixel_hole="blend",        # inpainting: "blend" uses that anchor everywhere; "prior" keeps the prior's
                                  # image where nothing is observed, so the hole is not pulled to the smooth fill
    num_samples=1,
    select="mean",                # with num_samples > 1: "mean" (MMSE) or "best" (lowest residual)
    class_labels=None,            # (B,) class ids, or None / -1 for class-agnostic
    seed=0,
    track_residual=True,          # decode after each scale to record the measurement residual
)

NAMED_SETTINGS: Dict[str, Dict[str, Any]] = {
    # the published reference method (see module docstring)
    "reference": dict(injection_depth=2, guidance_steps=1, guidance_strength=1.0, guidance_schedule="reference",
                      tau_schedule="reference", gumbel=True, normalize_logits=True, lowpass="reference",
                      grad_clip=2.0, cfg=1.5, decode="sample", top_k=900, top_p=0.96),
    # injection only: no guidance, argmax decoding
    "injection_only": dict(guidance_steps=0, decode="argmax"),
    # our default: injection + normalised guidance + data consistency (per-task values in TASK_DEFAULTS)
    "default": dict(guidance_steps=3, guidance_strength=1.0, decode="argmax",
                    dc_latent_steps=60, dc_pixel=True),
    # guidance without the data-consistency step (the ladder's third rung)
    "guided": dict(guidance_steps=3, guidance_strength=1.0, decode="argmax"),
    # guidance and the latent data-consistency step, without the pixel step (the ladder's fourth rung)
    "latent_dc": dict(guidance_steps=3, guidance_strength=1.0, decode="argmax", dc_latent_steps=60, dc_pixel=False),
    # posterior sampling: the default's tuned values, 8 samples drawn at every generated scale; the
    # per-task temperature and top-p are tuned for calibrated spread (python -m varlib.tune --settings posterior)
    "posterior": dict(base="default", num_samples=8, decode="sample", temperature=1.0, top_p=0.9),
}

# Per-task values of the named settings, per prior, chosen by coordinate search on the prior's training
# images (python -m varlib.tune; results/tuning/var_tuning_<prior>.csv): key "<prior>" for "default",
# "<prior>/<name>" for the other named settings (e.g. the published reference's unstated injection depth).
TUNED_SETTINGS_FILE = Path(__file__).resolve().parent / "tuned_settings.json"


# settings added after studies were cached: at these values they change nothing, so the benchmark leaves
# them out of its cache keys and earlier rows stay valid
NEUTRAL_SETTINGS: Dict[str, Any] = {"dc_pixel_prior_weight": 1.0, "dc_pixel_hole": "blend"}


# priors that share another's tokenizer architecture (faces64: a continuation of tiny64's) use its tuned settings
# unless tuned themselves
TUNED_SETTINGS_FALLBACK = {"tiny64-gpu": "tiny64", "faces64": "tiny64"}


def tuned_key(prior_name: Optional[str], named: str = "default") -> str:
    """The entry of ``tuned_settings.json`` holding the tuned values of ``named`` settings for a prior."""
    return (prior_name or "") if named == "default" else f"{prior_name or ''}/{named}"


def task_defaults(prior_name: Optional[str], task: Optional[str], named: str = "default") -> Dict[str, Any]:
    """The tuned per-task values of the ``named`` settings for a prior ({} when none were tuned)."""
    if not TUNED_SETTINGS_FILE.exists() or task is None:
        return {}
    table = json.loads(TUNED_SETTINGS_FILE.read_text())
    name = prior_name or ""
    if task not in table.get(tuned_key(name, named), {}):  # not tuned: the prior it shares a tokenizer with
        name = TUNED_SETTINGS_FALLBACK.get(name, name)
    return dict(table.get(tuned_key(name, named), {}).get(task, {}))


def resolve_settings(settings: Union[str, Dict[str, Any], None] = "default", task: Optional[str] = None,
                     num_scales: Optional[int] = None, prior_name: Optional[str] = None, **overrides) -> Dict[str, Any]:
    """Full settings dict: base <- named <- the named settings' tuned per-task values <- dict <- overrides."""
    s = copy.deepcopy(BASE_SETTINGS)
    if settings is None:
        settings = "default"
    if isinstance(settings, str):
        if settings not in NAMED_SETTINGS:
            raise ValueError(f"unknown solver settings {settings!r}; named settings: {', '.join(NAMED_SETTINGS)}")
        named = dict(NAMED_SETTINGS[settings])
        if "base" in named:  # built on another named set, with that set's tuned per-task values
            s = resolve_settings(named.pop("base"), task, num_scales, prior_name)
        s.update(named)
        s.update(task_defaults(prior_name, task, settings))
        s["name"] = settings
    else:
        base = settings.get("base", "default")
        s = resolve_settings(base, task, num_scales, prior_name)
        s.update({k: v for k, v in settings.items() if k != "base"})
    unknown = set(overrides) - set(BASE_SETTINGS) - {"name"}
    if unknown:
        raise ValueError(f"unknown solver setting(s) {sorted(unknown)}; valid: {sorted(BASE_SETTINGS)}")
    s.update(overrides)
    bad = set(s) - set(BASE_SETTINGS) - {"name", "base"}
    if bad:
        raise ValueError(f"unknown solver setting(s) {sorted(bad)}; valid: {sorted(BASE_SETTINGS)}")
    if num_scales is not None:
        for key in ("injection_depth", "partial_injection_depth"):
            if not 0 <= int(s[key]) <= num_scales:
                raise ValueError(f"{key}={s[key]} is outside the prior's schedule: it has {num_scales} scales "
                                 f"(use 0..{num_scales})")
    if s["decode"] not in ("argmax", "sample", "soft"):
        raise ValueError(f"decode must be 'argmax', 'sample' or 'soft', got {s['decode']!r}")
    if s["select"] not in ("mean", "best"):
        raise ValueError(f"select must be 'mean' or 'best', got {s['select']!r}")
    if not 0.0 <= float(s["dc_pixel_prior_weight"]) <= 1.0:
        raise ValueError(f"dc_pixel_prior_weight must be in [0, 1] (1 = anchor on the prior's image only), "
                         f"got {s['dc_pixel_prior_weight']}")
    if int(s["num_samples"]) < 1:
        raise ValueError(f"num_samples must be >= 1, got {s['num_samples']}")
    if int(s["num_samples"]) > 1 and s["decode"] in ("argmax", "soft") and not s["gumbel"]:
        raise ValueError("num_samples > 1 with argmax decoding gives identical samples; "
                         "add decode='sample' (with temperature / top_p) to draw different ones")
    return s


# -- pieces ---------------------------------------------------------------------------------------------
def _box_lowpass(x: torch.Tensor, box: int, pool: int) -> torch.Tensor:
    """Box filter of odd size ``box`` then average-pool / bicubic up-sample by ``pool`` (reference)."""
    if box > 1:
        pad = box // 2
        x = F.avg_pool2d(F.pad(x, (pad,) * 4, mode="replicate"), box, stride=1)
    if pool > 1 and x.shape[-1] % pool == 0:
        H, W = x.shape[-2:]
        x = F.interpolate(F.avg_pool2d(x, pool), size=(H, W), mode="bicubic", align_corners=False)
    return x


def _reference_lowpass_params(r: float, image_size: int) -> tuple:
    box = int(round(9 - 8 * r))
    box = box if box % 2 == 1 else box + 1
    pool = int(round(4 - 3 * r))
    return box, pool


def _residual_loss(x: torch.Tensor, y: torch.Tensor, operator, lowpass: str, r: float) -> torch.Tensor:
    """Sum of squared measurement residuals per image (B,), optionally low-passed (reference)."""
    Ax = operator.A(x)
    if lowpass == "reference":
        box, pool = _reference_lowpass_params(r, x.shape[-1])
        Ax, y = _box_lowpass(Ax, box, pool), _box_lowpass(y, box, pool)
    return (Ax - y).pow(2).flatten(1).sum(1)


def _relaxed_codes(z: torch.Tensor, tau: float, s: Dict[str, Any], generator: Optional[torch.Generator]) -> torch.Tensor:
    """(B, l, V) logits -> (B, l, V) soft one-hot weights."""
    if s["normalize_logits"]:
        z = z / z.std(dim=-1, keepdim=True).clamp_min(1e-6)
    if s["gumbel"]:
        u = torch.rand(z.shape, generator=generator, device=z.device).clamp(1e-10, 1 - 1e-10)
        z = z - torch.log(-torch.log(u))
    return torch.softmax(z / tau, dim=-1)


def _schedules(s: Dict[str, Any], r: float) -> tuple:
    if s["guidance_schedule"] == "reference":
        step = 0.0 if r < 0.05 else (0.05 + 0.3 * (r - 0.0) if r <= 1 else 0.35)
        step = min(step, 0.35) * s["guidance_strength"]
    else:
        step = s["guidance_strength"]
    tau = 1.0 - 0.75 * r if s["tau_schedule"] == "reference" else s["tau"]
    return step, tau


def refine_logits(prior: Prior, logits: torch.Tensor, f_hat: torch.Tensor, si: int, y: torch.Tensor, operator,
                  s: Dict[str, Any], generator: Optional[torch.Generator], ratio: float) -> tuple:
    """Measurement-guided refinement of one scale's logits; returns (logits, decoder evaluations)."""
    step, tau = _schedules(s, ratio)
    if s["guidance_steps"] <= 0 or step == 0:
        return logits, 0
    quant = prior.tokenizer.quantize
    codebook = quant.embedding.weight.detach()
    B, l, V = logits.shape
    pn = int(math.isqrt(l))
    HW = f_hat.shape[-1]
    z = logits.detach().clone()
    evals = 0
    base = f_hat.detach()
    for _ in range(int(s["guidance_steps"])):
        z.requires_grad_(True)
        with torch.enable_grad():
            w = _relaxed_codes(z, tau, s, generator)
            codes = (w @ codebook).transpose(1, 2).reshape(B, -1, pn, pn)
            x = prior.fhat_to_image(base + quant.upsample_codes(si, codes, HW), clamp=False)
            loss = _residual_loss(x, y, operator, s["lowpass"], ratio).sum()
            (g,) = torch.autograd.grad(loss, z)
        evals += 1
        g = g.detach()
        if s["grad_clip"] is not None:
            g = g.clamp(-s["grad_clip"], s["grad_clip"])
        else:
            g = g / g.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        scale = z.detach().std(dim=-1, keepdim=True) if s["normalize_logits"] else 1.0
        z = (z.detach() - step * g * scale)
    return z.detach(), evals


def soft_codes(prior: Prior, logits: torch.Tensor, temperature: float, tokens: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Expected code embedding under ``softmax(logits / temperature)``: (B, l, V) -> (B, Cvae, pn, pn).

    The posterior-mean code of each cell rather than one draw: where the transformer is unsure, its
    candidates' embeddings average towards a small residual instead of committing a confident wrong
    one. Cells selected by a partial-injection ``mask`` (B, pn, pn) keep the code of their (injected)
    ``tokens`` (B, pn, pn).
    """
    codebook = prior.tokenizer.quantize.embedding.weight
    B, l, V = logits.shape
    pn = int(math.isqrt(l))
    codes = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1) @ codebook
    if mask is not None:
        codes = torch.where(mask.reshape(B, l, 1), codebook[tokens.reshape(B, l)], codes)
    return codes.transpose(1, 2).reshape(B, -1, pn, pn)


def injection_masks(prior: Prior, operator, s: Dict[str, Any], batch: int, device) -> List[Optional[torch.Tensor]]:
    """Per scale: None (no injection), or a (B, pn, pn) bool mask of the token cells to inject."""
    masks: List[Optional[torch.Tensor]] = []
    observed = getattr(operator, "observed_mask", None)
    for si, pn in enumerate(prior.patch_nums):
        if si < s["injection_depth"]:
            masks.append(torch.ones(batch, pn, pn, dtype=torch.bool, device=device))
        elif si < s["partial_injection_depth"] and observed is not None:
            frac = F.adaptive_avg_pool2d(observed.float().to(device), (pn, pn))[:, 0]
            masks.append((frac >= s["partial_injection_threshold"]).expand(batch, pn, pn))
        else:
            masks.append(None)
    return masks


def pixel_proximal(x0: torch.Tensor, y: torch.Tensor, operator, rho: float, iters: int = 30) -> torch.Tensor:
    """argmin_x ||y - A x||^2 + rho ||x - x0||^2, by CG on (A^T A + rho I) x = A^T y + rho x0.

    ``x0`` (B, 3, H, W), ``y`` the measurement; returns (B, 3, H, W) clamped to [0, 1]. The CG
    iterates leave [0, 1], so the operator's range check is off meanwhile."""
    op = as_operator(operator, y=y)
    with op.unchecked_range():
        b = op.A_adjoint(y) + rho * x0
        return cg_solve(lambda v: op.A_adjoint(op.A(v)) + rho * v, b, x0, iters).clamp(0, 1)


def pixel_anchor(x_prior: torch.Tensor, x_init: torch.Tensor, operator, s: Dict[str, Any]) -> torch.Tensor:
    """The anchor of the pixel step: ``w x_prior + (1 - w) x_init`` (``dc_pixel_prior_weight`` w); with
    ``dc_pixel_hole="prior"`` and an inpainting operator, ``x_prior`` alone where no pixel is observed
    (there the pixel step is then the identity: the hole keeps what the prior painted). (B, 3, H, W)."""
    if s["dc_pixel_hole"] not in ("blend", "prior"):
        raise ValueError(f"dc_pixel_hole={s['dc_pixel_hole']!r}: use 'blend' or 'prior'")
    w = float(s["dc_pixel_prior_weight"])
    if w == 1.0:
        return x_prior
    anchor = w * x_prior + (1.0 - w) * x_init
    observed = getattr(operator, "observed_mask", None)
    if s["dc_pixel_hole"] == "prior" and observed is not None:
        anchor = torch.where(observed.to(x_prior.device).bool().expand_as(x_prior), anchor, x_prior)
    return anchor


def latent_data_consistency(prior: Prior, f_hat: torch.Tensor, y: torch.Tensor, operator, steps: int, lr: float,
                            weight: float) -> tuple:
    """Adam on the continuous latent ``f = f_hat + std(f_hat) * delta`` minimising, per image,

    ``mean((A(D(f)) - y)^2) / sigma^2 + weight * mean(delta^2) / 0.01``

    i.e. a latent change of 10 % of the latent's spread costs ``weight`` times a residual at the noise
    level. Parameterising by ``delta`` makes ``lr`` independent of the latent's scale.
    """
    f0 = f_hat.detach()
    spread = f0.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    sigma2 = max(float(getattr(operator, "noise_sigma", 0.025)), 1e-3) ** 2
    delta = torch.zeros_like(f0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            x = prior.fhat_to_image(f0 + spread * delta, clamp=False)
            data = (operator.A(x) - y).pow(2).flatten(1).mean(1) / sigma2
            loss = data + weight * delta.pow(2).flatten(1).mean(1) / 0.01
            opt.zero_grad()
            loss.sum().backward()
        opt.step()
    return (f0 + spread * delta).detach(), steps


def _residual(x: torch.Tensor, y: torch.Tensor, operator) -> torch.Tensor:
    return (operator.A(x) - y).pow(2).flatten(1).mean(1)


# -- the solver ------------------------------------------------------------------------------------------
def solve(y: torch.Tensor, operator, prior: Prior, settings: Union[str, Dict[str, Any], None] = "default",
          return_samples: bool = False, **overrides) -> Result:
    """Reconstruct images from measurements ``y = operator.measure(x)`` with the VAR prior.

    y: measurement tensor as produced by ``operator`` (batch B), finite (NaN / inf raise a
    ``ValueError``); operator: from :func:`varlib.operators.make_operator` at the prior's image size,
    or a deepinv ``LinearPhysics`` on ``(3, S, S)`` images (``Inpainting``, ``BlurFFT``,
    ``Downsampling``, ...: wrapped by :func:`varlib.operators.as_operator`, noise level from its
    ``noise_model.sigma``); settings: a name from ``NAMED_SETTINGS`` or a dict (key ``base`` picks
    the named settings it starts from), with keyword overrides. Returns a :class:`Result` whose
    ``image`` is (B,3,S,S) in [0,1].
    """
    op = as_operator(operator, y=y)
    with op.unchecked_range():  # unclamped decodes and CG iterates leave [0, 1]
        return _solve(y, op, prior, settings, return_samples, **overrides)


def _class_labels(labels, batch: int) -> torch.Tensor:
    """The ``class_labels`` setting as a (batch,) long tensor; -1 (class-agnostic) where None."""
    if labels is None:
        labels = torch.full((batch,), -1, dtype=torch.long)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() == 1 and batch > 1:
        labels = labels.expand(batch)
    if labels.numel() != batch:
        raise ValueError(f"class_labels has {labels.numel()} entries for a batch of {batch} measurements")
    return labels


def _scale_tokens(prior: Prior, st, logits: torch.Tensor, mask: Optional[torch.Tensor], injected: torch.Tensor,
                  yS: torch.Tensor, operator, s: Dict[str, Any], generator) -> tuple:
    """One scale's tokens (B*S, pn, pn), their soft codes (or None) and the decoder evaluations spent:
    guided, then sampled / argmax; cells of a partial-injection ``mask`` keep the ``injected`` tokens."""
    with record_function("var.guidance"):
        logits, evals = refine_logits(prior, logits, st.f_hat, st.si, yS, operator, s, generator, st.ratio)
    if s["decode"] == "sample":
        tokens = sample_tokens(logits, s["top_k"], s["top_p"], s["temperature"], generator)
    else:  # argmax; with "soft" the argmax tokens are only the scale's record
        tokens = logits.argmax(-1)
    tokens = tokens.view(-1, st.patch_num, st.patch_num)
    if mask is not None:
        tokens = torch.where(mask, injected, tokens)
    codes = soft_codes(prior, logits, float(s["temperature"]), tokens, mask) if s["decode"] == "soft" else None
    return tokens, codes, evals


def _generate(prior: Prior, st, yS: torch.Tensor, operator, s: Dict[str, Any], masks, init_tokens, generator,
              samples: int) -> tuple:
    """Run the stepper over every scale: fully injected scales take the initial estimate's tokens, the
    others :func:`_scale_tokens`. Returns (measurement residual after each scale, decoder evaluations)."""
    residuals: List[float] = []
    evals = 0
    try:
        while not st.done:
            with record_function("var.transformer"):
                si, logits, mask = st.si, st.logits(), masks[st.si]
            injected = init_tokens[si].repeat(samples, 1, 1) if mask is not None else None
            if mask is not None and bool(mask.all()):
                tokens, codes = injected, None
            else:
                tokens, codes, ev = _scale_tokens(prior, st, logits, mask, injected, yS, operator, s, generator)
                evals += ev
            st.commit(tokens, codes)
            if s["track_residual"]:
                with record_function("var.track_residual"):
                    residuals.append(float(_residual(prior.fhat_to_image(st.f_hat), yS, operator).mean()))
                evals += 1
    finally:
        st.close()
    return residuals, evals


def _data_consistency(prior: Prior, f_hat: torch.Tensor, x_init: torch.Tensor, yS: torch.Tensor, operator,
                      s: Dict[str, Any]) -> tuple:
    """The image after the optional latent and pixel data-consistency steps: ((B*S, 3, H, W), decoder evals)."""
    evals = 0
    if s["dc_latent_steps"] > 0:
        with record_function("var.latent_dc"):
            f_hat, evals = latent_data_consistency(prior, f_hat, yS, operator, int(s["dc_latent_steps"]),
                                                   float(s["dc_latent_lr"]), float(s["dc_latent_weight"]))
    with record_function("var.decode"):
        x = prior.fhat_to_image(f_hat)
    evals += 1
    if s["dc_pixel"]:
        rho = s["dc_pixel_rho"]
        if rho is None:
            # trust the prior's output about as much as a measurement with the operator's noise
            rho = max(float(getattr(operator, "noise_sigma", 0.025)), 1e-3) ** 2 * 100
        samples = x.shape[0] // x_init.shape[0]
        with record_function("var.pixel_dc"):
            x = pixel_proximal(pixel_anchor(x, x_init.repeat(samples, 1, 1, 1), operator, s), yS, operator,
                               float(rho), int(s["dc_pixel_iters"]))
    return x, evals


def _combine_samples(x: torch.Tensor, yS: torch.Tensor, operator, s: Dict[str, Any], batch: int) -> tuple:
    """(image (B, 3, H, W), samples (S, B, 3, H, W), per-pixel std or None) of the B*S decoded images: the
    one sample, the mean (MMSE) or the sample of lowest residual (``select``)."""
    S = x.shape[0] // batch
    samples = x.view(S, batch, *x.shape[1:])
    std = samples.std(0) if S > 1 else None
    if S == 1:
        image = samples[0]
    elif s["select"] == "best":
        best = _residual(x, yS, operator).view(S, batch).argmin(0)
        image = samples[best, torch.arange(batch)]
    else:
        image = samples.mean(0)
    return image, samples, std


@torch.no_grad()
def _solve(y: torch.Tensor, operator: Operator, prior: Prior, settings: Union[str, Dict[str, Any], None] = "default",
           return_samples: bool = False, **overrides) -> Result:
    """:func:`solve` on an adapted operator whose range check is already relaxed."""
    t0 = time.perf_counter()
    s = resolve_settings(settings, operator.task or None, prior.num_scales, prior.name, **overrides)
    size = prior.image_size
    if tuple(operator.img_size) != (3, size, size):
        raise ValueError(f"operator is for images of shape {tuple(operator.img_size)} but the prior {prior.name!r} "
                         f"works at {size} px, (3, {size}, {size}); make the operator with image_size={size}")
    operator.check_measurement(y)
    dev = prior.device
    y = y.to(dev)
    B, S = y.shape[0], int(s["num_samples"])
    generator = torch.Generator(device=dev).manual_seed(int(s["seed"]))
    x_init = operator.init_estimate(y).clamp(0, 1)
    check_images(x_init, prior.image_size, "the operator's initial estimate")
    need_tokens = s["injection_depth"] > 0 or s["partial_injection_depth"] > 0
    with record_function("var.encode"):
        init_tokens = prior.encode(x_init) if need_tokens else None
    decoder_evals = 1 if need_tokens else 0  # encoder pass counted with the decoder
    yS = y.repeat(S, *([1] * (y.ndim - 1)))  # several samples are drawn as one batch of B * S
    labels = _class_labels(s["class_labels"], B)
    st = prior.stepper(labels.repeat(S), cfg=float(s["cfg"]))
    residuals, evals = _generate(prior, st, yS, operator, s, injection_masks(prior, operator, s, B * S, dev),
                                 init_tokens, generator, S)
    x, dc_evals = _data_consistency(prior, st.f_hat, x_init, yS, operator, s)
    image, samples, std = _combine_samples(x, yS, operator, s, B)
    tokens = [t.view(S, B, *t.shape[1:])[0] for t in st.tokens]
    return Result(image=image.clamp(0, 1), seconds=time.perf_counter() - t0, tokens=tokens,
                  residual_per_scale=residuals, transformer_evals=st.transformer_evals,
                  decoder_evals=decoder_evals + evals + dc_evals, std=std, samples=samples if return_samples else None,
                  extras={"settings": {k: v for k, v in s.items() if k != "class_labels"},
                          "final_residual": _residual(image, y, operator).tolist()})
