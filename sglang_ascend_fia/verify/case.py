"""What a ``verify-ops`` case is, and how close its two runs must agree.

A case is a function returning ``(name, run, dtype)``: ``run(device)`` builds seeded inputs, calls
the facade op on ``device`` and returns CPU tensors; ``dtype`` picks the float tolerance. The case
modules in :mod:`sglang_ascend_fia.verify.cases` import these types; the command in
:mod:`sglang_ascend_fia.verify` imports the case modules, so imports point one way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Outputs = tuple[torch.Tensor, ...]
Case = tuple[str, Callable[[str], Outputs], torch.dtype]
CaseFactory = Callable[[], Case]

# (atol, rtol) per compute dtype: a few units in the last place of the dtype, since the kernel
# and the fp32 reference round and accumulate in different orders. Integer outputs must match.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def tolerance_for(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for a case computed in ``dtype``; fp32's for any dtype not listed."""
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])
