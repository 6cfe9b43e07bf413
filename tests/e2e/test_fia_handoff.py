"""Hand-off through a real ``sglang.Engine``: a setting the FIA backend does not implement sends
the model to sglang's own ``AscendAttnBackend`` with one log line, instead of refusing to start.

On CPU sglang's own backend cannot be built: its module imports ``torch_npu`` at top level
(hardware_backend/npu/attention/ascend_backend.py:7-11). So this engine stops at that import,
and the evidence of the hand-off is the plugin's line followed by sglang's own import failing.
Serving tokens through sglang's own backend here waits for a test-only torch_npu stand-in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from testbed.engine import start_error, testbed_env
from testbed.models import build_qwen2

pytestmark = pytest.mark.engine

HANDOFF_LINE = "sglang-ascend-fia: attention runs on sglang's own AscendAttnBackend, not FIA: "


def test_bf16_kv_cache_with_an_fp32_model_goes_to_sglangs_own_backend() -> None:
    """``--kv-cache-dtype bf16`` under an fp32 model: FIA reads a KV cache in the model's dtype
    only, so the plugin hands off (an FP8 cache takes the same path; sglang has no CPU FP8 pool)."""
    model: Path = build_qwen2()
    error = start_error(
        model,
        env=testbed_env(ASCEND_USE_FIA="1"),
        attention_backend="ascend",
        page_size=128,
        kv_cache_dtype="bf16",
        log_level="warning",
    )
    assert error is not None, "sglang's own Ascend backend cannot start on CPU, yet it started"
    lines = [line for line in error.splitlines() if HANDOFF_LINE in line]
    assert len(lines) == 1, error[-3000:]
    assert "--kv-cache-dtype bfloat16 with a float32 model" in lines[0]
    after = error[error.index(HANDOFF_LINE) :]
    assert "torch_npu" in after or "sgl_kernel_npu" in after, after[-2000:]
    assert "cannot start" not in error, "the plugin refused instead of handing off"
