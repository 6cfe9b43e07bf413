"""The README's hand-off list is the rules the registry checks, in their order: each line is a
``HandoffRule``'s text and what it reads (``attention/handoff.RULES``, ``mla/handoff.RULES``),
the same objects ``doctor`` prints. A rule added, changed or reordered without the README fails."""

from __future__ import annotations

import re
from pathlib import Path

from sglang_ascend_fia.attention.handoff import RULES
from sglang_ascend_fia.fia_backend.handoff import HandoffRule
from sglang_ascend_fia.mla.handoff import RULES as MLA_RULES

README = Path(__file__).resolve().parents[2] / "README.md"


def _listed(block: str) -> list[list[str]]:
    """The bullet lines of each list in ``block``, list by list."""
    lists: list[list[str]] = []
    for paragraph in re.split(r"\n\s*\n", block):
        items = [m.group(1) for m in re.finditer(r"^\s*- (.+)$", paragraph, re.M)]
        if items:
            lists.append(items)
    return lists


def _line(rule: HandoffRule) -> str:
    return f"{rule.text} (reads {rule.reads})"


def test_the_readme_lists_every_hand_off_rule_in_order() -> None:
    text = README.read_text()
    block = re.search(
        r"<!-- hand-off rules: begin.*?-->\n(.*?)<!-- hand-off rules: end -->", text, re.S
    )
    assert block is not None, "README.md has no hand-off rules block"
    assert _listed(block.group(1)) == [
        [_line(rule) for rule in RULES],
        [_line(rule) for rule in MLA_RULES],
    ]


def test_every_rule_says_what_it_reads() -> None:
    for rule in (*RULES, *MLA_RULES):
        assert rule.text.strip() and rule.reads.strip(), rule
