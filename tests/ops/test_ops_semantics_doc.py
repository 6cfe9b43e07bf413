"""docs/ops-semantics.md has one section per op the facade implements, headed by its torch_npu
name (code comments cite those headings), and no section for an op that is gone."""

from __future__ import annotations

import re
from pathlib import Path

from sglang_ascend_fia import ops

DOC = Path(__file__).resolve().parents[2] / "docs" / "ops-semantics.md"


def _facade_ops() -> dict[str, str]:
    """torch_npu name -> facade name, for every public op declared with ``npu_op``."""
    found = {}
    for name in ops.__all__:
        npu_name = getattr(getattr(ops, name), "npu_name", None)
        if npu_name is not None:
            found[npu_name] = name
    return found


def test_every_op_has_a_section_and_every_section_an_op() -> None:
    sections = set(re.findall(r"^## (npu_\w+)$", DOC.read_text(), flags=re.MULTILINE))
    implemented = _facade_ops()

    assert len(implemented) >= 13  # the 13 ops of the facade when this doc was last trimmed
    assert sections == set(implemented), (
        f"missing sections: {sorted(set(implemented) - sections)}; "
        f"sections without an op: {sorted(sections - set(implemented))}"
    )


def test_each_section_names_the_facade_call_and_its_sources() -> None:
    text = DOC.read_text()
    for npu_name, name in _facade_ops().items():
        start = text.index(f"\n## {npu_name}\n")
        end = text.find("\n## ", start + 1)
        section = text[start : end if end != -1 else len(text)]
        assert f"ops.{name}(" in section, f"{npu_name}: the facade call is not shown"
        assert "| Source |" in section, f"{npu_name}: no rule table with sources"
