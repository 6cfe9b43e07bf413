"""Which ``--page-size`` each path accepts, and what happens at 16, through a real Engine.

sglang 0.5.23 checks no page size for ``ascend``; it only defaults it to 128
(``hardware_backend/npu/utils.py:96-101``). The plugin refuses sizes its kernels reject at
start-up (``ops.legal_page_sizes``); 128 for every path is covered by the side-by-side engine
tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.fia_common import NEW_TOKENS
from side_by_side import PathRun, run_path
from testbed.models import build_qwen2, encode_prompts
from testbed.oracle import hf_greedy

from sglang_ascend_fia import ops

pytestmark = pytest.mark.engine

PAGE = 16
ARGS = {"page_size": PAGE, "chunked_prefill_size": 256, "enable_mixed_chunk": False}


@pytest.fixture(scope="module")
def model() -> Path:
    return build_qwen2()


def _run(path: str, model: Path, tmp: Path) -> tuple[PathRun, list[list[int]]]:
    prompts = encode_prompts(model)[:3]
    return run_path(path, model, {"plain": prompts}, NEW_TOKENS, tmp / "log.jsonl", **ARGS), prompts


def test_plugin_refuses_page_16_at_startup(model: Path, tmp_path: Path) -> None:
    assert PAGE not in ops.legal_page_sizes(mla=False)
    run, _ = _run("plugin", model, tmp_path)
    assert run.start_error is not None and f"--page-size={PAGE} is not allowed" in run.start_error


def test_upstream_fia_starts_at_page_16_and_fails_the_first_prompt(
    model: Path, tmp_path: Path
) -> None:
    run, _ = _run("upstream-fia", model, tmp_path)
    assert run.start_error is None
    # The FIA doc's rule for prompt (Q_S>1) page attention, checked by the ops validator the
    # stand-in hands the call to: the kernel would reject the same call on an NPU.
    assert "block_size=16 is not allowed" in run.errors["plain"], run.errors
    assert {f["mode"] for f in run.forwards if f["error"]} == {"EXTEND"}


def test_upstream_atb_path_serves_page_16(model: Path, tmp_path: Path) -> None:
    run, prompts = _run("upstream", model, tmp_path)
    assert run.start_error is None and not run.errors, run.errors
    # On the stand-in's ATB references, which model no block-size limit of the ATB kernels.
    assert run.tokens["plain"] == hf_greedy(model, prompts, NEW_TOKENS)
    assert {f["page_size"] for f in run.forwards} == {PAGE}
