"""sglang's MoE layers built in the test process: one sglang configuration per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def sglang_layers(one_thread: None) -> Iterator[None]:
    """A one-rank CPU sglang context and process groups (torch.distributed over gloo)."""
    from testbed.moe_layers import sglang_context

    with sglang_context():
        yield
