"""Dispatch between torch_npu kernels and the pure-PyTorch references, with launch accounting.

Every public op in :mod:`sglang_ascend_fia.ops` is declared with :func:`npu_op`. A call:

1. validates the documented kernel constraints (the same checks on every device, so a CPU run
   rejects what an NPU would reject);
2. counts one launch for the op (``launch_counts()``), so tests and benchmarks can assert how many
   kernels a forward makes;
3. runs ``torch_npu.<npu_name>`` when the first tensor argument lives on an NPU, and the reference
   implementation otherwise.

``torch_npu`` is imported only when an NPU tensor is actually seen.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import torch

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class NpuOp(Protocol[P, R]):
    """A facade op: callable like the torch_npu kernel, with its parts exposed for tests and
    ``verify-ops``."""

    npu_name: str
    reference: Callable[P, R]
    validate: Callable[..., None] | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...


_launches: Counter[str] = Counter()
_reference_logged = False


def launch_counts() -> dict[str, int]:
    """Kernel launches per op name (without the ``npu_`` prefix) since the last reset."""
    return dict(_launches)


def reset_launch_counts() -> None:
    _launches.clear()


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
            return value[0]
    return None


def _is_npu(tensor: torch.Tensor | None) -> bool:
    # A string compare on the device type: no import, no device query, no sync.
    return tensor is not None and tensor.device.type == "npu"


def _npu_kernel(npu_name: str) -> Callable[..., Any]:
    import torch_npu  # only reached with an NPU tensor in hand

    return getattr(torch_npu, npu_name)


def _log_reference_once(device: str) -> None:
    global _reference_logged
    if not _reference_logged:
        _reference_logged = True
        logger.info(
            "sglang-ascend-fia: no NPU tensor seen (device %s); NPU ops run their pure-PyTorch "
            "references",
            device,
        )


def npu_op(
    npu_name: str,
    *,
    validate: Callable[..., None] | None = None,
) -> Callable[[Callable[P, R]], NpuOp[P, R]]:
    """Declare ``reference`` as the CPU/CUDA implementation of ``torch_npu.<npu_name>``.

    ``validate`` takes the op's own arguments and raises ``ValueError`` on anything the NPU
    kernel documents as unsupported. It runs before either implementation.
    """

    def decorate(reference: Callable[P, R]) -> NpuOp[P, R]:
        op_name = reference.__name__

        @functools.wraps(reference)
        def op(*args: P.args, **kwargs: P.kwargs) -> R:
            if validate is not None:
                validate(*args, **kwargs)
            _launches[op_name] += 1
            tensor = _first_tensor(args, kwargs)
            if _is_npu(tensor):
                return _npu_kernel(npu_name)(*args, **kwargs)
            _log_reference_once(tensor.device.type if tensor is not None else "none")
            return reference(*args, **kwargs)

        facade = cast(NpuOp[P, R], op)
        facade.npu_name = npu_name
        facade.reference = reference
        facade.validate = validate
        return facade

    return decorate
