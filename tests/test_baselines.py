"""Classical and diffusion baselines on the real operators (small real images, fixed seeds)."""
import socket

import pytest
import torch
import torch.nn.functional as F

import deepinv as dinv

from varlib import baselines as bl
from varlib import linalg
from varlib.metrics import psnr
from varlib.operators import TASKS, make_operator
from varlib.result import Result

SIZE = 32


@pytest.fixture(scope="module")
def astronaut():
    """skimage's astronaut, area-resized to SIZE px, (1, 3, SIZE, SIZE) in [0, 1]."""
    from skimage import data
    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(SIZE, SIZE), mode="area").clamp(0, 1)


def _measure(task, x):
    op = make_operator(task, SIZE, seed=0)
    return op, op.measure(x)


def test_settings_cover_every_task():
    for method, table in bl.BASELINE_SETTINGS.items():
        assert set(table) == set(TASKS), method
        for task in TASKS:
            assert bl.baseline_settings(method, task) == table[task]
            assert bl.baseline_settings(method, task) is not table[task]  # a copy


def test_initial_estimate_is_the_operators(astronaut):
    op, y = _measure("sr4", astronaut)
    r = bl.initial_estimate(y, op)
    assert isinstance(r, Result)
    torch.testing.assert_close(r.image, op.init_estimate(y))
    assert r.network_evals == 0 and r.seconds >= 0


@pytest.mark.parametrize("task", ["gaussian_blur", "inpaint_random"])
def test_tv_and_pnp_improve_on_the_initial_estimate(astronaut, task):
    op, y = _measure(task, astronaut)
    p0 = psnr(op.init_estimate(y), astronaut)[0]
    tv = bl.tv_reconstruction(y, op)
    pnp = bl.pnp_bm3d(y, op)
    for r in (tv, pnp):
        assert r.image.shape == astronaut.shape
        assert float(r.image.min()) >= 0 and float(r.image.max()) <= 1
        assert r.seconds > 0
    assert psnr(pnp.image, astronaut)[0] > p0 + 0.3, (task, p0)
    if task == "inpaint_random":
        # The operator's hole filling is a smooth interpolation, and on natural images the (converged)
        # TV interpolant of 70 % missing pixels is no better than it (see the tuning CSV): TV must
        # stay close to it and far above the zero-filled measurement.
        assert psnr(tv.image, astronaut)[0] > p0 - 1.0, (task, p0)
        assert psnr(tv.image, astronaut)[0] > psnr(y, astronaut)[0] + 8
    else:
        assert psnr(tv.image, astronaut)[0] > p0 + 0.3, (task, p0)
    s = bl.baseline_settings("pnp-bm3d", task)
    assert pnp.denoiser_evals == s["iters"]
    assert tv.extras["iterations"] == bl.baseline_settings("tv", task)["iters"]


def test_tv_decreases_its_objective(astronaut):
    op, y = _measure("sr4", astronaut)
    short = bl.tv_reconstruction(y, op, lam=0.01, iters=5)
    long = bl.tv_reconstruction(y, op, lam=0.01, iters=200)
    x0 = op.init_estimate(y)
    obj0 = float(0.5 * (op.A(x0) - y).pow(2).sum() + 0.01 * bl.tv_norm(x0).sum())
    assert long.extras["objective"][0] < short.extras["objective"][0] < obj0 * 1.05
    assert long.extras["objective"][0] < obj0


def test_tv_gradient_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 7, generator=g)
    q = torch.randn(2, 3, 2, 9, 7, generator=g)
    lhs = (bl._grad(x) * q).sum()
    rhs = (x * bl._grad_adjoint(q)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-5)


def test_operator_check_range_is_restored(astronaut):
    op, y = _measure("gaussian_blur", astronaut)
    assert op.check_range is True
    bl.pnp_bm3d(y, op, iters=1)
    assert op.check_range is True
    with pytest.raises(Exception):
        op.A(torch.full_like(astronaut, 2.0))


def test_pnp_sigma_schedule_decreases():
    s = bl.pnp_sigma_schedule(0.2, 0.02, 5)
    assert s[0] == pytest.approx(0.2) and s[-1] == pytest.approx(0.02)
    assert all(a > b for a, b in zip(s, s[1:]))
    assert bl.pnp_sigma_schedule(0.2, 0.02, 1) == [0.02]


def test_cg_solves_a_regularised_normal_equation(astronaut):
    op, y = _measure("sr4", astronaut)
    a = 0.05
    rhs = op.A_adjoint(y) + a * astronaut
    with op.unchecked_range():  # CG iterates leave [0, 1]
        x = linalg.cg_solve(lambda v: op.A_adjoint(op.A(v)) + a * v, rhs, torch.zeros_like(astronaut), 200, tol=1e-10)
        res = op.A_adjoint(op.A(x)) + a * x - rhs
    assert float(res.norm() / rhs.norm()) < 1e-4
    assert op.check_range is True


def _sqnorm(op):
    with op.unchecked_range():  # power-method vectors are not images
        return linalg.operator_sqnorm(op.A, op.A_adjoint, (3, SIZE, SIZE))


def test_operator_sqnorm():
    assert _sqnorm(make_operator("inpaint_random", SIZE)) == pytest.approx(1.0, abs=1e-3)
    assert 0 < _sqnorm(make_operator("sr4", SIZE)) < 0.2


def test_helpers_have_one_copy():
    assert not hasattr(bl, "cg_solve") and not hasattr(bl, "operator_sqnorm") and not hasattr(bl, "_unchecked")
    import varlib.operators
    assert bl.TASKS is varlib.operators.TASKS


@pytest.mark.parametrize("method", ["initial_estimate", "tv_reconstruction", "pnp_bm3d", "dps", "diffpir"])
def test_nan_or_inf_measurement_is_refused(astronaut, method):
    op, y = _measure("gaussian_blur", astronaut)
    y[0, 0, 5, 5] = float("nan")
    y[0, 1, 7, 7] = float("inf")
    with pytest.raises(ValueError, match=r"1 NaN and 1 infinite value\(s\).*must be finite"):
        getattr(bl, method)(y, op, denoiser=_SmoothDenoiser())
    assert op.check_range is True


def test_baselines_accept_a_deepinv_physics(astronaut):
    noise = dinv.physics.GaussianNoise(0.025, rng=torch.Generator().manual_seed(1))
    physics = dinv.physics.Inpainting(img_size=(3, SIZE, SIZE), mask=0.4, rng=torch.Generator().manual_seed(0),
                                      noise_model=noise)
    y = physics(astronaut)
    tv = bl.tv_reconstruction(y, physics, iters=100)
    init = bl.initial_estimate(y, physics)
    assert tv.image.shape == astronaut.shape and float(tv.image.min()) >= 0 and float(tv.image.max()) <= 1
    assert psnr(tv.image, astronaut)[0] > psnr(y, astronaut)[0] + 8
    assert psnr(init.image, astronaut)[0] > psnr(y, astronaut)[0] + 8
    with pytest.raises(TypeError, match="LinearPhysics"):
        bl.tv_reconstruction(y, lambda v: v)


class _SmoothDenoiser(torch.nn.Module):
    """A stand-in 'diffusion denoiser' D(x, sigma): a 3x3 local mean (enough to exercise the wiring)."""

    def forward(self, x, sigma, *args, **kwargs):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


@pytest.mark.parametrize("method", ["dps", "diffpir"])
def test_diffusion_baselines_run_with_a_given_denoiser(astronaut, method):
    op, y = _measure("inpaint_random", astronaut)
    fn = getattr(bl, method)
    steps = {"dps": dict(num_steps=4), "diffpir": dict(max_iter=4)}[method]
    r = fn(y, op, denoiser=_SmoothDenoiser(), **steps)
    assert r.image.shape == astronaut.shape
    assert torch.isfinite(r.image).all()
    assert 1 <= r.denoiser_evals <= 5
    assert r.extras["settings"]["model"] == "custom"


def _no_network(monkeypatch, tmp_path):
    """Empty torch hub cache and any attempt to open a connection fails at once."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("VARLIB_DIFFUSION_DIR", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("method", ["dps", "diffpir"])
def test_diffusion_baselines_offline_raise_a_clear_error(astronaut, monkeypatch, tmp_path, method):
    _no_network(monkeypatch, tmp_path)
    op, y = _measure("gaussian_blur", astronaut)
    with pytest.raises(RuntimeError) as e:
        getattr(bl, method)(y, op)
    msg = str(e.value)
    assert "adm-imagenet64-cond.pt" in msg and "huggingface.co" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    with pytest.raises(RuntimeError, match="diffusion_openai.pt"):
        getattr(bl, method)(y, op, model="diffunet-imagenet256", download=False)


def test_diffusion_weights_found_in_the_hub_cache(monkeypatch, tmp_path):
    _no_network(monkeypatch, tmp_path)
    target = tmp_path / "hub" / "checkpoints" / "diffusion_openai.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert bl.diffusion_weights_path("diffunet-imagenet256") == target
    with pytest.raises(ValueError, match="known"):
        bl.diffusion_weights_path("no-such-net")


def test_default_diffusion_model_follows_the_image_size():
    assert bl.default_diffusion_model(64) == "adm-imagenet64-cond"
    assert bl.default_diffusion_model(256) == "diffunet-imagenet256"


def test_diffusion_tuning_chooses_from_the_grid_and_resumes(tmp_path, monkeypatch):
    """python -m varlib.tune_baselines for dps/diffpir: every grid value is tried on the (here: embedded,
    16 px) tuning images with a small saved diffusion prior, the best is chosen, DPS tasks left out of the
    search borrow a tuned task's value, and a rerun takes every trial from the trial log."""
    import json as _json

    import pandas as pd

    from varlib import tune_baselines as tb
    from varlib.diffusion import solvers as dsolvers
    from varlib.data import load_images
    from varlib.diffusion import build_diffusion_prior, save_diffusion_prior

    prior = build_diffusion_prior("test", seed=0)
    with torch.no_grad():
        for k, p in enumerate(prior.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) * 0.05)
    folder = save_diffusion_prior(prior, tmp_path / "dprior")
    monkeypatch.setattr(tb, "tuning_images", lambda n, size, image_set="tinyimagenet-train": (load_images("embedded", 16)[:n], [f"img{i}" for i in range(n)]))
    monkeypatch.setattr(tb, "DIFFPIR_LAMBDAS", (1.0, 25.0))
    monkeypatch.setattr(tb, "DIFFPIR_ZETAS", (0.3,))
    monkeypatch.setattr(tb, "DPS_WEIGHTS", (0.3, 3.0))
    monkeypatch.setattr(tb, "PNP_UNET_LAMS", (0.1, 1.0))
    monkeypatch.setattr(tb, "PNP_UNET_SIGMA_MAXS", (0.2,))
    monkeypatch.setattr(tb, "PNP_UNET_ITERS", (3,))
    short = {"dps": {t: dict(weight=1.0, steps=30) for t in TASKS},  # short runs: a unit test
             "diffpir": {t: dict(lambda_=7.0, zeta=0.3, steps=10) for t in TASKS},
             "pnp-unet": {t: dict(iters=3, lam=0.23, sigma_max=0.2) for t in TASKS}}
    monkeypatch.setattr(dsolvers, "EMBEDDED_SETTINGS", short)
    out = tmp_path / "tuning"
    kw = dict(image_size=16, log=lambda m: None, name="diffusion", dps_tasks=["gaussian_blur"],
              diffusion_prior=str(folder))
    chosen = tb.tune(["diffpir", "dps", "pnp-unet"], ["gaussian_blur", "inpaint_random"], 2, out, **kw)
    df = pd.read_csv(out / "diffusion.csv")
    pir = df[(df.method == "diffpir") & (df.task == "gaussian_blur")]
    assert len(pir) == 2 and pir["chosen"].sum() == 1  # lambda 1 and 25 (zeta fixed: the same trial)
    best = pir.loc[pir["psnr_mean"].idxmax(), "settings"]
    assert _json.loads(best) == chosen["diffpir"]["gaussian_blur"]
    assert len(df[(df.method == "dps")]) == 2  # searched on gaussian_blur only
    assert chosen["dps"]["inpaint_random"] == chosen["dps"]["gaussian_blur"]
    assert chosen["dps"]["gaussian_blur"]["weight"] in (0.3, 3.0) and chosen["dps"]["gaussian_blur"]["steps"] == 30
    pnp = df[(df.method == "pnp-unet") & (df.task == "inpaint_random")]
    assert len(pnp) == 2 and chosen["pnp-unet"]["inpaint_random"]["lam"] in (0.1, 1.0)
    assert _json.loads((out / "diffusion_chosen.json").read_text())["chosen"] == chosen
    monkeypatch.setattr(tb, "evaluate", lambda *a, **k: pytest.fail("a cached trial was evaluated again"))
    assert tb.tune(["diffpir", "dps", "pnp-unet"], ["gaussian_blur", "inpaint_random"], 2, out, **kw) == chosen
