"""Measurement operators: adjointness, kernels, masks, seeding, errors, initial estimates, deepinv."""
import json
import warnings

import deepinv as dinv
import numpy as np
import pytest
import torch
from PIL import Image

from varlib import linalg
from varlib.data import load_images
from varlib.metrics import psnr
from varlib.operators import (DEFAULT_NOISE_SIGMA, TASK_TITLES, TASKS, Operator, PhysicsOperator, as_operator,
                              fill_holes, make_operator, motion_kernel, partition_of_unity, scaled_kernel_size)


@pytest.fixture(scope="module")
def photos64():
    return load_images("embedded", 64, limit=2).double()


def _rand_x(size, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("task", TASKS)
def test_adjoint_float64(task, size):
    op = make_operator(task, size, seed=3)
    x = _rand_x(size, batch=2 if size == 64 else 1)
    Ax = op.A(x)
    assert Ax.dtype == torch.float64
    y = torch.randn(Ax.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lhs = (Ax * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    rel = abs(float(lhs - rhs)) / abs(float(lhs))
    assert rel < 1e-4, f"{task} @ {size}px: <Ax,y> = {float(lhs)}, <x,A*y> = {float(rhs)}, rel err {rel:.2e}"


@pytest.mark.parametrize("task", TASKS)
def test_shapes_and_gradient(task):
    op = make_operator(task, 64)
    x = _rand_x(64, batch=3).float().requires_grad_(True)
    y = op.A(x)
    expect = (3, 3, 16, 16) if task == "sr4" else (3, 3, 64, 64)
    assert tuple(y.shape) == expect and y.dtype == torch.float32
    assert tuple(op.A_adjoint(y.detach()).shape) == (3, 3, 64, 64)
    # d/dx 0.5 ||A x - b||^2 = A^T (A x - b)
    b = op.A(_rand_x(64, batch=3, seed=5).float())
    loss = 0.5 * ((op.A(x) - b) ** 2).sum()
    loss.backward()
    expected = op.A_adjoint((op.A(x) - b).detach())
    assert torch.allclose(x.grad, expected, atol=1e-4)


def test_kernel_parameters():
    assert scaled_kernel_size(61, 256) == 61 and scaled_kernel_size(61, 64) == 15
    for size, k, std in [(64, 15, 0.75), (256, 61, 3.0)]:
        op = make_operator("gaussian_blur", size)
        assert tuple(op.kernel.shape) == (k, k) and op.describe()["kernel_std"] == pytest.approx(std)
        assert op.describe()["padding"] == "reflect"
        kk = op.kernel.numpy()
        assert np.allclose(kk, kk.T) and np.unravel_index(kk.argmax(), kk.shape) == (k // 2, k // 2)
    for task in ("gaussian_blur", "motion_blur", "nonuniform_blur", "sr4"):
        for size in (64, 256):
            op = make_operator(task, size, seed=2)
            assert float(op.kernel.sum()) == pytest.approx(1.0, abs=1e-10), task
    op = make_operator("motion_blur", 256)
    assert tuple(op.kernel.shape) == (61, 61) and float(op.kernel.min()) >= 0
    nu = make_operator("nonuniform_blur", 64, seed=1)
    assert tuple(nu.kernels.shape) == (4, 15, 15)
    assert torch.allclose(nu.kernels.sum(dim=(1, 2)), torch.ones(4, dtype=nu.kernels.dtype))
    assert torch.allclose(nu.weights.sum(0), torch.ones(1, 64, 64, dtype=nu.weights.dtype))
    assert float(nu.weights.min()) >= 0


def test_motion_kernel_generator():
    k1 = motion_kernel(31, 0.5, np.random.default_rng(0))
    k2 = motion_kernel(31, 0.5, np.random.default_rng(0))
    k3 = motion_kernel(31, 0.5, np.random.default_rng(1))
    assert np.array_equal(k1, k2) and not np.array_equal(k1, k3)
    assert k1.shape == (31, 31) and k1.min() >= 0 and k1.sum() == pytest.approx(1.0)
    assert (k1 > 1e-3).sum() > 5  # a stroke, not a delta
    with pytest.raises(ValueError):
        motion_kernel(31, 1.5, np.random.default_rng(0))


def test_partition_of_unity_smooth():
    w = partition_of_unity(64, (2, 2))
    assert w.shape == (4, 64, 64) and np.allclose(w.sum(0), 1)
    assert w[0, 0, 0] == pytest.approx(1) and w[3, -1, -1] == pytest.approx(1)
    assert np.abs(np.diff(w, axis=-1)).max() < 0.1  # no jumps


def test_masks():
    for size in (64, 256):
        box = make_operator("inpaint_box", size, seed=4)
        m = box.observed_mask
        assert tuple(m.shape) == (1, 1, size, size)
        assert set(np.unique(m.numpy())) == {0.0, 1.0}
        assert box.missing_fraction == pytest.approx(0.25)
        d = box.describe()
        holes = np.argwhere(m[0, 0].numpy() == 0)
        assert holes.min(0).tolist() == [d["box_top"], d["box_left"]]
        assert (holes.max(0) - holes.min(0) + 1).tolist() == [size // 2, size // 2]
        margin = size // 16
        assert d["box_top"] >= margin and d["box_top"] + size // 2 <= size - margin
        rnd = make_operator("inpaint_random", size, seed=4)
        n_missing = int((rnd.observed_mask == 0).sum())
        assert n_missing == round(0.7 * size * size)
    # mask shared by the channels, measurement zero where unobserved, noise only where observed
    op = make_operator("inpaint_random", 64)
    y = op.measure(_rand_x(64))
    hole = op.observed_mask[0, 0] == 0
    assert bool((y[:, :, hole] == 0).all())
    assert float(y[:, :, ~hole].std()) > 0


@pytest.mark.parametrize("task", TASKS)
def test_seeding(task):
    a, b, c = make_operator(task, 64, seed=7), make_operator(task, 64, seed=7), make_operator(task, 64, seed=8)
    attr = "observed_mask" if task.startswith("inpaint") else ("kernels" if task == "nonuniform_blur" else "kernel")
    assert torch.equal(getattr(a, attr), getattr(b, attr))
    if task not in ("gaussian_blur", "sr4"):  # these filters are fixed; only their noise depends on the seed
        assert not torch.equal(getattr(a, attr), getattr(c, attr))
    x = _rand_x(64)
    assert torch.equal(a.measure(x), b.measure(x))
    assert not torch.equal(a.measure(x), c.measure(x))
    assert json.dumps(a.describe())  # JSON friendly
    assert a.describe()["seed"] == 7 and a.describe()["task"] == task


def test_noise_statistics_and_batching():
    op = make_operator("gaussian_blur", 64, seed=0)
    assert op.noise_sigma == DEFAULT_NOISE_SIGMA == 0.025
    x = _rand_x(64, batch=4)
    n = op.measure(x) - op.A(x)
    assert float(n.std()) == pytest.approx(0.025, rel=0.05)
    # noise depends on the image index, not on the batch composition
    n1 = op.measure(x[2:3], indices=[2]) - op.A(x[2:3])
    assert torch.allclose(n1, n[2:3])
    noiseless = make_operator("gaussian_blur", 64, noise_sigma=0.0)
    assert torch.equal(noiseless.measure(x), noiseless.A(x))


def test_sr4_matches_pil_bicubic(photos64):
    x = load_images("embedded", 256, limit=1).double()
    y = make_operator("sr4", 256).A(x)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(x[0, 0].numpy().astype(np.float32), mode="F").resize((64, 64), Image.BICUBIC))
    assert np.abs(y - pil)[2:-2, 2:-2].max() < 1e-5  # identical away from the border


@pytest.mark.parametrize("task", TASKS)
def test_init_estimate(task, photos64):
    op = make_operator(task, 64)
    y = op.measure(photos64)
    x0 = op.init_estimate(y)
    assert tuple(x0.shape) == tuple(photos64.shape)
    assert float(x0.min()) >= 0 and float(x0.max()) <= 1
    p0 = psnr(x0, photos64)
    assert (p0 > 15).all(), p0
    if y.shape == photos64.shape:
        assert (p0 > psnr(y, photos64)).all()


def test_errors():
    with pytest.raises(ValueError, match="inpaint_box.*sr4"):
        make_operator("deblur", 64)
    with pytest.raises(ValueError, match="image_size"):
        make_operator("sr4", 30)
    with pytest.raises(ValueError, match="noise_sigma"):
        make_operator("sr4", 64, noise_sigma=-1)
    op = make_operator("gaussian_blur", 64)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        op.A(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="64x64"):
        op.A(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        op.A(torch.rand(1, 3, 64, 64) * 2 - 1)
    with pytest.raises(ValueError, match="float"):
        op.A(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="measurement"):
        make_operator("sr4", 64).A_adjoint(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="measurement"):
        make_operator("sr4", 64).init_estimate(torch.rand(1, 3, 32, 32))
    # an iterative solver may switch the range check off; shapes are still checked
    op.check_range = False
    op.A(torch.rand(1, 3, 64, 64) * 1.5)
    with pytest.raises(ValueError):
        op.A(torch.rand(1, 3, 32, 32))


def test_unchecked_range_is_restored():
    op = make_operator("gaussian_blur", 64)
    with op.unchecked_range() as same:
        assert same is op and op.check_range is False
        op.A(torch.full((1, 3, 64, 64), 1.5))
    assert op.check_range is True
    with pytest.raises(ValueError):
        with op.unchecked_range():
            raise ValueError("inside")
    assert op.check_range is True


@pytest.mark.parametrize("task", TASKS)
def test_nan_or_inf_measurement_is_refused(task, photos64):
    op = make_operator(task, 64)
    y = op.measure(photos64)
    y[0, 2, 1, 1] = float("nan")
    y[1, 0, 3, 3] = float("-inf")
    with pytest.raises(ValueError, match=r"1 NaN and 1 infinite value\(s\).*must be finite"):
        op.init_estimate(y)
    with pytest.raises(ValueError, match="finite"):
        op.check_measurement(y)


def test_task_titles_follow_tasks():
    assert tuple(TASK_TITLES) == TASKS
    assert TASK_TITLES["sr4"] == "4x super-resolution" and TASK_TITLES["inpaint_box"] == "box inpainting"


# ----------------------------------------------------------------------------------------------
# deepinv interoperability
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_deepinv_adjointness_test(task):
    op = make_operator(task, 64, seed=1)
    assert isinstance(op, dinv.physics.LinearPhysics)
    u = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    torch.manual_seed(0)  # deepinv draws its probes from the global generator
    err = float(op.adjointness_test(u, num_samples=4))
    assert abs(err) < 1e-10, err
    assert op.check_range is True  # the probes are Gaussian: the range check was off meanwhile only


@pytest.mark.parametrize("task", TASKS)
def test_deepinv_forward_is_the_seeded_measurement(task, photos64):
    op = make_operator(task, 64, seed=2)
    assert isinstance(op.noise_model, dinv.physics.GaussianNoise)
    assert float(op.noise_model.sigma) == pytest.approx(DEFAULT_NOISE_SIGMA)
    assert torch.equal(op(photos64), op.measure(photos64))
    assert torch.equal(op.forward(photos64, indices=[5, 9]), op.measure(photos64, indices=[5, 9]))
    # another noise model is used by forward, while measure stays seeded
    op.set_noise_model(dinv.physics.ZeroNoise())
    assert torch.equal(op(photos64), op.A(photos64))
    assert not torch.equal(op.measure(photos64), op.A(photos64))
    with pytest.raises(ValueError, match="indices"):
        op.forward(photos64, indices=[0, 1])


def test_buffers_and_device():
    op = make_operator("nonuniform_blur", 64)
    assert {"kernel", "kernels", "weights"} <= set(dict(op.named_buffers()))
    assert op.to("cpu") is op and op.device == torch.device("cpu")
    assert op.kernels.dtype == torch.float64
    with pytest.raises(TypeError, match="dtype"):
        op.to(torch.float32)
    inp = make_operator("inpaint_box", 64)
    assert "observed_mask" in dict(inp.named_buffers()) and inp.kernel is None
    with pytest.raises(TypeError, match="per-call mask"):
        inp.A(torch.rand(1, 3, 64, 64), mask=torch.ones(1, 1, 64, 64))


def test_deepinv_helpers_run_on_our_operators(photos64):
    sr = make_operator("sr4", 64)
    x0 = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sq = float(sr.compute_norm(x0, verbose=False, tol=1e-6))
    with sr.unchecked_range():  # power-method vectors are not images
        ours = linalg.operator_sqnorm(sr.A, sr.A_adjoint, (3, 64, 64), iters=100)
    assert sq == pytest.approx(ours, rel=1e-3)
    # the pseudo-inverse reproduces a noiseless measurement
    y = sr.A(photos64)
    xd = sr.A_dagger(y, max_iter=200, tol=1e-8)
    with sr.unchecked_range():  # a least-squares solution need not lie in [0, 1]
        assert float((sr.A(xd) - y).abs().max()) < 1e-3


def test_deepinv_pgd_with_tv_runs_on_our_operator(photos64):
    op = make_operator("gaussian_blur", 64)
    y = op.measure(photos64.float())
    model = dinv.optim.optim_builder(iteration="PGD", prior=dinv.optim.prior.TVPrior(n_it_max=20),
                                     data_fidelity=dinv.optim.data_fidelity.L2(), max_iter=50,
                                     params_algo={"stepsize": 1.0, "lambda": 0.01})
    with op.unchecked_range():  # the iterates may leave [0, 1]
        xh = model(y, op)
    assert xh.shape == photos64.shape
    assert (psnr(xh.clamp(0, 1), photos64) > psnr(y, photos64) + 1.0).all()


def test_as_operator_wraps_deepinv_inpainting(photos64):
    x = photos64.float()
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 64, 64, generator=g) > 0.6).float()
    physics = dinv.physics.Inpainting(img_size=(3, 64, 64), mask=mask, noise_model=dinv.physics.GaussianNoise(0.025))
    op = as_operator(physics)
    assert isinstance(op, PhysicsOperator) and as_operator(op) is op
    assert op.noise_sigma == 0.025 and op.task is None and op.img_size == (3, 64, 64)
    assert torch.equal(op.observed_mask.float(), mask)
    y = physics(x)
    x0 = op.init_estimate(y)
    assert torch.allclose(x0, fill_holes(y, mask).clamp(0, 1), atol=1e-6)  # our hole filling
    assert (psnr(x0, x) > psnr(y, x) + 8).all()
    assert torch.equal(op.A(x), physics.A(x)) and torch.equal(op.A_adjoint(y), physics.A_adjoint(y))
    assert op.describe()["physics"] == "Inpainting" and json.dumps(op.describe())
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        op.A(x * 3)
    with pytest.raises(ValueError, match="measurement of shape"):
        op.init_estimate(y[..., :32])


def _gaussian_filter():
    """A 9x9 Gaussian of std 1 as a deepinv filter (1, 1, 9, 9)."""
    from varlib.operators import gaussian_kernel
    return torch.from_numpy(gaussian_kernel(9, 1.0)).float()[None, None]


@pytest.mark.parametrize("kind", ["blurfft", "downsampling"])
def test_as_operator_init_estimate_beats_adjoint_and_dagger(kind, photos64):
    x = photos64.float()
    noise = dinv.physics.GaussianNoise(0.025, rng=torch.Generator().manual_seed(0))
    if kind == "blurfft":
        physics = dinv.physics.BlurFFT(img_size=(3, 64, 64), filter=_gaussian_filter(),
                                       noise_model=noise)
    else:
        physics = dinv.physics.Downsampling(img_size=(3, 64, 64), filter="bicubic", factor=4, noise_model=noise)
    y = physics(x)
    op = as_operator(physics)
    x0 = op.init_estimate(y)
    assert x0.shape == x.shape and float(x0.min()) >= 0 and float(x0.max()) <= 1
    p0 = psnr(x0, x)
    assert (p0 > psnr(physics.A_adjoint(y).clamp(0, 1), x) + 0.5).all()
    assert (p0 > psnr(physics.A_dagger(y).clamp(0, 1), x) - 0.5).all()


def test_as_operator_errors():
    with pytest.raises(TypeError, match="LinearPhysics"):
        as_operator(object())
    with pytest.raises(TypeError, match="non-linear"):
        as_operator(dinv.physics.Physics(A=lambda v: v ** 2))
    blur = dinv.physics.Blur(filter=_gaussian_filter(), padding="reflect")
    with pytest.raises(ValueError, match="img_size"):
        as_operator(blur)
    assert as_operator(blur, y=torch.rand(1, 3, 32, 32)).img_size == (3, 32, 32)
    assert as_operator(blur, img_size=(3, 32, 32)).noise_sigma == 0.0  # ZeroNoise
    poisson = dinv.physics.BlurFFT(img_size=(3, 32, 32), filter=_gaussian_filter(),
                                   noise_model=dinv.physics.PoissonNoise(gain=0.1))
    with pytest.raises(ValueError, match="noise_sigma"):
        as_operator(poisson)
    assert as_operator(poisson, noise_sigma=0.03).noise_sigma == 0.03
    with pytest.raises(ValueError, match="unknown task"):
        as_operator(blur, img_size=(3, 32, 32), task="deblur")
    assert isinstance(make_operator("sr4", 64), Operator)


def test_import_varlib_reaches_submodules_lazily():
    """``import varlib`` alone is enough to reach the submodules, and does not import torch."""
    import os
    import subprocess
    import sys

    code = ("import sys, varlib; assert 'torch' not in sys.modules, 'import varlib imported torch'; "
            "x = varlib.data.load_images('embedded', 64, limit=1); assert tuple(x.shape) == (1, 3, 64, 64); "
            "assert varlib.operators.TASKS == varlib.TASKS and callable(varlib.linalg.cg_solve); "
            "assert callable(varlib.metrics.psnr) and callable(varlib.as_operator)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
