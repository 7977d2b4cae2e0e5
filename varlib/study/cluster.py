"""A benchmark's shards as jobs of a cluster engine: submitit (SLURM job arrays, or local processes).

    varlib bench --params P --shards 4                          4 local processes, then the merge
    varlib bench --params P --shards 64 --cluster slurm \\
        --slurm-partition gpu --gpus-per-shard 1 --timeout-min 240   a SLURM array of 64 tasks
    varlib bench --params P --merge                             the tables, once every shard is done
    varlib bench --params P --shard 3/64                        one shard in this process

Each job runs :func:`varlib.study.runner.run_benchmark` with its :class:`~varlib.study.shards.Shard`,
so it appends to its own cache file and a killed, preempted or timed-out job resumes from it when
submitted again (on SLURM, submitit requeues a preempted or timed-out job by itself through
:meth:`ShardJob.checkpoint`). submitit keeps each job's stdout / stderr and pickled result under
``build/submitit/<run>/`` (``--cluster-folder``), never in ``results/``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from .paths import REPO_ROOT
from .shards import Shard

#: the engines ``--cluster`` names: submitit's auto choice (SLURM when ``sbatch`` is there, else
#: local processes), SLURM, local processes, or in this process (submitit's debug executor)
CLUSTERS = ("auto", "slurm", "local", "debug")


class ShardJob:
    """What one job runs: one shard of a benchmark (a picklable callable, as submitit wants)."""

    def __call__(self, params: Mapping[str, Any], index: int, count: int, limit: Optional[int] = None,
                 results_dir: Optional[str] = None, threads: Optional[int] = None) -> int:
        if threads:  # before torch starts its thread pool: one pool per job, not per core
            os.environ["OMP_NUM_THREADS"] = str(int(threads))
            import torch

            torch.set_num_threads(int(threads))
        from .runner import run_benchmark

        df = run_benchmark(params, limit=limit, results_dir=results_dir, shard=Shard(int(index), int(count)))
        return len(df)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """On preemption or timeout (SLURM): requeue the same shard; its cache makes it resume."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _submitit():
    try:
        import submitit
    except ImportError as err:  # pragma: no cover - submitit is in requirements.txt
        raise ImportError("running shards as jobs needs submitit: pip install submitit "
                          "(or run each shard yourself: varlib bench --params ... --shard i/n)") from err
    return submitit


def make_executor(folder: Union[str, os.PathLike], cluster: str = "auto", name: str = "varlib",
                  threads: Optional[int] = None, gpus: int = 0, timeout_min: int = 240,
                  slurm_partition: Optional[str] = None, array_parallelism: Optional[int] = None,
                  mem_gb: Optional[float] = None):
    """A submitit executor for shard jobs (``cluster``: one of :data:`CLUSTERS`)."""
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
    submitit = _submitit()
    ex = submitit.AutoExecutor(folder=str(folder), cluster=None if cluster == "auto" else cluster)
    kw: dict = dict(name=name, timeout_min=int(timeout_min), gpus_per_node=int(gpus), tasks_per_node=1, nodes=1)
    if threads:
        kw["cpus_per_task"] = int(threads)
    if mem_gb:
        kw["mem_gb"] = float(mem_gb)
    if slurm_partition:
        kw["slurm_partition"] = slurm_partition
    if array_parallelism:
        kw["slurm_array_parallelism"] = int(array_parallelism)
    ex.update_parameters(**kw)
    return ex


def submit_shards(params: Mapping[str, Any], count: int, executor, indices: Optional[Sequence[int]] = None,
                  limit: Optional[int] = None, results_dir: Optional[Union[str, os.PathLike]] = None,
                  threads: Optional[int] = None) -> List[Any]:
    """Submit shards ``indices`` (default: all) of ``count`` of checked ``params`` (one SLURM array
    when the executor is SLURM's); returns the submitit jobs, in the order of ``indices``."""
    indices = list(range(count)) if indices is None else [int(i) for i in indices]
    for i in indices:
        Shard(i, int(count))  # refuses a bad index before anything is submitted
    job = ShardJob()
    rd = str(results_dir) if results_dir is not None else None
    with executor.batch():
        jobs = [executor.submit(job, dict(params), i, int(count), limit, rd, threads) for i in indices]
    return jobs


def wait_for(jobs: Sequence[Any], indices: Sequence[int], count: int, progress: bool = True,
             poll_s: float = 2.0) -> List[str]:
    """Wait until every job has ended; returns one line per failed shard (empty when all finished)."""
    from tqdm.auto import tqdm

    pending = dict(zip(indices, jobs))
    failed: List[str] = []
    with tqdm(total=len(jobs), desc="shards", unit="shard", disable=not progress) as bar:
        while pending:
            for i, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[i]
                bar.update(1)
                try:
                    job.result()
                except Exception as err:  # the job's traceback is in its stderr file
                    failed.append(f"shard {i}/{count} (job {job.job_id}) failed: {_error_line(err, job)}"
                                  f" -- its log: {job.paths.stderr}")
            if pending:
                time.sleep(poll_s)
    return failed


def _error_line(err: Exception, job: Any) -> str:
    """The exception line of a failed job's traceback (``ValueError: ...``), from its stderr file."""
    import re

    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        text = str(err)
    lines = [x.strip() for x in text.splitlines() if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", x.strip())]
    return lines[-1] if lines else type(err).__name__


def run_sharded(params: Mapping[str, Any], count: int, cluster: str = "auto",
                folder: Optional[Union[str, os.PathLike]] = None, indices: Optional[Sequence[int]] = None,
                limit: Optional[int] = None, results_dir: Optional[Union[str, os.PathLike]] = None,
                threads: Optional[int] = None, wait: bool = True, progress: bool = True, **executor_kw: Any):
    """Run a benchmark as ``count`` shard jobs and merge them: submit, wait, then the tables (the
    per-case table is returned). With ``wait=False`` it returns the jobs right after submitting."""
    from .runner import run_benchmark

    folder = Path(folder) if folder is not None else REPO_ROOT / "build" / "submitit" / str(params["run"])
    ex = make_executor(folder, cluster, name=f"varlib-{params['run']}", threads=threads, **executor_kw)
    indices = list(range(count)) if indices is None else list(indices)
    jobs = submit_shards(params, count, ex, indices, limit=limit, results_dir=results_dir, threads=threads)
    print(f"[shards {params['run']}] {len(jobs)} jobs submitted (cluster: {ex.cluster}); logs in {folder}",
          flush=True)
    if not wait:
        return jobs
    failed = wait_for(jobs, indices, count, progress=progress)
    if failed:
        raise RuntimeError("some shards failed; submit them again (finished cases are kept):\n  " + "\n  ".join(failed))
    return run_benchmark(params, limit=limit, results_dir=results_dir, merge=True, verbose=False)
