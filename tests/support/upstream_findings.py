"""Where sglang 0.5.23's in-tree Ascend backend departs from HF on the test bed, with the cause.

Each finding names the upstream ``file:line`` that causes it and the error text it produces
through the torch_npu stand-in; the engine tests accept a departure from HF only when it matches
one of these, and fail if a finding no longer happens (so this list stays true). TEST-ONLY.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    run: str  # the engine run of test_engine_side_by_side that shows it
    mode: str  # the forward mode that raises
    error: str  # text of the error raised in that forward
    cause: str  # upstream file:line and why


UPSTREAM_FIA_MIXED_BLOCK_SIZE = Finding(
    run="upstream-fia+mixed",
    mode="MIXED",
    error="block_size=1 is not allowed",
    # With --enable-mixed-chunk (mixed batches reach forward_mixed on an NPU).
    cause=(
        "hardware_backend/npu/attention/ascend_backend.py:3517 reads "
        "`num_block, block_size, _, _ = k_cache.shape`, but with ASCEND_USE_FIA=1 the pool's "
        "per-layer key buffer is a [pages*page_size, 1, heads, dim] view "
        "(hardware_backend/npu/memory_pool_npu.py:175-189), so forward_mixed calls FIA with "
        "block_size=1 and page-unit block tables; a prompt page-attention call needs a multiple "
        "of 128 (FIA doc), and block_size=1 would read the wrong slots anyway"
    ),
)

FINDINGS = (UPSTREAM_FIA_MIXED_BLOCK_SIZE,)


def explains(run: str, error: str) -> Finding | None:
    """The finding that explains ``error`` in ``run``, if any."""
    return next((f for f in FINDINGS if f.run == run and f.error in error), None)
