"""Shared fixtures of the ops tests (one intra-op thread comes from ``TINY_TENSOR_DIRS``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sglang_ascend_fia import ops


@pytest.fixture
def cold_counters() -> Iterator[None]:
    """Zero the launch and validation counts, which also forgets each op's remembered call, so
    a test starts cold and leaves no remembered call behind."""
    ops.reset_validation_counts()
    ops.reset_launch_counts()
    yield
    ops.reset_validation_counts()
