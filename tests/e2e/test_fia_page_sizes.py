"""``--page-size`` through a real ``sglang.Engine``: illegal sizes stop startup with a message
naming the legal ones; every other legal size runs and matches HF (128 is covered by
``test_fia_engine``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from testbed.engine import EngineProcess, start_error, testbed_env
from testbed.models import encode_prompts, token_stream
from testbed.oracle import hf_greedy

from e2e.fia_common import NEW_TOKENS
from sglang_ascend_fia import ops

pytestmark = pytest.mark.engine

LEGAL = ops.legal_page_sizes(mla=False)


# sglang's CPU default (1) through the Engine. Every other illegal size meets the same construction
# check, tested per size in tests/attention/test_backend.py (refused_at_construction), and 16 also
# through launch_server (tests/e2e/test_serve_refusals.py): one engine start here, not four.
@pytest.mark.parametrize("page", [1])
def test_illegal_page_size_fails_startup_with_the_legal_sizes(qwen2: Path, page: int) -> None:
    assert page not in LEGAL
    # sglang itself insists that chunked_prefill_size is a multiple of the page size; keep that
    # satisfied so the refusal seen is the plugin's.
    error = start_error(
        qwen2,
        env=testbed_env(ASCEND_USE_FIA="1"),
        attention_backend="ascend",
        page_size=page,
        chunked_prefill_size=256,
    )
    assert error is not None, f"page_size={page} started"
    assert "the 'ascend' attention backend cannot start" in error, error[-2000:]
    assert f"--page-size={page} is not allowed" in error
    assert f"accepts page sizes {LEGAL}" in error


@pytest.mark.parametrize("page", [256, 384, 512])
def test_legal_page_size_matches_hf(qwen2: Path, page: int) -> None:
    """Every legal size above 128 serves prefill, a radix hit on a whole cached page and decode
    with HF's tokens (384 is legal by the doc's "multiple of 128 in [128, 512]")."""
    assert page in LEGAL
    prompts = encode_prompts(qwen2)[:4]
    shared = token_stream(qwen2, page + 44, offset=7)  # > one page: a radix hit on reuse
    prompts += [[*shared, 5, 6, 7], [*shared, 9, 10]]
    expected = hf_greedy(qwen2, prompts, NEW_TOKENS)
    with EngineProcess(
        qwen2,
        env=testbed_env(ASCEND_USE_FIA="1"),
        attention_backend="ascend",
        page_size=page,
        chunked_prefill_size=page,
    ) as engine:
        first = engine.generate(prompts[:5], NEW_TOKENS)
        second = engine.generate(prompts[5:], NEW_TOKENS)
    assert first["output_ids"] + second["output_ids"] == expected
    assert second["meta"][0]["cached_tokens"] >= page
