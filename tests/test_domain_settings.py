"""Baseline settings tuned per image domain (faces): lookup, the registry's resolution from the image
set, the benchmark passing them to the functions, and the tuner writing them."""
import json

import pytest
import torch

from varlib import baselines as bl
from varlib import tune_baselines as tb
from varlib.data import image_domain
from varlib.diffusion.solvers import embedded_settings
from varlib.operators import make_operator
from varlib.study import runner
from varlib.study.methods import METHODS, MethodSpec



def astronaut16():
    import torch.nn.functional as F
    from skimage import data

    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(16, 16), mode="area")


@pytest.fixture
def domain_file(tmp_path, monkeypatch):
    """A domain settings file of our own in place of varlib/tuned_baselines.json."""
    path = tmp_path / "tuned_baselines.json"
    path.write_text(json.dumps({"celeba": {"notes": {}, "chosen": {
        "tv": {"sr4": {"lam": 0.03, "iters": 3}},
        "pnp-unet": {"sr4": {"lam": 1.0}}}}}))
    monkeypatch.setattr(bl, "DOMAIN_SETTINGS_FILE", path)
    bl._domain_table.cache_clear()
    yield path
    bl._domain_table.cache_clear()


def test_image_domain():
    assert image_domain("celeba-val") == image_domain("celeba-train") == "celeba"
    assert image_domain("embedded") is None and image_domain("tinyimagenet-val") is None and image_domain(None) is None


def test_domain_values_override_the_defaults_only_in_their_domain(domain_file):
    default = bl.baseline_settings("tv", "sr4")
    assert bl.baseline_settings("tv", "sr4", "celeba") == {**default, "lam": 0.03, "iters": 3}
    assert bl.baseline_settings("tv", "gaussian_blur", "celeba") == bl.baseline_settings("tv", "gaussian_blur")
    assert bl.baseline_settings("tv", "sr4", "elsewhere") == default
    assert embedded_settings("pnp-unet", "sr4", "celeba")["lam"] == 1.0
    assert embedded_settings("pnp-unet", "sr4")["lam"] != 1.0
    tv = METHODS["tv"]
    assert tv.resolve({}, "sr4", "faces64", "celeba-val")["iters"] == 3
    assert tv.resolve({"iters": 7}, "sr4", "faces64", "celeba-val")["iters"] == 7  # the params' own value wins
    assert tv.resolve({}, "sr4", "tiny64", "embedded") == default
    assert METHODS["var"].resolve({}, "sr4", "tiny64", "celeba-val") == METHODS["var"].resolve({}, "sr4", "tiny64")


def test_the_benchmark_passes_the_resolved_settings_to_the_baseline(domain_file):
    """The function alone does not know the domain: the runner hands it the case's full settings."""
    op = make_operator("sr4", 16, seed=0)
    y = op.measure(astronaut16())
    spec = MethodSpec("tv", "tv")
    full = spec.method.resolve({}, "sr4", "faces64", "celeba-val")
    with_domain = runner.call_method(spec, y, op, {}, None, 0, full)
    plain = runner.call_method(spec, y, op, {}, None, 0)
    assert not torch.equal(with_domain.image, plain.image)
    assert torch.equal(with_domain.image, bl.tv_reconstruction(y, op, lam=0.03, iters=3).image)


def test_write_domain_keeps_other_methods_and_refuses_a_set_without_domain(domain_file):
    tb.write_domain("celeba-train", {"pnp-bm3d": {"sr4": {"lam": 0.3}}, "tv": {}}, "cmd", 4, domain_file.parent / "t.csv")
    table = json.loads(domain_file.read_text())["celeba"]
    assert table["chosen"]["pnp-bm3d"] == {"sr4": {"lam": 0.3}}
    assert table["chosen"]["tv"] == {"sr4": {"lam": 0.03, "iters": 3}}  # not tuned by this call: kept
    assert table["notes"]["pnp-bm3d"].startswith("cmd: 4 celeba-train images")
    with pytest.raises(ValueError, match="no domain"):
        tb.write_domain("tinyimagenet-train", {"tv": {"sr4": {}}}, "cmd", 4, domain_file.parent / "t.csv")
    with pytest.raises(ValueError, match="training split"):
        tb.tuning_images(2, 64, "celeba-val")
