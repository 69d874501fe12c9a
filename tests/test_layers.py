"""The one-way layers: import-linter's contracts (pyproject.toml) hold, and they do catch an upward import.

Also: project imports inside functions only at the documented seams (the
command line defers the app and the headless commands so ``--help`` answers
before Textual loads).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = str(Path(sys.executable).with_name("lint-imports"))

#: Where a function may import a project module, and why.
LOCAL_IMPORT_SEAMS = {
    "tui/cli.py": "--help and --version answer without importing Textual or the commands",
}


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    # Every contract in pyproject.toml was checked and kept: none skipped, none added unseen.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [contract["name"] for contract in config["tool"]["importlinter"]["contracts"]]
    assert len(names) == 5  # the five the architecture document lists
    kept = [line.removesuffix(" KEPT") for line in result.stdout.splitlines() if line.endswith(" KEPT")]
    assert kept == names and "BROKEN" not in result.stdout
    assert f"Contracts: {len(names)} kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    for part in ("backends", "tui"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    units = tmp_path / "backends" / "core" / "units.py"
    units.write_text(units.read_text() + "\nfrom backends.generation.handle import ModelHandle  # upward\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "backends layers point down only BROKEN" in result.stdout
    assert "backends.core.units -> backends.generation.handle" in result.stdout


def test_project_imports_inside_functions_only_at_the_seams():
    found = []
    for path in sorted([*ROOT.glob("backends/**/*.py"), *ROOT.glob("tui/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in LOCAL_IMPORT_SEAMS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").split(".")[0]
                                                          in ("backends", "tui")):
                    found.append(f"{rel}:{inner.lineno}")
                elif isinstance(inner, ast.Import) and any(a.name.split(".")[0] in ("backends", "tui")
                                                           for a in inner.names):
                    found.append(f"{rel}:{inner.lineno}")
    assert found == []
