"""Sharded benchmark runs: deterministic shards by unit key, one cache file per shard, the merge,
and shards run as submitit jobs on the local executor (real processes), killed and resubmitted."""
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from varlib.study import cli, runner
from varlib.study.cluster import make_executor, run_sharded, submit_shards, wait_for
from varlib.study.params import load_params
from varlib.study.shards import Shard, owner, parse_shard, unit_keys

SCORES = ["key", "image", "task", "method", "psnr", "ssim", "residual", "transformer_evals", "prior_id"]


def _params(tmp_path, **over):
    p = dict(run="sh", device="cpu", prior="test", batch_size=2, noise_sigma=0.025, seed=0,
             images=dict(set="embedded", image_size=16, limit=3), tasks=["inpaint_random", "sr4"],
             methods=[{"name": "init"}, {"name": "tv", "settings": {"iters": 5}}, {"name": "var-reference"}])
    p.update(over)
    return load_params(p)


def _cache_files(root: Path):
    return sorted((root / "cache").glob("cases*.jsonl"))


def _keys(path: Path):
    return [json.loads(x)["key"] for x in path.read_text().splitlines() if x.strip()]


def test_parse_shard_and_bad_values():
    assert parse_shard("2/5") == Shard(2, 5) and str(Shard(0, 1)) == "0/1"
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="i/n"):
            parse_shard(bad)


def test_shards_partition_the_cases_and_keep_batches_whole(tmp_path):
    P = _params(tmp_path, images=dict(set="embedded", image_size=16, limit=5))
    p = runner.benchmark_passes(P, tmp_path)[0].params
    cases = runner.plan_cases(p, [f"im{i}" for i in range(5)], [0] * 5)
    units = unit_keys(cases, batch_size=2)
    for n in (1, 2, 3, 7):
        owned = [[c.key for c in cases if Shard(i, n).owns(units[c.key])] for i in range(n)]
        flat = [k for part in owned for k in part]
        assert sorted(flat) == sorted(c.key for c in cases)  # every case in exactly one shard
    var = [c for c in cases if c.spec.label == "var-reference" and c.task == "sr4"]
    # batches of 2 consecutive images stay together (images 0+1, 2+3, 4), one-case units for the rest
    assert [units[c.key] for c in var] == [var[0].key, var[0].key, var[2].key, var[2].key, var[4].key]
    tv = [c for c in cases if c.spec.label.startswith("tv")]
    assert all(units[c.key] == c.key for c in tv)
    assert len({owner(c.key, 3) for c in cases}) == 3  # the hash spreads the units over the shards


def test_shards_in_process_then_merge_equals_single_run(tmp_path, capsys):
    P = _params(tmp_path)
    single = runner.run_benchmark(P, results_dir=tmp_path / "one", verbose=False)
    root = tmp_path / "many" / "sh"
    parts = [runner.run_benchmark(P, results_dir=tmp_path / "many", verbose=False, shard=Shard(i, 3)) for i in (0, 1)]
    assert not (root / "tables").exists()  # a shard writes no tables
    with pytest.raises(runner.MissingCasesError, match=r"shard 2/3 lacks \d+"):
        runner.run_benchmark(P, results_dir=tmp_path / "many", merge=True)
    with pytest.raises(SystemExit, match="shard 2/3 lacks"):
        cli.main(["--params", str(_write(tmp_path, P)), "--results-dir", str(tmp_path / "many"), "--merge"])
    parts.append(runner.run_benchmark(P, results_dir=tmp_path / "many", verbose=False, shard=Shard(2, 3)))
    assert sum(len(x) for x in parts) == len(single)
    assert [f.name for f in _cache_files(root)] == [f"cases.shard-{i}-of-3.jsonl" for i in range(3)]
    merged = runner.run_benchmark(P, results_dir=tmp_path / "many", merge=True)
    pd.testing.assert_frame_equal(merged[SCORES], single[SCORES])
    a = pd.read_csv(tmp_path / "one" / "sh" / "tables" / "summary.csv").drop(columns=["seconds", "seconds_std"],
                                                                             errors="ignore")
    b = pd.read_csv(root / "tables" / "summary.csv").drop(columns=["seconds", "seconds_std"], errors="ignore")
    pd.testing.assert_frame_equal(a[[c for c in a.columns if "second" not in c]], b[[c for c in b.columns if "second" not in c]])
    # an unsharded rerun finds every case in the shards' files and runs none
    capsys.readouterr()
    runner.run_benchmark(P, results_dir=tmp_path / "many")
    assert f"{len(single)} cases: {len(single)} cached, 0 to run" in capsys.readouterr().out


def _write(tmp_path, P):
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in P.items() if not k.startswith("_")}))
    return path


@pytest.mark.slow
def test_three_local_jobs_give_the_single_run_tables(tmp_path):
    """Through submitit's local executor: 3 processes, then the merge."""
    P = _params(tmp_path)
    single = runner.run_benchmark(P, results_dir=tmp_path / "one", verbose=False)
    merged = run_sharded(P, 3, cluster="local", folder=tmp_path / "submitit", results_dir=tmp_path / "many",
                         threads=1, progress=False)
    pd.testing.assert_frame_equal(merged[SCORES], single[SCORES])
    files = _cache_files(tmp_path / "many" / "sh")
    assert len(files) == 3 and sum(len(_keys(f)) for f in files) == len(single)


@pytest.mark.slow
def test_killed_shard_resubmitted_loses_and_duplicates_nothing(tmp_path):
    # slow cases (TV with many iterations), so the job is still running when it is killed
    P = _params(tmp_path, images=dict(set="embedded", image_size=16, limit=6), tasks=["sr4", "gaussian_blur"],
                methods=[{"name": "tv", "settings": {"iters": 10000}}])
    ex = make_executor(tmp_path / "submitit", "local", threads=1, timeout_min=10)
    out = tmp_path / "res"
    shard_file = out / "sh" / "cache" / "cases.shard-0-of-2.jsonl"
    job = submit_shards(P, 2, ex, [0], results_dir=out, threads=1)[0]
    deadline = time.time() + 120
    while time.time() < deadline and not (shard_file.exists() and _keys(shard_file)):
        time.sleep(0.05)
    job.cancel()
    while not job.done():
        time.sleep(0.1)
    before = _keys(shard_file)
    jobs = submit_shards(P, 2, ex, [0, 1], results_dir=out, threads=1)
    assert wait_for(jobs, [0, 1], 2, progress=False, poll_s=0.2) == []
    merged = runner.run_benchmark(P, results_dir=out, merge=True)
    single = runner.run_benchmark(P, results_dir=tmp_path / "one", verbose=False)
    assert len(merged) == len(single) >= 8 and merged["key"].is_unique
    mine = [k for k in merged["key"] if Shard(0, 2).owns(k)]  # one-case units: the unit key is the case key
    assert 1 <= len(before) < len(mine), "the job should have been killed midway"
    after = _keys(shard_file)
    assert after[:len(before)] == before and len(after) == len(set(after)) == len(mine)
    pd.testing.assert_frame_equal(merged[SCORES], single[SCORES])
