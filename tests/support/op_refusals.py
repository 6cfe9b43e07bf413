"""The two refusal checks every ops test module runs over its table of bad calls."""

from __future__ import annotations

from typing import Any

import pytest

from sglang_ascend_fia import ops

# A table row: (test id, op, args, kwargs, the message the refusal must match).
REFUSAL_FIELDS = ("op", "args", "kwargs", "match")


def refusal_params(*tables: list[tuple[Any, ...]]) -> list[Any]:
    """The rows of ``tables`` as ``pytest.param``s for ``REFUSAL_FIELDS``, each with its id."""
    return [pytest.param(op, a, kw, m, id=name) for table in tables for name, op, a, kw, m in table]


def assert_validator_rejects(
    op: Any, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    """The op's own validator raises (so an NPU call is refused too), before any launch."""
    with pytest.raises(ValueError, match=match):
        op.validate(*args, **kwargs)
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=match):
        op(*args, **kwargs)
    assert ops.launch_counts() == {}


def assert_reference_refuses(
    op: Any, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    """The validator lets the call through (the kernel takes it); the reference refuses it."""
    op.validate(*args, **kwargs)
    with pytest.raises(ValueError, match=match):
        op(*args, **kwargs)
