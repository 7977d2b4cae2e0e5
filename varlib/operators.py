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
* ``describe()``: the parameters as a plain dict (it enters the benchmark's cache keys).

Every operator is a ``deepinv.physics.LinearPhysics`` (see :class:`Operator`): deepinv's algorithms
run on it, and ``physics(x)`` gives the same seeded measurement as ``measure(x)``. The other way
round, :func:`as_operator` wraps a foreign deepinv ``LinearPhysics`` (``Inpainting``, ``BlurFFT``,
``Downsampling``, ...) so that ``varlib.solve`` and the baselines accept it. Measurements with NaN or
infinite entries are refused (:meth:`Operator.check_measurement`). :data:`TASK_TITLES` names the
tasks for tables and figures.

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

import contextlib
import functools
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import torch
import torch.nn.functional as F

import deepinv.physics.functional as dF
from deepinv.physics import GaussianNoise, LinearPhysics, NoiseModel, Physics, ZeroNoise
from scipy.ndimage import gaussian_filter, grey_dilation

from .linalg import cg_solve, operator_sqnorm
from .prior.model import check_images

TASKS: Tuple[str, ...] = ("inpaint_box", "inpaint_random", "gaussian_blur", "motion_blur",
                          "nonuniform_blur", "sr4")

#: Titles of the tasks for tables and figures, in the order of :data:`TASKS`.
TASK_TITLES: Dict[str, str] = {
    "inpaint_box": "box inpainting",
    "inpaint_random": "random inpainting",
    "gaussian_blur": "Gaussian blur",
    "motion_blur": "motion blur",
    "nonuniform_blur": "non-uniform blur",
    "sr4": "4x super-resolution",
}

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


def _check_measurement(y: Tensor, shape: Tuple[int, ...], what: str = "y") -> None:
    """Refuse anything but a float ``(B, 3, h, w)`` tensor with ``(h, w) = shape``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (B, 3, {shape[0]}, {shape[1]}), got {type(y).__name__}")
    if y.ndim != 4 or y.shape[1] != 3 or tuple(y.shape[-2:]) != tuple(shape):
        raise ValueError(f"{what} must be a measurement of shape (B, 3, {shape[0]}, {shape[1]}) for this operator, "
                         f"got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ValueError(f"{what} must be a float tensor, got dtype {y.dtype}")


def _check_finite(y: Tensor, what: str = "y") -> None:
    """Refuse a measurement with NaN or infinite entries (a solver would silently return NaN images)."""
    finite = torch.isfinite(y)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(y).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(f"{what} contains {n_nan} NaN and {n_inf} infinite value(s) out of {y.numel()}; a measurement "
                         "must be finite. Check how it was produced (a failed load, a division by zero, an overflow); "
                         "for pixels that were not measured, use an inpainting operator and put 0 there.")


def _indices(batch: int, indices: Optional[Sequence[int]]) -> List[int]:
    if indices is None:
        indices = range(batch)
    indices = [int(i) for i in indices]
    if len(indices) != batch:
        raise ValueError(f"indices has {len(indices)} entries for a batch of {batch}")
    return indices


def seeded_noise(task: str, image_size: int, seed: int, sigma: float, shape: Tuple[int, int],
                 indices: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: Union[str, torch.device] = "cpu") -> Tensor:
    """White Gaussian noise ``(len(indices), 3, *shape)`` of std ``sigma``, reproducible on every machine.

    Image ``b`` gets float64 noise from a CPU ``torch.Generator`` seeded by
    ``(seed, task, image_size, indices[b])``; it is cast to ``dtype`` and moved to ``device`` last.
    """
    h, w = shape
    out = []
    for i in indices:
        g = torch.Generator(device="cpu")
        g.manual_seed(_torch_seed(task, image_size, seed, int(i)))
        out.append(torch.randn(3, h, w, generator=g, dtype=torch.float64))
    n = torch.stack(out) * sigma
    return n.to(device=device, dtype=dtype)


class SeededGaussianNoise(GaussianNoise):
    """deepinv noise model of our operators: the seeded noise of :func:`seeded_noise`.

    A ``deepinv.physics.GaussianNoise`` (so deepinv algorithms read the level from ``.sigma``) whose
    draw does not use a stateful generator: ``noise_model(y, indices=...)`` adds the noise image
    ``indices[b]`` gets (default ``range(B)``), the same as :meth:`Operator.measure`.
    """

    def __init__(self, sigma: float, task: str, image_size: int, seed: int):
        super().__init__(sigma=float(sigma))
        self.sigma_value = float(sigma)
        self.task, self.image_size, self.seed = task, int(image_size), int(seed)

    def forward(self, y: Tensor, indices: Optional[Sequence[int]] = None, **kwargs: Any) -> Tensor:
        """``y`` (B, 3, h, w) plus the seeded noise (unchanged when ``sigma`` is 0)."""
        if self.sigma_value > 0:
            idx = _indices(y.shape[0], indices)
            y = y + seeded_noise(self.task, self.image_size, self.seed, self.sigma_value, tuple(y.shape[-2:]), idx,
                                 dtype=y.dtype, device=y.device)
        return y


# ----------------------------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------------------------
class Operator(LinearPhysics):
    """Base class: a linear forward model ``A`` with seeded Gaussian noise, as a deepinv ``LinearPhysics``.

    Images are ``(B, 3, H, W)`` float in [0, 1], ``H = W = image_size``; measurements ``(B, 3, h, w)``
    (``h, w`` = :attr:`measurement_shape`). Everything deepinv expects of a ``LinearPhysics`` works:
    ``A``, ``A_adjoint`` (exact, closed form), ``physics(x)`` / ``forward`` (``A(x)`` plus the noise
    model's draw), ``noise_model`` (a :class:`SeededGaussianNoise` of std ``noise_sigma``),
    ``A_dagger``, ``prox_l2``, ``compute_norm``, ``adjointness_test``, ``to(device)``. Masks and
    kernels are float64 registered buffers, cast to the input's dtype and device on use.

    The benchmark measures with :meth:`measure` (``indices`` = the images' dataset indices); with the
    default noise model ``physics(x)`` and ``forward(x, indices)`` return the same floats.

    ``check_range`` (default True) makes ``A`` refuse inputs outside [0, 1] (1e-3 tolerance); an
    iterative solver whose iterates may overshoot runs inside ``with op.unchecked_range(): ...``.
    deepinv's linear-algebra helpers (``A_dagger``, ``prox_l2``, ``compute_sqnorm``,
    ``adjointness_test``, ``condition_number``) run with the check off: their inputs are not images.
    """

    task: str = ""

    def __init__(self, task: str, image_size: int, seed: int, noise_sigma: float, device="cpu",
                 noise_model: Optional[NoiseModel] = None):
        if noise_model is None:
            noise_model = SeededGaussianNoise(noise_sigma, task, image_size, seed)
        # nn.Module: initialise before any attribute is set; LinearPhysics moves its buffers to `device`
        super().__init__(img_size=(3, int(image_size), int(image_size)), noise_model=noise_model, device=device)
        self.task = task
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.noise_sigma = float(noise_sigma)
        self.check_range = True
        self.padding: Optional[str] = None
        self.register_buffer("observed_mask", None)
        self.register_buffer("kernel", None)

    @property
    def device(self) -> torch.device:
        """Where the operator's buffers live (move with :meth:`to`)."""
        return self._device_holder.device

    def to(self, *args: Any, **kwargs: Any) -> "Operator":
        """Move the buffers to a device and return the operator. The float64 masks and kernels keep
        their dtype (they are cast to the input's dtype on use), so a dtype argument is refused."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None:
            raise TypeError("an operator keeps float64 masks and kernels and casts them to its input's dtype; "
                            "convert the images instead of the operator (got a dtype for .to())")
        return super().to(device) if device is not None else self

    # -- shapes and checks -------------------------------------------------------------------
    @property
    def measurement_shape(self) -> Tuple[int, int]:
        """Spatial size (h, w) of a measurement."""
        return (self.image_size, self.image_size)

    def _check_x(self, x: Tensor, what: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            check_images(x, self.image_size, what)  # raises the TypeError
        # the range check looks at values only: detach so autograd does not complain
        check_images(x.detach() if (self.check_range or x.ndim != 4) else x.detach()[:0], self.image_size, what)

    def _check_y(self, y: Tensor, what: str = "y") -> None:
        _check_measurement(y, self.measurement_shape, what)

    def check_measurement(self, y: Tensor, what: str = "y") -> None:
        """Refuse a measurement of the wrong type, shape or dtype (``TypeError`` / ``ValueError``) or one
        with NaN or infinite entries (``ValueError``). :meth:`init_estimate`, ``varlib.solve`` and every
        baseline call it on entry; :meth:`A_adjoint` checks the shape only (it runs inside solvers)."""
        self._check_y(y, what)
        _check_finite(y, what)

    @contextlib.contextmanager
    def unchecked_range(self) -> Iterator["Operator"]:
        """Context: let :meth:`A` accept iterates outside [0, 1] (unclamped decodes, CG iterates);
        restores the previous ``check_range`` on exit. Shapes are still checked."""
        saved = self.check_range
        self.check_range = False
        try:
            yield self
        finally:
            self.check_range = saved

    # -- the model ---------------------------------------------------------------------------
    def A(self, x: Tensor, **kwargs: Any) -> Tensor:
        """Noiseless forward model ``(B, 3, H, W) -> (B, 3, h, w)``; differentiable in ``x``."""
        _no_parameters(kwargs)
        self._check_x(x)
        return self._A(x)

    def A_adjoint(self, y: Tensor, **kwargs: Any) -> Tensor:
        """Exact adjoint of :meth:`A` (``<A x, y> = <x, A_adjoint y>``): ``(B, 3, h, w) -> (B, 3, H, W)``."""
        _no_parameters(kwargs)
        self._check_y(y)
        return self._At(y)

    def noise(self, y: Tensor, indices: Optional[Sequence[int]] = None, **kwargs: Any) -> Tensor:
        """deepinv's ``noise``: the clean measurement ``y`` with the noise model's noise added.

        With the default :class:`SeededGaussianNoise`, ``indices`` pick the seeded draws as in
        :meth:`measure`; another noise model (``set_noise_model``) draws its own noise.
        """
        if isinstance(self.noise_model, SeededGaussianNoise):
            return self.noise_model(y, indices=indices)
        if indices is not None:
            raise ValueError(f"indices select varlib's seeded noise, but this operator's noise model is "
                             f"{type(self.noise_model).__name__}; measure with op.measure(x, indices) instead")
        return self.noise_model(y, **kwargs)

    def forward(self, x: Tensor, indices: Optional[Sequence[int]] = None, **kwargs: Any) -> Tensor:
        """deepinv's measurement ``sensor(noise(A(x)))``, i.e. ``physics(x)``; with the default noise
        model the same floats as :meth:`measure` (``indices`` default to ``range(B)``)."""
        return self.sensor(self.noise(self.A(x, **kwargs), indices=indices))

    def noise_realisation(self, batch: int, indices: Optional[Sequence[int]] = None,
                          dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """The noise ``(batch, 3, h, w)`` (std ``noise_sigma``) that :meth:`measure` adds.

        Image ``b`` gets noise from a CPU generator seeded by ``(seed, task, image_size, indices[b])``;
        ``indices`` defaults to ``range(batch)``. Pass the images' dataset indices to make every
        image's noise independent of how the images are batched.
        """
        idx = _indices(batch, indices)
        return seeded_noise(self.task, self.image_size, self.seed, self.noise_sigma, self.measurement_shape, idx,
                            dtype=dtype, device=device if device is not None else self.device)

    def measure(self, x: Tensor, indices: Optional[Sequence[int]] = None) -> Tensor:
        """``A(x)`` plus seeded Gaussian noise of std ``noise_sigma`` (see :meth:`noise_realisation`).

        This is the measurement the benchmark uses; it ignores ``noise_model`` (always seeded)."""
        y = self.A(x)
        if self.noise_sigma > 0:
            y = y + self.noise_realisation(x.shape[0], indices, dtype=y.dtype, device=y.device)
        return y

    def init_estimate(self, y: Tensor) -> Tensor:
        """A cheap first estimate of the image from ``y`` (after :meth:`check_measurement`):
        ``(B, 3, H, W)`` in [0, 1]."""
        self.check_measurement(y)
        with torch.no_grad():
            return self._init(y).clamp(0, 1)

    def describe(self) -> Dict:
        """The operator's parameters as a JSON-friendly dict."""
        return {"task": self.task, "image_size": self.image_size, "seed": self.seed,
                "noise_sigma": self.noise_sigma, "noise_scale": "[0, 1]", "padding": self.padding,
                "measurement_shape": [3, *self.measurement_shape]}

    def __repr__(self) -> str:
        d = self.describe()
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, list)) + ")"

    # -- deepinv's linear algebra, on vectors that are not images ------------------------------
    def A_dagger(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """deepinv's least-squares pseudo-inverse (``LinearPhysics.A_dagger``), range check off."""
        with self.unchecked_range():
            return super().A_dagger(y, *args, **kwargs)

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float, *args: Any, **kwargs: Any) -> Tensor:
        """deepinv's ``argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2``, range check off."""
        with self.unchecked_range():
            return super().prox_l2(z, y, gamma, *args, **kwargs)

    def compute_sqnorm(self, x0: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """deepinv's power method for ``||A||^2`` (``compute_norm`` calls it), range check off."""
        with self.unchecked_range():
            return super().compute_sqnorm(x0, *args, **kwargs)

    def adjointness_test(self, *args: Any, **kwargs: Any) -> Tensor:
        """deepinv's relative adjointness error on Gaussian probes, range check off."""
        with self.unchecked_range():
            return super().adjointness_test(*args, **kwargs)

    def condition_number(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """deepinv's LSQR condition-number estimate, range check off."""
        with self.unchecked_range():
            return super().condition_number(x, *args, **kwargs)

    # -- to implement ------------------------------------------------------------------------
    def _A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _At(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _init(self, y: Tensor) -> Tensor:
        raise NotImplementedError


def _no_parameters(kwargs: Dict[str, Any]) -> None:
    """deepinv passes per-call physics parameters as keywords; our operators are fixed and have none."""
    given = sorted(k for k, v in kwargs.items() if v is not None)
    if given:
        raise TypeError(f"varlib operators have fixed parameters and take no per-call {', '.join(given)}; "
                        "make a new operator with make_operator(...) instead")


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

    def noise(self, y, indices=None, **kwargs):
        # as measure (and deepinv's Inpainting): no noise where nothing was measured
        z = super().noise(y, indices, **kwargs)
        return z * _as(self.observed_mask, z)

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
        self.register_buffer("kernels", torch.from_numpy(np.stack(ks)).to(self.device))                   # (K, k, k)
        self.register_buffer("weights", torch.from_numpy(partition_of_unity(self.image_size, self.grid))[:, None]
                             .to(self.device))                                                             # (K,1,H,W)
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
        bicubic = dF.bicubic_filter(self.factor).to(torch.float64)[0, 0]                     # (16, 16), sums to 1
        self.register_buffer("filter", bicubic.to(self.device))
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


# ----------------------------------------------------------------------------------------------
# foreign deepinv physics
# ----------------------------------------------------------------------------------------------
#: Initial estimate of a wrapped non-inpainting physics: ``argmin ||A x - y||^2 + rho ||x - 1/2||^2``
#: with ``rho = PHYSICS_INIT_RHO * max(sigma, WIENER_MIN_SIGMA)^2 * ||A||^2`` (CG, PHYSICS_INIT_ITERS steps).
PHYSICS_INIT_RHO = 100.0
PHYSICS_INIT_ITERS = 50


class PhysicsOperator(Operator):
    """A foreign ``deepinv.physics.LinearPhysics`` with the interface of our operators.

    ``A`` / ``A_adjoint`` / ``physics(x)`` are the wrapped physics' own; ``measure(x)`` is
    ``physics(x)`` (its noise model and generator, not our seeded noise). What varlib adds:

    * ``init_estimate``: for ``deepinv.physics.Inpainting`` (and ``Demosaicing``) the push-pull hole
      filling of :func:`fill_holes` from its mask, channel by channel; for anything else a
      Tikhonov-regularised inverse ``argmin ||A x - y||^2 + rho ||x - 1/2||^2`` by conjugate
      gradients, ``rho`` = :data:`PHYSICS_INIT_RHO` ``* max(sigma, 0.01)^2 * ||A||^2`` -- the plain
      ``A_dagger`` amplifies the noise of a blur and ``A_adjoint`` is far too dark after
      down-sampling;
    * ``observed_mask`` ``(1 or B, 1, H, W)``: pixels observed in every channel (inpainting only),
      used by the solver's partial token injection;
    * ``noise_sigma`` from ``noise_model.sigma`` (0 for ``ZeroNoise``), the [0, 1] range check, and
      the shape and finiteness checks of measurements.

    Build it with :func:`as_operator`.
    """

    def __init__(self, physics: LinearPhysics, img_size: Tuple[int, ...], noise_sigma: float,
                 task: Optional[str] = None):
        device = _physics_device(physics)
        super().__init__(task or "", img_size[-1], 0, noise_sigma, device, noise_model=physics.noise_model)
        self.task = task
        self.img_size = tuple(int(s) for s in img_size)
        self.image_size = self.img_size[-1] if self.img_size[-1] == self.img_size[-2] else None
        self.physics = physics  # a submodule: .to(device) moves it too
        with torch.no_grad():
            probe = physics.A(torch.zeros(1, *self.img_size, device=device))
        self.y_shape = tuple(probe.shape[1:])
        self._sqnorm: Optional[float] = None
        self.observed_mask = self._pixel_mask()

    @property
    def is_inpainting(self) -> bool:
        import deepinv.physics as dphys
        return isinstance(self.physics, dphys.Inpainting) and getattr(self.physics, "mask", None) is not None

    @property
    def measurement_shape(self) -> Tuple[int, ...]:
        return self.y_shape[-2:] if len(self.y_shape) == 3 else self.y_shape

    def _channel_mask(self, like: Tensor) -> Tensor:
        """The inpainting mask broadcast to ``like`` (B, C, H, W)."""
        m = self.physics.mask.to(device=like.device, dtype=like.dtype)
        while m.ndim < 4:
            m = m[None]
        return torch.broadcast_to(m, like.shape)

    def _pixel_mask(self) -> Optional[Tensor]:
        if not self.is_inpainting:
            return None
        m = self.physics.mask.detach()
        while m.ndim < 4:
            m = m[None]
        return (m.amin(dim=1, keepdim=True) > 0).to(torch.float64)

    def _check_x(self, x: Tensor, what: str = "x") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor of shape (B, {', '.join(map(str, self.img_size))}), "
                            f"got {type(x).__name__}")
        if x.ndim != len(self.img_size) + 1 or tuple(x.shape[1:]) != self.img_size:
            raise ValueError(f"{what} must have shape (B, {', '.join(map(str, self.img_size))}) for this physics, "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{what} must be a float tensor in [0, 1], got dtype {x.dtype}")
        if self.check_range and x.numel() > 0:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"{what} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                                 "images in [-1, 1] convert with (x + 1) / 2")

    def _check_y(self, y: Tensor, what: str = "y") -> None:
        shape = ", ".join(map(str, self.y_shape))
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor of shape (B, {shape}), got {type(y).__name__}")
        if y.ndim != len(self.y_shape) + 1 or tuple(y.shape[1:]) != self.y_shape:
            raise ValueError(f"{what} must be a measurement of shape (B, {shape}) for this physics, "
                             f"got {tuple(y.shape)}")
        if not y.is_floating_point():
            raise ValueError(f"{what} must be a float tensor, got dtype {y.dtype}")

    def _A(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def _At(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)

    def noise(self, y: Tensor, indices: Optional[Sequence[int]] = None, **kwargs: Any) -> Tensor:
        if indices is not None:
            raise ValueError("indices select varlib's seeded noise; a wrapped deepinv physics draws its noise "
                             "with its own noise model (give that model a seeded torch.Generator)")
        return self.physics.noise(y, **kwargs)

    def forward(self, x: Tensor, indices: Optional[Sequence[int]] = None, **kwargs: Any) -> Tensor:
        self._check_x(x)
        if indices is not None:
            self.noise(x, indices)  # raises
        return self.physics(x, **kwargs)

    def measure(self, x: Tensor, indices: Optional[Sequence[int]] = None) -> Tensor:
        """``physics(x)``: the wrapped physics' noisy measurement (``indices`` are refused)."""
        return self.forward(x, indices)

    def sqnorm(self) -> float:
        """``||A||^2`` by :func:`varlib.linalg.operator_sqnorm` (power method, cached)."""
        if self._sqnorm is None:
            dev = self.device
            with torch.no_grad(), self.unchecked_range():
                self._sqnorm = operator_sqnorm(lambda v: self.physics.A(v.to(dev)),
                                               lambda u: self.physics.A_adjoint(u).cpu(), self.img_size)
        return self._sqnorm

    def _init(self, y: Tensor) -> Tensor:
        if self.is_inpainting:
            self.observed_mask = self._pixel_mask()  # the physics' mask may have been updated
            m = self._channel_mask(y)  # Inpainting measures images: y has their shape
            return _push_pull(y * m, m, 20)
        rho = PHYSICS_INIT_RHO * max(self.noise_sigma, WIENER_MIN_SIGMA) ** 2 * max(self.sqnorm(), 1e-12)
        At = self.physics.A_adjoint
        z = torch.full((y.shape[0], *self.img_size), 0.5, dtype=y.dtype, device=y.device)
        return cg_solve(lambda v: At(self.physics.A(v)) + rho * v, At(y) + rho * z, z, PHYSICS_INIT_ITERS)

    def describe(self) -> Dict:
        return {"task": self.task, "physics": type(self.physics).__name__, "img_size": list(self.img_size),
                "noise_sigma": self.noise_sigma, "noise_scale": "[0, 1]", "measurement_shape": list(self.y_shape),
                "init": "push-pull hole filling" if self.is_inpainting else "Tikhonov-regularised inverse (CG)"}


def _physics_device(physics: Physics) -> torch.device:
    holder = getattr(physics, "_device_holder", None)
    if isinstance(holder, torch.Tensor):
        return holder.device
    for t in list(physics.buffers()) + list(physics.parameters()):
        return t.device
    return torch.device("cpu")


def _physics_sigma(physics: Physics) -> float:
    nm = physics.noise_model
    if isinstance(nm, ZeroNoise) or nm is None:
        return 0.0
    sigma = getattr(nm, "sigma", None)
    if sigma is None:
        raise ValueError(f"cannot read a Gaussian noise level from the physics' {type(nm).__name__}; pass "
                         "noise_sigma=... (the noise std on the [0, 1] scale) to varlib.operators.as_operator")
    sigma = torch.as_tensor(sigma).detach().flatten()
    if sigma.numel() > 1 and not bool((sigma == sigma[0]).all()):
        raise ValueError(f"the physics has per-image noise levels {sigma.tolist()}; pass one noise_sigma=... "
                         "to varlib.operators.as_operator")
    value = sigma[0]
    if value.dtype == torch.float32:  # deepinv keeps sigma in float32: read 0.025 back as 0.025
        return float(np.format_float_positional(np.float32(value.item()), unique=True))
    return float(value)


def as_operator(physics: Any, img_size: Optional[Sequence[int]] = None, noise_sigma: Optional[float] = None,
                task: Optional[str] = None, y: Optional[Tensor] = None) -> Operator:
    """What ``varlib.solve`` and the baselines run on: our operators as they are, a foreign deepinv
    ``LinearPhysics`` wrapped in a :class:`PhysicsOperator`.

    ``img_size``: the image shape ``(C, H, W)``, needed only when the physics records none in its
    ``img_size`` (or ``imsize``) attribute and no measurement ``y`` is given (it is then ``A_adjoint(y).shape[1:]``).
    ``noise_sigma``: the noise std on the [0, 1] scale, by default the physics'
    ``noise_model.sigma``. ``task``: one of :data:`TASKS` to use that task's tuned solver settings
    (default: none, the untuned named settings). Raises ``TypeError`` for anything that is not a
    linear physics.
    """
    if isinstance(physics, Operator):
        return physics
    if not isinstance(physics, LinearPhysics):
        kind = "a non-linear deepinv Physics" if isinstance(physics, Physics) else f"a {type(physics).__name__}"
        raise TypeError(f"the operator must be a varlib operator (varlib.operators.make_operator) or a linear "
                        f"deepinv physics (deepinv.physics.LinearPhysics, e.g. Inpainting, BlurFFT, Downsampling); "
                        f"got {kind}")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    own = getattr(physics, "img_size", None)
    if own is None:
        own = getattr(physics, "imsize", None)  # deepinv's Downsampling
    if img_size is None:
        if own is not None:
            img_size = own
        elif y is not None:
            with torch.no_grad():
                img_size = physics.A_adjoint(y).shape[1:]
        else:
            raise ValueError(f"{type(physics).__name__} records no img_size: pass img_size=(C, H, W) or the "
                             "measurement y to as_operator")
    img_size = tuple(int(s) for s in img_size)
    if own is not None and tuple(int(s) for s in own) != img_size:
        raise ValueError(f"img_size={img_size} disagrees with the physics' own img_size {tuple(own)}")
    if len(img_size) != 3:
        raise ValueError(f"img_size must be (C, H, W), got {img_size}")
    sigma = float(noise_sigma) if noise_sigma is not None else _physics_sigma(physics)
    if sigma < 0:
        raise ValueError(f"noise_sigma must be >= 0 (std on the [0, 1] scale), got {sigma}")
    return PhysicsOperator(physics, img_size, sigma, task)


_Solve = TypeVar("_Solve", bound=Callable[..., Any])


def range_free(fn: _Solve) -> _Solve:
    """Decorator for a reconstruction ``fn(y, op, ...)``: adapt ``op`` (:func:`as_operator`), refuse a
    bad measurement (shape, NaN, inf) and run with the operator's [0, 1] input check off, because an
    iterative solver's iterates overshoot that range on their way."""

    @functools.wraps(fn)
    def wrapper(y, op, *args, **kwargs):
        op = as_operator(op, y=y)
        op.check_measurement(y)
        with op.unchecked_range():
            return fn(y, op, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
