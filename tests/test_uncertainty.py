"""The uncertainty check: correlation of the samples' per-pixel std with the error of their mean."""
import numpy as np
import pandas as pd
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


def test_coverage_of_a_calibrated_map_is_about_95_percent():
    rng = np.random.default_rng(3)
    target = rng.uniform(0, 1, (3, 64, 64))
    std = rng.uniform(0.01, 0.2, target.shape)
    c = std_error_correlation(target + std * rng.standard_normal(target.shape), std, target)
    assert c["coverage"] == pytest.approx(0.954, abs=0.01)
    over = std_error_correlation(target + 3 * std * rng.standard_normal(target.shape), std, target)
    assert over["coverage"] < 0.6  # samples that agree more than the error warrants


def test_hole_statistics_and_mmse_against_one_sample(tmp_path, monkeypatch):
    """A real run (test prior, box inpainting): the samples' std is larger in the hole than on the
    observed pixels, and the MMSE table pairs the multi-sample entry with its one-sample twin."""
    from varlib import study
    from varlib.study import runner

    monkeypatch.setenv("MPLBACKEND", "Agg")
    sampled = {"decode": "sample", "temperature": 1.0, "dc_latent_steps": 1, "dc_pixel_iters": 2}
    P = study.load_params(dict(run="holes", prior="test", device="cpu", images=dict(set="embedded", image_size=16,
                                                                                    limit=2),
                               tasks=["inpaint_box", "sr4"], noise_sigma=0.025, seed=0, methods=[
                                   {"name": "var", "label": "var-3samples", "settings": {**sampled, "num_samples": 3}},
                                   {"name": "var", "label": "var-1sample", "settings": sampled},
                                   {"name": "init"}]))
    df = runner.run_benchmark(P, results_dir=tmp_path)
    monkeypatch.setenv(study.RESULTS_ENV, str(tmp_path))
    from varlib.study.uncertainty import case_correlations

    cases = case_correlations(df, tmp_path / "holes")
    box = cases[cases["task"] == "inpaint_box"]
    assert len(box) == 2 and (box["std_hole"] > 2 * box["std_observed"]).all()
    assert cases.loc[cases["task"] == "sr4", "std_hole"].isna().all()
    assert cases["coverage"].between(0, 1).all()
    mmse = study.sample_mmse_table(df, P)
    assert list(mmse["one sample"].unique()) == ["var-1sample"] and list(mmse["images"]) == [2, 2]
    numbers = pd.read_csv(tmp_path / "holes" / "tables" / "sample_mmse.csv")
    merged = df[df["method"] == "var-3samples"].merge(df[df["method"] == "var-1sample"], on=["image", "task"])
    assert numbers["gain_db"].to_numpy() == pytest.approx(
        (merged["psnr_x"] - merged["psnr_y"]).groupby(merged["task"], sort=False).mean().to_numpy())
    assert study.sample_mmse_table(df[df["method"] != "var-1sample"], P) is None


def test_posterior_samples_figure_finds_a_named_sample_set(tmp_path, monkeypatch):
    """var-posterior sets num_samples in its named settings, not in the params entry: the figure must
    still find it, draw every sample and save itself; a run without several samples gives None."""
    import torch

    from varlib import study
    from varlib.prior import build_prior

    monkeypatch.setenv(study.RESULTS_ENV, str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)
    prior = build_prior("test")  # 16 px
    monkeypatch.setattr("varlib.prior.load_prior", lambda name: prior)
    P = study.load_params("params/smoke.yaml", run="post")
    P["images"] = {**P["images"], "image_size": 16, "limit": 1}
    # the 3-scale test prior needs a shallower injection; num_samples still comes from the named set
    P["methods"] = [{"name": "var-posterior", "label": "var-8samples", "settings": {"injection_depth": 2}}]
    fig = study.posterior_samples_figure(P, task="inpaint_box")
    assert fig is not None
    assert sum(a.get_title().startswith("sample ") for a in fig.axes) == 8
    assert (tmp_path / "post" / "figures" / "posterior_samples.png").is_file()
    P["methods"] = [{"name": "var", "label": "var"}]
    assert study.posterior_samples_figure(P, task="inpaint_box") is None
