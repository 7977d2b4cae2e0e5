"""The package's shape: every module imports, no import cycles, the layers respected, no private names
imported across modules (import-linter checks the contracts of pyproject.toml; the rest is read with ast)."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import varlib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "varlib"


def _modules() -> list[str]:
    names = ["varlib"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="varlib."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_every_module_imports_on_its_own():
    """Each module imports in a fresh interpreter (an import cycle would fail here in some order)."""
    code = ("import importlib, sys\n"
            "bad = []\n"
            "for name in sys.argv[1:]:\n"
            "    for m in [k for k in sys.modules if k == 'varlib' or k.startswith('varlib.')]:\n"
            "        del sys.modules[m]\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as e:\n"
            "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code, *_modules()], capture_output=True, text=True, cwd=ROOT,
                         env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_contracts_hold():
    """`lint-imports` (import-linter) with the contracts in pyproject.toml: no cycles, layers kept."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install import-linter)")
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def _imported_names(path: Path):
    """(module imported from, name) for every ``from X import name`` of a varlib file, X resolved."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] == "varlib":
                for alias in node.names:
                    yield node.lineno, source, alias.name, ".".join(parts)


def test_no_private_names_imported_across_modules():
    """A name starting with an underscore is private to its module: nobody imports it."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, source, name, module in _imported_names(path):
            if name.startswith("_") and not name.startswith("__") and source != module:
                bad.append(f"{path.relative_to(ROOT)}:{line}: from {source} import {name}")
    assert not bad, "\n".join(bad)


def test_submodules_reachable_after_import_varlib():
    for name in ("data", "operators", "metrics", "solver", "prior", "study", "training", "io", "linalg"):
        assert getattr(varlib, name) is importlib.import_module(f"varlib.{name}")
