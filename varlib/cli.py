"""The ``varlib`` command: one entry point for the project's command-line tools.

    varlib bench --params params/default.yaml      the benchmark runner (resumable)
    varlib train all --out runs/tiny64             train the embedded VAR prior (or one stage of it)
    varlib tune ...                                search the VAR solver's per-task settings
    varlib tune-baselines ...                      search the baselines' per-task settings
    varlib timing ...                              time solvers and samplers per image
    varlib profile ...                             where a VAR / PnP solve spends its time, by stage
    varlib report ...                              figures and tables of the embedded VAR prior
    varlib diffusion-report ...                    figures and tables of the embedded diffusion prior
    varlib figures ...                             the operators figure
    varlib results-doc                             docs/results.md and the README's results block

``varlib <command> --help`` shows each tool's options. Every tool is also ``python -m <module>``
(the module is named in ``varlib --help``).
"""
from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Tuple

#: command -> (module whose ``main(argv)`` runs it, one line of help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "bench": ("varlib.study.cli", "run or resume a benchmark configuration (params/*.yaml)"),
    "train": ("varlib.training.cli", "train the embedded VAR or diffusion prior, or one stage of it"),
    "tune": ("varlib.tune", "search the VAR solver's per-task settings on training images"),
    "tune-baselines": ("varlib.tune_baselines", "search TV / PnP-BM3D / DPS / DiffPIR / PnP-UNet settings on training images"),
    "timing": ("varlib.study.timing", "time solvers and the prior's sampling per image"),
    "profile": ("varlib.study.profile", "share of each stage of a VAR / PnP solve (transformer, guidance, CG, ...)"),
    "report": ("varlib.prior_report", "figures and tables of the embedded VAR prior (results/prior)"),
    "diffusion-report": ("varlib.diffusion.report", "figures and tables of the embedded diffusion prior"),
    "figures": ("varlib.study.figures", "the operators figure (results/figures)"),
    "results-doc": ("varlib.study.results_doc", "write docs/results.md and the README's results block"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: varlib <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}  (python -m {module})" for name, (module, text) in COMMANDS.items()]
    lines += ["", "varlib <command> --help shows the options of one command."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch ``varlib <command> ...`` to the command's module; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"varlib: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    status = module.main(rest)
    return int(status) if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
