"""TEST-ONLY stand-in for ``sgl_kernel_npu`` (tests/support/npu_standin; never shipped).

sglang's in-tree Ascend backend imports it at top level (``ascend_backend.py:8-11``,
``attention/dsa_dcp.py:7``). Importing it registers nothing; every function reached through it
raises ``NotImplementedError`` when called and counts the attempt in the torch_npu stand-in's
call counts, so a path that needs a real sgl_kernel_npu kernel fails loudly.
"""

from __future__ import annotations

from typing import Any

from torch_npu.standin import unimplemented


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return unimplemented(f"sgl_kernel_npu.{name}")
