"""``verify-ops`` cases for the MoE routing ops and SwiGLU: init/finalize routing, ``swiglu``.

Protocol and helpers: :mod:`.common`; gating lives in :mod:`.gating`, grouped matmul in
:mod:`.gmm`, quantisation ops in :mod:`.quant`. Integer outputs (row indices, counts) must match
exactly; outputs are restricted to what the docs define: routed rows only (``[:avail]``),
key-value pairs up to the terminator, int8 results dequantised next to their scale. The first case
of each op is sglang 0.5.23's call (see ``ops/moe/``).

Covered per op (enforced by ``tests/verify/test_verify_coverage.py``): every float dtype the kernel
takes (and int8 where it takes it); init routing with quant_mode -1/1, every
expert_tokens_num_type, row_idx_type 0/1, full and partial expert ranges, with and without
``scale``; finalize routing in drop_pad_mode 0/2, with and without scales, skips and bias; SwiGLU
along the last and other axes.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import BF16, FP16, FP32, call, cpu, dequantised, gen


def _topk_ids(tokens: int, experts: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]).int()


# ---- routing ---------------------------------------------------------------------------------


def _init_routing(
    device: str, x: torch.Tensor, ids: torch.Tensor, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``moe_init_routing_v2`` with the per-expert token counts on (every case compares them)."""
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] = call(
        ops.moe_init_routing_v2, device, x, ids, expert_tokens_num_flag=True, **kwargs
    )
    return out


# sglang's dispatch (``ops/moe/``: active_num T*K, expert_tokens_num_type 1, all E experts),
# here for 24 tokens routed to 4 of 16 experts.
_SGLANG_DISPATCH: dict[str, object] = {
    "active_num": 24 * 4,
    "expert_num": 16,
    "expert_tokens_num_type": 1,
    "active_expert_range": [0, 16],
}


def init_routing_v2_sglang_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(4)
        x = torch.randn(24, 128, generator=g).to(BF16)
        ids = _topk_ids(24, 16, 4, g)
        ex, row_idx, counts, _ = _init_routing(device, x, ids, quant_mode=-1, **_SGLANG_DISPATCH)
        return cpu(ex, row_idx, counts)

    return "moe_init_routing_v2 quant_mode=-1 (sglang BF16 dispatch)", run, BF16


def init_routing_v2_dynamic_quant() -> Case:
    def run(device: str) -> Outputs:
        g = gen(5)
        # x * 0.5: one int8 step (rowmax / 127) stays below the bf16 tolerance.
        x = (torch.randn(24, 128, generator=g) * 0.5).to(BF16)
        ids = _topk_ids(24, 16, 4, g)
        ex, row_idx, counts, scale = _init_routing(device, x, ids, quant_mode=1, **_SGLANG_DISPATCH)
        ex, row_idx, counts, scale = cpu(ex, row_idx, counts, scale)
        return dequantised(ex, scale), row_idx, counts, scale

    return "moe_init_routing_v2 quant_mode=1 (sglang W8A8 dispatch)", run, BF16


def _kv_pairs(expert_tokens: torch.Tensor, experts: int) -> torch.Tensor:
    """The defined head of a key_value (type 2) count: the pairs plus the (0, 0) terminator."""
    pairs = int((expert_tokens[:, 1] > 0).sum())
    return expert_tokens[: min(pairs + 1, experts)]


def init_routing_v2_expert_range() -> Case:
    def run(device: str) -> Outputs:
        g = gen(6)
        x = torch.randn(20, 64, generator=g)
        ids = _topk_ids(20, 16, 4, g)
        start, end = 4, 12
        avail = int(((ids >= start) & (ids < end)).sum())
        outs = []
        # tokens_type 0 (cumsum) is the one the torch_npu doc calls unsupported: a failure there
        # settles that question on the device.
        for row_idx_type, tokens_type in ((0, 1), (1, 2), (0, 0)):
            ex, row_idx, expert_tokens, _ = _init_routing(
                device,
                x,
                ids,
                active_num=20 * 4,
                expert_num=16,
                expert_tokens_num_type=tokens_type,
                active_expert_range=[start, end],
                row_idx_type=row_idx_type,
            )
            ex, row_idx, expert_tokens = cpu(ex, row_idx, expert_tokens)
            if row_idx_type == 1:
                row_idx = row_idx[:avail]  # the scatter index's tail is undefined
            if tokens_type == 2:
                expert_tokens = _kv_pairs(expert_tokens, 16)
            outs += [ex[:avail], row_idx, expert_tokens]
        return tuple(outs)

    return (
        "moe_init_routing_v2 active_expert_range [4,12), row_idx_type 0/1, count/kv/cumsum",
        run,
        FP32,
    )


def init_routing_v2_row_scale_fp16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(18)
        x = torch.randn(16, 64, generator=g).to(FP16)
        ids = _topk_ids(16, 8, 3, g)
        scale = torch.rand(16, generator=g) + 0.5  # quant_mode -1: one value per row
        ex, row_idx, expert_tokens, ex_scale = _init_routing(
            device,
            x,
            ids,
            scale=scale,
            active_num=0,
            expert_num=8,
            expert_tokens_num_type=2,
            row_idx_type=1,
        )
        return cpu(ex, row_idx, _kv_pairs(expert_tokens.cpu(), 8), ex_scale)

    return (
        "moe_init_routing_v2 fp16 with a per-row scale, scatter index, key_value counts",
        run,
        FP16,
    )


def init_routing_v2_int8_x() -> Case:
    def run(device: str) -> Outputs:
        g = gen(19)
        x = torch.randint(-127, 128, (12, 32), generator=g, dtype=torch.int8)
        ids = _topk_ids(12, 8, 2, g)
        avail = int(((ids >= 2) & (ids < 6)).sum())
        ex, row_idx, counts, _ = _init_routing(
            device,
            x,
            ids,
            active_num=-1,
            expert_num=8,
            expert_tokens_num_type=1,
            active_expert_range=[2, 6],
            quant_mode=-1,  # the only mode for int8 x (doc)
        )
        ex, row_idx, counts = cpu(ex, row_idx, counts)
        return ex[:avail], row_idx, counts

    return "moe_init_routing_v2 int8 x (already quantised), experts [2,6)", run, FP32


def init_routing_v2_smooth_quant() -> Case:
    def run(device: str) -> Outputs:
        g = gen(21)
        start, end = 4, 12
        x = (torch.randn(20, 128, generator=g) * 0.3).to(BF16)
        ids = _topk_ids(20, 16, 4, g)
        smooth = torch.rand(end - start, 128, generator=g) + 0.5  # one row per active expert
        avail = int(((ids >= start) & (ids < end)).sum())
        ex, row_idx, expert_tokens, scale = _init_routing(
            device,
            x,
            ids,
            scale=smooth,
            active_num=20 * 4,
            expert_num=16,
            expert_tokens_num_type=2,
            active_expert_range=[start, end],
            quant_mode=1,
            row_idx_type=1,
        )
        ex, row_idx, expert_tokens, scale = cpu(ex, row_idx, expert_tokens, scale)
        return (
            dequantised(ex[:avail], scale[:avail]),
            row_idx[:avail],
            _kv_pairs(expert_tokens, 16),
            scale[:avail],
        )

    return (
        "moe_init_routing_v2 quant_mode=1 with smooth scales, experts [4,12), scatter index",
        run,
        BF16,
    )


# ---- finalize, activations -------------------------------------------------------------------


def _expanded(
    tokens: int, top_k: int, hidden: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert output rows ``(tokens * top_k, hidden)`` and the permutation that routed them."""
    rows = torch.randn(tokens * top_k, hidden, generator=g).to(dtype)
    return rows, torch.randperm(tokens * top_k, generator=g).int()


def finalize_routing() -> Case:
    def run(device: str) -> Outputs:
        g = gen(9)
        tokens, top_k, hidden, experts = 24, 4, 128, 16
        rows, src_to_dst = _expanded(tokens, top_k, hidden, BF16, g)
        scales = torch.rand(tokens, top_k, generator=g).to(BF16)
        ids = _topk_ids(tokens, experts, top_k, g)
        out2 = ops.moe_finalize_routing(
            rows.to(device),
            skip1=None,
            skip2=None,
            bias=None,
            scales=scales.to(device),
            expanded_src_to_dst_row=src_to_dst.to(device),
            export_for_source_row=ids.to(device),
            drop_pad_mode=2,
        )
        skip = torch.randn(tokens, hidden, generator=g).to(BF16)
        bias = torch.randn(experts, hidden, generator=g).to(BF16)
        out0 = ops.moe_finalize_routing(
            rows.to(device),
            skip.to(device),
            skip.to(device),
            bias.to(device),
            scales.to(device),
            src_to_dst.to(device),
            ids.to(device),
            0,
        )
        return cpu(out2, out0)

    return "moe_finalize_routing drop_pad_mode 2 (sglang) and 0 with skips+bias", run, BF16


def finalize_routing_fp32_scales() -> Case:
    def run(device: str) -> Outputs:
        g = gen(27)
        tokens, top_k, hidden, experts = 16, 2, 64, 8
        rows, src_to_dst = _expanded(tokens, top_k, hidden, BF16, g)
        scales = torch.rand(tokens, top_k, generator=g)  # fp32 weights with bf16 rows
        skip1, skip2 = (torch.randn(tokens, hidden, generator=g).to(BF16) for _ in range(2))
        bias = torch.randn(experts, hidden, generator=g).to(BF16)
        ids = _topk_ids(tokens, experts, top_k, g)
        out = ops.moe_finalize_routing(
            rows.to(device),
            skip1.to(device),
            skip2.to(device),
            bias.to(device),
            scales.to(device),
            src_to_dst.to(device),
            ids.to(device),
            drop_pad_mode=2,
        )
        return cpu(out)

    return "moe_finalize_routing bf16 rows, fp32 scales, skips+bias, drop_pad_mode 2", run, BF16


def finalize_routing_unscaled_fp16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(28)
        tokens, top_k, hidden = 12, 3, 64
        rows, src_to_dst = _expanded(tokens, top_k, hidden, FP16, g)
        out = ops.moe_finalize_routing(
            rows.to(device), None, None, None, None, src_to_dst.to(device), None, 0, k=top_k
        )
        return cpu(out)

    return "moe_finalize_routing fp16 without scales (k=3), drop_pad_mode 0", run, FP16


def finalize_routing_fp32() -> Case:
    def run(device: str) -> Outputs:
        g = gen(29)
        tokens, top_k, hidden = 10, 4, 32
        rows, src_to_dst = _expanded(tokens, top_k, hidden, FP32, g)
        scales = torch.rand(tokens, top_k, generator=g)
        out = ops.moe_finalize_routing(
            rows.to(device), None, None, None, scales.to(device), src_to_dst.to(device), None
        )
        return cpu(out)

    return "moe_finalize_routing fp32, scales, drop_pad_mode 0 (default)", run, FP32


def swiglu_bf16() -> Case:
    def run(device: str) -> Outputs:
        x = torch.randn(96, 256, generator=gen(10)).to(BF16).to(device)
        return cpu(ops.swiglu(x))

    return "swiglu bf16", run, BF16


def swiglu_fp16_dim1() -> Case:
    def run(device: str) -> Outputs:
        x = torch.randn(4, 64, 24, generator=gen(30)).to(FP16).to(device)
        return cpu(ops.swiglu(x, dim=1))

    return "swiglu fp16 3-D, split along dim 1", run, FP16


def swiglu_fp32_dim0() -> Case:
    def run(device: str) -> Outputs:
        x = torch.randn(32, 48, generator=gen(31)).to(device)
        return cpu(ops.swiglu(x, 0))

    return "swiglu fp32, split along dim 0", run, FP32


CASES: list[CaseFactory] = [
    init_routing_v2_sglang_bf16,
    init_routing_v2_dynamic_quant,
    init_routing_v2_expert_range,
    init_routing_v2_row_scale_fp16,
    init_routing_v2_int8_x,
    init_routing_v2_smooth_quant,
    finalize_routing,
    finalize_routing_fp32_scales,
    finalize_routing_unscaled_fp16,
    finalize_routing_fp32,
    swiglu_bf16,
    swiglu_fp16_dim1,
    swiglu_fp32_dim0,
]
