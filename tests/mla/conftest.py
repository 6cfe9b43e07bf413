"""Shared fixtures of the MLA backend tests, defined once in ``attention/helpers.py``:
single-rank parallel widths for sglang objects built outside a server (autouse), and the
plugin's ``ATTENTION_BACKENDS["ascend"]`` factory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from attention.helpers import ascend_factory, parallel_context

__all__ = ["ascend_factory", "parallel_context"]


@pytest.fixture(autouse=True)
def active_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugin active around each test: the FIA MLA backend is fed by the deepseek-mla patch
    group and refuses to start without it (``plugin.group_unready_reason``), also when a test
    builds it directly."""
    monkeypatch.setenv("ASCEND_USE_FIA", "1")
    import sglang_ascend_fia.mla.pool  # noqa: F401  (as in ascend_factory: the pool hook's module)
    from sglang_ascend_fia import plugin

    plugin.activate()
    try:
        yield
    finally:
        plugin.deactivate()
