"""Acceptance test of the study: every notebook runs with params/smoke.yaml and writes its outputs.

The notebooks are executed by papermill (kernel ``python3`` of this venv) into a temporary results
folder (``$VARLIB_RESULTS_DIR``), in the order ``make all`` runs them; then every figure and table
each notebook promises (``varlib.study.NOTEBOOK_OUTPUTS``) must exist and be non-empty, and the
report must convert to HTML. About 2-3 minutes on a 2-core CPU.

The smoke params use the embedded prior ``tiny64``; without ``varlib/weights/tiny64`` the test is
skipped. ``VARLIB_TEST_PRIOR=<name or folder>`` runs it with another 64 px prior instead (e.g. a
random-weight ``tiny64`` saved with ``varlib.save_prior``; the numbers are then meaningless).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from varlib import study

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_benchmark", "02_ablation_injection", "03_ablation_guidance", "04_runtime", "05_report"]
TINY64 = REPO / "varlib" / "weights" / "tiny64" / "config.json"

pm = pytest.importorskip("papermill")


def _kernel_env(monkeypatch, results: Path) -> None:
    """What the kernel inherits: the results folder, a headless matplotlib, one thread."""
    monkeypatch.setenv(study.RESULTS_ENV, str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def _execute(name: str, out_dir: Path, params_file: Path, run: str = "smoke") -> Path:
    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3",
                        parameters={"params_file": str(params_file), "run": run}, cwd=str(REPO),
                        progress_bar=False)
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Execute the five notebooks once; yields (results root of the run, executed notebooks folder)."""
    params_file = REPO / "params" / "smoke.yaml"
    override = os.environ.get("VARLIB_TEST_PRIOR")
    tmp = tmp_path_factory.mktemp("study")
    if override:
        raw = yaml.safe_load(params_file.read_text())
        raw["prior"] = override
        params_file = tmp / "smoke.yaml"
        params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    elif not TINY64.exists():
        pytest.skip(f"the embedded prior is missing ({TINY64.relative_to(REPO)}): build it with `make prior`, "
                    "or set VARLIB_TEST_PRIOR to another 64 px prior")
    mp = pytest.MonkeyPatch()
    _kernel_env(mp, tmp / "results")
    executed = tmp / "executed"
    executed.mkdir()
    try:
        for name in NOTEBOOKS:
            _execute(name, executed, params_file)
    finally:
        mp.undo()
    yield tmp / "results" / "smoke", executed


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_outputs(smoke_run, name):
    root, executed = smoke_run
    assert (executed / f"{name}.ipynb").stat().st_size > 0
    for rel in study.NOTEBOOK_OUTPUTS[name]:
        path = root / rel
        assert path.is_file(), f"{name} did not write {rel}"
        assert path.stat().st_size > 0, f"{name} wrote an empty {rel}"
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                assert min(im.size) >= 100, f"{rel} is suspiciously small: {im.size}"


def test_benchmark_reports_each_group(smoke_run):
    """The runner's plain progress lines (one per finished group) are in the benchmark cell's output."""
    import nbformat

    _, executed = smoke_run
    nb = nbformat.read(executed / "01_benchmark.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "[bench smoke] 30 cases: 0 cached, 30 to run" in text
    assert re.search(r"\[bench smoke\] 30/30 cases  task=sr4  method=var-short-2samples  \(\d+\.\d s\)", text)


def test_tables_have_every_method_and_task(smoke_run):
    import pandas as pd

    root, _ = smoke_run
    P = study.load_params("params/smoke.yaml")
    main = pd.read_csv(root / "tables" / "main_psnr.csv", index_col=0)
    assert list(main.index) == study.method_labels(P)
    assert [f"{t} mean" for t in P["tasks"]] == [c for c in main.columns if c.endswith(" mean")][:-1]
    assert main.filter(like=" mean").notna().all().all()
    assert "±" in (root / "tables" / "main_psnr.md").read_text()
    assert r"\toprule" in (root / "tables" / "main_psnr.tex").read_text()
    inj = pd.read_csv(root / "tables" / "ablation_injection.csv", index_col=0)
    assert list(inj.index) == P["ablation"]["injection_depths"]


def test_report_converts_to_html(smoke_run):
    import nbformat
    from nbconvert import HTMLExporter

    _, executed = smoke_run
    nb = nbformat.read(executed / "05_report.ipynb", as_version=4)
    html, _ = HTMLExporter(exclude_input=True).from_notebook_node(nb)
    assert "Main results" in html and "data:image/png;base64" in html
    missing = set(re.findall(r"<code>([^<]+)</code> is missing", html))
    assert missing <= {"tables/main_lpips.md"}, missing  # LPIPS needs AlexNet weights that may be absent


def test_bad_params_make_papermill_raise(tmp_path, monkeypatch):
    """A notebook whose params cannot be used fails with the params error in the raised exception."""
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw["tasks"] = ["inpaint_box", "deblur_everything"]
    bad.write_text(yaml.safe_dump(raw))
    _kernel_env(monkeypatch, tmp_path / "results")
    with pytest.raises(pm.PapermillExecutionError) as err:
        _execute("04_runtime", tmp_path, bad, run="bad")
    assert "ParamsError" in str(err.value) and "deblur_everything" in str(err.value)
    assert not (tmp_path / "results" / "bad").exists()


def test_make_stops_on_a_failing_notebook(tmp_path):
    """make fails, shows the cell's error, and leaves no executed notebook in results/."""
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    raw["resolution"] = 64  # not a params key
    bad.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # not the outer make's
    env.update({study.RESULTS_ENV: str(tmp_path / "results"), "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    # -o: never rebuild the venv from inside the tests
    run = f"test-bad-{os.getpid()}"
    try:
        proc = subprocess.run(["make", "-o", ".venv/.stamp", "benchmark", f"PARAMS={bad}", f"RUN={run}"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(REPO / "build" / "papermill" / run, ignore_errors=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "ParamsError" in out and "resolution" in out, out[-3000:]
    assert "notebook 01_benchmark failed" in out
    assert not (tmp_path / "results" / run).exists()
