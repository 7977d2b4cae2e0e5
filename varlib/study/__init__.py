"""The reproducible study: the benchmark runner and everything the notebooks in ``notebooks/`` do.

The notebooks stay thin (a ``parameters`` cell for papermill, a few calls into this package, the
plots shown inline); the logic lives here, tested::

    from varlib import study
    P = study.load_params("params/default.yaml")      # the one params schema (study.params)
    df = study.run_benchmark(P)                       # run or resume (study.runner, study.cache)
    study.main_tables(df, P); study.gallery_figure(df, P)
    study.run_ablation(P, "injection")                # study.ablation

Modules, each importing only those above it in this list: ``paths`` (where a run writes),
``methods`` (the method registry), ``params`` (schema and loader), ``shards`` (deterministic
shards of the cases), ``cache`` (case keys, the jsonl cache files, images), ``memory`` (peak memory), ``tables``, ``runner`` (:func:`run_benchmark`),
``cluster`` (shards as submitit jobs), ``ablation``, ``figures`` (also the operators figure), ``uncertainty``, ``ladder`` (the component
ladder), ``targets`` (the study's aims, measured), ``report`` (what the
notebooks write and show), ``cli`` (``python -m varlib.study``); ``timing``
(``python -m varlib.study.timing``) stands apart.

Every figure is written as PNG and PDF under ``<run>/figures/``, every table as CSV, Markdown and
LaTeX under ``<run>/tables/``, atomically. The names below are imported on first use, so that
``python -m varlib.study.figures`` and ``python -m varlib.study.timing`` run their module only once.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Dict, List

# tqdm.auto (imported by the runner and by libraries below it) warns in a notebook kernel without
# ipywidgets; the study uses no widgets, and the warning would reach make's terminal via papermill
warnings.filterwarnings("ignore", message="IProgress not found")

_EXPORTS: Dict[str, List[str]] = {
    "paths": ["REPO_ROOT", "RESULTS_ENV", "StudyPaths", "results_root", "study_paths"],
    "methods": ["METHODS", "Method", "MethodSpec", "method_label"],
    "params": ["ParamsError", "load_params", "check_params", "labels_modes", "method_labels", "bench_params",
               "LABELS_SUFFIX"],
    "shards": ["Shard", "parse_shard"],
    "cache": ["case_key", "prior_fingerprint", "read_cache", "cache_files"],
    "tables": ["METRICS", "DIGITS", "summarize", "write_tables", "summary_long", "metric_table", "main_tables",
               "runtime_table", "save_table", "to_latex", "method_order", "task_order", "add_network_evals"],
    "runner": ["Case", "plan_cases", "benchmark_passes", "run_cases", "run_benchmark", "load_cases",
               "MissingCasesError"],
    "cluster": ["run_sharded", "submit_shards", "make_executor"],
    "ablation": ["injection_sweep", "guidance_sweep", "lowpass_sweep", "ablation_params", "run_ablation",
                 "load_ablation", "annotate_sweep", "ablation_table", "default_settings", "num_scales"],
    "figures": ["save_figure", "gallery_figure", "metric_bars_figure", "injection_figure", "guidance_figure",
                "lowpass_figure", "runtime_figure", "quality_time_figure", "operators_figure", "method_palette"],
    "uncertainty": ["uncertainty_table", "sample_mmse_table", "uncertainty_figure", "std_error_correlation", "posterior_samples_figure"],
    "ladder": ["ladder_table", "ladder_figure", "ladder_numbers", "ladder_gains"],
    "targets": ["TARGETS", "targets_table"],
    "report": ["NOTEBOOK_OUTPUTS", "write_benchmark_outputs", "write_runtime_outputs", "write_targets", "run_info",
               "show"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
#: the tasks and their titles, as in varlib.operators
_OPERATORS = ("TASKS", "TASK_TITLES")

__all__ = sorted([*_MODULE_OF, *_OPERATORS])


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    if name in _OPERATORS:
        return getattr(importlib.import_module("..operators", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(list(globals()) + __all__)
