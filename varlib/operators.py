"""Measurement operators (forward models) for the inverse-problem benchmark.

``make_operator(task, image_size, seed)`` builds one of :data:`TASKS`. Every operator maps images
``(B, 3, H, W)`` float in ``[0, 1]`` (``H = W = image_size``) to measurements and offers

* ``A(x)``: the noiseless, linear forward model (differentiable in ``x``),
* ``A_adjoint(y)``: its exact adjoint (checked numerically in ``tests/test_operators.py``),
* ``measure(x)``: ``A(x)`` plus white Gaussian noise of std ``noise_sigma`` on the ``[0, 1]`` scale,
  drawn from a CPU ``torch.Generator`` seeded from ``(seed, task, image_size, image index)`` so that
  the same seed gives the same noise on every machine,
* ``init_estimate(y)``: a cheap first guess in ``[0, 1]`` (hole filling, Wiener deconvolution, or
  bicubic up-sampling),
* ``describe()``: the parameters as a plain dict.

Kernels, masks and noise depend only on ``(task, image_size, seed)``: they are drawn with NumPy's
``SeedSequence``/PCG64 (platform independent) and a CPU ``torch.Generator``.

What comes from deepinv and why
-------------------------------
* ``deepinv.physics.functional.conv2d_fft`` / ``conv_transpose2d_fft`` with ``padding="reflect"``
  implement every convolution (Gaussian, motion, the four kernels of the non-uniform blur). They
  pair a reflect-padded linear convolution with its exact adjoint (the transpose folds the padded
  border back onto the image), and the FFT version is about 200x faster on a CPU than direct
  convolution for the 61x61 kernels used at 256 px.
* ``deepinv.physics.functional.bicubic_filter(4)`` gives the 16x16 anti-aliasing bicubic kernel
  (Keys, a = -0.5, support stretched by the factor), the same filter PIL and MATLAB's ``imresize``
  use to reduce an image 4x. The down-sampling itself (reflect pad, strided convolution) and its
  adjoint are plain torch code here, so that low-resolution pixel ``i`` sits at the centre of
  high-resolution pixels ``4i .. 4i+3`` exactly as in PIL, and as ``F.interpolate(...,
  align_corners=False)`` assumes when it up-samples the measurement back. (deepinv's
  ``Downsampling(filter="bicubic")`` centres it at ``4i + 0.5``, one pixel off, and keeps a float32
  filter.)
* Masks, the motion-kernel generator, the partition-of-unity weights, the Wiener filter and the
  hole filling are plain numpy/torch code written for this project.

Noise scale
-----------
:data:`DEFAULT_NOISE_SIGMA` is ``0.025`` on the ``[0, 1]`` scale. DPS (Chung et al., 2023) and
DAPS (Zhang et al., 2025) add Gaussian noise of std 0.05 to images scaled to ``[-1, 1]``; that
range is twice as wide, so the same noise is 0.025 on ``[0, 1]``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

import deepinv.physics.functional as dF
from scipy.ndimage import gaussian_filter, grey_dilation

from .prior.model import check_images

TASKS: Tuple[str, ...] = ("inpaint_box", "inpaint_random", "gaussian_blur", "motion_blur",
                          "nonuniform_blur", "sr4")

DEFAULT_NOISE_SIGMA: float = 0.025
"""Default measurement-noise std on the [0, 1] image scale: DPS/DAPS's sigma = 0.05 on [-1, 1]."""

#: Reference parameters at 256 px (DPS/DAPS settings); other sizes scale them by image_size / 256.
REFERENCE_SIZE = 256
GAUSSIAN_KERNEL_SIZE = 61
GAUSSIAN_STD = 3.0
MOTION_KERNEL_SIZE = 61
MOTION_INTENSITY = 0.5
RANDOM_MISSING_FRACTION = 0.7
SR_FACTOR = 4
NONUNIFORM_GRID = (2, 2)
#: Wiener initialisation: flat and gradient weights (a, b) = WIENER_REG * max(noise_sigma, WIENER_MIN_SIGMA)**2,
#: i.e. (0.01, 0.03) at sigma 0.025, picked from a, b in {0.003, 0.01, 0.03} x {0, 0.03, 0.1} (best mean
#: PSNR over the three blurs, seeds 0-2) on 10 Tiny ImageNet *training* images (64 px) and the embedded
#: photos (256 px). It only seeds the solvers.
WIENER_REG = (16.0, 48.0)
WIENER_MIN_SIGMA = 0.01

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------
# seeding
# ----------------------------------------------------------------------------------------------
def _rng(task: str, image_size: int, seed: int, *extra: int) -> np.random.Generator:
    """A NumPy generator that depends only on (task, image_size, seed, extra)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), TASKS.index(task), int(image_size), *[int(e) for e in extra]])))


def _torch_seed(task: str, image_size: int, seed: int, *extra: int) -> int:
    ss = np.random.SeedSequence([int(seed), TASKS.index(task), int(image_size), 7919, *[int(e) for e in extra]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] & ((1 << 63) - 1))


def scaled_kernel_size(size_at_256: int, image_size: int) -> int:
    """``round(size * image_size / 256)``, made odd (and at least 3)."""
    k = int(round(size_at_256 * image_size / REFERENCE_SIZE))
    if k % 2 == 0:
        k += 1
    return max(k, 3)


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
def gaussian_kernel(size: int, std: float) -> np.ndarray:
    """Isotropic Gaussian on a ``size x size`` grid centred on the middle pixel, summing to 1."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (r / std) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def motion_kernel(size: int, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """A random camera-shake kernel (``size x size``, sums to 1).

    Our numpy re-implementation of the random-trajectory generator popularised by the
    ``motionblur`` package (``Kernel(size, intensity)``), which DPS/DAPS use with size 61 and
    intensity 0.5 at 256 px. The trajectory is built on a 2x super-sampled canvas:

    1. total length ``L = 0.75 * diag * (U(0,1) + U(0, intensity^2))``;
    2. step lengths ``beta(1, 30) * (1 - intensity + 0.1) * diag`` until their sum exceeds ``L``;
    3. step directions: a maximal angle ``m ~ U(0, intensity * pi)``, first angle ``U(-m, m)``,
       then magnitudes ``triangular(0, intensity * m, m + 0.1)`` whose sign flips with a
       probability ``beta(2, 20)`` drawn once per kernel;
    4. the polyline of these steps is centred on its mean point, rotated by ``U(0, pi)`` and drawn
       as an anti-aliased stroke of constant intensity (overlaps saturate, they do not add);
    5. the stroke is smoothed by a Gaussian of std ``0.01 * diag``, reduced 2x by area averaging and
       normalised to sum 1.

    Here ``diag`` is the diagonal of the super-sampled canvas. ``intensity`` in [0, 1]: 0 gives
    straight strokes, 1 long curved ones.
    """
    if not 0 <= intensity <= 1:
        raise ValueError(f"intensity must be in [0, 1], got {intensity}")
    eps = 0.1
    canvas = 2 * size
    diag = math.sqrt(2) * canvas
    max_len = 0.75 * diag * (rng.uniform() + rng.uniform(0, intensity ** 2))
    steps: List[float] = []
    while sum(steps) < max_len:
        step = rng.beta(1, 30) * (1 - intensity + eps) * diag
        if step < max_len:
            steps.append(step)
    n = len(steps)
    max_angle = rng.uniform(0, intensity * math.pi)
    jitter = rng.beta(2, 20)
    angles = [rng.uniform(-max_angle, max_angle)]
    while len(angles) < n:
        a = rng.triangular(0, intensity * max_angle, max_angle + eps)
        sign = np.sign(angles[-1]) if angles[-1] != 0 else 1.0
        angles.append(-sign * a if rng.uniform() < jitter else sign * a)
    path = np.cumsum(np.asarray(steps) * np.exp(1j * np.asarray(angles)))
    path = (path - path.mean()) * np.exp(1j * rng.uniform(0, math.pi)) + (canvas / 2) * (1 + 1j)

    # rasterise: dense samples along the polyline, bilinear splatting, saturation at 1
    spacing = 0.25
    pts = [path[:1]]
    for p0, p1 in zip(path[:-1], path[1:]):
        m = max(int(math.ceil(abs(p1 - p0) / spacing)), 1)
        pts.append(p0 + (p1 - p0) * (np.arange(1, m + 1) / m))
    pts = np.concatenate(pts)
    # pixel (r, c) covers [c, c+1) x [r, r+1): its centre is at (c + 0.5, r + 0.5)
    xs, ys = pts.real - 0.5, pts.imag - 0.5
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    acc = np.zeros((canvas + 2, canvas + 2))
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = x0 + dx + 1, y0 + dy + 1
        ok = (cx >= 0) & (cx < canvas + 2) & (cy >= 0) & (cy < canvas + 2)
        np.add.at(acc, (cy[ok], cx[ok]), w[ok] * spacing)
    stroke = np.clip(acc[1:-1, 1:-1], 0, 1)
    width = diag / 150
    if width > 1:  # thicker stroke for large canvases, like a line of that width
        r = int(round((width - 1) / 2))
        if r > 0:
            stroke = grey_dilation(stroke, size=(2 * r + 1, 2 * r + 1))
    sigma = 0.01 * diag
    if sigma >= 0.3:
        stroke = gaussian_filter(stroke, sigma, mode="constant")
    k = stroke.reshape(size, 2, size, 2).mean(axis=(1, 3))
    if k.sum() <= 0:  # the whole stroke fell off the canvas: fall back to a delta (practically never)
        k = np.zeros((size, size))
        k[size // 2, size // 2] = 1.0
    return k / k.sum()


def partition_of_unity(image_size: int, grid: Tuple[int, int] = NONUNIFORM_GRID) -> np.ndarray:
    """Smooth weights ``(gy * gx, H, W)`` that sum to 1 at every pixel.

    Along each axis, ``g`` raised-cosine bumps centred on ``g`` evenly spaced anchors (the first and
    last at the image borders); the 2-D weights are products of the 1-D ones, so kernel ``i`` is
    used alone at its anchor and blends smoothly into its neighbours in between.
    """
    def axis_weights(g: int) -> np.ndarray:
        t = np.linspace(0.0, 1.0, image_size) * (g - 1)
        w = np.zeros((g, image_size))
        if g == 1:
            w[0] = 1
            return w
        for i in range(g):
            d = np.abs(t - i)
            w[i] = np.where(d < 1, np.cos(0.5 * math.pi * d) ** 2, 0.0)
        return w / w.sum(axis=0, keepdims=True)

    wy, wx = axis_weights(grid[0]), axis_weights(grid[1])
    return np.einsum("ih,jw->ijhw", wy, wx).reshape(grid[0] * grid[1], image_size, image_size)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _as(t: Tensor, like: Tensor) -> Tensor:
    return t.to(device=like.device, dtype=like.dtype)


def _reflect_pad_adjoint(z: Tensor, p: int) -> Tensor:
    """Adjoint of ``F.pad(x, (p, p, p, p), mode='reflect')``: fold the border back onto the image."""
    if p == 0:
        return z
    # rows
    core = z[..., p:-p, :].clone()
    core[..., 1:p + 1, :] += z[..., :p, :].flip(-2)
    core[..., -p - 1:-1, :] += z[..., -p:, :].flip(-2)
    # columns
    out = core[..., :, p:-p].clone()
    out[..., :, 1:p + 1] += core[..., :, :p].flip(-1)
    out[..., :, -p - 1:-1] += core[..., :, -p:].flip(-1)
    return out


def _wiener(y: Tensor, kernel: Tensor, lam: Tuple[float, float]) -> Tensor:
    """Wiener-type deconvolution of ``y`` (B, C, H, W) by ``kernel`` (k, k).

    ``X = conj(K) Y / (|K|^2 + a + b |D|^2)`` with ``(a, b) = lam`` and
    ``|D|^2 = 4 sin^2(pi u) + 4 sin^2(pi v)`` (the symbol of the discrete Laplacian): the constant
    ``a`` is the classic noise-to-signal ratio, the gradient term ``b |D|^2`` models an image power
    spectrum falling with frequency and damps the noisy high frequencies further. ``y`` is
    reflect-padded by the kernel size first to limit boundary ringing.
    """
    k = kernel.shape[-1]
    H, W = y.shape[-2:]
    p = min(k, H - 1, W - 1)
    yp = F.pad(y, (p, p, p, p), mode="reflect")
    Hp, Wp = yp.shape[-2:]
    kpad = torch.zeros(Hp, Wp, dtype=y.dtype, device=y.device)
    kpad[:k, :k] = kernel
    kpad = torch.roll(kpad, shifts=(-(k // 2), -(k // 2)), dims=(0, 1))
    K = torch.fft.rfft2(kpad)
    fy = torch.fft.fftfreq(Hp, dtype=y.dtype, device=y.device)[:, None]
    fx = torch.fft.rfftfreq(Wp, dtype=y.dtype, device=y.device)[None, :]
    D2 = 4 * torch.sin(math.pi * fy) ** 2 + 4 * torch.sin(math.pi * fx) ** 2
    a, b = lam
    X = torch.conj(K) * torch.fft.rfft2(yp) / (K.abs() ** 2 + a + b * D2)
    x = torch.fft.irfft2(X, s=(Hp, Wp))
    return x[..., p:p + H, p:p + W]


def fill_holes(y: Tensor, mask: Tensor, smooth_iters: int = 20) -> Tensor:
    """Fill the pixels where ``mask == 0`` from the observed ones (``mask == 1``).

    Push-pull pyramid: masked averages are pushed to coarser 2x levels until every pixel is
    covered, then pulled back up (bilinear) into the holes, with ``smooth_iters`` Jacobi sweeps of
    the 4-neighbour average (a discrete harmonic fill) at each level. Observed pixels are kept.
    ``y`` (B, C, H, W), ``mask`` broadcastable (1 or B, 1, H, W).
    """
    mask = mask.to(y.dtype).expand(y.shape[0], 1, *y.shape[-2:])
    return _push_pull(y * mask, mask, smooth_iters)


def _push_pull(y: Tensor, m: Tensor, iters: int) -> Tensor:
    H, W = y.shape[-2:]
    if bool((m > 0).all()) or min(H, W) < 2:
        coarse_fill = None
    else:
        ph, pw = H % 2, W % 2
        yp = F.pad(y, (0, pw, 0, ph), mode="replicate") if (ph or pw) else y
        mp = F.pad(m, (0, pw, 0, ph), mode="replicate") if (ph or pw) else m
        msum = F.avg_pool2d(mp, 2)
        yc = F.avg_pool2d(yp * mp, 2) / msum.clamp_min(1e-12)
        mc = (msum > 0).to(y.dtype)
        filled = _push_pull(yc * mc, mc, iters)
        coarse_fill = F.interpolate(filled, scale_factor=2, mode="bilinear", align_corners=False)[..., :H, :W]
    if coarse_fill is None:
        if bool((m > 0).all()):
            return y
        coarse_fill = torch.zeros_like(y)
    known = m > 0
    x = torch.where(known, y, coarse_fill)
    if min(H, W) >= 2:
        for _ in range(iters):
            xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
            avg = 0.25 * (xp[..., :-2, 1:-1] + xp[..., 2:, 1:-1] + xp[..., 1:-1, :-2] + xp[..., 1:-1, 2:])
            x = torch.where(known, y, avg)
    return x


def _check_measurement(y: Tensor, shape: Tuple[int, int], what: str = "y") -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (B, 3, {shape[0]}, {shape[1]}), got {type(y).__name__}")
    if y.ndim != 4 or y.shape[1] != 3 or tuple(y.shape[-2:]) != tuple(shape):
        raise ValueError(f"{what} must be a measurement of shape (B, 3, {shape[0]}, {shape[1]}) for this operator, "
                         f"got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ValueError(f"{what} must be a float tensor, got dtype {y.dtype}")


# ----------------------------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------------------------
class Operator:
    """Base class: a linear forward model ``A`` with Gaussian noise. See the module docstring.

    ``check_range`` (default True) makes ``A`` refuse inputs outside [0, 1] (1e-3 tolerance);
    an iterative solver whose iterates may overshoot can set ``op.check_range = False``.
    """

    task: str = ""

    def __init__(self, task: str, image_size: int, seed: int, noise_sigma: float, device="cpu"):
        self.task = task
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.noise_sigma = float(noise_sigma)
        self.device = torch.device(device)
        self.check_range = True
        self.padding: Optional[str] = None
        self.observed_mask: Optional[Tensor] = None
        self.kernel: Optional[Tensor] = None

    # -- shapes ------------------------------------------------------------------------------
    @property
    def measurement_shape(self) -> Tuple[int, int]:
        """Spatial size (h, w) of a measurement."""
        return (self.image_size, self.image_size)

    def _check_x(self, x: Tensor, what: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            check_images(x, self.image_size, what)  # raises the TypeError
        # the range check looks at values only: detach so autograd does not complain
        check_images(x.detach() if (self.check_range or x.ndim != 4) else x.detach()[:0], self.image_size, what)

    # -- the model ---------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        """Noiseless forward model; differentiable in ``x``."""
        self._check_x(x)
        return self._A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """Exact adjoint of :meth:`A` (``<A x, y> = <x, A_adjoint y>``)."""
        _check_measurement(y, self.measurement_shape)
        return self._At(y)

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    __call__ = A

    def noise(self, batch: int, indices: Optional[Sequence[int]] = None,
              dtype=torch.float32, device=None) -> Tensor:
        """The noise realisation ``(batch, 3, h, w)`` (std ``noise_sigma``) that :meth:`measure` adds.

        Image ``b`` gets noise from a CPU generator seeded by ``(seed, task, image_size, indices[b])``;
        ``indices`` defaults to ``range(batch)``. Pass the images' dataset indices to make every
        image's noise independent of how the images are batched.
        """
        if indices is None:
            indices = range(batch)
        indices = [int(i) for i in indices]
        if len(indices) != batch:
            raise ValueError(f"indices has {len(indices)} entries for a batch of {batch}")
        h, w = self.measurement_shape
        out = []
        for i in indices:
            g = torch.Generator(device="cpu")
            g.manual_seed(_torch_seed(self.task, self.image_size, self.seed, i))
            out.append(torch.randn(3, h, w, generator=g, dtype=torch.float64))
        n = torch.stack(out) * self.noise_sigma
        return n.to(device=device if device is not None else self.device, dtype=dtype)

    def measure(self, x: Tensor, indices: Optional[Sequence[int]] = None) -> Tensor:
        """``A(x)`` plus seeded Gaussian noise of std ``noise_sigma`` (see :meth:`noise`)."""
        y = self.A(x)
        if self.noise_sigma > 0:
            y = y + self.noise(x.shape[0], indices, dtype=y.dtype, device=y.device)
        return y

    def init_estimate(self, y: Tensor) -> Tensor:
        """A cheap first estimate of the image, (B, 3, H, W) in [0, 1]."""
        _check_measurement(y, self.measurement_shape)
        with torch.no_grad():
            return self._init(y).clamp(0, 1)

    def describe(self) -> Dict:
        """The operator's parameters as a JSON-friendly dict."""
        return {"task": self.task, "image_size": self.image_size, "seed": self.seed,
                "noise_sigma": self.noise_sigma, "noise_scale": "[0, 1]", "padding": self.padding,
                "measurement_shape": [3, *self.measurement_shape]}

    def to(self, device) -> "Operator":
        self.device = torch.device(device)
        for name in ("observed_mask", "kernel", "kernels", "weights", "filter"):
            t = getattr(self, name, None)
            if isinstance(t, torch.Tensor):
                setattr(self, name, t.to(self.device))
        return self

    def __repr__(self) -> str:
        d = self.describe()
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, list)) + ")"

    # -- to implement ------------------------------------------------------------------------
    def _A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _At(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _init(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class InpaintingOperator(Operator):
    """``A x = m * x`` with a binary mask ``m`` (1 = observed) shared by the three channels."""

    def __init__(self, task, image_size, seed, noise_sigma, device="cpu"):
        super().__init__(task, image_size, seed, noise_sigma, device)
        s = self.image_size
        rng = _rng(task, s, seed)
        mask = np.ones((s, s))
        self.box: Optional[Dict[str, int]] = None
        if task == "inpaint_box":
            side = s // 2
            margin = s // 16
            top = int(rng.integers(margin, s - margin - side + 1))
            left = int(rng.integers(margin, s - margin - side + 1))
            mask[top:top + side, left:left + side] = 0
            self.box = {"top": top, "left": left, "size": side, "margin": margin}
        else:
            n_missing = int(round(RANDOM_MISSING_FRACTION * s * s))
            idx = rng.permutation(s * s)[:n_missing]
            mask.reshape(-1)[idx] = 0
        self.observed_mask = torch.from_numpy(mask)[None, None].to(self.device)

    @property
    def missing_fraction(self) -> float:
        return float(1 - self.observed_mask.mean())

    def _A(self, x):
        return x * _as(self.observed_mask, x)

    _At = _A

    def measure(self, x, indices=None):
        # noise only on observed pixels; unobserved stay exactly 0
        y = super().measure(x, indices)
        return y * _as(self.observed_mask, y)

    def _init(self, y):
        return fill_holes(y, _as(self.observed_mask, y))

    def describe(self):
        d = super().describe()
        d.update({"missing_fraction": self.missing_fraction, "mask_shared_across_channels": True,
                  "init": "push-pull hole filling"})
        if self.box is not None:
            d.update({"box_top": self.box["top"], "box_left": self.box["left"], "box_size": self.box["size"],
                      "box_margin": self.box["margin"]})
        return d


def _wiener_lambda(noise_sigma: float) -> Tuple[float, float]:
    """Weights (a, b) of the Wiener initialisation: ``WIENER_REG * max(sigma, WIENER_MIN_SIGMA)^2``."""
    s2 = max(noise_sigma, WIENER_MIN_SIGMA) ** 2
    return (round(WIENER_REG[0] * s2, 12), round(WIENER_REG[1] * s2, 12))


class BlurOperator(Operator):
    """``A x = k * x``: convolution with one kernel, reflect padding, same-size output."""

    def __init__(self, task, image_size, seed, noise_sigma, device="cpu"):
        super().__init__(task, image_size, seed, noise_sigma, device)
        self.padding = "reflect"
        if task == "gaussian_blur":
            self.kernel_size = scaled_kernel_size(GAUSSIAN_KERNEL_SIZE, self.image_size)
            self.kernel_std = GAUSSIAN_STD * self.image_size / REFERENCE_SIZE
            k = gaussian_kernel(self.kernel_size, self.kernel_std)
        else:
            self.kernel_size = scaled_kernel_size(MOTION_KERNEL_SIZE, self.image_size)
            self.intensity = MOTION_INTENSITY
            k = motion_kernel(self.kernel_size, self.intensity, _rng(task, self.image_size, seed))
        self.kernel = torch.from_numpy(k).to(self.device)

    def _A(self, x):
        return dF.conv2d_fft(x, _as(self.kernel, x)[None, None], padding="reflect")

    def _At(self, y):
        return dF.conv_transpose2d_fft(y, _as(self.kernel, y)[None, None], padding="reflect")

    def _init(self, y):
        return _wiener(y, _as(self.kernel, y), _wiener_lambda(self.noise_sigma))

    def describe(self):
        d = super().describe()
        d.update({"kernel_size": self.kernel_size, "wiener_lambda": list(_wiener_lambda(self.noise_sigma)),
                  "init": "Wiener"})
        if self.task == "gaussian_blur":
            d["kernel_std"] = self.kernel_std
        else:
            d.update({"motion_intensity": self.intensity, "kernel_generator": "random trajectory (motionblur-style)"})
        return d


class NonUniformBlurOperator(Operator):
    """Spatially varying blur, product-convolution model ``A x = sum_i w_i * (k_i conv x)``.

    Four seeded motion kernels (size and intensity as ``motion_blur``) sit at the anchors of a 2x2
    grid (the image corners) and blend with the smooth partition-of-unity weights
    :func:`partition_of_unity`. Adjoint: ``A^T y = sum_i k_i^T conv (w_i * y)``.
    """

    def __init__(self, task, image_size, seed, noise_sigma, device="cpu"):
        super().__init__(task, image_size, seed, noise_sigma, device)
        self.padding = "reflect"
        self.kernel_size = scaled_kernel_size(MOTION_KERNEL_SIZE, self.image_size)
        self.intensity = MOTION_INTENSITY
        self.grid = NONUNIFORM_GRID
        rng = _rng(task, self.image_size, seed)
        ks = [motion_kernel(self.kernel_size, self.intensity, rng) for _ in range(self.grid[0] * self.grid[1])]
        self.kernels = torch.from_numpy(np.stack(ks)).to(self.device)                       # (K, k, k)
        self.weights = torch.from_numpy(partition_of_unity(self.image_size, self.grid))[:, None].to(self.device)  # (K,1,H,W)
        w_mean = self.weights.mean(dim=(1, 2, 3))
        self.kernel = (w_mean[:, None, None] * self.kernels).sum(0) / w_mean.sum()       # average kernel

    def _A(self, x):
        out = 0
        for k, w in zip(self.kernels, self.weights):
            out = out + _as(w, x) * dF.conv2d_fft(x, _as(k, x)[None, None], padding="reflect")
        return out

    def _At(self, y):
        out = 0
        for k, w in zip(self.kernels, self.weights):
            out = out + dF.conv_transpose2d_fft(_as(w, y) * y, _as(k, y)[None, None], padding="reflect")
        return out

    def _init(self, y):
        return _wiener(y, _as(self.kernel, y), _wiener_lambda(self.noise_sigma))

    def describe(self):
        d = super().describe()
        d.update({"kernel_size": self.kernel_size, "motion_intensity": self.intensity,
                  "num_kernels": int(self.kernels.shape[0]), "grid": list(self.grid),
                  "weights": "raised-cosine partition of unity, kernel i alone at its grid corner",
                  "model": "sum_i w_i * (k_i conv x)", "wiener_lambda": list(_wiener_lambda(self.noise_sigma)),
                  "init": "Wiener with the average kernel"})
        return d


class SuperResolutionOperator(Operator):
    """x4 bicubic down-sampling with anti-aliasing: reflect pad 6, 16x16 bicubic filter, stride 4.

    Low-resolution pixel ``i`` averages high-resolution pixels ``4i-6 .. 4i+9`` around the centre of
    the block ``4i .. 4i+3`` (the same weights as PIL's ``resize(..., BICUBIC)`` away from the border).
    """

    def __init__(self, task, image_size, seed, noise_sigma, device="cpu"):
        super().__init__(task, image_size, seed, noise_sigma, device)
        if self.image_size % SR_FACTOR:
            raise ValueError(f"sr4 needs image_size divisible by {SR_FACTOR}, got {self.image_size}")
        self.factor = SR_FACTOR
        self.padding = "reflect"
        self.filter = dF.bicubic_filter(self.factor).to(torch.float64)[0, 0].to(self.device)  # (16, 16), sums to 1
        self.kernel = self.filter
        self.pad = (self.filter.shape[-1] - self.factor) // 2                                   # 6

    @property
    def measurement_shape(self):
        return (self.image_size // self.factor, self.image_size // self.factor)

    def _weight(self, like):
        return _as(self.filter, like)[None, None].expand(3, 1, -1, -1)

    def _A(self, x):
        xp = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(xp, self._weight(x), stride=self.factor, groups=3)

    def _At(self, y):
        z = F.conv_transpose2d(y, self._weight(y), stride=self.factor, groups=3)
        return _reflect_pad_adjoint(z, self.pad)

    def _init(self, y):
        return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False)

    def describe(self):
        d = super().describe()
        d.update({"factor": self.factor, "filter": "bicubic (Keys a=-0.5), anti-aliased, 16x16",
                  "filter_size": int(self.filter.shape[-1]), "init": "bicubic up-sampling"})
        return d


_CLASSES = {"inpaint_box": InpaintingOperator, "inpaint_random": InpaintingOperator,
            "gaussian_blur": BlurOperator, "motion_blur": BlurOperator,
            "nonuniform_blur": NonUniformBlurOperator, "sr4": SuperResolutionOperator}


def make_operator(task: str, image_size: int, seed: int = 0, noise_sigma: float = DEFAULT_NOISE_SIGMA,
                  device: Union[str, torch.device] = "cpu") -> Operator:
    """Build the operator for ``task`` (one of :data:`TASKS`) at ``image_size`` px.

    Parameters are the DPS/DAPS ones at 256 px, scaled by ``image_size / 256`` for the kernels
    (e.g. 64 px: Gaussian 15x15 std 0.75; motion 15x15). ``noise_sigma`` is on the [0, 1] scale.
    """
    if task not in _CLASSES:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16 or image_size % 4:
        raise ValueError(f"image_size must be an integer >= 16 divisible by 4, got {image_size!r}")
    if noise_sigma < 0:
        raise ValueError(f"noise_sigma must be >= 0 (std on the [0, 1] scale), got {noise_sigma}")
    return _CLASSES[task](task, int(image_size), int(seed), float(noise_sigma), device)
