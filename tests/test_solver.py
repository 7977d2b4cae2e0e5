"""The VAR solver on small real models: guidance, injection, data consistency, deepinv physics, errors."""
import deepinv as dinv
import pytest
import torch

from varlib.data import load_images
from varlib.metrics import psnr
from varlib.operators import as_operator, make_operator
from varlib.prior import build_prior, load_prior
from varlib.solver import NAMED_SETTINGS, resolve_settings, solve


def mask_physics(size: int, seed: int = 0, keep: float = 0.5) -> dinv.physics.Inpainting:
    """deepinv's inpainting with a random pixel mask (half observed) and Gaussian noise of std 0.025."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(1, 1, size, size, generator=g) > 1 - keep).float()
    noise = dinv.physics.GaussianNoise(0.025, rng=torch.Generator().manual_seed(seed))
    return dinv.physics.Inpainting(img_size=(3, size, size), mask=mask, noise_model=noise)


def MaskOperator(size: int, seed: int = 0):
    """A small inpainting problem as the solver sees it: deepinv's Inpainting through as_operator."""
    return as_operator(mask_physics(size, seed))


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    p = build_prior("test")
    # make the transformer non-trivial so logits differ between positions and scales
    with torch.no_grad():
        for b in p.transformer.blocks:
            b.ada_lin[-1].weight.add_(0.1 * torch.randn_like(b.ada_lin[-1].weight))
        p.transformer.head.weight.mul_(50)
        # spread the codebook like real latents so that codes matter
        p.tokenizer.quantize.embedding.weight.normal_(0, 1)
    return p


@pytest.fixture(scope="module")
def problem(prior):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear")  # smooth-ish images
    op = MaskOperator(16)
    return x, op, op.A(x)


def test_guidance_reduces_residual_vs_unguided(prior, problem):
    x, op, y = problem
    unguided = solve(y, op, prior, "injection_only", injection_depth=0, dc_pixel=False)
    guided = solve(y, op, prior, "guided", injection_depth=0, guidance_steps=5, guidance_strength=2.0)
    r_u = sum(unguided.extras["final_residual"])
    r_g = sum(guided.extras["final_residual"])
    assert r_g < 0.9 * r_u, (r_g, r_u)
    assert guided.decoder_evals > unguided.decoder_evals
    assert guided.transformer_evals == prior.num_scales


def test_full_injection_reproduces_reconstruction_of_initial_estimate(prior, problem):
    x, op, y = problem
    res = solve(y, op, prior, "injection_only", injection_depth=prior.num_scales)
    expected = prior.reconstruct(op.init_estimate(y))
    assert torch.allclose(res.image, expected, atol=1e-5)
    init_tokens = prior.encode(op.init_estimate(y))
    for a, b in zip(res.tokens, init_tokens):
        assert torch.equal(a, b)


def test_partial_injection_follows_observed_mask(prior, problem):
    x, op, y = problem
    res = solve(y, op, prior, "injection_only", injection_depth=1, partial_injection_depth=prior.num_scales,
                partial_injection_threshold=0.5)
    init_tokens = prior.encode(op.init_estimate(y))
    pn = prior.patch_nums[-1]
    frac = torch.nn.functional.adaptive_avg_pool2d(op.observed_mask, (pn, pn))[0, 0]
    chosen = frac >= 0.5
    assert chosen.any() and (~chosen).any()
    assert torch.equal(res.tokens[-1][:, chosen], init_tokens[-1][:, chosen])


def test_data_consistency_lowers_residual(prior, problem):
    x, op, y = problem
    plain = solve(y, op, prior, "guided")
    dc = solve(y, op, prior, "guided", dc_latent_steps=20, dc_pixel=True)
    assert sum(dc.extras["final_residual"]) < 0.5 * sum(plain.extras["final_residual"])


def test_several_samples_give_mean_std_and_best(prior, problem):
    x, op, y = problem
    res = solve(y, op, prior, "reference", num_samples=3, return_samples=True)
    assert res.samples.shape == (3, 4, 3, 16, 16)
    assert torch.allclose(res.image, res.samples.mean(0).clamp(0, 1), atol=1e-6)
    assert res.std.shape == (4, 3, 16, 16) and float(res.std.max()) > 0
    best = solve(y, op, prior, "reference", num_samples=3, select="best", return_samples=True)
    resid = (op.A(best.samples.flatten(0, 1)) - y.repeat(3, 1, 1, 1)).pow(2).flatten(1).mean(1).view(3, 4)
    idx = resid.argmin(0)
    assert torch.allclose(best.image, best.samples[idx, torch.arange(4)])


def test_same_seed_same_result_and_residual_per_scale(prior, problem):
    x, op, y = problem
    a = solve(y, op, prior, "reference", seed=3)
    b = solve(y, op, prior, "reference", seed=3)
    c = solve(y, op, prior, "reference", seed=4)
    assert torch.equal(a.image, b.image)
    assert not torch.equal(a.image, c.image)
    assert len(a.residual_per_scale) == prior.num_scales


def test_reference_settings_are_the_published_ones():
    s = resolve_settings("reference")
    assert s["cfg"] == 1.5 and s["guidance_steps"] == 1 and s["gumbel"] and s["grad_clip"] == 2.0
    assert s["lowpass"] == "reference" and s["tau_schedule"] == "reference"


def test_bad_settings_are_refused(prior, problem):
    x, op, y = problem
    with pytest.raises(ValueError, match="unknown solver settings"):
        solve(y, op, prior, "fancy")
    with pytest.raises(ValueError, match="outside the prior's schedule"):
        solve(y, op, prior, "default", injection_depth=prior.num_scales + 1)
    with pytest.raises(ValueError, match="unknown solver setting"):
        solve(y, op, prior, "default", guidance_strenght=1.0)
    with pytest.raises(ValueError, match="decode"):
        solve(y, op, prior, "default", decode="beam")
    with pytest.raises(ValueError, match="px"):
        big = MaskOperator(32)
        solve(big.A(torch.rand(1, 3, 32, 32)), big, prior)
    assert set(NAMED_SETTINGS) >= {"default", "reference", "injection_only"}


def test_several_argmax_samples_are_refused(prior, problem):
    x, op, y = problem
    with pytest.raises(ValueError, match="identical samples"):
        solve(y, op, prior, "default", num_samples=4)


def test_soft_decoding_commits_expected_codes(prior, problem):
    """decode="soft" commits the softmax-weighted code map: at a vanishing temperature it is argmax
    decoding; at temperature 1 it differs, keeps injected scales, and records argmax tokens."""
    x, op, y = problem
    hard = solve(y, op, prior, "guided", injection_depth=1, guidance_steps=1)
    cold = solve(y, op, prior, "guided", injection_depth=1, guidance_steps=1, decode="soft", temperature=1e-6)
    warm = solve(y, op, prior, "guided", injection_depth=1, guidance_steps=1, decode="soft", temperature=1.0)
    assert torch.allclose(cold.image, hard.image, atol=1e-4)
    assert not torch.allclose(warm.image, hard.image, atol=1e-3)
    assert torch.equal(warm.tokens[0], prior.encode(op.init_estimate(y))[0])
    assert all(t.shape == (4, pn, pn) for t, pn in zip(warm.tokens, prior.patch_nums))


def test_soft_decoding_keeps_partially_injected_cells(prior, problem):
    x, op, y = problem
    full = solve(y, op, prior, "injection_only", injection_depth=prior.num_scales)
    # every cell above the threshold 0 is injected: soft decoding must then reproduce full injection
    soft = solve(y, op, prior, "injection_only", injection_depth=1, partial_injection_depth=prior.num_scales,
                 partial_injection_threshold=0.0, decode="soft")
    assert torch.allclose(soft.image, full.image, atol=1e-5)


def test_pixel_step_anchor_blends_prior_and_initial_estimate(prior, problem):
    x, op, y = problem
    from varlib.solver import pixel_proximal
    # weight 0: the anchor is the initial estimate alone, so guidance settings cannot change the image
    a = solve(y, op, prior, "guided", dc_pixel=True, dc_pixel_rho=0.3, dc_pixel_prior_weight=0.0)
    b = solve(y, op, prior, "guided", dc_pixel=True, dc_pixel_rho=0.3, dc_pixel_prior_weight=0.0,
              guidance_strength=3.0, injection_depth=0)
    expected = pixel_proximal(op.init_estimate(y), y, op, 0.3)
    assert torch.allclose(a.image, expected, atol=1e-5) and torch.allclose(b.image, expected, atol=1e-5)
    # weight 1 (the default) anchors on the prior's image; 0.5 lies between, pixel for pixel (linear step)
    full = solve(y, op, prior, "guided", dc_pixel=True, dc_pixel_rho=0.3)
    half = solve(y, op, prior, "guided", dc_pixel=True, dc_pixel_rho=0.3, dc_pixel_prior_weight=0.5)
    assert not torch.allclose(full.image, expected, atol=1e-3)
    unclamped_mid = 0.5 * (full.image + expected)
    inside = (full.image > 0) & (full.image < 1) & (expected > 0) & (expected < 1)
    assert torch.allclose(half.image[inside], unclamped_mid[inside], atol=1e-4)
    with pytest.raises(ValueError, match="dc_pixel_prior_weight must be in"):
        solve(y, op, prior, "guided", dc_pixel=True, dc_pixel_prior_weight=1.5)


def test_deepinv_physics_is_adapted(prior, problem):
    """A raw deepinv physics gives the same reconstruction as its adapted operator; the adapter reads
    the noise level from the noise model and the mask for partial injection."""
    x, op, y = problem
    physics = op.physics
    assert op.noise_sigma == 0.025 and op.observed_mask.shape == (1, 1, 16, 16)
    a = solve(y, physics, prior, "guided", injection_depth=1, partial_injection_depth=prior.num_scales,
              dc_pixel=True)
    b = solve(y, op, prior, "guided", injection_depth=1, partial_injection_depth=prior.num_scales, dc_pixel=True)
    assert torch.equal(a.image, b.image)


def test_solve_on_deepinv_inpainting_with_tiny64():
    """The shipped prior on deepinv's Inpainting (70 % of the pixels missing, noise 0.025 drawn by deepinv):
    a (B, 3, 64, 64) image in [0, 1], far better than the zero-filled measurement, not worse than the
    hole filling it starts from by more than 1 dB, and close to the measurement where it observes."""
    x = load_images("embedded", 64, limit=2)
    physics = mask_physics(64, seed=3, keep=0.3)
    y = physics(x)
    res = solve(y, physics, load_prior("tiny64"), "default")
    assert res.image.shape == (2, 3, 64, 64)
    assert float(res.image.min()) >= 0 and float(res.image.max()) <= 1
    p_zero, p_solve = psnr(y, x), psnr(res.image, x)
    assert (p_solve > p_zero + 8).all(), (p_solve, p_zero)
    p_init = psnr(as_operator(physics).init_estimate(y), x)
    assert (p_solve > p_init - 1.0).all(), (p_solve, p_init)
    # the data-consistency step keeps the observed pixels near the measurement (noise 0.025)
    m = physics.mask.bool().expand_as(x)
    rmse_obs = float((res.image - y)[m].pow(2).mean().sqrt())
    assert rmse_obs < 0.05, rmse_obs


def test_nan_or_inf_measurement_is_refused(prior, problem):
    x, op, y = problem
    for bad in (float("nan"), float("inf")):
        yb = y.clone()
        yb[0, 1, 2, 3] = bad
        with pytest.raises(ValueError, match=r"NaN and .* infinite value.*must be finite"):
            solve(yb, op, prior, "guided")
    real = make_operator("gaussian_blur", 16)
    yb = real.measure(x)
    yb[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN and 0 infinite"):
        solve(yb, real, prior, "guided")


def test_something_that_is_not_a_linear_physics_is_refused(prior, problem):
    x, op, y = problem

    class DuckOperator:
        def A(self, v):
            return v

    with pytest.raises(TypeError, match="LinearPhysics"):
        solve(y, DuckOperator(), prior)
    with pytest.raises(TypeError, match="non-linear deepinv Physics"):
        solve(y, dinv.physics.Physics(A=lambda v: v ** 2), prior)
