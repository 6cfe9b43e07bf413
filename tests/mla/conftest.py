"""Single-rank parallel widths for MLA tests that build sglang objects outside a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def parallel_context() -> Iterator[None]:
    from sglang.srt.runtime_context import get_parallel

    with get_parallel().override(
        attn_tp_size=1, attn_cp_size=1, dcp_enabled=False, attn_dcp_size=1, attn_dcp_rank=0
    ):
        yield
