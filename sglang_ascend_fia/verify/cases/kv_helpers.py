"""``verify-ops`` cases for the KV-cache writes.

Protocol and helpers: :mod:`.common`. Covered per op (enforced by
``tests/verify/test_verify_coverage.py``):

- ``scatter_nd_update_``: every documented dtype (fp16, bf16, fp32, int8, int64, bool), int32 and
  int64 indices, index depth 1 (sglang's rows) and 2 (block, offset).
- ``scatter_pa_kv_cache``: cache_mode 'Norm', None and 'PA_NZ'; fp16, bf16 and int8; int32 and
  int64 slots; equal and different K/V head sizes.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import BF16, FP16, FP32, cpu, gen

# ---- scatter_nd_update_ ----------------------------------------------------------------------


def scatter_nd_update_rows() -> Case:
    def run(device: str) -> Outputs:
        g = gen(401)
        cache = torch.randn(4 * 128, 2, 128, generator=g).to(BF16)
        loc = torch.randperm(4 * 128, generator=g)[:37]
        new = torch.randn(37, 2, 128, generator=g).to(BF16)
        cache_d = cache.to(device)
        ops.scatter_nd_update_(cache_d, loc.view(-1, 1).to(device), new.to(device))
        return cpu(cache_d)

    return "scatter_nd_update_ KV rows [slots, H, D], int64 index bf16", run, BF16


def _random(shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) < 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100, 100, shape, generator=g, dtype=dtype)


def scatter_nd_update_dtypes() -> Case:
    def run(device: str) -> Outputs:
        g = gen(402)
        blocks, block, heads, d, n = 3, 16, 2, 64, 11
        slots = torch.randperm(blocks * block, generator=g)[:n]
        # Depth-2 index: each row addresses (block, offset) of a paged cache.
        pairs = torch.stack([slots // block, slots % block], dim=1).int()
        cache = _random((blocks, block, heads, d), FP16, g).to(device)
        ops.scatter_nd_update_(cache, pairs.to(device), _random((n, heads, d), FP16, g).to(device))
        outs = [cache]
        for dtype in (FP32, torch.int8, torch.int64, torch.bool):
            rows = _random((blocks * block, 4), dtype, g).to(device)
            new = _random((n, 4), dtype, g).to(device)
            ops.scatter_nd_update_(rows, slots.view(-1, 1).int().to(device), new)
            outs.append(rows)
        return cpu(*outs)

    return (
        "scatter_nd_update_ fp16 cache by (block, offset) int32 index; fp32/int8/int64/bool rows",
        run,
        FP16,
    )


# ---- scatter_pa_kv_cache ---------------------------------------------------------------------


def _scatter_pa(
    device: str,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    **mode: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value caches, on ``device``, after ``scatter_pa_kv_cache`` wrote into them."""
    k_d, v_d = k_cache.to(device), v_cache.to(device)
    ops.scatter_pa_kv_cache(k.to(device), v.to(device), k_d, v_d, slots.to(device), **mode)
    return k_d, v_d


def scatter_pa_kv_cache_norm() -> Case:
    def run(device: str) -> Outputs:
        g = gen(403)
        k_cache = torch.randn(4, 128, 2, 128, generator=g).to(BF16)
        v_cache = torch.randn(4, 128, 2, 128, generator=g).to(BF16)
        slots = torch.randperm(4 * 128, generator=g)[:21].int()
        k, v = (torch.randn(21, 2, 128, generator=g).to(BF16) for _ in range(2))
        return cpu(*_scatter_pa(device, k, v, k_cache, v_cache, slots, cache_mode="Norm"))

    return "scatter_pa_kv_cache 'Norm' (sglang's call) bf16", run, BF16


def scatter_pa_kv_cache_nd_dtypes() -> Case:
    def run(device: str) -> Outputs:
        g = gen(404)
        outs: list[torch.Tensor] = []
        # fp16 with cache_mode None (ND like 'Norm'), int64 slots, K and V head sizes differ;
        # then an int8 (quantised) cache in 'Norm'.
        for dtype, mode, dk, dv in ((FP16, None, 128, 64), (torch.int8, "Norm", 32, 32)):
            k_cache = _random((4, 32, 2, dk), dtype, g)
            v_cache = _random((4, 32, 2, dv), dtype, g)
            slots = torch.randperm(4 * 32, generator=g)[:13]
            k, v = _random((13, 2, dk), dtype, g), _random((13, 2, dv), dtype, g)
            outs += _scatter_pa(device, k, v, k_cache, v_cache, slots, cache_mode=mode)
        return cpu(*outs)

    return (
        "scatter_pa_kv_cache cache_mode None fp16 (K 128 / V 64, int64 slots) and 'Norm' int8",
        run,
        FP16,
    )


def scatter_pa_kv_cache_nz() -> Case:
    def run(device: str) -> Outputs:
        g = gen(405)
        k_cache = torch.randn(3, 2 * 128 // 16, 128, 16, generator=g).to(BF16)
        v_cache = torch.randn(3, 2 * 64 // 16, 128, 16, generator=g).to(BF16)
        slots = torch.randperm(3 * 128, generator=g)[:10].int()
        k = torch.randn(10, 2, 128, generator=g).to(BF16)
        v = torch.randn(10, 2, 64, generator=g).to(BF16)
        return cpu(*_scatter_pa(device, k, v, k_cache, v_cache, slots))

    return "scatter_pa_kv_cache 'PA_NZ' (default mode) bf16", run, BF16


CASES: list[CaseFactory] = [
    scatter_nd_update_rows,
    scatter_nd_update_dtypes,
    scatter_pa_kv_cache_norm,
    scatter_pa_kv_cache_nd_dtypes,
    scatter_pa_kv_cache_nz,
]
