"""Write the study notebooks (``notebooks/0*.ipynb``) from the cell lists below.

    .venv/bin/python notebooks/generate.py

The notebooks are thin on purpose: a ``parameters`` cell (papermill replaces it), calls into the
:mod:`varlib.study` package, and the tables and figures shown inline. Edit the cells here, not in the
.ipynb files, and rerun this script; ``make`` then re-executes the notebooks that changed.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# Parameters (papermill replaces this cell; make passes params_file and run)
params_file = "params/default.yaml"  # the configuration, one of params/*.yaml
run = None  # results folder name; None means the run given in the params file
limit = None  # use only the first N images; None means as in the params file'''

SETUP = '''\
%matplotlib inline
from IPython.display import Markdown, display
from varlib import study

P = study.load_params(params_file, run=run, limit=limit)
paths = study.study_paths(P)
print(f"run {P['run']!r} from {P['_source']} -> {paths.root}")'''


def md(text: str):
    return new_markdown_cell(text.strip())


def code(src: str, tags=()):
    c = new_code_cell(src.strip())
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def head(title: str, text: str) -> list:
    return [md(f"# {title}\n\n{text.strip()}"), code(PARAMETERS, tags=["parameters"]), code(SETUP)]


NOTEBOOKS = {
    "01_benchmark": head("Benchmark", """
Every method of the params file on every image and task: the per-case table, the main tables
(mean ± std over images per method and task) and the qualitative galleries.

Finished cases are cached in `results/<run>/cache/`, so rerunning this notebook after an interruption
resumes where it stopped.""") + [
        code("""
df = study.run_benchmark(P)
print(f"{len(df)} cases: {df['image'].nunique()} images x {df['task'].nunique()} tasks x {df['method'].nunique()} methods")
df[["image", "task", "method", "psnr", "ssim", "haarpsi", "lpips", "seconds", "network_evals"]].head(8)"""),
        md("## Main tables\n\nMean ± std over images; best per task in bold. Written to `tables/main_<metric>.{csv,md,tex}`."),
        code("""
tables = study.main_tables(df, P)
for metric, table in tables.items():
    display(Markdown(f"### {study.METRICS[metric][0]}"))
    display(Markdown(table.to_markdown()))"""),
        md("""
## Targets

Each aim of the study that this run can measure, with its number, met or not (`tables/targets`)."""),
        code("""
targets = study.write_targets(df, P)
display(Markdown(targets.drop(columns=["value"]).to_markdown(index=False)) if targets is not None
        else Markdown("no target applies to this run's methods"))"""),
        md("## PSNR per task"),
        code("study.metric_bars_figure(df, P, 'psnr');"),
        md("""
## The component ladder

Each rung adds one part of the VAR solver to the rung before it (the params' `ladder`), each at its
own tuned settings: which component does the gain come from, per task?"""),
        code("""
ladder = study.ladder_table(df, P)
if ladder is None:
    print("no `ladder` in these params")
else:
    display(Markdown(ladder.to_markdown(index=False)))
    from varlib.study.ladder import ladder_gains, ladder_numbers
    display(Markdown(ladder_gains(ladder_numbers(df, P)).to_markdown(index=False, floatfmt=".2f")))
    study.ladder_figure(df, P)"""),
        md("## Galleries\n\nGround truth, measurement (x4 SR shown up-sampled, missing pixels black) and each output with its PSNR."),
        code("""
g = P.get("gallery") or {}
study.gallery_figure(df, P, rows="tasks", image=g.get("image"), name="gallery_tasks");"""),
        code("""study.gallery_figure(df, P, rows="images", task=g.get("task"), name="gallery_images",
                     max_images=g.get("max_images", 6));"""),
        md("""
## Uncertainty

For a method run with several samples per measurement, does the per-pixel standard deviation of the
samples point at the pixels where their mean is wrong? Pearson and Spearman correlation between the
two over all pixels of each image, the mean error per decile of the standard deviation, the coverage
(share of pixel values within 2 std of the truth), and for inpainting the std inside the hole and on
the observed pixels."""),
        code("""
unc = study.uncertainty_table(df, P)
if unc is None:
    print("no method with several samples (num_samples > 1) in this run")
else:
    display(Markdown(unc.to_markdown(index=False)))
    study.uncertainty_figure(df, P, image=g.get("image"), task=g.get("task"))"""),
        md("""
The samples' mean (the MMSE estimate) against a single sample drawn with the same settings (present
when the params have such an entry, e.g. `var-1sample` beside `var-8samples`):"""),
        code("""
mmse = study.sample_mmse_table(df, P)
print("no single-sample twin of a multi-sample entry in this run") if mmse is None else display(Markdown(mmse.to_markdown(index=False)))"""),
        md("""
The samples themselves for the gallery image and task (drawn again: the benchmark keeps only their mean
and standard deviation)."""),
        code("""
if study.posterior_samples_figure(P, image=g.get("image"), task=g.get("task", "inpaint_box")) is None:
    print("no method with several samples (num_samples > 1) in this run")"""),
    ],
    "02_ablation_injection": head("Ablation: injection depth", """
How many of the prior's coarse scales are taken from the tokenised initial estimate (hard token
injection), from 0 (none) to all of them. Runs on the images given under `ablation:` in the params
file; the dotted line marks the depth the benchmark uses.""") + [
        code("""
methods = study.injection_sweep(P)
print("sweep:", ", ".join(m["label"] for m in methods))
df = study.run_ablation(P, "injection")
print(f"{len(df)} cases")"""),
        code("""display(Markdown(study.ablation_table(df, P, "injection").to_markdown(index=False)))"""),
        code("""study.injection_figure(df, P);"""),
    ],
    "03_ablation_guidance": head("Ablation: guidance strength and steps", """
The measurement-guided logit refinement: its strength (step per unit-RMS gradient) and the number of
refinement steps per scale. Runs on the images given under `ablation:`; the dotted line and the star
mark the benchmark's setting.""") + [
        code("""
methods = study.guidance_sweep(P)
print("sweep:", "; ".join(m["label"] for m in methods))
df = study.run_ablation(P, "guidance")
print(f"{len(df)} cases")"""),
        code("""display(Markdown(study.ablation_table(df, P, "guidance").to_markdown(index=False)))"""),
        code("""study.guidance_figure(df, P);"""),
        md("""
## Residual low-pass: the reference's choice against the raw measurement

The reference method low-passes both `A(x)` and `y` before the guidance loss at coarse scales (box
filter 9 -> 1 px and pooling 4 -> 1 with the scale ratio). Our default uses the raw measurement. Same images,
same method, only `lowpass` changes."""),
        code("""
df_lp = study.run_ablation(P, "lowpass")
display(Markdown(study.ablation_table(df_lp, P, "lowpass").to_markdown(index=False)))"""),
        code("""study.lowpass_figure(df_lp, P);"""),
    ],
    "04_runtime": head("Runtime", """
Cost per image of every method, from the benchmark's per-case table (run `01_benchmark` first):
wall time, network evaluations (transformer, decoder and denoiser calls) and peak memory, and
quality against time.""") + [
        code("""
df = study.load_cases(P)
out = study.write_runtime_outputs(df, P)
display(Markdown(out["table"].to_markdown()))"""),
    ],
    "05_report": [
        md("""
# Report: a VAR prior as a training-free solver for imaging inverse problems

This notebook gathers the study's headline tables and figures. It computes nothing: it reads what
notebooks `01`-`04` wrote to `results/<run>/` (tables as CSV/Markdown/LaTeX in `tables/`, figures as
PNG/PDF in `figures/`)."""),
        code(PARAMETERS, tags=["parameters"]),
        code(SETUP.replace('print(f"run', '# print(f"run')),
        md("## Configuration"),
        code("""display(Markdown(study.run_info(P).to_markdown()))"""),
        md("""
## Main results

PSNR (dB, higher is better) per method and task, mean ± standard deviation over the benchmark
images; the best method per task is in bold. `init` is the operator's cheap initial estimate (hole
filling, Wiener deconvolution, bicubic up-sampling), which the VAR solver starts from."""),
        code("""study.show(P, "tables/main_psnr.md")"""),
        md("The study's aims that this run measures, each with its number, met or not:"),
        code("""study.show(P, "tables/targets.md", optional=True)"""),
        md("SSIM (higher is better), same layout:"),
        code("""study.show(P, "tables/main_ssim.md")"""),
        md("HaarPSI (piq; a perceptual similarity that needs no learned weights, higher is better):"),
        code("""study.show(P, "tables/main_haarpsi.md")"""),
        md("LPIPS (AlexNet, lower is better); missing when the AlexNet weights were not available offline:"),
        code("""study.show(P, "tables/main_lpips.md")"""),
        md("The PSNR table as bars, with the spread over images as error bars:"),
        code("""study.show(P, "figures/bars_psnr.png")"""),
        md("The component ladder, when the params list one (`ladder`): each rung adds one part of the solver."),
        code("""study.show(P, "tables/ladder.md", optional=True)"""),
        code("""study.show(P, "figures/ladder.png", optional=True)"""),
        md("""
## What the reconstructions look like

One image through every task. Columns: ground truth, the measurement (for x4 super-resolution the
16 px measurement is shown enlarged by pixel repetition; for inpainting the missing pixels are
black), then each method's output with its PSNR underneath."""),
        code("""study.show(P, "figures/gallery_tasks.png")"""),
        md("Benchmark images (up to six) through one task, same columns:"),
        code("""study.show(P, "figures/gallery_images.png")"""),
        md("""
## Uncertainty

With several samples per measurement the solver also returns their per-pixel standard deviation.
Correlation between that map and the error of the samples' mean (present only when the run has a
multi-sample method):"""),
        code("""study.show(P, "tables/uncertainty.md")"""),
        code("""study.show(P, "tables/sample_mmse.md", optional=True)"""),
        code("""study.show(P, "figures/uncertainty.png")"""),
        md("""
## Ablation: injection depth

Quality (solid line, left axis) and time per image (dashed line, right axis) against the number of
coarse scales injected from the initial estimate; the dotted line is the depth the benchmark uses.
Depth 0 ignores the initial estimate at the coarse scales; injecting every scale reproduces the
tokenised initial estimate."""),
        code("""study.show(P, "figures/ablation_injection.png")"""),
        code("""study.show(P, "tables/ablation_injection.md")"""),
        md("""
## Ablation: guidance

Quality against the strength of the measurement-guided logit refinement, one line per number of
refinement steps per scale; strength 0 is no guidance. The dotted line and the star mark the
benchmark's setting."""),
        code("""study.show(P, "figures/ablation_guidance.png")"""),
        code("""study.show(P, "tables/ablation_guidance.md")"""),
        md("""
## Ablation: low-passed or raw measurement in the guidance loss"""),
        code("""study.show(P, "figures/ablation_lowpass.png")"""),
        code("""study.show(P, "tables/ablation_lowpass.md")"""),
        md("""
## Cost

Mean wall time and network evaluations per image (bars: mean over tasks; whiskers: fastest to
slowest task; log scale). Classical methods call no network."""),
        code("""study.show(P, "figures/runtime.png")"""),
        code("""study.show(P, "tables/runtime.md")"""),
        md("""
Quality against time per image, one marker per method (log time axis; up and to the left is
better), per task and averaged over tasks:"""),
        code("""study.show(P, "figures/quality_vs_time.png")"""),
    ],
}


def build(out_dir: Path = HERE) -> list:
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        for i, c in enumerate(nb.cells):  # stable ids: regenerating gives identical files
            c["id"] = f"{name[:2]}-{i:02d}"
        path = out_dir / f"{name}.ipynb"
        text = nbformat.writes(nb)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print(p.relative_to(HERE.parent))
