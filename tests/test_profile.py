"""varlib.study.profile: the solver's and the PnP loop's named stages show up with their time."""
import pytest
import torch

from varlib.baselines import hqs_loop
from varlib.data import load_images
from varlib.operators import make_operator
from varlib.prior import build_prior
from varlib.solver import solve
from varlib.study.profile import STAGES, stage_times


def test_stage_times_of_a_var_solve_and_a_pnp_loop():
    torch.manual_seed(0)
    prior = build_prior("test")  # 16 px
    x = load_images("embedded", 16, limit=1)
    op = make_operator("sr4", 16, seed=0)
    y = op.measure(x)
    t = stage_times(lambda: solve(y, op, prior, "default", injection_depth=1, guidance_steps=1, dc_latent_steps=2,
                                  dc_pixel_iters=2))
    for stage in ("var.encode", "var.transformer", "var.guidance", "var.latent_dc", "var.decode", "var.pixel_dc"):
        assert stage in t and t[stage] > 0, (stage, t)
    assert set(t) - {"total"} <= set(STAGES) and t["total"] >= t["var.latent_dc"]
    with op.unchecked_range():
        p = stage_times(lambda: hqs_loop(y, op, lambda v, s: v, [0.1, 0.05], lam=0.23, cg_iters=3))
    assert p["pnp.data_step"] > 0 and "pnp.denoiser" in p and not any(k.startswith("var.") for k in p)


def test_unknown_method_is_refused():
    from varlib.study import profile

    with pytest.raises(SystemExit):
        profile.main(["--methods", "dps"])
