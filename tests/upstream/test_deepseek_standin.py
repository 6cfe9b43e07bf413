"""Stock DeepSeek on the test-only torch_npu stand-in: sglang's own MLA path cannot run here.

The side-by-side harness runs sglang's in-tree Ascend attention on CPU through the stand-in for
MHA/GQA models. For DeepSeek it cannot: sglang's ``deepseek_v2`` imports its NPU attention steps
only on a real NPU device (``UPSTREAM_DEEPSEEK_NPU_STEPS_NEED_AN_NPU``), so the first prefill
fails with stock's own ``NameError``. This test shows that error, so the limit stays known and
the test fails the day stock DeepSeek runs on the stand-in. Until then, a DeepSeek model the
plugin hands off is proven to refuse cleanly on CPU (``tests/e2e/test_serve_group_faults.py``,
``tests/mla/test_handoff.py``) rather than compared token for token with stock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from side_by_side import run_path
from testbed.models import build_deepseek_v2_lite, encode_prompts
from upstream_findings import UPSTREAM_DEEPSEEK_NPU_STEPS_NEED_AN_NPU as FINDING

pytestmark = pytest.mark.engine

UPSTREAM_BACKEND = "sglang.srt.hardware_backend.npu.attention.ascend_backend.AscendAttnBackend"


def test_stock_deepseek_fails_on_the_standin_with_its_own_error(tmp_path: Path) -> None:
    model = build_deepseek_v2_lite()
    prompts = encode_prompts(model)[:2]
    run = run_path(FINDING.run, model, {"plain": prompts}, 4, tmp_path / "probe.jsonl")
    assert run.start_error is None, run.start_error
    assert "plain" in run.errors, f"stock DeepSeek ran on the stand-in: {run.tokens}"
    assert FINDING.error in run.errors["plain"], run.errors["plain"][-3000:]
    failed = [f for f in run.forwards if f["error"]]
    assert failed and {f["mode"] for f in failed} == {FINDING.mode}, failed
    # It was sglang's own backend, with the plugin off, that the forward reached.
    assert {f["attn_backend"] for f in run.forwards} == {UPSTREAM_BACKEND}
    assert {f["plugin_imported"] for f in run.forwards} == {False}
