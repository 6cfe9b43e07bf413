"""List the raise sites under ``sglang_ascend_fia/ops/`` that no test makes raise.

Run by ``test_raise_sites.py`` as part of the suite. By hand, from the repository root, with the
fast-test environment::

    PYTHONPATH=tests/support/pythonpath:tests/support .venv/bin/python \
        tests/ops/trace_raise_sites.py tests/ops [more pytest args]

A *raise site* is a ``raise`` statement or a call to one of the raising helpers of
``ops._checks`` (``fail``, ``not_implemented``, ``require``, ``require_indices_below``). A site
counts as reached only if an exception actually propagates through its lines while the tests run
(a ``require`` whose condition held does not count), so this is stricter than line coverage.
Exits 1 when a site is left unreached. ``fia/reference.py`` is excluded (its owner tests it
separately).
"""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

OPS = Path(__file__).resolve().parents[2] / "sglang_ascend_fia" / "ops"
EXCLUDED = {"fia/reference.py"}
RAISERS = {"fail", "not_implemented", "require", "require_indices_below"}

_hits: dict[str, set[int]] = {}


def _local(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "exception":
        _hits.setdefault(frame.f_code.co_filename, set()).add(frame.f_lineno)
    return _local


def _global(frame: FrameType, event: str, arg: Any) -> Any:
    if event != "call" or not frame.f_code.co_filename.startswith(str(OPS)):
        return None
    frame.f_trace_lines = False  # only exception events are needed
    return _local


def raise_sites(path: Path) -> list[tuple[int, int, str]]:
    """(first line, last line, text) of every raise site in ``path``."""
    tree = ast.parse(path.read_text())
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise):
            pass
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.id if isinstance(func, ast.Name) else None
            if name not in RAISERS:
                continue
        else:
            continue
        end = node.end_lineno or node.lineno
        sites.append((node.lineno, end, ast.unparse(node).splitlines()[0][:90]))
    return sorted(sites)


def main(argv: list[str]) -> int:
    import pytest

    sys.settrace(_global)
    threading.settrace(_global)
    try:
        code = pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not engine", *argv])
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
    if code not in (0, 1):
        print(f"pytest exited {code}; no report", file=sys.stderr)
        return 2
    missing = 0
    total = 0
    for path in sorted(OPS.rglob("*.py")):
        if path.relative_to(OPS).as_posix() in EXCLUDED:
            continue
        hits = _hits.get(str(path), set())
        for first, last, text in raise_sites(path):
            total += 1
            if not any(first <= line <= last for line in hits):
                missing += 1
                print(f"UNREACHED {path.name}:{first}: {text}")
    print(f"{total - missing}/{total} raise sites reached")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
