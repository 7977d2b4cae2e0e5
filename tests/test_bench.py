"""The benchmark runner and the method registry: resuming, cache keys, validation, tables, progress
(small and fast: 16-32 px, cheap methods)."""
import inspect
import json
from pathlib import Path

import pandas as pd
import pytest

from varlib.study import cache, cli, methods, runner
from varlib.study.params import ParamsError, load_params


def _params(**over):
    p = dict(run="t", device="cpu", images=dict(set="embedded", image_size=32, limit=2),
             tasks=["inpaint_random", "gaussian_blur"], noise_sigma=0.025, seed=0,
             methods=[{"name": "init"}, {"name": "tv", "settings": {"iters": 5}}])
    p.update(over)
    return p


def _run(tmp_path, params, **kw):
    return runner.run_benchmark(params, results_dir=tmp_path / "results", **kw)


def _jsonl(tmp_path, run="t"):
    path = tmp_path / "results" / run / "cache" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_writes_rows_images_and_tables(tmp_path):
    df = _run(tmp_path, _params())
    assert len(df) == 2 * 2 * 2  # images x tasks x methods
    assert df["key"].is_unique
    assert list(df.columns) == cache.CASE_COLUMNS
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


def test_one_progress_line_per_group(tmp_path, capsys):
    _run(tmp_path, _params(tasks=["sr4"]))
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[bench t]")]
    assert lines[0] == "[bench t] 4 cases: 0 cached, 4 to run"
    assert [x.split("  (")[0] for x in lines[1:]] == [
        "[bench t] 1/4 cases  task=sr4  method=init", "[bench t] 2/4 cases  task=sr4  method=init",
        '[bench t] 3/4 cases  task=sr4  method=tv{"iters":5}', '[bench t] 4/4 cases  task=sr4  method=tv{"iters":5}']
    assert all(x.endswith(" s)") for x in lines[1:])
    _run(tmp_path, _params(tasks=["sr4"]), verbose=False)
    assert "[bench" not in capsys.readouterr().out


def test_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch):
    params = _params()
    real = runner.call_method
    calls = []

    def flaky(spec, *args, **kwargs):
        calls.append(spec.label)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "call_method", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, params)
    first = _jsonl(tmp_path)
    assert len(first) == 2

    calls.clear()
    monkeypatch.setattr(runner, "call_method", lambda spec, *a, **k: (calls.append(spec.label), real(spec, *a, **k))[1])
    df = _run(tmp_path, params)
    assert len(calls) == 8 - 2  # only the missing cases ran
    rows = _jsonl(tmp_path)
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert rows[:2] == first  # first-run rows untouched
    assert len(df) == 8

    calls.clear()
    _run(tmp_path, params)  # nothing left to do
    assert calls == [] and len(_jsonl(tmp_path)) == 8


def test_limit_then_full_run(tmp_path):
    params = _params(tasks=["gaussian_blur"])
    assert len(_run(tmp_path, params, limit=1)) == 2
    assert len(_run(tmp_path, params)) == 4
    assert len(_jsonl(tmp_path)) == 4


def test_changed_setting_gets_new_rows_and_old_ones_stay(tmp_path):
    p1 = _params(tasks=["gaussian_blur"], methods=[{"name": "tv", "label": "tv", "settings": {"iters": 5}}])
    df1 = _run(tmp_path, p1)
    p2 = _params(tasks=["gaussian_blur"], methods=[{"name": "tv", "label": "tv", "settings": {"iters": 6}}])
    df2 = _run(tmp_path, p2)
    assert set(df1["key"]).isdisjoint(df2["key"])
    assert len(df2) == 2 and (df2["settings"] == '{"iters":6}').all()
    all_rows = cache.read_cache(tmp_path / "results" / "t")
    assert len(all_rows) == 4
    assert sorted(all_rows["settings"].unique()) == ['{"iters":5}', '{"iters":6}']
    # the tables hold only the current configuration
    cases = pd.read_csv(tmp_path / "results" / "t" / "tables" / "cases.csv")
    assert len(cases) == 2 and set(cases["key"]) == set(df2["key"])
    # a different noise level is a different case too
    df3 = _run(tmp_path, {**p1, "noise_sigma": 0.05})
    assert set(df3["key"]).isdisjoint(df1["key"])
    assert len(cache.read_cache(tmp_path / "nothing")) == 0


@pytest.mark.parametrize("change, match", [
    (dict(methods=[{"name": "nope"}]), "unknown method 'nope'.*valid methods: init, tv"),
    (dict(methods=[{"name": "tvv"}]), "unknown method 'tvv' .did you mean 'tv'"),
    (dict(tasks=["deblur"]), "unknown task.*valid tasks: inpaint_box"),
    (dict(images=dict(set="no-such-set", image_size=32)), "unknown image set"),
    (dict(images=dict(set="embedded", image_size=30)), "divisible by 4"),
    (dict(methods=[{"name": "tv", "settings": {"lambda": 1}}]), "unknown setting.*valid: lam, iters"),
    (dict(methods=[{"name": "var", "settings": {"guidance": 1}}]), "method 'var.*unknown solver setting"),
    (dict(methods=[{"name": "tv"}, {"name": "tv"}]), "used twice"),
    (dict(taks=["sr4"]), "unknown key.*taks .did you mean 'tasks'"),
    (dict(seed="zero"), "seed must be an integer"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(device="gpu"), "device must be"),
    (dict(results_dir="/tmp"), "VARLIB_RESULTS_DIR"),
])
def test_invalid_parameters_fail_before_any_work(tmp_path, change, match):
    with pytest.raises(ParamsError, match=match):
        _run(tmp_path, _params(**change))
    assert not (tmp_path / "results").exists()


def test_var_methods_through_the_solver(tmp_path):
    params = _params(prior="test", images=dict(set="embedded", image_size=16, limit=1),
                     tasks=["inpaint_random"], use_labels=True,
                     methods=[{"name": "var-injection"},
                              {"name": "var", "label": "var-2", "settings": {"num_samples": 2, "decode": "sample",
                                                                             "dc_latent_steps": 1,
                                                                             "dc_pixel_iters": 2}}])
    df = _run(tmp_path, params)
    assert list(df["method"]) == ["var-injection", "var-2"]
    assert (df["transformer_evals"] > 0).all() and (df["prior"] == "test").all()
    run = tmp_path / "results" / "t"
    assert df.loc[df["method"] == "var-2", "std_path"].map(lambda p: (run / p).is_file()).all()
    assert df.loc[df["method"] == "var-injection", "std_path"].eq("").all()
    assert json.loads(df["settings_full"].iloc[0])["use_labels"] is True


def test_with_labels_pass_of_the_var_methods(tmp_path):
    """use_labels [false, true]: every method once, the VAR methods again with the labels (+labels rows)."""
    params = _params(prior="test", images=dict(set="embedded", image_size=16, limit=1), tasks=["sr4"],
                     use_labels=[False, True], methods=[{"name": "init"}, {"name": "var-injection"}])
    df = _run(tmp_path, params)
    assert list(df["method"]) == ["init", "var-injection", "var-injection +labels"]
    run = tmp_path / "results" / "t"
    assert df["recon_path"].iloc[2].startswith("with-labels/") and (run / df["recon_path"].iloc[2]).is_file()
    assert len(pd.read_csv(run / "tables" / "cases_all.csv")) == 3
    assert [p.kind for p in runner.benchmark_passes(load_params(params))] == ["main", "with-labels"]


def test_cli_and_loaders(tmp_path, capsys):
    import yaml

    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(_params(tasks=["sr4"], methods=[{"name": "init"}])))
    cli.main(["--params", str(f), "--run", "cli", "--limit", "1", "--no-progress", "--set", "seed=1",
              "--results-dir", str(tmp_path / "elsewhere")])
    out = capsys.readouterr().out
    assert "[bench cli] 1/1 cases  task=sr4  method=init" in out and "| sr4" in out
    assert not (tmp_path / "results").exists()
    df = cache.read_cache(tmp_path / "elsewhere" / "cli")
    assert len(df) == 1 and df["run"].iloc[0] == "cli" and df["seed"].iloc[0] == 1
    s = runner.load_cases(tmp_path / "elsewhere" / "cli")
    assert list(s["key"]) == list(df["key"])


def test_the_registry_accepts_what_the_functions_take():
    """Each baseline / diffusion method accepts exactly its function's keyword settings."""
    from varlib import baselines
    from varlib.diffusion import solvers

    for m in methods.METHODS.values():
        if m.kind == "var":
            continue
        fn = getattr(baselines, m.target) if m.kind == "baseline" else solvers.METHODS[m.target]
        given = {"y", "op"} | ({"prior", "device", "seed"} if m.kind == "diffusion" else set())
        params = [k for k, v in inspect.signature(fn).parameters.items()
                  if k not in given and v.kind is not inspect.Parameter.VAR_KEYWORD]
        assert list(m.accepts) == params, m.name
        if m.kind == "diffusion":
            sig = inspect.signature(fn).parameters
            full = m.resolve({}, "sr4")
            assert full["bf16"] == sig["bf16"].default
            assert full["steps"] == sig["steps"].default if "steps" in sig else full["iters"] >= 1


def test_full_settings_per_kind():
    from varlib import baselines
    from varlib.solver import resolve_settings

    M = methods.METHODS
    assert M["init"].resolve({}, "sr4") == {}
    assert M["tv"].resolve({"iters": 5}, "sr4") == {**baselines.baseline_settings("tv", "sr4"), "iters": 5}
    assert M["dps-imagenet"].resolve({"num_steps": 10}, "sr4") == {"num_steps": 10}  # the function fills the rest
    s = M["var"].resolve({"guidance_steps": 1}, "sr4", "tiny64")
    assert s == {k: v for k, v in resolve_settings("default", "sr4", prior_name="tiny64", guidance_steps=1).items()
                 if k != "class_labels"}
    assert M["var-reference"].resolve({}, "sr4")["name"] == "reference"


def test_repository_parameter_files_are_valid():
    root = Path(__file__).resolve().parents[1] / "params"
    for name in ("smoke", "default", "diffusion", "default-gpu", "runtime"):  # offline ones
        p = load_params(root / f"{name}.yaml")
        assert p["run"] == name and p["tasks"] and all(m["name"] in methods.METHODS for m in p["methods"])


def test_diffusion_methods_use_the_given_diffusion_prior(tmp_path):
    """dps / diffpir run the embedded-style prior named by `diffusion_prior` (here a small saved test
    model), batched; the settings resolve to the per-task defaults plus the steps; the prior enters the key."""
    import torch
    from varlib.diffusion import build_diffusion_prior, save_diffusion_prior
    from varlib.diffusion.solvers import embedded_settings

    prior = build_diffusion_prior("test", seed=0)
    with torch.no_grad():  # a fresh network is the identity denoiser; perturb it so that it matters
        for k, p in enumerate(prior.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) * 0.05)
    folder = save_diffusion_prior(prior, tmp_path / "dprior")
    params = _params(diffusion_prior=str(folder), tasks=["gaussian_blur"],
                     images=dict(set="embedded", image_size=16, limit=2),
                     methods=[{"name": "init"}, {"name": "dps", "settings": {"steps": 5}},
                              {"name": "diffpir", "settings": {"steps": 4}},
                              {"name": "pnp-unet", "settings": {"iters": 3}}])
    df = _run(tmp_path, params).set_index("method")
    dps, pir, pnp = df.loc['dps{"steps":5}'], df.loc['diffpir{"steps":4}'], df.loc['pnp-unet{"iters":3}']
    assert (dps["denoiser_evals"] == 4).all() and (pir["denoiser_evals"] == 4).all()
    assert (pnp["denoiser_evals"] == 3).all() and (pnp["prior"] == str(folder)).all()
    assert json.loads(pnp["settings_full"].iloc[0]) == {"bf16": True, **embedded_settings("pnp-unet", "gaussian_blur"),
                                                         "iters": 3}
    assert json.loads(dps["settings_full"].iloc[0]) == {"steps": 5, "bf16": True, **embedded_settings("dps", "gaussian_blur")}
    assert json.loads(pir["settings_full"].iloc[0]) == {"steps": 4, "bf16": True,
                                                         **embedded_settings("diffpir", "gaussian_blur")}
    assert (dps["prior"] == str(folder)).all() and dps["prior_id"].iloc[0].startswith(str(folder) + "@")
    assert (df.loc["init", "prior"].fillna("") == "").all()
    assert df["psnr"].notna().all()
    with pytest.raises(ParamsError, match="unknown setting.*dps"):
        load_params(_params(methods=[{"name": "dps", "settings": {"num_steps": 3}}]))


def test_solver_options_at_their_neutral_value_keep_cached_rows():
    from varlib.solver import NEUTRAL_SETTINGS

    base = _params(prior="test", images=dict(set="embedded", image_size=16, limit=1), tasks=["sr4"],
                   methods=[{"name": "var-injection"}])
    names, labels = ["astronaut"], [0]
    plain = runner.plan_cases(load_params(base), names, labels)
    for key, neutral in NEUTRAL_SETTINGS.items():
        entry = {"name": "var-injection", "label": "var-injection"}
        same = runner.plan_cases(load_params({**base, "methods": [{**entry, "settings": {key: neutral}}]}), names, labels)
        assert same[0].key == plain[0].key
        other = runner.plan_cases(load_params({**base, "methods": [{**entry, "settings": {key: 0.5}}]}), names, labels)
        assert other[0].key != plain[0].key


def test_case_keys_are_frozen():
    """Keys and image names of params/smoke.yaml as the caches of finished runs hold them. (A VAR case's
    key also holds the prior's weights hash and tuned settings, which change on purpose: not frozen here.)"""
    P = load_params("params/smoke.yaml")
    cases = runner.plan_cases(P, ["astronaut", "coffee"], [-1, -1])
    assert cases[0].key == "1f6dff697f55b9f5" and (cases[0].image, cases[0].spec.label) == ("astronaut", "init")
    var = next(c for c in cases if c.spec.label == "var-short")
    assert var.prior_id.startswith("tiny64@") and var.full["guidance_steps"] == 1
    assert cache.case_key(b="x", a=1) == "ecf9e98ec0641e23"
    from varlib.operators import make_operator

    op = make_operator("inpaint_box", 64, seed=0, noise_sigma=0.025).describe()
    assert cache.gt_png_name("embedded", "astronaut", 64) == "gt_9289140b_377cfb70aab0646d.png"
    assert cache.measurement_png_name("embedded", "astronaut", 0, 64, "inpaint_box", op) == \
        "meas_inpaint_box_f429d0f1f5a1b373_9289140b_377cfb70aab0646d.png"


def test_rows_cached_without_haarpsi_get_it_from_their_pngs(tmp_path):
    first = _run(tmp_path, _params())
    assert first["haarpsi"].between(0, 1).all()
    jsonl = tmp_path / "results" / "t" / "cache" / "cases.jsonl"
    legacy = [{k: v for k, v in r.items() if k != "haarpsi"} for r in _jsonl(tmp_path)]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in legacy))
    again = _run(tmp_path, _params())  # nothing is solved again: every case is cached
    assert len(_jsonl(tmp_path)) == 2 * len(legacy)  # one newer row per legacy row, appended
    merged = first[["key", "haarpsi"]].merge(again[["key", "haarpsi"]], on="key")
    assert len(merged) == len(first) and (merged["haarpsi_x"] - merged["haarpsi_y"]).abs().max() < 2e-3
    assert runner.backfill_haarpsi(tmp_path / "results" / "t") == 0  # done once
