"""The common result of every reconstruction method (VAR solver and baselines)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch


@dataclass
class Result:
    """Output of a reconstruction.

    image: (B,3,H,W) float in [0,1], the estimate (the mean over samples when several were drawn).
    tokens: chosen token maps per scale (VAR methods; one (B,pn,pn) tensor per scale) or None.
    residual_per_scale: ||y - A(x)||^2 / numel after each scale (VAR methods) or per iteration.
    transformer_evals / decoder_evals / denoiser_evals: network evaluations per image.
    seconds: wall time of the whole call.
    std: (B,3,H,W) per-pixel standard deviation over samples (uncertainty), when num_samples > 1.
    samples: (S,B,3,H,W) the individual samples, when requested.
    extras: anything method-specific (settings used, best-of-N index, ...).
    """

    image: torch.Tensor
    seconds: float = 0.0
    tokens: Optional[List[torch.Tensor]] = None
    residual_per_scale: List[float] = field(default_factory=list)
    transformer_evals: int = 0
    decoder_evals: int = 0
    denoiser_evals: int = 0
    std: Optional[torch.Tensor] = None
    samples: Optional[torch.Tensor] = None
    extras: Dict[str, Any] = field(default_factory=dict)

    @property
    def network_evals(self) -> int:
        return self.transformer_evals + self.decoder_evals + self.denoiser_evals
