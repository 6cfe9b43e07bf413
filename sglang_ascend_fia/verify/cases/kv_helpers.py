"""``verify-ops`` cases for the KV-cache writes and the attention-side helper kernels.

Protocol and helpers: :mod:`.common`. Covered per op (enforced by
``tests/verify/test_verify_coverage.py``):

- ``scatter_nd_update_``: every documented dtype (fp16, bf16, fp32, int8, int64, bool), int32 and
  int64 indices, index depth 1 (sglang's rows) and 2 (block, offset).
- ``scatter_pa_kv_cache``: cache_mode 'Norm', None and 'PA_NZ'; fp16, bf16 and int8; int32 and
  int64 slots; equal and different K/V head sizes.
- ``attention_update``: fp32, fp16 and bf16 partial outputs; update_type 0 (output only: the LSE
  output is then undefined, so not compared) and 1; two and three partial results, including
  rows whose partial LSE is -inf (sglang's prefix-free rows, ``ascend_backend.py:2252``).
- ``interleave_rope``: fp16 and bf16; cos/sin broadcast over S and per position.
- ``add_rms_norm``: fp16, bf16 and fp32; 2-D and 3-D inputs, 1-D and 2-D gamma.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import BF16, FP16, FP32, call, cpu, gen

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


# ---- attention_update ------------------------------------------------------------------------


def _partials(
    parts: int, rows: int, d: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    lse = [torch.randn(rows, generator=g) * 3 for _ in range(parts)]
    out = [torch.randn(rows, d, generator=g).to(dtype) for _ in range(parts)]
    return lse, out


def attention_update_two_parts() -> Case:
    def run(device: str) -> Outputs:
        lse, out = _partials(2, 5 * 16, 128, FP32, gen(406))
        return cpu(*call(ops.attention_update, device, lse, out, 1))

    return "attention_update two partial results, update_type=1 fp32", run, FP32


def attention_update_fp16() -> Case:
    def run(device: str) -> Outputs:
        lse, out = _partials(2, 3 * 8, 64, FP16, gen(407))
        return cpu(*call(ops.attention_update, device, lse, out, 1))

    return "attention_update two partial results, update_type=1 fp16", run, FP16


def attention_update_prefix_free_rows() -> Case:
    def run(device: str) -> Outputs:
        g = gen(408)
        lse, out = _partials(3, 4 * 16, 128, BF16, g)
        lse[0][torch.rand(lse[0].shape, generator=g) < 0.3] = -torch.inf  # no prefix there
        merged, _ = call(ops.attention_update, device, lse, out, 0)
        return cpu(merged)  # the LSE output is defined only for update_type=1

    return "attention_update three partials with -inf rows, update_type=0 bf16", run, BF16


# ---- interleave_rope -------------------------------------------------------------------------


def _cos_sin(
    b: int, s: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``(B, 1, S, 64)`` in the half (NeoX) layout the kernel multiplies with."""
    angles = torch.rand(b, 1, s, 32, generator=g) * 6
    return (
        torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype),
        torch.cat([angles.sin(), angles.sin()], dim=-1).to(dtype),
    )


def interleave_rope_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(409)
        x = torch.randn(12, 16, 1, 64, generator=g).to(BF16)
        cos, sin = _cos_sin(12, 1, BF16, g)
        return cpu(call(ops.interleave_rope, device, x, cos, sin))

    return "interleave_rope (DeepSeek q_pe) bf16", run, BF16


def interleave_rope_per_position() -> Case:
    def run(device: str) -> Outputs:
        g = gen(410)
        x = torch.randn(2, 8, 5, 64, generator=g).to(FP16)
        cos, sin = _cos_sin(2, 5, FP16, g)  # one angle per position
        return cpu(call(ops.interleave_rope, device, x, cos, sin))

    return "interleave_rope, per-position (B,1,S,64) cos/sin fp16", run, FP16


# ---- add_rms_norm ----------------------------------------------------------------------------


def _add_rms_norm(
    device: str,
    g: torch.Generator,
    shape: tuple[int, ...],
    gamma_shape: tuple[int, ...],
    dtype: torch.dtype,
    *epsilon: float,
) -> Outputs:
    """``add_rms_norm(residual, x, gamma, *epsilon)`` on random inputs, gamma close to 1."""
    residual, x = (torch.randn(shape, generator=g).to(dtype) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(gamma_shape, generator=g)).to(dtype)
    return cpu(*call(ops.add_rms_norm, device, residual, x, weight, *epsilon))


def add_rms_norm_bf16() -> Case:
    def run(device: str) -> Outputs:
        return _add_rms_norm(device, gen(411), (9, 1024), (1024,), BF16, 1e-6)

    return "add_rms_norm (residual, x, weight) bf16", run, BF16


def add_rms_norm_fp16_3d() -> Case:
    def run(device: str) -> Outputs:
        return _add_rms_norm(device, gen(412), (2, 7, 512), (512,), FP16, 1e-5)

    return "add_rms_norm 3-D (B, S, H) fp16", run, FP16


def add_rms_norm_fp32_2d_gamma() -> Case:
    def run(device: str) -> Outputs:
        # gamma (4, 128) normalises over the last two dims; epsilon left at its default.
        return _add_rms_norm(device, gen(413), (6, 4, 128), (4, 128), FP32)

    return "add_rms_norm, 2-D gamma (normalised over two axes) fp32", run, FP32


CASES: list[CaseFactory] = [
    scatter_nd_update_rows,
    scatter_nd_update_dtypes,
    scatter_pa_kv_cache_norm,
    scatter_pa_kv_cache_nd_dtypes,
    scatter_pa_kv_cache_nz,
    attention_update_two_parts,
    attention_update_fp16,
    attention_update_prefix_free_rows,
    interleave_rope_bf16,
    interleave_rope_per_position,
    add_rms_norm_bf16,
    add_rms_norm_fp16_3d,
    add_rms_norm_fp32_2d_gamma,
]
