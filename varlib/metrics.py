"""Image-quality metrics, one value per image, for (B, 3, H, W) float tensors in [0, 1].

Conventions
-----------
* Both images are clipped to [0, 1] and converted to float64 ``(H, W, 3)`` arrays first; the
  reference is the second argument (metrics here are symmetric anyway).
* PSNR: ``skimage.metrics.peak_signal_noise_ratio`` with ``data_range=1``, the mean squared error
  taken over all pixels and the three channels together.
* SSIM: ``skimage.metrics.structural_similarity`` with ``data_range=1`` and ``channel_axis=-1``
  (SSIM per channel, then averaged). Default (``gaussian=False``): scikit-image's defaults, a 7x7
  uniform window with sample covariance -- the convention of most inverse-problem code bases that
  call scikit-image. ``gaussian=True`` gives Wang et al. (2004)'s setting: Gaussian window of std
  1.5 (11x11), population covariance. Say which one you report: on our initial estimates the two
  differ by up to about 0.06 (uniform usually higher).
* LPIPS: the ``lpips`` package, AlexNet trunk, version 0.1 linear heads, inputs mapped to [-1, 1]
  (``normalize=True``). The linear heads ship inside the ``lpips`` package; the AlexNet trunk is
  torchvision's ImageNet checkpoint ``alexnet-owt-7be5be79.pth`` and must already be in the torch
  hub cache (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``). We never
  download it: without it :func:`lpips` returns ``None`` and :func:`lpips_available` says why.
  LPIPS at 64 px is computed on the 64 px images themselves (AlexNet's deepest maps are then 1x1 to
  3x3), so it is far less meaningful there than at 256 px.
* HaarPSI: ``piq.haarpsi`` (Reisenhofer et al. 2018) with ``data_range=1`` and piq's defaults (3 Haar
  wavelet scales, 2x subsampling first, colour channels in YIQ). It is the perceptual metric of every
  table because it needs no learned weights, so it runs offline everywhere. It is a similarity in
  (0, 1], higher is better, and works from 32 px up. MS-SSIM, the other weight-free candidate,
  needs at least 161 px at its 5 scales, too large for 64 px images.
* Coverage of an uncertainty map (:func:`coverage`): the share of pixel values whose error is at most
  ``k`` (2) times the map's standard deviation, about 0.954 for a calibrated Gaussian posterior.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"
#: the smallest side HaarPSI is defined for (its 2x subsampling, then three Haar scales)
HAARPSI_MIN_SIZE = 32

_LPIPS_MODEL = None


def _to_numpy(x: torch.Tensor, what: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor (B, 3, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be float in [0, 1], got dtype {x.dtype}; divide uint8 images by 255")
    return x.detach().to("cpu", torch.float64).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _pair(x, ref):
    a, b = _to_numpy(x, "x"), _to_numpy(ref, "ref")
    if a.shape != b.shape:
        raise ValueError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    return a, b


def psnr(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB (data_range = 1); ``inf`` for identical images."""
    a, b = _pair(x, ref)
    out = []
    for i in range(a.shape[0]):
        if np.array_equal(a[i], b[i]):
            out.append(math.inf)
        else:
            out.append(peak_signal_noise_ratio(b[i], a[i], data_range=1.0))
    return np.asarray(out, dtype=np.float64)


def ssim(x: torch.Tensor, ref: torch.Tensor, gaussian: bool = False) -> np.ndarray:
    """Per-image SSIM (data_range = 1, channel-averaged). See the module docstring for ``gaussian``."""
    a, b = _pair(x, ref)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False) if gaussian else {}
    return np.asarray([structural_similarity(b[i], a[i], data_range=1.0, channel_axis=-1, **kw)
                       for i in range(a.shape[0])], dtype=np.float64)


def haarpsi(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Per-image HaarPSI in (0, 1] (1 for identical images), via ``piq.haarpsi`` on float64 copies."""
    import piq

    a, b = _pair(x, ref)
    if min(a.shape[1:3]) < HAARPSI_MIN_SIZE:
        raise ValueError(f"HaarPSI needs images of at least 32x32 pixels, got {a.shape[1]}x{a.shape[2]}")
    xa, xb = (torch.from_numpy(v).permute(0, 3, 1, 2) for v in (a, b))
    with torch.no_grad():
        return piq.haarpsi(xa, xb, data_range=1.0, reduction="none").double().numpy()


def _alexnet_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT


def lpips_available() -> Tuple[bool, str]:
    """(True, "") when LPIPS can run offline, else (False, the reason). Never downloads."""
    try:
        import lpips as _lp  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return False, f"the lpips package cannot be imported ({type(e).__name__}: {e}); pip install lpips"
    heads = Path(_lp.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if not heads.exists():
        return False, f"LPIPS linear heads missing at {heads}; reinstall the lpips package"
    ckpt = _alexnet_checkpoint()
    if not ckpt.exists():
        return False, (f"AlexNet ImageNet weights not cached at {ckpt}; on a machine with network run "
                       "`python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\"` "
                       "(or copy the file there / set TORCH_HOME)")
    return True, ""


def _lpips_model():
    """The LPIPS(alex) model, with the trunk loaded from the local checkpoint only."""
    global _LPIPS_MODEL
    ckpt = _alexnet_checkpoint()
    if _LPIPS_MODEL is not None and _LPIPS_MODEL[0] == str(ckpt):
        return _LPIPS_MODEL[1]
    import warnings
    import lpips as _lp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pnet_rand=True builds an untrained AlexNet (no download); the trunk is filled below.
        model = _lp.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    trunk = model.net
    loaded = 0
    for slice_name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
        for idx, layer in getattr(trunk, slice_name).named_children():
            for pname, p in layer.named_parameters(recurse=False):
                key = f"{idx}.{pname}"
                if key not in feats:
                    raise RuntimeError(f"{ckpt} has no features.{key}; is it torchvision's AlexNet checkpoint?")
                p.data.copy_(feats[key])
                loaded += 1
    if loaded != 10:
        raise RuntimeError(f"loaded {loaded} AlexNet tensors from {ckpt}, expected 10")
    model.eval().requires_grad_(False)
    _LPIPS_MODEL = (str(ckpt), model)
    return model


def lpips(x: torch.Tensor, ref: torch.Tensor, device: Optional[str] = None) -> Optional[np.ndarray]:
    """Per-image LPIPS (AlexNet, v0.1), or ``None`` when the weights are not available locally."""
    a, b = _pair(x, ref)  # validates shapes
    ok, _ = lpips_available()
    if not ok:
        return None
    model = _lpips_model()
    dev = torch.device(device) if device is not None else (x.device if isinstance(x, torch.Tensor) else torch.device("cpu"))
    model = model.to(dev)
    xa = torch.from_numpy(a).permute(0, 3, 1, 2).float().to(dev)
    xb = torch.from_numpy(b).permute(0, 3, 1, 2).float().to(dev)
    with torch.no_grad():
        d = model(xa, xb, normalize=True)
    return d.reshape(-1).double().cpu().numpy()


def evaluate(x: torch.Tensor, ref: torch.Tensor, with_lpips: bool = True, gaussian_ssim: bool = False
             ) -> Dict[str, np.ndarray]:
    """``{"psnr", "ssim", "haarpsi", "lpips"}`` per-image arrays; ``lpips`` is all-NaN when unavailable."""
    out = {"psnr": psnr(x, ref), "ssim": ssim(x, ref, gaussian=gaussian_ssim), "haarpsi": haarpsi(x, ref)}
    if with_lpips:
        v = lpips(x, ref)
        out["lpips"] = v if v is not None else np.full(x.shape[0], np.nan)
    return out


#: the coverage a calibrated Gaussian posterior gives at ``COVERAGE_K`` standard deviations (erf(2 / sqrt 2))
COVERAGE_K = 2.0
CALIBRATED_COVERAGE = math.erf(COVERAGE_K / math.sqrt(2.0))


def coverage(estimate, std, ref, k: float = COVERAGE_K) -> float:
    """The share of values with ``|estimate - ref| <= k * std`` (tensors or arrays of one shape, images in
    [0, 1]; ``std`` >= 0, e.g. the per-pixel standard deviation of posterior samples)."""
    e, s, r = (np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
               for a in (estimate, std, ref))
    if not (e.shape == s.shape == r.shape):
        raise ValueError(f"estimate, std and ref must have one shape, got {e.shape}, {s.shape}, {r.shape}")
    return float((np.abs(e - r) <= k * s).mean())
