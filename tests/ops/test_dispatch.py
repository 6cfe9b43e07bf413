"""``npu_op``: each call is bound once to the op's own signature and the validator reads that
mapping, so no validator restates its op's signature; the binding matches Python's."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from sglang_ascend_fia import ops

FACADE_OPS = [op for op in map(ops.__dict__.get, ops.__all__) if hasattr(op, "reference")]


@pytest.mark.parametrize("op", FACADE_OPS, ids=lambda op: op.__name__)
def test_each_validator_reads_one_bound_call_not_a_restated_signature(op: Any) -> None:
    assert op.npu_name == "npu_" + op.__name__
    assert list(inspect.signature(op.validator).parameters) == ["a"]
    # The callable form an NPU call runs binds like the op itself.
    assert inspect.signature(op.validate) == inspect.signature(op.reference)


def _reference_bind(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _three(x: int, y: int = 2, z: int = 3, *, w: int = 4, v: int | None = None) -> None:
    return None


def bind_arguments(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The mapping ``npu_op`` hands its validator for the call ``fn(*args, **kwargs)``."""
    seen: list[Mapping[str, Any]] = []
    ops.npu_op("npu_" + fn.__name__, validate=seen.append)(fn).validate(*args, **kwargs)
    return dict(seen[0])


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1,), {}),
        ((1, 5), {}),
        ((1, 5, 6), {"w": 7}),
        ((), {"x": 1, "z": 9}),
        ((1,), {"v": 0, "y": 8}),
    ],
)
def test_bind_arguments_binds_as_python_does(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    assert bind_arguments(_three, args, kwargs) == _reference_bind(_three, args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {"x": 2}), ((1,), {"u": 0}), ((1, 2, 3, 4), {})],
    ids=["missing", "twice", "unknown keyword", "too many positional"],
)
def test_a_call_that_does_not_bind_raises_pythons_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        bind_arguments(_three, args, kwargs)


def test_a_misspelt_keyword_is_refused_before_any_launch() -> None:
    ops.reset_launch_counts()
    x = torch.randn(3, 8)
    with pytest.raises(TypeError, match="dimm"):
        ops.swiglu(x, dimm=-1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="dimm"):
        ops.swiglu.validate(x, dimm=-1)  # type: ignore[call-arg]
    assert ops.launch_counts() == {}
