"""What the notebooks write and show: their output lists, the run description, inline display."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pandas as pd

from .figures import frontier_figure, gallery_figure, metric_bars_figure, quality_time_figure, runtime_figure
from .methods import method_label
from .paths import study_paths
from .tables import images_label, main_tables, save_table, write_runtime_table
from .targets import targets_table

#: what each notebook writes (relative to results/<run>/); tests/test_notebooks.py checks these exist
NOTEBOOK_OUTPUTS: Dict[str, List[str]] = {
    "01_benchmark": ["tables/cases.csv", "tables/main_psnr.md", "tables/main_psnr.tex", "tables/main_psnr.csv",
                     "tables/main_ssim.md", "tables/main_haarpsi.md", "tables/summary_long.csv", "figures/bars_psnr.png",
                     "figures/bars_psnr.pdf", "figures/gallery_tasks.png", "figures/gallery_tasks.pdf",
                     "figures/gallery_images.png", "tables/uncertainty.md", "figures/uncertainty.png"],
    "02_ablation_injection": ["ablation/injection/tables/cases.csv", "tables/ablation_injection.csv",
                              "tables/ablation_injection.md", "tables/ablation_injection.tex",
                              "figures/ablation_injection.png", "figures/ablation_injection.pdf"],
    "03_ablation_guidance": ["ablation/guidance/tables/cases.csv", "tables/ablation_guidance.csv",
                             "tables/ablation_guidance.md", "tables/ablation_guidance.tex",
                             "figures/ablation_guidance.png", "figures/ablation_guidance.pdf",
                             "ablation/lowpass/tables/cases.csv", "tables/ablation_lowpass.md",
                             "figures/ablation_lowpass.png"],
    "04_runtime": ["tables/runtime.csv", "tables/runtime.md", "tables/runtime.tex", "figures/runtime.png",
                   "figures/runtime.pdf", "figures/quality_vs_time.png", "figures/quality_vs_time.pdf"],
    "05_report": [],
}


def write_benchmark_outputs(df: pd.DataFrame, params: Mapping[str, Any]) -> Dict[str, Any]:
    """The main tables, PSNR bars and the two galleries of notebook 01 (``gallery:`` picks the image
    and task)."""
    tables = main_tables(df, params)
    figs = {"bars_psnr": metric_bars_figure(df, params, "psnr")}
    g = params.get("gallery") or {}
    figs["gallery_tasks"] = gallery_figure(df, params, rows="tasks", image=g.get("image"), name="gallery_tasks")
    figs["gallery_images"] = gallery_figure(df, params, rows="images", task=g.get("task"), name="gallery_images",
                                            max_images=int(g.get("max_images", 6)))
    targets = write_targets(df, params)
    if targets is not None:
        tables["targets"] = targets
    return {"tables": tables, "figures": figs}


def write_targets(df: pd.DataFrame, params: Mapping[str, Any]) -> Optional[pd.DataFrame]:
    """``tables/targets.*``: the study's stated aims this run can measure (:mod:`varlib.study.targets`),
    each with its number and met or not; None (nothing written) when the run measures none."""
    targets = targets_table(df)
    if not len(targets):
        return None
    save_table(targets, "targets", params, display=targets.drop(columns=["value"]),
               caption="Each aim measured on this run: PSNR means over the images both methods ran, per task "
                       "then over tasks; times per image from the same run.")
    return targets


def write_runtime_outputs(df: pd.DataFrame, params: Mapping[str, Any]) -> Dict[str, Any]:
    """What notebook 04 writes: the runtime table, runtime bars, the quality-versus-time scatter and (with
    several entries of one method) the frontier per method family."""
    return {"table": write_runtime_table(df, params),
            "figures": {"runtime": runtime_figure(df, params), "quality_vs_time": quality_time_figure(df, params),
                        "frontier": frontier_figure(df, params)}}


def run_info(params: Mapping[str, Any]) -> pd.DataFrame:
    """A small table describing the run (for the report)."""
    im = params["images"]
    rows = [("run", params["run"]), ("params file", Path(params.get("_source", "?")).name),
            ("prior", params.get("prior", "tiny64")),
            ("images", f"{im.get('set')} (limit {im.get('limit')}), {im.get('image_size', '?')} px"),
            ("tasks", ", ".join(params["tasks"])), ("noise sigma ([0, 1] scale)", params.get("noise_sigma", 0.025)),
            ("seed", params.get("seed", 0)), ("class labels", params.get("use_labels", False)),
            ("methods", ", ".join(method_label(m) for m in params["methods"]))]
    if params.get("ablation"):
        rows.append(("ablation images", images_label(params, "ablation") +
                     f" (limit {(params['ablation'].get('images') or {}).get('limit', im.get('limit'))})"))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def show(params: Mapping[str, Any], relpath: str, width: Optional[int] = None, optional: bool = False) -> None:
    """Display a figure (PNG) or a Markdown table of the run in a notebook; says which notebook
    makes it when it is missing (nothing for an ``optional`` output that this run's params do not ask for)."""
    from IPython.display import Image, Markdown, display

    path = study_paths(params).root / relpath
    if not path.is_file() and optional:
        return
    if not path.is_file():
        maker = next((nb for nb, outs in NOTEBOOK_OUTPUTS.items() if relpath in outs), None)
        hint = f" (run notebooks/{maker}.ipynb)" if maker else ""
        display(Markdown(f"*`{relpath}` is missing{hint}.*"))
        return
    if path.suffix == ".png":
        display(Image(filename=str(path), width=width, alt=path.stem.replace("_", " ")))
    elif path.suffix == ".md":
        display(Markdown(path.read_text()))
    else:
        display(Markdown(f"```\n{path.read_text()}\n```"))
