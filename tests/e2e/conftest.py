"""Shared fixtures of the Engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from testbed.models import build_qwen2


@pytest.fixture(scope="session")
def qwen2() -> Path:
    """The default tiny Qwen2 checkpoint (``testbed.models.qwen2_config``), built once."""
    return build_qwen2()
