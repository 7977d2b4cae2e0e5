"""Peak memory of a block of code, for the benchmark's ``peak_mem_mb`` / ``mem_kind`` columns.

On CUDA: ``torch.cuda.max_memory_allocated`` during the block minus the allocation before it
(``cuda_max_allocated``). On the CPU: the peak resident set size of the process during the block
above its size at the start, sampled every 5 ms from ``/proc/self/statm`` by a helper thread
(``rss_sampled``); where ``/proc`` is missing, the growth of ``ru_maxrss`` (``maxrss_delta``, 0 once
the process has been larger before). Python's ``tracemalloc`` is not used: it does not see PyTorch's
tensor allocations. For a batched call the value is the whole batch's.
"""
from __future__ import annotations

import os
import threading

import torch


class PeakMemory:
    """``with PeakMemory(device) as mem: ...``, then ``mem.peak_mb`` (MiB) and ``mem.kind``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.kind = "cuda_max_allocated"
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        if os.path.exists("/proc/self/statm"):
            self.kind = "rss_sampled"
            self._start = self._rss()
            self._peak = self._start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:  # pragma: no cover - non-Linux
            import resource

            self.kind = "maxrss_delta"
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc) -> bool:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2 ** 20
        elif self.kind == "rss_sampled":
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            self.peak_mb = (self._peak - self._start) / 2 ** 20
        else:  # pragma: no cover
            import resource

            grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start
            self.peak_mb = grow / 1024 if os.uname().sysname != "Darwin" else grow / 2 ** 20
        return False
