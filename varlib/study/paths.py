"""Where a run writes: ``<results root>/<run>/{tables,figures,notebooks,html,cache,ablation}``.

The results root is ``$VARLIB_RESULTS_DIR`` when set, else ``results/`` in the repository, whatever
the working directory (notebooks run in ``notebooks/`` under JupyterLab, make in the repository).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_ENV = "VARLIB_RESULTS_DIR"


def results_root() -> Path:
    """``$VARLIB_RESULTS_DIR`` when set, else ``results/`` in the repository."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "results"


@dataclass(frozen=True)
class StudyPaths:
    """The folders of one run (``root`` = ``<results root>/<run>``)."""

    run: str
    root: Path

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def html(self) -> Path:
        return self.root / "html"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def ablation(self, which: str) -> Path:
        return self.root / "ablation" / which


def study_paths(params_or_run: Union[Mapping[str, Any], str],
                results_dir: Optional[Union[str, os.PathLike]] = None) -> StudyPaths:
    """The folders of a run, given its params (their ``run``) or its name; ``results_dir`` replaces
    the results root."""
    run = params_or_run if isinstance(params_or_run, str) else str(params_or_run["run"])
    parent = Path(results_dir).expanduser() if results_dir is not None else results_root()
    return StudyPaths(run=run, root=parent / run)
