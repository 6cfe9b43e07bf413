"""Shared fixtures of the attention backend tests, defined once in ``attention/helpers.py``:
single-rank parallel widths for sglang objects built outside a server (autouse), and the
plugin's ``ATTENTION_BACKENDS["ascend"]`` factory."""

from __future__ import annotations

from attention.helpers import ascend_factory, parallel_context

__all__ = ["ascend_factory", "parallel_context"]
