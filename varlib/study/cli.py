"""``python -m varlib.study --params FILE``: run (or resume) the benchmark of a params file.

    python -m varlib.study --params params/default.yaml [--run NAME] [--limit N] [--set KEY=VALUE ...]
                           [--results-dir DIR] [--no-progress] [--quiet]

Runs every benchmark pass of the file (with ``use_labels: [false, true]`` also the VAR methods with
class labels) into ``<results>/<run>/`` (``$VARLIB_RESULTS_DIR`` or ``results/``, or ``--results-dir``),
writes ``tables/cases.csv`` and ``tables/summary.*`` and prints the summary. Finished cases are cached,
so the same command resumes an interrupted run. The notebooks' tables and figures come from ``make all``;
``--runtime-outputs`` also writes notebook 04's (runtime table, figures and the quality-time frontier).
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from .paths import study_paths


def main(argv: Optional[List[str]] = None) -> None:
    """The benchmark command (``varlib bench``)."""
    ap = argparse.ArgumentParser(prog="python -m varlib.study", description="Run the varlib benchmark (resumable).")
    ap.add_argument("--params", required=True, help="YAML params file (see params/default.yaml, docs/study.md)")
    ap.add_argument("--run", default=None, help="run name (results/<run>/), replaces the file's `run`")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params key (YAML value; dotted keys for nested ones), e.g. "
                         "--set 'tasks=[sr4]' --set images.limit=2; repeatable")
    ap.add_argument("--results-dir", default=None,
                    help="parent folder of the run folder (default: $VARLIB_RESULTS_DIR or results/)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    ap.add_argument("--quiet", action="store_true", help="no per-group progress lines")
    ap.add_argument("--runtime-outputs", action="store_true",
                    help="also write what notebook 04 writes: tables/runtime, figures/runtime, quality_vs_time "
                         "and frontier (for a timing run such as params/runtime.yaml)")
    args = ap.parse_args(argv)

    from .params import load_params
    from .runner import run_benchmark

    P = load_params(args.params, overrides=args.overrides, run=args.run)
    df = run_benchmark(P, limit=args.limit, progress=not args.no_progress, results_dir=args.results_dir,
                       verbose=not args.quiet)
    tables = study_paths(P, args.results_dir).tables
    if args.runtime_outputs:
        import os

        from .paths import RESULTS_ENV
        from .report import write_runtime_outputs

        if args.results_dir:  # the writers find the run folder through the environment
            os.environ[RESULTS_ENV] = str(args.results_dir)
        print(write_runtime_outputs(df, P)["table"].to_markdown())
    print(f"{len(df)} cases -> {tables}")
    print((tables / "summary.md").read_text())


if __name__ == "__main__":
    main()
