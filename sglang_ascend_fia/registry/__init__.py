"""The choice between the FIA backends and sglang's own, above both backends.

- ``factory``: the hook behind ``ATTENTION_BACKENDS["ascend"]``: it runs the hand-off rules once
  per ``ModelRunner`` and builds the FIA MHA/GQA backend (:mod:`sglang_ascend_fia.attention`),
  the FIA MLA backend (:mod:`sglang_ascend_fia.mla`) or sglang's own ``AscendAttnBackend``;
- ``sglang_mode``: the mode of sglang's own backend a handed-off model runs, scoped to its
  runner.

This is the only package that names both backends. Submodules are imported lazily by the
manifest hooks; importing this package pulls in nothing from sglang.
"""

from __future__ import annotations

from typing import Any

from sglang_ascend_fia.attention import handoff as attention_handoff
from sglang_ascend_fia.fia_backend.handoff import HandoffRule
from sglang_ascend_fia.mla import handoff as mla_handoff


def rules_for(runner: Any) -> tuple[HandoffRule, ...]:
    """The hand-off rules of the FIA backend that would serve ``runner``'s model."""
    return mla_handoff.RULES if runner.use_mla_backend else attention_handoff.RULES
