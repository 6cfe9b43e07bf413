"""The argument checks every op shares: one error wording, the dtype policy and the dtype lists.

Two kinds of refusal, both ``ValueError`` and both worded here so that every op reads the same:

- :func:`fail` / :func:`require`: ``"<op>: <arg>=<value> is not allowed: <rule>"``. Validators
  use them for the *documented* kernel constraints; they run before either implementation (see
  ``_dispatch``), so a CPU run refuses what the NPU would refuse. Validators only look at
  metadata (shapes, dtypes, Python scalars and lists); checks that need tensor *values* (index
  ranges, group-list sums) live in the references, where reading a value costs no device sync.
- :func:`not_implemented`: ``"<op>: <arg>=<value> is not implemented by the reference (it
  supports ...)"``. What the kernel supports but the reference does not model; only the
  references raise it, so only CPU/CUDA runs see it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NoReturn

import torch

# ---------------------------------------------------------------------------------------------
# dtype policy (decided for the project, shared by every op that documents fp16/bf16 only)
# ---------------------------------------------------------------------------------------------
# The kernels take float16/bfloat16 (FIA also int8) inputs. The references also take float32 so
# that the CPU test bed, which runs whole models in fp32, can compare against HF and brute force
# at fp32 tolerance. float32 is therefore accepted only off the NPU: on an NPU tensor it is
# refused, as the kernel would refuse it. A "bf16 only" rule accepts bf16, and float32 off the
# NPU; float16 is refused everywhere. The device check is a string compare: no import, no sync.

HALF_DTYPES = (torch.float16, torch.bfloat16)
"""The float dtypes the kernels document."""
FLOAT_DTYPES = (*HALF_DTYPES, torch.float32)
"""What the validators accept as float input: the kernels' dtypes, and float32 (see above)."""


def refuse_npu_float32(op: str, argument: str, tensor: torch.Tensor, kernel_dtypes: str) -> None:
    """``ValueError`` for a float32 ``tensor`` on an NPU; the kernel takes ``kernel_dtypes``."""
    if tensor.dtype == torch.float32 and tensor.device.type == "npu":
        fail(
            op,
            argument,
            tensor.dtype,
            f"on an NPU tensor the kernel takes {kernel_dtypes}; float32 is accepted off the NPU "
            "only, by the reference",
        )


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


def show(value: object) -> str:
    """A short, readable rendering of an argument value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
        inner = ", ".join(show(v) for v in value)
        return f"[{inner}]"
    return repr(value)


def fail(op: str, arg: str, value: object, rule: str) -> NoReturn:
    """Refuse ``arg=value`` of ``op``: it breaks the documented ``rule``."""
    raise ValueError(f"{op}: {arg}={show(value)} is not allowed: {rule}")


def require(cond: bool, op: str, arg: str, value: object, rule: str) -> None:
    if not cond:
        fail(op, arg, value, rule)


def not_implemented(op: str, arg: str, value: object, supported: str) -> NoReturn:
    """Refuse what the kernel takes but the reference does not model; it models ``supported``."""
    raise ValueError(
        f"{op}: {arg}={show(value)} is not implemented by the reference (it supports {supported})"
    )


# ---------------------------------------------------------------------------------------------
# Common checks
# ---------------------------------------------------------------------------------------------


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


def require_indices_below(op: str, arg: str, indices: torch.Tensor, high: int, bound: str) -> None:
    """Refuse index values of ``indices`` outside ``[0, high)``; ``bound`` names ``high``.

    Reads tensor values, so only the references call it (see the module docstring).
    """
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= high):
        fail(op, arg, indices, f"values must lie in [0, {bound})")
