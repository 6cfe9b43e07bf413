"""The house as the project's own tools show it: which package imports which, and their sizes.

``python tools/house.py`` prints the block ``docs/architecture.md`` ("The house, measured")
holds; ``tests/plugin/test_house.py`` checks that the two agree, so the picture cannot go stale.
The graph is import-linter's own (``grimp``, the library ``lint-imports`` builds its contracts
on), lazy imports inside functions included; a package's lines are its ``.py`` files' lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

ROOT = "sglang_ascend_fia"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / ROOT


def _room(module: str) -> str:
    """The package (or top-level module) of ``sglang_ascend_fia`` that holds ``module``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def house() -> str:
    sys.path.insert(0, str(PACKAGE_DIR.parent))
    graph = grimp.build_graph(ROOT, include_external_packages=False)
    edges: dict[str, set[str]] = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = _room(importer), _room(imported)
            if a != b and b != "(root)":
                edges.setdefault(a, set()).add(b)
    lines: dict[str, int] = {}
    files: dict[str, int] = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        rel = path.relative_to(PACKAGE_DIR).parts
        room = rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")
        if room == "__init__":
            room = "(root)"
        lines[room] = lines.get(room, 0) + len(path.read_text().splitlines())
        files[room] = files.get(room, 0) + 1
    out = [f"{'package':<14}{'files':>6}{'lines':>7}  imports"]
    for room in sorted(lines):
        imports = ", ".join(sorted(edges.get(room, ()))) or "-"
        out.append(f"{room:<14}{files[room]:>6}{lines[room]:>7}  {imports}")
    out.append(f"{'total':<14}{sum(files.values()):>6}{sum(lines.values()):>7}")
    return "\n".join(out)


if __name__ == "__main__":
    print(house())
