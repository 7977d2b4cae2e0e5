"""The timing command (python -m varlib.study.timing): sampling, solver and diffusion rows on small random models."""
import math

import pytest
import torch

from varlib.study.timing import format_table, main, time_model


def test_time_model_reports_sampling_and_solves():
    rows = time_model("test", repeats=2, solve_tasks=("sr4", "inpaint_box"))
    assert [r["run"] for r in rows] == ["sample", "sample", "solve sr4", "solve inpaint_box"]
    assert [r["kv_cache"] for r in rows[:2]] == ["on", "off"]
    for r in rows:
        assert r["device"] == "cpu" and r["image"] == "16px"
        assert r["wall_s"] > 0 and r["cpu_s"] >= 0
        assert math.isnan(r["peak_gpu_gb"])  # only measured on CUDA
    # a solve runs the transformer and the decoder many times: it costs more than one sample
    assert min(r["wall_s"] for r in rows[2:]) > max(r["wall_s"] for r in rows[:2])
    table = format_table(rows)
    assert "solve inpaint_box" in table and table.count("\n") == len(rows) + 1


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task 'deblur'.*valid tasks"):
        time_model("test", solve_tasks=("deblur",))


def test_command_line_prints_the_table(capsys):
    main(["--models", "test", "--solve", "sr4", "--no-warmup"])
    out = capsys.readouterr().out
    assert "test: solve sr4" in out and "peak GB" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_report_peak_memory():
    rows = time_model("test", device="cuda", solve_tasks=("sr4",))
    assert all(r["device"] == "cuda" and r["peak_gpu_gb"] > 0 for r in rows)


class _Shrink(torch.nn.Module):
    """A stand-in denoiser D(x, sigma) with one parameter (the real networks have hundreds of millions)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.9))

    def forward(self, x, sigma, *args, **kwargs):
        return self.w * x + (1 - self.w) * 0.5


def test_time_diffusion_counts_the_network_evaluations():
    from varlib.study.timing import time_diffusion
    rows = time_diffusion(16, ["sr4"], net=_Shrink(), num_steps=9, max_iter=4)
    # DiffPIR: one evaluation per iteration; deepinv's DPS: one per step after the first
    assert [r["run"] for r in rows] == ["diffpir sr4 (4 NFE)", "dps sr4 (8 NFE)"]
    assert all(r["wall_s"] > 0 and r["model"] == "_Shrink" for r in rows)
