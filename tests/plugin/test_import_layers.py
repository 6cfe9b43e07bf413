"""The import-layer contract (``pyproject.toml`` ``[tool.importlinter]``, docs/architecture.md
"Layers and import directions") holds on the tree, and each of its contracts catches the import
it exists to forbid. ``make lint`` runs the same ``lint-imports``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"
]
NAMES = {c["id"]: c["name"] for c in CONTRACTS}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` from ``root``, which it puts first on ``sys.path``, so ``root``'s copy of
    the package is the one analysed."""
    # No PYTHONPATH: the test bed's sitecustomize would import torch into a process that only
    # reads source files. A wide COLUMNS keeps each contract's report on one line.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "500"}
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", command, "--no-cache", "--no-logo"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_every_contract_is_kept_on_the_tree() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout
    for name in NAMES.values():
        assert f"{name} KEPT" in result.stdout


# (module to edit, line appended, contracts it must break). Each host module exists in today's
# layout and in issue 8's target layout (verify/, ops/fia/, ops/moe/).
VIOLATIONS = [
    ("ops/__init__.py", "from sglang_ascend_fia import config", {"ops-self-contained"}),
    (
        "ops/__init__.py",
        "from sglang_ascend_fia.attention import metadata",
        {"ops-self-contained", "runtime"},
    ),
    (
        "plugin.py",
        "def _hook():\n    from sglang_ascend_fia.ops import kernels",
        {"lifecycle-imports-only-lifecycle"},
    ),
    (
        "config.py",
        "from sglang_ascend_fia import plugin",
        {"lifecycle", "lifecycle-imports-only-lifecycle"},
    ),
    ("attention/metadata.py", "from sglang_ascend_fia import cli", {"runtime"}),
    # The features are independent: neither backend imports the other, nor moe either.
    ("mla/heads.py", "from sglang_ascend_fia.attention import kv_write", {"runtime"}),
    ("attention/metadata.py", "from sglang_ascend_fia.mla import heads", {"runtime"}),
    ("moe/gating.py", "from sglang_ascend_fia.attention import metadata", {"runtime"}),
    # The shared base sits below both backends, the registry above them.
    ("fia_backend/handoff.py", "from sglang_ascend_fia.mla import handoff", {"runtime"}),
    ("attention/metadata.py", "from sglang_ascend_fia import registry", {"runtime"}),
    ("attention/metadata.py", "from sglang_ascend_fia.ops import _dispatch", {"private-modules"}),
]


@pytest.mark.parametrize(("module", "line", "broken"), VIOLATIONS)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, broken: set[str]
) -> None:
    shutil.copytree(
        REPO / "sglang_ascend_fia",
        tmp_path / "sglang_ascend_fia",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "sglang_ascend_fia" / module
    target.write_text(target.read_text() + "\n" + line + "\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    reported = {cid for cid, name in NAMES.items() if f"{name} BROKEN" in result.stdout}
    assert reported == broken, result.stdout


BACKENDS = {
    "attention": "sglang_ascend_fia.attention.backend",
    "mla": "sglang_ascend_fia.mla.backend",
}


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at top level or inside a function (lazy hook imports)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_registry_is_the_only_module_that_names_both_backends() -> None:
    """The registry chooses between the two FIA backends, so it alone imports both; outside its
    own package, each backend is imported by the registry only (lint-imports sees top-level and
    lazy imports alike, this reads them from the source)."""
    package = REPO / "sglang_ascend_fia"
    importers: dict[str, set[str]] = {name: set() for name in BACKENDS}
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(REPO).with_suffix("").as_posix()
        imported = _imported_modules(path)
        for name, backend in BACKENDS.items():
            if backend in imported and not module.startswith(f"sglang_ascend_fia/{name}/"):
                importers[name].add(module)
    assert importers == {name: {"sglang_ascend_fia/registry/factory"} for name in BACKENDS}
