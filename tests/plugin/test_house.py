"""``docs/architecture.md``'s "The house, measured" block is what ``tools/house.py`` prints now:
the import graph between the package's rooms and their sizes (lines within 10 %), so the picture
cannot go stale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _rows(table: str) -> dict[str, tuple[int, int, str]]:
    """room -> (files, lines, imports) from a printed house table."""
    rows = {}
    for line in table.strip().splitlines()[1:]:
        room, files, lines, *imports = line.split(maxsplit=3)
        rows[room] = (int(files), int(lines), imports[0] if imports else "")
    return rows


@pytest.fixture(scope="module")
def printed() -> str:
    """What ``tools/house.py`` prints, run once for the module."""
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "house.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


def test_the_documented_house_is_the_measured_one(printed: str) -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"## The house, measured\n.*?```\n(.*?)\n```", doc, re.S)
    assert block is not None, "docs/architecture.md has no 'The house, measured' block"
    stale = "docs/architecture.md is stale: paste `python tools/house.py`'s output\n" + printed
    documented, measured = _rows(block.group(1)), _rows(printed)
    # Rooms, file counts and import edges exactly; line counts within 10 %, so an ordinary
    # edit does not have to touch the doc, and a move or a deletion does.
    assert documented.keys() == measured.keys(), stale
    for room, (files, lines, imports) in measured.items():
        doc_files, doc_lines, doc_imports = documented[room]
        assert (doc_files, doc_imports) == (files, imports), stale
        assert abs(doc_lines - lines) <= max(20, lines // 10), stale


def test_the_attention_backends_and_moe_import_none_of_each_other(printed: str) -> None:
    rows = {line.split()[0]: line for line in printed.splitlines()[1:]}
    for room in ("attention", "mla", "moe"):
        imports = rows[room].split("  ")[-1]
        others = {"attention", "mla", "moe", "registry"} - {room}
        assert not others & set(imports.replace(",", " ").split()), rows[room]
