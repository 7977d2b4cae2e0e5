"""Deterministic shards of a benchmark's cases, so one study can run as N independent jobs.

A shard ``i/n`` (``0 <= i < n``) owns the cases of the *units* whose key hashes to ``i`` modulo ``n``.
A unit is what the runner solves in one call: a batch of ``batch_size`` consecutive images of one
(task, method entry) for the batched network methods, one case for the others. Sharding by unit
rather than by case keeps every batch exactly as the single-process run forms it, so a sharded run
gives the same numbers; the unit's key is the key of its first case, so which shard owns a case
depends only on the params, never on what is cached, and any shard can be rerun alone.

Each shard appends to its own ``cache/cases.shard-<i>-of-<n>.jsonl``; the merge (the runner reading
every ``cases*.jsonl`` of the run) builds the tables once every case is there
(:mod:`varlib.study.cluster` submits the shards through submitit).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

#: the cache file of a shard, and the pattern that finds them all in ``<run>/cache/``
SHARD_FILE = "cases.shard-{index}-of-{count}.jsonl"
SHARD_FILE_RE = re.compile(r"^cases\.shard-(\d+)-of-(\d+)\.jsonl$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self):
        if not (isinstance(self.count, int) and isinstance(self.index, int)) or self.count < 1 \
                or not 0 <= self.index < self.count:
            raise ValueError(f"a shard is i/n with n >= 1 and 0 <= i < n, got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def cache_name(self) -> str:
        return SHARD_FILE.format(index=self.index, count=self.count)

    def owns(self, unit_key: str) -> bool:
        return owner(unit_key, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"i/n"`` -> :class:`Shard` (``i`` counted from 0, as SLURM array task ids are)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"--shard takes i/n with 0 <= i < n (for example 0/4), got {text!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


def owner(unit_key: str, count: int) -> int:
    """The shard (of ``count``) that owns a unit, from its hex key."""
    return int(unit_key, 16) % count


def unit_keys(cases: Sequence[Any], batch_size: int) -> Dict[str, str]:
    """Case key -> the key of its unit, for the planned ``cases`` of one pass (the runner's
    :class:`~varlib.study.runner.Case`, in plan order: task, method entry, image)."""
    out: Dict[str, str] = {}
    first: Dict[tuple, str] = {}
    for c in cases:
        if not c.spec.method.batched:
            out[c.key] = c.key
            continue
        unit = (c.task, c.spec.label, c.index // int(batch_size))
        out[c.key] = first.setdefault(unit, c.key)
    return out


def shard_of_file(name: str) -> Optional[Shard]:
    """The shard a cache file name belongs to (None for ``cases.jsonl`` and other files)."""
    m = SHARD_FILE_RE.match(name)
    return Shard(int(m.group(1)), int(m.group(2))) if m else None
