"""PSNR / SSIM agree with scikit-image; LPIPS is optional and never downloads."""
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from varlib import metrics
from varlib.data import load_images


@pytest.fixture(scope="module")
def pair():
    x = load_images("embedded", 64, limit=2).double()
    g = torch.Generator().manual_seed(0)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)
    return x, noisy


def _hwc(t):
    return t.permute(0, 2, 3, 1).numpy()


def test_psnr_matches_skimage(pair):
    x, noisy = pair
    ours = metrics.psnr(noisy, x)
    ref = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(_hwc(x), _hwc(noisy))]
    assert ours.shape == (2,) and np.allclose(ours, ref)
    assert 24 < ours.mean() < 28  # sigma 0.05 -> about 26 dB
    assert metrics.psnr(x, x)[0] == math.inf
    # a known value: a constant error of 0.1 is exactly 20 dB
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert metrics.psnr(flat + 0.1, flat)[0] == pytest.approx(20.0)


def test_ssim_matches_skimage(pair):
    x, noisy = pair
    ref = [structural_similarity(b, a, data_range=1.0, channel_axis=-1) for a, b in zip(_hwc(noisy), _hwc(x))]
    assert np.allclose(metrics.ssim(noisy, x), ref)
    ref_g = [structural_similarity(b, a, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False) for a, b in zip(_hwc(noisy), _hwc(x))]
    assert np.allclose(metrics.ssim(noisy, x, gaussian=True), ref_g)
    assert np.allclose(metrics.ssim(x, x), 1.0)


def test_errors(pair):
    x, noisy = pair
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(x, noisy[:1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metrics.ssim(x[0], noisy[0])


def test_lpips_unavailable_is_graceful(pair, tmp_path, monkeypatch):
    x, noisy = pair
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))

    def no_network(*a, **k):
        raise AssertionError("LPIPS tried to download")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    ok, reason = metrics.lpips_available()
    assert not ok and "AlexNet" in reason
    assert metrics.lpips(noisy, x) is None
    ev = metrics.evaluate(noisy, x)
    assert set(ev) == {"psnr", "ssim", "haarpsi", "lpips"} and np.isnan(ev["lpips"]).all()


def test_lpips_with_local_checkpoint(pair, tmp_path, monkeypatch):
    """A (random) AlexNet checkpoint in the hub cache is enough: LPIPS runs and loads it."""
    x, noisy = pair
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    # torchvision's AlexNet trunk: conv layers at features.0, 3, 6, 8, 10 (random values here)
    g = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    feats = {}
    for i, s in shapes.items():
        feats[f"features.{i}.weight"] = 0.05 * torch.randn(s, generator=g)
        feats[f"features.{i}.bias"] = torch.zeros(s[0])
    torch.save(feats, hub / "checkpoints" / metrics.ALEXNET_CHECKPOINT)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(metrics, "_LPIPS_MODEL", None)
    assert metrics.lpips_available() == (True, "")
    d_same = metrics.lpips(x, x)
    d_noisy = metrics.lpips(noisy, x)
    assert d_same.shape == (2,) and np.allclose(d_same, 0, atol=1e-6)
    assert (d_noisy > 0).all()
    trunk = metrics._LPIPS_MODEL[1].net.slice1[0].weight
    assert torch.equal(trunk.detach(), feats["features.0.weight"])


def test_haarpsi_is_weight_free_bounded_and_ordered(pair):
    x, noisy = pair
    assert np.allclose(metrics.haarpsi(x, x), 1.0)
    g = torch.Generator().manual_seed(1)
    noisier = (x + 0.15 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)
    mild, strong = metrics.haarpsi(noisy, x), metrics.haarpsi(noisier, x)
    assert mild.shape == (2,) and ((0 < strong) & (strong < mild) & (mild < 1)).all()
    # the 8-bit PNGs of the case cache move it by less than the tables' 3 decimals
    q = lambda t: (t * 255).round() / 255  # noqa: E731
    assert np.abs(metrics.haarpsi(q(noisy), q(x)) - mild).max() < 1e-3
    assert set(metrics.evaluate(noisy, x, with_lpips=False)) == {"psnr", "ssim", "haarpsi"}
    with pytest.raises(ValueError, match="at least 32x32"):
        metrics.haarpsi(x[:, :, :16, :16], x[:, :, :16, :16])
