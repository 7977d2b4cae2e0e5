"""Linear algebra on images shared by the solver and the baselines: conjugate gradients and the
operator norm. Both work on batches of images ``(B, C, H, W)`` and treat each image separately."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["cg_solve", "operator_sqnorm"]


def cg_solve(apply_M: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x0: torch.Tensor, iters: int,
             tol: float = 1e-7) -> torch.Tensor:
    """Solve ``M x = b`` by conjugate gradients for a symmetric positive semi-definite ``apply_M``.

    ``b`` and ``x0`` are ``(B, ...)``; every image of the batch has its own step sizes. Stops after
    ``iters`` iterations or when every residual is below ``tol`` times its right-hand side."""
    x = x0.clone()
    r = b - apply_M(x)
    p = r.clone()
    dims = tuple(range(1, b.ndim))
    rs = (r * r).sum(dims, keepdim=True)
    b_norm = (b * b).sum(dims, keepdim=True).clamp_min(1e-30)
    for _ in range(iters):
        if bool((rs <= tol ** 2 * b_norm).all()):
            break
        Mp = apply_M(p)
        alpha = rs / (p * Mp).sum(dims, keepdim=True).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * Mp
        rs_new = (r * r).sum(dims, keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return x


def operator_sqnorm(A: Callable[[torch.Tensor], torch.Tensor], A_adjoint: Callable[[torch.Tensor], torch.Tensor],
                    shape: Sequence[int], iters: int = 30, seed: int = 0) -> float:
    """``||A||^2`` (the largest eigenvalue of ``A^T A``) by the power method on one image of ``shape`` (C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=g)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        w = A_adjoint(A(v))
        lam = float((v * w).sum())
        n = w.norm()
        if float(n) == 0.0:
            return 0.0
        v = w / n
    return lam
