"""The ranks' hand-off verdicts, exchanged once at start-up, give one decision for all.

The exchange itself runs over sglang's CPU group in ``tests/e2e/test_deepseek_ranks.py`` (two
nodes, one missing a patch target); this is its table.
"""

from __future__ import annotations

import pytest

from sglang_ascend_fia.registry.rank_agreement import agreement

CASES = [
    ([None, None], None),
    (["dims"], "dims"),
    (["speculative decoding", "speculative decoding"], "speculative decoding"),
    ([None, "group skipped"], "tp rank 1 of 2 hands off (group skipped), so every rank does"),
    (["a", None, "b", None], "tp rank 0 of 4 hands off (a), so every rank does"),
    (["a", "b"], "tp rank 0 of 2 hands off (a), so every rank does"),
]


@pytest.mark.parametrize(("reasons", "expected"), CASES)
def test_one_handing_off_rank_hands_off_every_rank(
    reasons: list[str | None], expected: str | None
) -> None:
    assert agreement(reasons) == expected
