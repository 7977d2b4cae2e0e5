"""``python -m varlib.study --params FILE``: run (or resume) the benchmark of a params file.

    python -m varlib.study --params params/default.yaml [--run NAME] [--limit N] [--set KEY=VALUE ...]
                           [--results-dir DIR] [--no-progress] [--quiet]
                           [--shard I/N | --shards N [--cluster ...] | --merge]

Runs every benchmark pass of the file (with ``use_labels: [false, true]`` also the VAR methods with
class labels) into ``<results>/<run>/`` (``$VARLIB_RESULTS_DIR`` or ``results/``, or ``--results-dir``),
writes ``tables/cases.csv`` and ``tables/summary.*`` and prints the summary. Finished cases are cached,
so the same command resumes an interrupted run. The notebooks' tables and figures come from ``make all``;
``--runtime-outputs`` also writes notebook 04's (runtime table, figures and the quality-time frontier).

Sharded (:mod:`varlib.study.shards`, :mod:`varlib.study.cluster`): ``--shard I/N`` runs shard I of N
in this process (what one SLURM array task runs); ``--shards N`` submits all N as submitit jobs
(``--cluster``: SLURM when available, else local processes), waits and merges; ``--merge`` writes
the tables from every shard's cache, or names the missing cases and their shards.
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
    sh = ap.add_argument_group("sharded runs (docs/study.md, section Sharded runs)")
    how = sh.add_mutually_exclusive_group()
    how.add_argument("--shard", default=None, metavar="I/N", help="run only shard I of N (0 <= I < N) here; no tables")
    how.add_argument("--shards", type=int, default=None, metavar="N",
                     help="submit N shard jobs through submitit, wait, then merge")
    how.add_argument("--merge", action="store_true",
                     help="run nothing: write the tables from every shard's cache (fails naming the missing cases)")
    sh.add_argument("--only", default=None, metavar="I,J,...", help="with --shards: submit only these shard indices")
    sh.add_argument("--cluster", default="auto", choices=["auto", "slurm", "local", "debug"],
                    help="submitit engine (auto: SLURM when sbatch is on PATH, else local processes)")
    sh.add_argument("--cluster-folder", default=None, help="submitit's logs and pickles (default build/submitit/<run>)")
    sh.add_argument("--threads-per-shard", type=int, default=None, help="CPU threads of each job (cpus_per_task)")
    sh.add_argument("--gpus-per-shard", type=int, default=0, help="GPUs of each job (SLURM)")
    sh.add_argument("--timeout-min", type=int, default=240, help="time limit of each job in minutes (SLURM)")
    sh.add_argument("--slurm-partition", default=None)
    sh.add_argument("--array-parallelism", type=int, default=None, help="at most this many array tasks at once (SLURM)")
    sh.add_argument("--no-wait", action="store_true", help="with --shards: submit and return (merge later with --merge)")
    args = ap.parse_args(argv)
    if args.shards is not None and args.shards < 1:
        ap.error(f"--shards takes a count >= 1, got {args.shards}")

    from .params import load_params
    from .runner import MissingCasesError, run_benchmark

    P = load_params(args.params, overrides=args.overrides, run=args.run)
    if args.shard is not None:
        from .shards import parse_shard

        try:
            shard = parse_shard(args.shard)
        except ValueError as err:
            ap.error(str(err))
        df = run_benchmark(P, limit=args.limit, progress=not args.no_progress, results_dir=args.results_dir,
                           verbose=not args.quiet, shard=shard)
        print(f"shard {shard}: {len(df)} cases cached; merge with: varlib bench --params {args.params} --merge")
        return
    if args.shards is not None:
        from .cluster import run_sharded

        only = [int(i) for i in args.only.split(",")] if args.only else None
        out = run_sharded(P, args.shards, cluster=args.cluster, folder=args.cluster_folder, indices=only,
                          limit=args.limit, results_dir=args.results_dir, threads=args.threads_per_shard,
                          wait=not args.no_wait, progress=not args.no_progress, gpus=args.gpus_per_shard,
                          timeout_min=args.timeout_min, slurm_partition=args.slurm_partition,
                          array_parallelism=args.array_parallelism)
        if args.no_wait:
            print("submitted jobs: " + " ".join(str(j.job_id) for j in out))
            return
        df = out
    else:
        try:
            df = run_benchmark(P, limit=args.limit, progress=not args.no_progress, results_dir=args.results_dir,
                               verbose=not args.quiet, merge=args.merge)
        except MissingCasesError as err:
            raise SystemExit(f"varlib bench --merge: {err}")
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
