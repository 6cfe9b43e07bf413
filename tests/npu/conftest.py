"""Opt-in NPU suite: runs only where torch_npu sees an NPU; elsewhere each test skips, one line."""

from __future__ import annotations

import importlib.util

import pytest


def npu_missing_reason() -> str | None:
    """Why this machine cannot run the suite (None: it can)."""
    if importlib.util.find_spec("torch_npu") is None:
        return "no NPU: torch_npu is not installed"
    import torch
    import torch_npu  # noqa: F401 - registers torch.npu

    if not torch.npu.is_available():  # type: ignore[attr-defined]
        return "no NPU: torch_npu sees no device"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = npu_missing_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("npu"):
            item.add_marker(pytest.mark.skip(reason=reason))
