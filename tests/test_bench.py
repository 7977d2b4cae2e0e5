"""The benchmark runner: resuming, cache keys, validation, tables (small and fast: 32 px, cheap methods)."""
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from varlib import bench


def _params(tmp_path, **over):
    p = dict(run="t", results_dir=str(tmp_path / "results"), device="cpu",
             images=dict(set="embedded", image_size=32, limit=2),
             tasks=["inpaint_random", "gaussian_blur"], noise_sigma=0.025, seed=0,
             methods=[{"name": "init"}, {"name": "tv", "settings": {"iters": 5}}])
    p.update(over)
    return p


def _jsonl(tmp_path, run="t"):
    path = tmp_path / "results" / run / "cache" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_writes_rows_images_and_tables(tmp_path):
    df = bench.run_benchmark(_params(tmp_path), progress=False)
    assert len(df) == 2 * 2 * 2  # images x tasks x methods
    assert df["key"].is_unique
    for col in ("image", "task", "method", "settings", "psnr", "ssim", "lpips", "seconds", "network_evals",
                "peak_mem_mb", "residual", "seed", "noise_sigma", "prior", "git_commit"):
        assert col in df.columns, col
    assert set(df["method"]) == {"init", 'tv{"iters":5}'}
    assert (df["psnr"] > 5).all() and (df["residual"] > 0).all()
    run = tmp_path / "results" / "t"
    for rel in list(df["recon_path"]) + list(df["gt_path"]) + list(df["measurement_path"]):
        assert (run / rel).is_file(), rel
    tables = run / "tables"
    for name in ("cases.csv", "summary.csv", "summary.md", "summary.tex"):
        assert (tables / name).is_file()
    assert not list(run.rglob("*.tmp*"))  # atomic writes leave nothing behind
    summary = pd.read_csv(tables / "summary.csv")
    assert len(summary) == 4 and (summary["n"] == 2).all()
    assert list(summary["task"]) == ["inpaint_random", "inpaint_random", "gaussian_blur", "gaussian_blur"]
    assert "±" in (tables / "summary.md").read_text()
    assert r"\pm" in (tables / "summary.tex").read_text()
    assert len(pd.read_csv(tables / "cases.csv")) == 8
    # the measurement is shared by the methods of an (image, task)
    assert df.groupby(["image", "task"])["measurement_path"].nunique().eq(1).all()


def test_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch):
    params = _params(tmp_path)
    real = bench._call_method
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[0].label)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "_call_method", flaky)
    with pytest.raises(KeyboardInterrupt):
        bench.run_benchmark(params, progress=False)
    first = _jsonl(tmp_path)
    assert len(first) == 2

    calls.clear()
    monkeypatch.setattr(bench, "_call_method", lambda *a, **k: (calls.append(a[0].label), real(*a, **k))[1])
    df = bench.run_benchmark(params, progress=False)
    assert len(calls) == 8 - 2  # only the missing cases ran
    rows = _jsonl(tmp_path)
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert rows[:2] == first  # first-run rows untouched
    assert len(df) == 8

    calls.clear()
    bench.run_benchmark(params, progress=False)  # nothing left to do
    assert calls == [] and len(_jsonl(tmp_path)) == 8


def test_limit_then_full_run(tmp_path):
    params = _params(tmp_path, tasks=["gaussian_blur"])
    assert len(bench.run_benchmark(params, limit=1, progress=False)) == 2
    assert len(bench.run_benchmark(params, progress=False)) == 4
    assert len(_jsonl(tmp_path)) == 4


def test_changed_setting_gets_new_rows_and_old_ones_stay(tmp_path):
    p1 = _params(tmp_path, tasks=["gaussian_blur"], methods=[{"name": "tv", "label": "tv", "settings": {"iters": 5}}])
    df1 = bench.run_benchmark(p1, progress=False)
    p2 = _params(tmp_path, tasks=["gaussian_blur"], methods=[{"name": "tv", "label": "tv", "settings": {"iters": 6}}])
    df2 = bench.run_benchmark(p2, progress=False)
    assert set(df1["key"]).isdisjoint(df2["key"])
    assert len(df2) == 2 and (df2["settings"] == '{"iters":6}').all()
    all_rows = bench.load_cases(tmp_path / "results" / "t")
    assert len(all_rows) == 4
    assert sorted(all_rows["settings"].unique()) == ['{"iters":5}', '{"iters":6}']
    # the tables hold only the current configuration
    cases = pd.read_csv(tmp_path / "results" / "t" / "tables" / "cases.csv")
    assert len(cases) == 2 and set(cases["key"]) == set(df2["key"])
    # a different noise level is a different case too
    df3 = bench.run_benchmark({**p1, "noise_sigma": 0.05}, progress=False)
    assert set(df3["key"]).isdisjoint(df1["key"])


@pytest.mark.parametrize("change, match", [
    (dict(methods=[{"name": "nope"}]), "unknown method 'nope'.*valid methods: init, tv"),
    (dict(tasks=["deblur"]), "unknown task.*valid tasks: inpaint_box"),
    (dict(images=dict(set="no-such-set", image_size=32)), "unknown image set"),
    (dict(methods=[{"name": "tv", "settings": {"lambda": 1}}]), "unknown setting.*lam"),
    (dict(methods=[{"name": "tv"}, {"name": "tv"}]), "used twice"),
    (dict(taks=["sr4"]), "unknown parameter 'taks' .did you mean 'tasks'"),
])
def test_invalid_parameters_fail_before_any_work(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        bench.run_benchmark(_params(tmp_path, **change), progress=False)
    assert not (tmp_path / "results").exists()


def test_var_methods_through_the_solver(tmp_path):
    pytest.importorskip("varlib.solver")
    params = _params(tmp_path, prior="test", images=dict(set="embedded", image_size=16, limit=1),
                     tasks=["inpaint_random"], use_labels=True,
                     methods=[{"name": "var-injection"},
                              {"name": "var", "label": "var-2", "settings": {"num_samples": 2, "decode": "sample", "dc_latent_steps": 1,
                                                                             "dc_pixel_iters": 2}}])
    df = bench.run_benchmark(params, progress=False)
    assert list(df["method"]) == ["var-injection", "var-2"]
    assert (df["transformer_evals"] > 0).all() and (df["prior"] == "test").all()
    run = tmp_path / "results" / "t"
    assert df.loc[df["method"] == "var-2", "std_path"].map(lambda p: (run / p).is_file()).all()
    assert df.loc[df["method"] == "var-injection", "std_path"].eq("").all()
    assert json.loads(df["settings_full"].iloc[0])["use_labels"] is True


def test_yaml_cli_and_loaders(tmp_path):
    import yaml
    p = _params(tmp_path, tasks=["sr4"], methods=[{"name": "init"}])
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(p))
    bench.main(["--params", str(f), "--run", "cli", "--limit", "1", "--no-progress",
                "--results-dir", str(tmp_path / "elsewhere")])
    assert not (tmp_path / "results").exists()
    df = bench.load_cases(tmp_path / "elsewhere" / "cli")
    assert len(df) == 1 and df["run"].iloc[0] == "cli"
    s = bench.summarize(df)
    assert list(s.columns[:3]) == ["task", "method", "n"] and s["psnr_mean"].iloc[0] == df["psnr"].iloc[0]
    assert len(bench.load_cases(tmp_path / "nothing")) == 0


def test_keys_for_other_tools_are_ignored(tmp_path):
    with pytest.warns(UserWarning) as record:
        p = bench.load_params(_params(tmp_path, ablation={"method": "var"}, use_labels=[False, True]))
    messages = " ".join(str(w.message) for w in record)
    assert "ignores the parameter(s) ['ablation']" in messages and "use_labels=False only" in messages
    assert "ablation" not in p and p["use_labels"] is False


def test_repository_parameter_files_are_valid():
    root = Path(__file__).resolve().parents[1] / "params"
    for name in ("smoke.yaml", "default.yaml", "diffusion.yaml", "default-gpu.yaml"):  # offline (others need downloaded image sets)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # keys for varlib.study
            p = bench.load_params(root / name)
        assert p["tasks"] and all(m["name"] in bench.METHODS for m in p["methods"])


def test_diffusion_methods_use_the_given_diffusion_prior(tmp_path):
    """dps / diffpir run the embedded-style prior named by `diffusion_prior` (here a small saved test
    model), batched; the settings resolve to the per-task defaults plus the steps; the prior enters the key."""
    import torch
    from varlib.diffusion import build_diffusion_prior, save_diffusion_prior

    prior = build_diffusion_prior("test", seed=0)
    with torch.no_grad():  # a fresh network is the identity denoiser; perturb it so that it matters
        for k, p in enumerate(prior.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) * 0.05)
    folder = save_diffusion_prior(prior, tmp_path / "dprior")
    params = _params(tmp_path, diffusion_prior=str(folder), tasks=["gaussian_blur"],
                     images=dict(set="embedded", image_size=16, limit=2),
                     methods=[{"name": "init"}, {"name": "dps", "settings": {"steps": 5}},
                              {"name": "diffpir", "settings": {"steps": 4}}])
    df = bench.run_benchmark(params, progress=False).set_index("method")
    dps, pir = df.loc['dps{"steps":5}'], df.loc['diffpir{"steps":4}']
    assert (dps["denoiser_evals"] == 4).all() and (pir["denoiser_evals"] == 4).all()
    from varlib.diffusion.solvers import embedded_settings
    assert json.loads(dps["settings_full"].iloc[0]) == {"steps": 5, "bf16": True, **embedded_settings("dps", "gaussian_blur")}
    assert json.loads(pir["settings_full"].iloc[0]) == {"steps": 4, "bf16": True,
                                                         **embedded_settings("diffpir", "gaussian_blur")}
    assert (dps["prior"] == str(folder)).all() and dps["prior_id"].iloc[0].startswith(str(folder) + "@")
    assert (df.loc["init", "prior"].fillna("") == "").all()
    assert df["psnr"].notna().all()
    with pytest.raises(ValueError, match="unknown setting.*dps"):
        bench.load_params(_params(tmp_path, methods=[{"name": "dps", "settings": {"num_steps": 3}}]))


def test_solver_options_at_their_neutral_value_keep_cached_rows(tmp_path):
    from varlib.solver import NEUTRAL_SETTINGS
    base = _params(tmp_path, prior="test", images=dict(set="embedded", image_size=16, limit=1), tasks=["sr4"],
                   methods=[{"name": "var-injection"}])
    names, labels = ["astronaut"], [0]
    plain = bench.plan_cases(bench.load_params(base), names, labels)
    for key, neutral in NEUTRAL_SETTINGS.items():
        same = bench.plan_cases(bench.load_params({**base, "methods": [{"name": "var-injection", "label": "var-injection",
                                                                       "settings": {key: neutral}}]}), names, labels)
        assert same[0]["key"] == plain[0]["key"]
        other = bench.plan_cases(bench.load_params({**base, "methods": [{"name": "var-injection", "label": "var-injection",
                                                                        "settings": {key: 0.5}}]}), names, labels)
        assert other[0]["key"] != plain[0]["key"]
