"""Single-rank parallel widths for backend tests that build sglang objects outside a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def parallel_context() -> Iterator[None]:
    """Single-rank widths, as a one-GPU server publishes them."""
    from sglang.srt.runtime_context import get_parallel

    with get_parallel().override(attn_tp_size=1, attn_cp_size=1, dcp_enabled=False):
        yield
