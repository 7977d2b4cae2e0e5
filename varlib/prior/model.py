"""The prior object: tokenizer + transformer, with the image-space API used by the solver.

Public images are ``(B, 3, H, W)`` float in ``[0, 1]``; conversion to ``[-1, 1]`` happens here.
"""
from __future__ import annotations

import time
from typing import List, Optional, Sequence, Union

import torch

from .configs import PriorConfig
from .sampling import ScaleStepper, sample_tokens
from .tokenizer import MultiScaleVQVAE
from .transformer import NextScaleTransformer


def check_images(images: torch.Tensor, image_size: Optional[int] = None, what: str = "images") -> None:
    """Refuse anything but a float (B,3,H,W) tensor in [0,1] (of side ``image_size`` when given)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B, 3, H, W), got {tuple(images.shape)}; "
                         "add a batch dimension with images[None] or convert greyscale to RGB")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in [0, 1], got dtype {images.dtype}; divide uint8 images by 255")
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{what} must be {image_size}x{image_size} for this prior, got "
                         f"{images.shape[-2]}x{images.shape[-1]}; resize with varlib.data.load_images(..., image_size={image_size})")
    if images.device.type != "meta" and images.numel() > 0:
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{what} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                             "images in [-1, 1] convert with (x + 1) / 2")


class Prior:
    """A VAR prior: ``.tokenizer`` (:class:`MultiScaleVQVAE`) and ``.transformer`` (:class:`NextScaleTransformer`)."""

    def __init__(self, config: PriorConfig, device: Union[str, torch.device] = "cpu"):
        self.config = config
        self.name = config.name
        self.image_size = config.image_size
        with torch.device(device):
            self.tokenizer = MultiScaleVQVAE(config.tokenizer)
            self.transformer = NextScaleTransformer(config.transformer)
        self.tokenizer.eval()
        self.transformer.eval()
        self.metadata: dict = {}

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.transformer.pos_1LC.device

    @property
    def patch_nums(self) -> tuple:
        return tuple(self.config.tokenizer.patch_nums)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def num_classes(self) -> int:
        return self.config.transformer.num_classes

    def to(self, device) -> "Prior":
        self.tokenizer.to(device)
        self.transformer.to(device)
        return self

    def requires_grad_(self, flag: bool = False) -> "Prior":
        self.tokenizer.requires_grad_(flag)
        self.transformer.requires_grad_(flag)
        return self

    def __repr__(self) -> str:
        n_tok = sum(p.numel() for p in self.tokenizer.parameters())
        n_tr = sum(p.numel() for p in self.transformer.parameters())
        return (f"Prior({self.name!r}, {self.image_size}px, patch_nums={self.patch_nums}, "
                f"tokenizer {n_tok / 1e6:.2f} M params, transformer {n_tr / 1e6:.2f} M params)")

    # -- tokenizer in image space ------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Images (B,3,H,W) in [0,1] -> token maps, one (B, pn, pn) long tensor per scale."""
        check_images(images, self.image_size)
        return self.tokenizer.img_to_tokens(images.to(self.device) * 2 - 1)

    def fhat_to_image(self, f_hat: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Accumulated latent (B, Cvae, h, w) -> image (B,3,H,W) in [0,1] (differentiable)."""
        img = (self.tokenizer.fhat_to_img(f_hat, clamp=False) + 1) / 2
        return img.clamp(0, 1) if clamp else img

    def tokens_to_fhat(self, tokens: Sequence[torch.Tensor], num_scales: Optional[int] = None) -> torch.Tensor:
        return self.tokenizer.quantize.tokens_to_fhat(tokens, num_scales)

    @torch.no_grad()
    def decode(self, tokens: Sequence[torch.Tensor], num_scales: Optional[int] = None) -> torch.Tensor:
        """Token maps (all scales, or the first ``num_scales``) -> image (B,3,H,W) in [0,1]."""
        return self.fhat_to_image(self.tokens_to_fhat(tokens, num_scales))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, num_scales: Optional[int] = None) -> torch.Tensor:
        """Tokenise over all scales and decode the first ``num_scales`` (default all); [0,1] in and out."""
        return self.decode(self.encode(images), num_scales)

    def teacher_input(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of the transformer (B, L - first_l, Cvae) built from token maps."""
        return self.tokenizer.quantize.tokens_to_teacher_input(tokens)

    # -- transformer ---------------------------------------------------------------------------
    def _labels(self, class_labels, batch_size: Optional[int], generator: Optional[torch.Generator]) -> torch.Tensor:
        if class_labels is None:
            if batch_size is None:
                raise ValueError("give class_labels or batch_size")
            return torch.randint(0, self.num_classes, (batch_size,), generator=generator, device=self.device)
        if isinstance(class_labels, int):
            return torch.full((batch_size or 1,), class_labels, dtype=torch.long, device=self.device)
        return torch.as_tensor(class_labels, dtype=torch.long, device=self.device).reshape(-1)

    def stepper(self, class_labels, cfg: float = 1.5, batch_size: Optional[int] = None,
                use_kv_cache: bool = True, generator: Optional[torch.Generator] = None) -> ScaleStepper:
        """Step-wise sampler (see :class:`ScaleStepper`). ``class_labels``: int, sequence, tensor or None
        (random classes); -1 means class-agnostic (null class)."""
        return ScaleStepper(self, self._labels(class_labels, batch_size, generator), cfg, use_kv_cache)

    @torch.no_grad()
    def sample(self, class_labels=None, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
               temperature: float = 1.0, generator: Optional[torch.Generator] = None,
               batch_size: Optional[int] = None, use_kv_cache: bool = True, return_tokens: bool = False):
        """Class-conditional sampling as in the official ``autoregressive_infer_cfg``.

        Returns images (B,3,H,W) in [0,1] (and the token maps when ``return_tokens``).
        ``cfg`` is the guidance scale at the last scale (linear ramp from 0 at the first scale).
        """
        st = self.stepper(class_labels, cfg, batch_size, use_kv_cache, generator)
        try:
            while not st.done:
                st.commit(sample_tokens(st.logits(), top_k, top_p, temperature, generator))
        finally:
            st.close()
        img = self.fhat_to_image(st.f_hat)
        return (img, st.tokens) if return_tokens else img
