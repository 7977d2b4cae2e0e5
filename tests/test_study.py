"""varlib.study without kernels: the params schema, sweeps, tables, figures, the package's exports (a few seconds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from varlib import study

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["smoke", "default", "tinyimagenet", "diffusion"]


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv(study.RESULTS_ENV, str(tmp_path / "results"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path / "results"


def test_tasks_and_titles_are_the_operators():
    from varlib import operators

    assert study.TASKS is operators.TASKS and list(study.TASK_TITLES) == list(operators.TASKS)


def test_every_exported_name_resolves():
    for name in study.__all__:
        assert getattr(study, name) is not None, name
    with pytest.raises(AttributeError):
        study.no_such_name


@pytest.mark.parametrize("name", PARAMS)
def test_shipped_params_load_with_their_passes_and_ablations(name):
    P = study.load_params(f"params/{name}.yaml")
    assert P["run"] == name and P["_source"].endswith(f"params/{name}.yaml")
    passes = study.benchmark_passes(P)
    assert [p.kind for p in passes] == (["main", "with-labels"] if isinstance(P["use_labels"], list) else ["main"])
    assert all(isinstance(p.params["use_labels"], bool) for p in passes)
    for which in ("injection", "guidance", "lowpass"):
        a = study.ablation_params(P, which)
        assert a["run"] == which and a["methods"] and "ablation" not in a
        assert study.load_params(a)["methods"] == a["methods"]  # a pass is params of the same schema


def test_paper_params_need_the_image_folders(monkeypatch, tmp_path):
    monkeypatch.delenv("IMAGENET_VAL_DIR", raising=False)
    with pytest.raises(study.ParamsError, match="IMAGENET_VAL_DIR"):
        study.load_params("params/paper.yaml")
    monkeypatch.setenv("IMAGENET_VAL_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGENET_TUNE_DIR", str(tmp_path / "tune"))
    with pytest.raises(study.ParamsError, match="unknown image set .*tune"):  # the folder must exist
        study.load_params("params/paper.yaml")
    (tmp_path / "tune").mkdir()
    P = study.load_params("params/paper.yaml")
    assert P["images"]["set"] == str(tmp_path) and P["prior"] == "var-d16" and P["images"]["image_size"] == 256
    assert {"dps-imagenet", "diffpir-imagenet"} <= {m["name"] for m in P["methods"]}
    assert [m["settings"]["injection_depth"] for m in study.injection_sweep(P)] == list(range(11))


def test_overrides_run_and_limit():
    P = study.load_params("params/smoke.yaml", overrides=["images.limit=1", "tasks=[sr4]"], run="other", limit=1)
    assert P["images"]["limit"] == 1 and P["tasks"] == ["sr4"] and P["run"] == "other"
    P = study.load_params("params/smoke.yaml", overrides={"ablation.guidance_steps": [2]})
    assert {m["settings"]["guidance_steps"] for m in study.guidance_sweep(P)} == {2}


@pytest.mark.parametrize("change, message", [
    ({"tasks": ["sr4", "sr8"]}, "unknown task.*'sr8'"),
    ({"colour": 1}, "unknown key"),
    ({"taks": ["sr4"]}, "did you mean 'tasks'"),
    ({"results_dir": "/tmp"}, study.RESULTS_ENV),
    ({"run": "a/b"}, "plain folder name"),
    ({"methods": [{"name": "tv"}, {"name": "tv"}]}, "used twice"),
    ({"methods": [{"name": "tv", "lable": "x"}]}, "unknown key.*lable"),
    ({"methods": []}, "non-empty list"),
    ({"use_labels": "yes"}, "use_labels"),
    ({"noise_sigma": "low"}, "noise_sigma must be a number"),
    ({"images": {"set": "embedded", "size": 64}}, "unknown images key.*size"),
    ({"images": {"set": "kodak", "image_size": 64}}, "unknown image set 'kodak'"),
    ({"gallery": {"imgae": "astronaut"}}, "gallery key"),
    ({"ablation": {"depths": [1]}}, "unknown ablation key"),
    ({"ablation": {"method": "tv-long"}}, "not among the methods"),
    ({"ablation": {"guidance_steps": [1.5]}}, "guidance_steps must be a non-empty list"),
    ({"ablation": {"tasks": ["sr5"]}}, "unknown task"),
])
def test_bad_params_say_what_is_wrong(tmp_path, change, message):
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw.update(change)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(study.ParamsError, match=message):
        study.load_params(path)


def test_missing_params_file_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="params/smoke.yaml"):
        study.load_params("params/nope.yaml")


def test_sweeps_keep_the_method_settings():
    P = study.load_params("params/smoke.yaml")
    inj = study.injection_sweep(P)
    assert [m["label"] for m in inj] == ["depth 0", "depth 2", "depth 5"]
    assert all(m["name"] == "var" and m["settings"]["guidance_steps"] == 1 for m in inj)
    g = study.guidance_sweep({**P, "ablation": {**P["ablation"], "guidance_steps": [1, 3]}})
    # strength 0 (no guidance) is run once, not once per number of steps
    assert sum(m["settings"]["guidance_strength"] == 0 for m in g) == 1
    assert len(g) == 1 + 2 * 2
    D = study.load_params("params/default.yaml")
    assert [m["settings"]["injection_depth"] for m in study.injection_sweep(D)] == [0, 1, 2, 3, 4, 5]
    assert study.ablation_params(D, "injection")["images"]["limit"] == 1


def _fake_cases(methods, tasks, images=("a", "b", "c"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i, im in enumerate(images):
        for t in tasks:
            for k, m in enumerate(methods):
                rows.append(dict(image=im, image_index=i, task=t, method=m, psnr=20 + k + rng.normal(),
                                 ssim=0.5 + 0.1 * k, lpips=np.nan, seconds=10.0 ** (k - 2),
                                 transformer_evals=5 * k, decoder_evals=k, denoiser_evals=0))
    return pd.DataFrame(rows)


def test_metric_table_mean_std_and_best(results):
    P = study.load_params("params/smoke.yaml")
    df = _fake_cases(study.method_labels(P), P["tasks"])
    numbers, display = study.metric_table(df, "psnr", P)
    assert list(numbers.index) == study.method_labels(P)
    sr = df[(df.task == "sr4") & (df.method == "var-short")].psnr
    assert numbers.loc["var-short", "sr4 mean"] == pytest.approx(sr.mean())
    assert numbers.loc["var-short", "sr4 std"] == pytest.approx(sr.std(ddof=1))
    best = study.method_labels(P)[-1]  # the fake PSNR rises with the method's position
    assert display.loc[best, "4x super-resolution"].startswith("**")  # best (highest) in bold
    assert not display.loc["var-short", "4x super-resolution"].startswith("**")
    _, secs = study.metric_table(df, "seconds", P)
    assert secs.loc["init", "4x super-resolution"].startswith("**")  # lowest time is best
    tables = study.main_tables(df, P)
    assert set(tables) == {"psnr", "ssim", "seconds"}  # LPIPS all empty: no table
    tex = (results / "smoke" / "tables" / "main_psnr.tex").read_text()
    assert r"\textbf{" in tex and r"$\pm$" in tex and "var-short" in tex


def test_figures_are_written_as_png_and_pdf(results):
    P = study.load_params("params/smoke.yaml")
    df = _fake_cases(study.method_labels(P), P["tasks"])
    study.write_runtime_outputs(df, P)
    study.metric_bars_figure(df, P)
    inj = study.injection_sweep(P)
    rows = [dict(image="a", task="sr4", method=m["label"], psnr=20.0 + i, seconds=1.0 + i, ssim=0.5)
            for i, m in enumerate(inj)]
    dfi = study.annotate_sweep(pd.DataFrame(rows), inj)
    study.injection_figure(dfi, P)
    study.ablation_table(dfi, P, "injection")
    g = study.guidance_sweep(P)
    rows = [dict(image="a", task="sr4", method=m["label"], psnr=20.0 + i, seconds=1.0, ssim=0.5)
            for i, m in enumerate(g)]
    dfg = study.annotate_sweep(pd.DataFrame(rows), g)
    study.guidance_figure(dfg, P)
    study.ablation_table(dfg, P, "guidance")
    lp = study.lowpass_sweep(P)
    assert [m["settings"]["lowpass"] for m in lp] == ["none", "reference"]
    assert all(m["settings"]["guidance_steps"] == 1 for m in lp)  # the ablated method's settings stay
    rows = [dict(image=im, task="sr4", method=m["label"], psnr=20.0 + i + j, seconds=1.0, ssim=0.5)
            for i, m in enumerate(lp) for j, im in enumerate("ab")]
    dfl = study.annotate_sweep(pd.DataFrame(rows), lp)
    assert list(dfl["lowpass"]) == ["none", "none", "reference", "reference"]
    study.lowpass_figure(dfl, P)
    table = study.ablation_table(dfl, P, "lowpass")
    assert list(table["residual low-pass"]) == ["none", "reference"]
    assert table["4x super-resolution"].iloc[1].startswith("21.50")  # mean of 21 and 22
    root = results / "smoke"
    for stem in ("runtime", "quality_vs_time", "bars_psnr", "ablation_injection", "ablation_guidance",
                 "ablation_lowpass"):
        for ext in ("png", "pdf"):
            assert (root / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    for stem in ("runtime", "ablation_injection", "ablation_guidance", "ablation_lowpass"):
        for ext in ("csv", "md", "tex"):
            assert (root / "tables" / f"{stem}.{ext}").stat().st_size > 0
    assert not list(root.rglob("*.tmp"))


def test_defaults_are_filled_in():
    P = study.load_params({"images": {"set": "embedded"}, "methods": ["init", {"name": "tv", "settings": {"iters": 3}}]})
    assert P["run"] == "default" and P["tasks"] == list(study.TASKS) and P["images"]["image_size"] == 64
    assert (P["prior"], P["noise_sigma"], P["seed"], P["use_labels"], P["batch_size"]) == ("tiny64", 0.025, 0, False, 8)
    assert [m["label"] for m in P["methods"]] == ["init", 'tv{"iters":3}']


def test_only_the_cli_imports_the_study_from_outside():
    """varlib.study sits on top of the library: no other module of varlib imports it (but the CLI)."""
    import ast

    bad = []
    for path in (REPO / "varlib").rglob("*.py"):
        rel = path.relative_to(REPO / "varlib")
        if rel.parts[0] == "study" or rel.as_posix() in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any("study" in n.split(".") for n in names) or \
                    (isinstance(node, ast.ImportFrom) and any(a.name == "study" for a in node.names)):
                bad.append(f"{rel}:{node.lineno}")
    assert not bad, bad


def test_load_cases_says_which_notebook_to_run(results):
    with pytest.raises(FileNotFoundError, match="01_benchmark"):
        study.load_cases("nothing-here")


def test_notebooks_are_generated_from_generate_py(tmp_path):
    """notebooks/*.ipynb are what notebooks/generate.py writes, and each has a `parameters` cell."""
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("gen", REPO / "notebooks" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path in gen.build(tmp_path):
        shipped = REPO / "notebooks" / path.name
        assert shipped.read_text() == path.read_text(), f"{shipped} is stale: run notebooks/generate.py"
        nb = nbformat.read(shipped, as_version=4)
        nbformat.validate(nb)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and 'params_file = "params/default.yaml"' in tagged[0].source


def test_ladder_table_gains_and_figure(results):
    """The ladder: rungs in the params' order, the PSNR gained over the rung below, the rung that adds the
    most per task, on the images every rung ran on; a ladder naming no method is refused."""
    base = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    rungs = ["init", "var-injection", "var-short"]
    P = study.load_params({**base, "run": "smoke", "ladder": rungs})
    df = _fake_cases(study.method_labels(P), P["tasks"])
    df = df[~((df.method == "var-short") & (df.image == "c"))]  # one rung ran on fewer images
    from varlib.study.ladder import ladder_gains, ladder_numbers

    numbers = ladder_numbers(df, P)
    assert list(numbers["method"].unique()) == rungs and (numbers["n"] == 2).all()
    sr = numbers[numbers.task == "sr4"].set_index("method")
    ab = df[(df.task == "sr4") & df.image.isin(["a", "b"])].groupby("method")["psnr"].mean()
    assert sr.loc["var-short", "gain_db"] == pytest.approx(ab["var-short"] - ab["var-injection"])
    assert np.isnan(sr.loc["init", "gain_db"])
    gains = ladder_gains(numbers)
    assert len(gains) == len(P["tasks"]) and set(gains["largest gain from"]) <= set(rungs[1:])
    display = study.ladder_table(df, P)
    assert list(display.columns[:3]) == ["task", "rung", "PSNR (dB)"]
    assert (results / "smoke" / "tables" / "ladder.md").is_file()
    study.ladder_figure(df, P)
    assert (results / "smoke" / "figures" / "ladder.png").is_file()
    assert study.ladder_table(df, study.load_params("params/smoke.yaml")) is None  # no ladder key
    with pytest.raises(study.ParamsError, match="ladder"):
        study.load_params({**base, "ladder": ["init", "nonexistent"]})
