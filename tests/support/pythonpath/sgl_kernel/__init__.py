"""TEST-ONLY pure-torch stand-in for ``sgl_kernel`` on a CPU without sglang's CPU kernels.

With ``SGLANG_USE_CPU_ENGINE=1`` sglang imports a handful of ``*_cpu`` names from ``sgl_kernel``
at import time. PyPI's ``sglang-kernel`` is CUDA-only, so this module stands in on the test
``PYTHONPATH``. It is never part of the wheel and must never be installed into site-packages,
where it would shadow a real ``sgl_kernel``.

Only ``assign_req_to_token_pool_cpu`` is ever called on the Qwen2 / DeepSeek-V2 CPU paths; every
other name resolves to a function that raises, so an unexpected call fails loudly. Deliberately,
nothing registers ``torch.ops.sgl_kernel.convert_weight_packed``: sglang probes it to decide AMX
support, and without it every layer takes its ``forward_native`` path.

Remove when: a CPU build of ``sgl_kernel`` with the ``*_cpu`` ops installs from PyPI for the
tested sglang, or sglang stops importing ``sgl_kernel`` at import time with
``SGLANG_USE_CPU_ENGINE=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__version__ = "0.0.0+sglang-ascend-fia-testbed"


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    max_context_len: int,
) -> None:
    """``req_to_token[row, start:end] = out_cache_loc[...]`` for each request, in order."""
    del max_context_len  # the real kernel uses it as the row stride
    cursor = 0
    rows = req_pool_indices.tolist()
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    for row, start, end in zip(rows, starts, ends, strict=True):
        length = end - start
        req_to_token[row, start:end] = out_cache_loc[cursor : cursor + length].to(
            req_to_token.dtype
        )
        cursor += length


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("__"):
        raise AttributeError(name)

    def _unavailable(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"sgl_kernel.{name} is not available in the sglang-ascend-fia CPU test bed"
        )

    _unavailable.__name__ = name
    return _unavailable
