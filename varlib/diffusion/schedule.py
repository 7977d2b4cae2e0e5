"""The DDPM noise schedule (Ho et al., 2020): linear betas over 1000 steps, epsilon prediction.

Forward process on images scaled to [-1, 1]:
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``abar_t = prod_{s <= t} (1 - beta_s)`` and
``t = 0 .. T-1``. Dividing by ``sqrt(abar_t)`` gives the "variance exploding" view used by deepinv's
denoisers, ``x_t / sqrt(abar_t) = x_0 + sigma_t eps`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``;
:meth:`DDPMSchedule.t_of_sigma` maps a noise level back to a (fractional) timestep.

With betas 1e-4 .. 0.02 this is the discrete counterpart of deepinv's
``VariancePreservingDiffusion(beta_min=0.1, beta_max=20)``, the schedule deepinv's DPS assumes
(``abar`` ends at ``exp(-10.12)`` here and ``exp(-10.05)`` there), and exactly the table deepinv's
DiffPIR builds. Both algorithms only hand the denoiser a noise level, which the prior maps back to
its own timestep, so the small difference costs nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import torch

Tensor = torch.Tensor


@dataclass
class ScheduleConfig:
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ScheduleConfig":
        return cls(**d)


class DDPMSchedule:
    """Tables of the linear-beta schedule (float64) and the conversions between x_0, eps and x_t."""

    def __init__(self, cfg: Optional[ScheduleConfig] = None):
        self.cfg = cfg or ScheduleConfig()
        self.T = int(self.cfg.num_steps)
        self.betas = torch.linspace(self.cfg.beta_start, self.cfg.beta_end, self.T, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        # increasing noise level of x_t / sqrt(abar_t); its log is what t_of_sigma interpolates
        self.sigmas = torch.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)
        self._log_sigmas = self.sigmas.log()

    # -- tables ----------------------------------------------------------------------------------
    def sigma_of_t(self, t: Union[Tensor, float, int]) -> Tensor:
        """Noise level (on the [-1, 1] scale) of ``x_t / sqrt(abar_t)`` for integer or fractional
        ``t`` in [0, T-1]: the table entries, log-linear in between (the inverse of :meth:`t_of_sigma`)."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.T - 1)
        lo = t.floor().long().clamp(max=self.T - 2)
        w = t - lo
        return torch.exp(self._log_sigmas[lo] * (1 - w) + self._log_sigmas[lo + 1] * w)

    def alpha_bar(self, t: Union[Tensor, float, int]) -> Tensor:
        """``abar_t = 1 / (1 + sigma_t^2)`` for integer or fractional ``t`` in [-1, T-1]; between -1 (the
        clean image, ``abar = 1``) and 0 log-linear."""
        t = torch.as_tensor(t, dtype=torch.float64)
        inside = 1.0 / (1.0 + self.sigma_of_t(t) ** 2)
        before = torch.exp(self.alphas_cumprod[0].log() * (t + 1).clamp(0, 1))
        return torch.where(t >= 0, inside, before)

    def t_of_sigma(self, sigma: Union[Tensor, float]) -> Tensor:
        """The fractional timestep whose noise level is ``sigma`` ([-1, 1] scale), clamped to [0, T-1]
        (interpolating log sigma linearly between table entries)."""
        s = torch.as_tensor(sigma, dtype=torch.float64).clamp_min(1e-12).log()
        ls = self._log_sigmas
        idx = torch.searchsorted(ls, s.reshape(-1)).reshape(s.shape).clamp(1, self.T - 1)
        lo, hi = ls[idx - 1], ls[idx]
        t = (idx - 1).double() + (s - lo) / (hi - lo)
        return t.clamp(0, self.T - 1)

    # -- conversions --------------------------------------------------------------------------------
    @staticmethod
    def _bcast(v: Tensor, like: Tensor) -> Tensor:
        v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t`` from clean ``x0`` ([-1, 1]), timesteps ``t`` (B,) and standard normal ``noise``."""
        ab = self._bcast(self.alpha_bar(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        ab = self._bcast(self.alpha_bar(t), x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        ab = self._bcast(self.alpha_bar(t), x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def ddim_step(self, x_t: Tensor, eps: Tensor, t: Union[int, float], t_prev: Union[int, float],
                  eta: float = 0.0, noise: Optional[Tensor] = None, clip: bool = True) -> Tensor:
        """One DDIM update (Song et al., 2021, eq. 12) from ``t`` to ``t_prev < t`` (``t_prev = -1``:
        the clean image). ``eta = 0`` is deterministic; ``eta = 1`` is DDPM's ancestral step.
        With ``clip`` the implied x_0 is clamped to [-1, 1] and eps recomputed from it."""
        ab = float(self.alpha_bar(t))
        ab_prev = float(self.alpha_bar(t_prev))
        x0 = (x_t - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - ab ** 0.5 * x0) / (1 - ab) ** 0.5
        s = eta * ((1 - ab_prev) / (1 - ab)) ** 0.5 * (1 - ab / ab_prev) ** 0.5
        out = ab_prev ** 0.5 * x0 + max(1 - ab_prev - s ** 2, 0.0) ** 0.5 * eps
        if s > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs the noise tensor")
            out = out + s * noise
        return out

    def ddim_timesteps(self, steps: int) -> List[int]:
        """``steps`` distinct integer timesteps from T-1 down to 0, evenly spaced."""
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be in [1, {self.T}], got {steps}")
        ts = torch.linspace(self.T - 1, 0, steps, dtype=torch.float64).round().long().tolist()
        return ts
