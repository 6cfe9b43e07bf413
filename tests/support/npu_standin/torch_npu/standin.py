"""Mechanics of the TEST-ONLY torch_npu stand-in: call counts, refusals, zero-cost mode."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

ZERO_COST_ENV = "NPU_STANDIN_ZERO_COST"

_calls: Counter[str] = Counter()


@functools.cache
def zero_cost_enabled() -> bool:
    """``NPU_STANDIN_ZERO_COST=1``: implemented kernels return preallocated outputs, no work.

    Read once per process, so the check costs nothing in the timed loop."""
    value = os.environ.get(ZERO_COST_ENV, "0")
    if value not in ("0", "1"):
        raise ValueError(f"{ZERO_COST_ENV}={value!r}: accepted values are '0' and '1'")
    return value == "1"


def standin_call_counts() -> dict[str, int]:
    """Calls per torch_npu / sgl_kernel_npu function since the last reset (unimplemented too)."""
    return dict(_calls)


def reset_standin_call_counts() -> None:
    _calls.clear()


def counted(
    name: str, implementation: Callable[..., Any], zero_cost: Callable[..., Any] | None = None
) -> Callable[..., Any]:
    """``implementation`` under ``name``, counting each call; ``zero_cost`` in zero-cost mode."""
    chosen = zero_cost if (zero_cost is not None and zero_cost_enabled()) else implementation

    @functools.wraps(implementation)
    def call(*args: Any, **kwargs: Any) -> Any:
        _calls[name] += 1
        return chosen(*args, **kwargs)

    call.__name__ = name.rsplit(".", 1)[-1]
    return call


def unimplemented(qualified_name: str) -> Callable[..., Any]:
    """A function that counts the attempt and raises: imported-but-unimplemented never returns."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        _calls[qualified_name] += 1
        raise NotImplementedError(
            f"{qualified_name} is not implemented by the test-only torch_npu stand-in "
            "(tests/support/npu_standin); the path that called it is not covered on CPU"
        )

    refuse.__name__ = qualified_name.rsplit(".", 1)[-1]
    return refuse


def int_array(value: Any) -> list[int] | None:
    """An ``int[]?`` argument as the torch binding hands it to the kernel: a list of ints.

    sglang passes these as lists, 1-D int tensors (``seq_lens_cpu_int``, ``ascend_backend.py:1900``)
    or numpy arrays (``np.cumsum``, ``:613``); the binding accepts all three (inferred from upstream
    passing them on hardware). Anything else is refused with the type it got.
    """
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype.is_floating_point:
            raise TypeError(f"int[] argument: a 1-D integer tensor is accepted, got {value!r}")
        return [int(v) for v in value.tolist()]
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"int[] argument: a 1-D integer array is accepted, got {value!r}")
        return [int(v) for v in value.tolist()]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [int(v) for v in value]
    raise TypeError(f"int[] argument: a list, tensor or numpy array is accepted, got {value!r}")
