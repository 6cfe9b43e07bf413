"""Argument checks and the per-row int8 quantiser shared by the MoE and quantisation references.

Validators built from these helpers run before *both* implementations (see ``_dispatch``), so they
only look at metadata: shapes, dtypes and Python scalars. Checks that need tensor *values* (index
ranges, group-list sums) live in the references, where reading a value costs no device sync.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NoReturn

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INT8_MAX = 127.0


def show(value: object) -> str:
    """A short, readable rendering of an argument value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
        inner = ", ".join(show(v) for v in value)
        return f"[{inner}]"
    return repr(value)


def fail(op: str, arg: str, value: object, rule: str) -> NoReturn:
    raise ValueError(f"{op}: {arg}={show(value)} {rule}")


def require(cond: bool, op: str, arg: str, value: object, rule: str) -> None:
    if not cond:
        fail(op, arg, value, rule)


def not_implemented(op: str, arg: str, value: object, supported: str) -> NoReturn:
    fail(op, arg, value, f"is not implemented by the reference (it supports {supported})")


def absent(value: object) -> bool:
    """None, or an empty tensor list: both mean "not given" to torch_npu's optional TensorLists."""
    return value is None or (isinstance(value, list | tuple) and len(value) == 0)


def check_tensor(
    op: str,
    arg: str,
    t: object,
    *,
    dims: Collection[int] | None = None,
    dtypes: Collection[torch.dtype] | None = None,
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        fail(op, arg, t, "must be a torch.Tensor")
    if dims is not None and t.dim() not in dims:
        ordered = sorted(dims)
        if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
            wanted = f"{ordered[0]} to {ordered[-1]}"
        else:
            wanted = " or ".join(map(str, ordered))
        fail(op, arg, t, f"must have {wanted} dimensions")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d) for d in dtypes)
        fail(op, arg, t, f"must have dtype in ({names})")
    return t


def check_shape(op: str, arg: str, t: torch.Tensor, shape: Sequence[int], what: str) -> None:
    if tuple(t.shape) != tuple(shape):
        fail(op, arg, t, f"must have shape {tuple(shape)} ({what})")


def dynamic_int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantisation: ``scale = rowmax|x| / 127``, ``y = round(x / scale)``.

    ``x`` is float32 with the quantised axis last. ``torch.round`` rounds half to even, the same
    as the NPU's RINT cast (inferred: the CANN docs say "round" without a mode). An all-zero row
    gets scale 0 and y 0 (inferred: the CANN golden generators divide by zero there and produce
    NaN, whose int8 cast is undefined).
    """
    scale = x.abs().amax(dim=-1) / INT8_MAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = torch.round(x / safe.unsqueeze(-1)).clamp(-INT8_MAX, INT8_MAX)
    y = torch.where((scale > 0).unsqueeze(-1), y, torch.zeros_like(y))
    return y.to(torch.int8), scale
