"""The uncertainty check: correlation of the samples' per-pixel std with the error of their mean."""
import numpy as np
import pytest

from varlib.study.uncertainty import DECILES, std_error_correlation


def test_informative_map_correlates_and_its_deciles_rise():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (3, 32, 32))
    std = rng.uniform(0.01, 0.2, target.shape)
    mean = target + std * rng.standard_normal(target.shape)  # errors drawn with that std
    c = std_error_correlation(mean, std, target)
    assert 0.4 < c["pearson"] < 1 and 0.4 < c["spearman"] < 1
    d = c["error_by_decile"]
    assert len(d) == DECILES and d[-1] > 3 * d[0]
    # the expected |error| in a decile is sqrt(2/pi) times its mean std
    assert d[-1] == pytest.approx(np.sqrt(2 / np.pi) * np.sort(std.ravel())[-std.size // 10:].mean(), rel=0.15)


def test_uninformative_map_does_not_correlate():
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 1, (3, 32, 32))
    mean = target + 0.05 * rng.standard_normal(target.shape)
    std = rng.uniform(0.01, 0.2, target.shape)  # unrelated to the error
    c = std_error_correlation(mean, std, target)
    assert abs(c["pearson"]) < 0.1 and abs(c["spearman"]) < 0.1


def test_constant_map_and_bad_shapes():
    t = np.zeros((3, 8, 8))
    c = std_error_correlation(t + 0.1, np.full(t.shape, 0.2), t)
    assert np.isnan(c["pearson"]) and np.isnan(c["spearman"])
    with pytest.raises(ValueError, match="same number of values"):
        std_error_correlation(t, np.zeros((3, 4, 4)), t)


def test_table_and_figure_from_cached_maps(tmp_path, monkeypatch):
    """uncertainty_table / uncertainty_figure read the std maps and PNGs of a run folder; none without maps."""
    import pandas as pd
    from PIL import Image

    from varlib import study

    monkeypatch.setenv(study.RESULTS_ENV, str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    P = study.load_params("params/smoke.yaml", run="unc")
    img = tmp_path / "unc" / "cache" / "images"
    img.mkdir(parents=True)
    rng = np.random.default_rng(2)
    rows = []
    for im in ("a", "b"):
        gt = rng.uniform(0, 1, (16, 16, 3))
        std = rng.uniform(0.01, 0.2, (3, 16, 16)).astype(np.float32)
        mean = np.clip(gt + std.transpose(1, 2, 0) * rng.standard_normal(gt.shape), 0, 1)
        for name, arr in ((f"gt_{im}", gt), (im, mean)):
            Image.fromarray((arr * 255).round().astype(np.uint8)).save(img / f"{name}.png")
        np.save(img / f"{im}_std.npy", std)
        rows.append(dict(image=im, task="sr4", method="var-2", recon_path=f"cache/images/{im}.png",
                         gt_path=f"cache/images/gt_{im}.png", std_path=f"cache/images/{im}_std.npy"))
    df = pd.DataFrame(rows)
    table = study.uncertainty_table(df, P)
    assert list(table["method"]) == ["var-2"] and float(table["Pearson r"].iloc[0].split(" ")[0]) > 0.2
    assert study.uncertainty_figure(df, P) is not None
    assert (tmp_path / "unc" / "tables" / "uncertainty.md").is_file()
    assert (tmp_path / "unc" / "figures" / "uncertainty.png").is_file()
    assert study.uncertainty_table(df.assign(std_path=""), P) is None
