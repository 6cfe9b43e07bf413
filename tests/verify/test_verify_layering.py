"""verify-ops imports point one way: the case modules see the case types and the public ops
facade, never the command (which imports them) nor a private name of another module."""

from __future__ import annotations

import ast
from pathlib import Path

import sglang_ascend_fia.verify as command

PACKAGE = Path(command.__file__).parent
CASES_MAY_IMPORT = {
    "sglang_ascend_fia.ops",
    "sglang_ascend_fia.verify.case",
    "sglang_ascend_fia.verify.cases.common",
}


def _violations(path: Path, allowed: set[str]) -> list[str]:
    """Each import of package code in ``path`` from a module outside ``allowed``, or of a
    private (``_x``) name; relative imports count as violations since they hide the module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"relative import from {'.' * node.level}{node.module or ''}")
            continue
        elif isinstance(node, ast.ImportFrom) and node.module == "sglang_ascend_fia":
            # ``from sglang_ascend_fia import ops`` imports the module ``sglang_ascend_fia.ops``.
            names = [(f"sglang_ascend_fia.{a.name}", "") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(str(node.module), a.name) for a in node.names]
        else:
            continue
        for module, name in names:
            if not module.startswith("sglang_ascend_fia"):
                continue
            if module not in allowed or name.startswith("_"):
                found.append(f"{module} {name}".rstrip())
    return found


def test_case_modules_import_only_case_types_and_public_ops() -> None:
    case_modules = sorted((PACKAGE / "cases").glob("*.py"))
    assert len(case_modules) > 2
    wrong = {
        path.name: problems
        for path in case_modules
        if (problems := _violations(path, CASES_MAY_IMPORT))
    }
    assert not wrong, wrong
    assert _violations(PACKAGE / "case.py", set()) == [], "case.py must import no package code"


def test_the_audit_reports_a_loop_and_a_private_name(tmp_path: Path) -> None:
    """The old layout's loop (a case module importing the command) and a private ops name."""
    source = tmp_path / "looped.py"
    source.write_text(
        "from sglang_ascend_fia.verify import CASE_MODULES\n"
        "from sglang_ascend_fia.verify.cases.common import _hidden\n"
        "from sglang_ascend_fia import ops, verify\n"
        "from . import common\n"
    )
    assert _violations(source, CASES_MAY_IMPORT) == [
        "sglang_ascend_fia.verify CASE_MODULES",
        "sglang_ascend_fia.verify.cases.common _hidden",
        "sglang_ascend_fia.verify",
        "relative import from .",
    ]
