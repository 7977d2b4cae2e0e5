"""The embedded diffusion prior (varlib.diffusion): network, schedule, denoiser interface, saving and
loading, sampling, DPS/DiffPIR with it, resumable training. Small random-weight models; no data set."""
from __future__ import annotations

import json
import math

import pytest
import torch

from varlib.diffusion import (DDPMSchedule, DiffusionPrior, build_diffusion_prior, load_diffusion_prior,
                              save_diffusion_prior, tiny64_diffusion_config)
from varlib.diffusion import test_diffusion_config as small_config  # (a name pytest would collect)
from varlib.diffusion import model as dmodel
from varlib.training import diffusion as dtrain
from varlib.diffusion.solvers import diffpir_embedded, dps_embedded, embedded_settings, pnp_unet_embedded
from varlib.operators import make_operator
from varlib.result import Result


def random_prior(seed: int = 0, scale: float = 0.05) -> DiffusionPrior:
    """The test configuration with every weight perturbed, so that outputs depend on all of them
    (a fresh network has zero output layers and is the identity denoiser)."""
    prior = build_diffusion_prior("test", seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return prior.eval()


def smooth_images(n: int = 2, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


# -- network and schedule ------------------------------------------------------------------------------
def test_parameter_counts():
    big = DiffusionPrior(tiny64_diffusion_config()).num_parameters
    small = DiffusionPrior(small_config()).num_parameters
    assert 7.0e6 <= big <= 9.0e6, big       # comparable to the tiny VAR (7.6 M + 2.8 M)
    assert 5e4 <= small <= 2e5, small


def test_unet_shapes_and_sizes():
    prior = random_prior()
    for size in (16, 32):
        x = torch.randn(2, 3, size, size)
        assert prior.eps(x, torch.tensor([3.0, 500.5])).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        prior.eps(torch.randn(1, 3, 18, 18), torch.tensor([1.0]))


def test_schedule():
    s = DDPMSchedule()
    ab = s.alphas_cumprod
    assert len(ab) == 1000 and float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)
    # deepinv's VP schedule (beta 0.1 .. 20) ends at log abar = -10.05; the discrete product at -10.12
    assert math.log(float(ab[-1])) == pytest.approx(-(0.1 + 20) / 2, rel=1e-2)
    t = torch.tensor([0.0, 10.0, 123.4, 998.0])
    assert torch.allclose(s.t_of_sigma(s.sigma_of_t(t)), t.double(), atol=1e-6)
    assert float(s.alpha_bar(-1)) == 1.0
    x0, eps = torch.randn(3, 3, 4, 4, dtype=torch.float64), torch.randn(3, 3, 4, 4, dtype=torch.float64)
    tt = torch.tensor([0, 400, 999])
    xt = s.q_sample(x0, tt, eps)
    assert torch.allclose(s.x0_from_eps(xt, tt, eps), x0, atol=1e-8)
    assert torch.allclose(s.eps_from_x0(xt, tt, x0), eps, atol=1e-8)
    # DDIM with eta = 0 from t to -1 with the true eps returns x0 exactly
    assert torch.allclose(s.ddim_step(xt[1:2], eps[1:2], 400, -1, clip=False), x0[1:2], atol=1e-8)
    ts = s.ddim_timesteps(10)
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 10


def test_denoiser_interface():
    """deepinv calls model(x, sigma) on [0, 1]; an untrained network (eps = 0) is the identity there,
    and the [0, 1] and [-1, 1] conventions agree for a trained-looking one."""
    x = smooth_images()
    fresh = build_diffusion_prior("test", seed=0).eval()
    assert torch.allclose(fresh(x, 0.1), x, atol=1e-6)
    prior = random_prior()
    with torch.no_grad():
        d01 = prior(x, torch.tensor([0.05, 0.3]))
        d11 = prior.denoise(2 * x - 1, torch.tensor([0.1, 0.6]), minus_one_one=True)
        d64 = prior(x.double(), 0.05)
    assert torch.allclose(2 * d01 - 1, d11, atol=1e-5)
    assert d64.dtype == torch.float64 and torch.allclose(d64[0].float(), d01[0], atol=1e-5)
    assert not torch.allclose(d01, x, atol=1e-3)
    # gradients flow to the input (DPS differentiates through the denoiser)
    xr = x.clone().requires_grad_(True)
    prior(xr, 0.2).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()


# -- saving and loading ----------------------------------------------------------------------------------
def test_save_load_roundtrip(tmp_path):
    prior = random_prior(3)
    dest = save_diffusion_prior(prior, tmp_path / "w", training={"steps": 0})
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["MODEL_CARD.md", "SHA256SUMS", "config.json", "model.safetensors"]
    assert json.loads((dest / "config.json").read_text())["name"] == "test"
    loaded = load_diffusion_prior(dest)
    assert loaded.config == prior.config and not loaded.training
    for k, v in prior.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[k], v.half().float()), k  # fp16 storage
    x = smooth_images()
    with torch.no_grad():
        assert torch.allclose(loaded(x, 0.1), prior(x, 0.1), atol=2e-3)


def test_checksum_error(tmp_path):
    dest = save_diffusion_prior(random_prior(), tmp_path / "w")
    data = bytearray((dest / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (dest / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_diffusion_prior(dest)


def test_missing_embedded_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(dmodel, "PACKAGE_WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_diffusion_prior("tiny64-diffusion")
    msg = str(err.value)
    assert str(tmp_path / "tiny64-diffusion") in msg and "python -m varlib.training diffusion" in msg
    with pytest.raises(FileNotFoundError):
        dps_embedded(torch.zeros(1, 3, 16, 16), make_operator("inpaint_random", 16), steps=2)


# -- sampling ------------------------------------------------------------------------------------------------
def test_sampling_is_deterministic():
    prior = random_prior()
    a = prior.sample(2, steps=5, generator=7)
    b = prior.sample(2, steps=5, generator=torch.Generator().manual_seed(7))
    c = prior.sample(2, steps=5, generator=8)
    assert a.shape == (2, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    s1 = prior.sample(1, steps=3, generator=1, eta=1.0)
    assert torch.equal(s1, prior.sample(1, steps=3, generator=1, eta=1.0))


# -- DPS and DiffPIR -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["inpaint_random", "gaussian_blur"])
@pytest.mark.parametrize("method,steps", [("dps", 20), ("diffpir", 10)])
def test_solvers_reduce_residual(task, method, steps):
    op = make_operator(task, 16, seed=0)
    x = smooth_images()
    y = op.measure(x)
    g = torch.Generator().manual_seed(5)
    start = (torch.randn(x.shape, generator=g) + 1) / 2  # the sampler's starting noise, on the [0, 1] scale
    op.check_range = False
    r_start = (op.A(start) - y).flatten(1).norm(dim=1)
    op.check_range = True
    fn = dps_embedded if method == "dps" else diffpir_embedded
    res = fn(y, op, prior=random_prior(), steps=steps, seed=0)
    assert isinstance(res, Result) and res.image.shape == x.shape
    assert torch.isfinite(res.image).all() and res.image.min() >= 0 and res.image.max() <= 1
    r_end = (op.A(res.image) - y).flatten(1).norm(dim=1)
    assert (r_end < r_start).all(), (r_start, r_end)
    assert res.denoiser_evals == (steps - 1 if method == "dps" else steps)
    assert res.seconds > 0 and res.extras["settings"]["model"] == "test"
    assert op.check_range  # restored after the solve
    again = fn(y, op, prior=random_prior(), steps=steps, seed=0)
    assert torch.equal(again.image, res.image)  # seeded


@pytest.mark.parametrize("task", ["inpaint_random", "gaussian_blur"])
def test_pnp_unet_runs_dpir_schedule_with_the_network(task):
    """PnP-UNet: one denoiser call per level, geometric levels from the task's sigma_max (tuned, or DPIR's
    49/255) down to the noise level, the data step pulls toward the measurement, deterministic; a bad
    measurement is refused."""
    op = make_operator(task, 16, seed=0)
    x = smooth_images()
    y = op.measure(x)
    prior = random_prior()
    res = pnp_unet_embedded(y, op, prior=prior, iters=4)
    assert res.image.shape == x.shape and res.image.min() >= 0 and res.image.max() <= 1
    assert res.denoiser_evals == 4 and res.extras["method"] == "pnp-unet"
    sig = res.extras["sigmas"]
    tuned = embedded_settings("pnp-unet", task)
    assert sig[0] == pytest.approx(tuned["sigma_max"]) and sig[-1] == pytest.approx(op.noise_sigma)
    assert all(a > b for a, b in zip(sig, sig[1:]))
    assert res.extras["settings"]["lam"] == tuned["lam"]
    dpir = pnp_unet_embedded(y, op, prior=prior, iters=4, sigma_max=49 / 255).extras["sigmas"]
    assert dpir[0] == pytest.approx(49 / 255) and dpir[-1] == pytest.approx(op.noise_sigma)
    residual = (op.A(res.image) - y).flatten(1).norm(dim=1)
    assert (residual < 3 * op.noise_sigma * y[0].numel() ** 0.5).all()  # consistent with y up to a few sigma
    assert torch.equal(pnp_unet_embedded(y, op, prior=prior, iters=4).image, res.image)
    with pytest.raises(ValueError, match="NaN"):
        pnp_unet_embedded(y * float("nan"), op, prior=prior, iters=2)


# -- training -----------------------------------------------------------------------------------------------------
def _images(n=8, size=16):
    return (smooth_images(n, size, seed=12) * 255).round().to(torch.uint8)


def test_training_resume_matches_straight_run(tmp_path):
    cfg = small_config()
    imgs = _images()
    kw = dict(batch=4, images=imgs, warmup=3, progress=False)
    dtrain.train(tmp_path / "a", cfg, steps=2, **kw)
    dtrain.train(tmp_path / "a", cfg, steps=4, **kw)
    dtrain.train(tmp_path / "b", cfg, steps=4, **kw)
    ca = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=False)
    cb = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)
    assert ca["step"] == cb["step"] == 4
    for key in ("model", "ema"):
        for k in cb[key]:
            assert torch.equal(ca[key][k], cb[key][k]), (key, k)
    fresh = build_diffusion_prior(cfg, seed=0).net.state_dict()
    assert any(not torch.equal(fresh[k], cb["model"][k]) for k in fresh)  # it did train
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and rows[-1].startswith("4,")
    # export and reload through the command line
    dest = tmp_path / "ship"
    dtrain.main(["--out", str(tmp_path / "b"), "--config", "test", "--export", "--dest", str(dest)])
    loaded = load_diffusion_prior(dest)
    assert "steps: 4" in (dest / "MODEL_CARD.md").read_text()
    for k, v in cb["ema"].items():
        assert torch.equal(loaded.net.state_dict()[k], v.half().float()), k


def test_training_rejects_other_config(tmp_path):
    imgs = _images()
    dtrain.train(tmp_path, small_config(), steps=1, batch=4, images=imgs, progress=False)
    other = small_config()
    other.unet.base_channels = 16
    with pytest.raises(ValueError, match="another configuration"):
        dtrain.train(tmp_path, other, steps=2, batch=4, images=imgs, progress=False)


@pytest.mark.skipif(not (dmodel.PACKAGE_WEIGHTS / "tiny64-diffusion" / "model.safetensors").exists(),
                    reason="tiny64-diffusion is not trained yet (see docs/prior.md)")
def test_shipped_weights():
    prior = load_diffusion_prior("tiny64-diffusion")
    assert prior.config.name == "tiny64-diffusion" and prior.config == tiny64_diffusion_config()
    assert (dmodel.PACKAGE_WEIGHTS / "tiny64-diffusion" / "model.safetensors").stat().st_size <= dmodel.MAX_EXPORT_BYTES
    with torch.no_grad():
        out = prior(smooth_images(1, 64), 0.1)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    # a real denoiser: on photographs it never saw, the trained network removes most of the noise
    from varlib.data import load_images
    from varlib.metrics import psnr
    x = load_images("embedded", 64)
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        den = prior(noisy, 0.1).clamp(0, 1)
    gain = float((psnr(den, x) - psnr(noisy.clamp(0, 1), x)).mean())
    assert gain > 3.0, gain
    # the bf16 path used on CPUs gives (nearly) the same estimate
    prior.bf16 = True
    with torch.no_grad():
        assert (prior(noisy, 0.1).clamp(0, 1) - den).abs().max() < 0.05
