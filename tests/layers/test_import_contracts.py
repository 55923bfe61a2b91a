"""The layer contracts of pyproject.toml ([tool.importlinter]) hold on the tree, and they do
fail when a forbidden import is added: each case runs lint-imports on a copy of the tree with one
bad module planted in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in ("zooscope", "app", "worker"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        (
            "zooscope/analysis/_planted.py",
            "import app.settings\n",
            "the library knows nothing of the service",
        ),
        ("zooscope/networks/_planted.py", "import fastapi\n", "the library knows nothing of the service"),
        ("app/db/_planted.py", "import worker.tasks\n", "the service's data and HTTP layers never import"),
        (
            "app/api/routes/_planted.py",
            "import zooscope.autoencoder.artefact\n",
            "the API never runs a model",
        ),
        ("zooscope/networks/_planted.py", "import zooscope.autoencoder.model\n", "in layers"),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(
    tree: Path, module: str, source: str, contract: str
) -> None:
    (tree / module).write_text(source)
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
    assert "_planted" in result.stdout
