"""``verify-ops`` cases for the MoE and quantisation ops (NPU kernel vs pure-PyTorch reference).

``CASES`` is a list of functions; each returns ``(name, run, dtype)``:

* ``run(device)`` builds seeded inputs on the CPU, moves them to ``device``, calls the facade op
  (torch_npu on an NPU device, the reference elsewhere) and returns CPU tensors. Calling it with
  the NPU device and with ``"cpu"`` gives the two sides to compare.
* ``dtype`` is the compute dtype that sets the float tolerance; integer outputs (expert ids,
  row indices, counts) must match exactly.

Outputs are restricted to what the docs define: routed rows only (``[:avail]``), key-value pairs
up to the terminator, and int8 results returned dequantised (``y * scale``) next to their
scale, so a one-step rounding difference shows up as a bounded float error, not an int8
mismatch. Inputs are continuous random values, so top-k ties (whose order no doc states) do
not occur. The shapes are the ones sglang 0.5.23 passes on Ascend (see ``ops/moe.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sglang_ascend_fia import ops

Outputs = tuple[torch.Tensor, ...]
Case = tuple[str, Callable[[str], Outputs], torch.dtype]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cpu(*tensors: torch.Tensor) -> Outputs:
    return tuple(t.cpu() for t in tensors)


def _topk_ids(tokens: int, experts: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]).int()


def _dequantised(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return y.float() * scale.float().unsqueeze(-1)


# ---- gating ----------------------------------------------------------------------------------


def gating_top_k_softmax() -> Case:
    def run(device: str) -> Outputs:
        x = torch.randn(32, 64, generator=_gen(1)).bfloat16().to(device)
        return _cpu(*ops.moe_gating_top_k_softmax(x, k=8))

    return "moe_gating_top_k_softmax bf16 T=32 E=64 k=8", run, torch.bfloat16


def gating_top_k_deepseek_v3() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(2)
        x = torch.randn(32, 256, generator=g).to(device)
        bias = (torch.rand(256, generator=g) * 0.1).to(device)
        y, idx, norm = ops.moe_gating_top_k(
            x,
            k=8,
            bias=bias,
            k_group=4,
            group_count=8,
            group_select_mode=1,
            renorm=1,
            norm_type=1,
            out_flag=True,
            routed_scaling_factor=2.5,
            eps=1e-20,
        )
        return _cpu(y, idx, norm)

    return "moe_gating_top_k sigmoid+bias grouped (DeepSeek-V3) fp32", run, torch.float32


def gating_top_k_softmax_bias() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(3)
        x = torch.randn(32, 64, generator=g).to(device)
        bias = (torch.rand(64, generator=g) * 0.01).to(device)
        outs = []
        # renorm 0 keeps raw softmax weights; renorm 1 is the kernel branch the torch_npu doc
        # calls unsupported but sglang passes (renorm=renormalize).
        for renorm in (0, 1):
            y, idx, norm = ops.moe_gating_top_k(
                x, k=6, bias=bias, renorm=renorm, norm_type=0, out_flag=True, eps=1e-20
            )
            outs += [y, idx, norm]
        return _cpu(*outs)

    return "moe_gating_top_k softmax+bias renorm 0/1 fp32", run, torch.float32


# ---- routing ---------------------------------------------------------------------------------


def init_routing_v2_sglang_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(4)
        x = torch.randn(24, 128, generator=g).bfloat16()
        ids = _topk_ids(24, 16, 4, g)
        ex, row_idx, counts, _ = ops.moe_init_routing_v2(
            x.to(device),
            ids.to(device),
            active_num=24 * 4,
            expert_num=16,
            expert_tokens_num_type=1,
            expert_tokens_num_flag=True,
            active_expert_range=[0, 16],
            quant_mode=-1,
        )
        return _cpu(ex, row_idx, counts)

    return "moe_init_routing_v2 quant_mode=-1 (sglang BF16 dispatch)", run, torch.bfloat16


def init_routing_v2_dynamic_quant() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(5)
        x = torch.randn(24, 128, generator=g).bfloat16()
        ids = _topk_ids(24, 16, 4, g)
        ex, row_idx, counts, scale = ops.moe_init_routing_v2(
            x.to(device),
            ids.to(device),
            active_num=24 * 4,
            expert_num=16,
            expert_tokens_num_type=1,
            expert_tokens_num_flag=True,
            active_expert_range=[0, 16],
            quant_mode=1,
        )
        return _cpu(_dequantised(ex, scale), row_idx, counts, scale)

    return "moe_init_routing_v2 quant_mode=1 (sglang W8A8 dispatch)", run, torch.bfloat16


def init_routing_v2_expert_range() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(6)
        x = torch.randn(20, 64, generator=g)
        ids = _topk_ids(20, 16, 4, g)
        start, end = 4, 12
        avail = int(((ids >= start) & (ids < end)).sum())
        outs = []
        # tokens_type 0 (cumsum) is the one the torch_npu doc calls unsupported: a failure there
        # settles that question on the device.
        for row_idx_type, tokens_type in ((0, 1), (1, 2), (0, 0)):
            ex, row_idx, expert_tokens, _ = ops.moe_init_routing_v2(
                x.to(device),
                ids.to(device),
                active_num=20 * 4,
                expert_num=16,
                expert_tokens_num_type=tokens_type,
                expert_tokens_num_flag=True,
                active_expert_range=[start, end],
                row_idx_type=row_idx_type,
            )
            ex, row_idx, expert_tokens = _cpu(ex, row_idx, expert_tokens)
            if row_idx_type == 1:
                row_idx = row_idx[:avail]  # the scatter index's tail is undefined
            if tokens_type == 2:
                pairs = int((expert_tokens[:, 1] > 0).sum())
                expert_tokens = expert_tokens[: min(pairs + 1, 16)]  # pairs + (0, 0) terminator
            outs += [ex[:avail], row_idx, expert_tokens]
        return tuple(outs)

    return (
        "moe_init_routing_v2 active_expert_range [4,12), row_idx_type 0/1, count/kv/cumsum",
        run,
        torch.float32,
    )


# ---- grouped matmul --------------------------------------------------------------------------


def _counts(experts: int, rows: int, g: torch.Generator) -> torch.Tensor:
    cuts = torch.sort(torch.randint(0, rows + 1, (experts - 1,), generator=g)).values
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([rows])])
    return (bounds[1:] - bounds[:-1]).to(torch.int64)


def grouped_matmul_unquant_transposed() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(7)
        x = torch.randn(96, 128, generator=g).bfloat16()
        w13 = (torch.randn(8, 256, 128, generator=g) / 11).bfloat16()  # stored [E, out, in]
        counts = _counts(8, 96, g)
        outs = []
        for group_list_type in (1, 0):
            group_list = counts if group_list_type == 1 else counts.cumsum(0)
            (y,) = ops.grouped_matmul(
                x=[x.to(device)],
                weight=[w13.to(device).transpose(1, 2)],
                split_item=2,
                group_list_type=group_list_type,
                group_type=0,
                group_list=group_list.to(device),
                output_dtype=torch.bfloat16,
            )
            outs.append(y)
        return _cpu(*outs)

    return "grouped_matmul bf16, weight=[w.transpose(1,2)], counts and cumsum", run, torch.bfloat16


def grouped_matmul_w8a8() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(8)
        x = torch.randint(-127, 128, (96, 128), generator=g, dtype=torch.int8)
        w = torch.randint(-127, 128, (8, 128, 64), generator=g, dtype=torch.int8)  # [E, in, out]
        scale = (torch.rand(8, 64, generator=g) / 500).bfloat16()
        pts = torch.rand(96, generator=g) / 50
        (y,) = ops.grouped_matmul(
            x=[x.to(device)],
            weight=[w.to(device)],
            scale=[scale.to(device)],
            per_token_scale=[pts.to(device)],
            split_item=2,
            group_list_type=1,
            group_type=0,
            group_list=_counts(8, 96, g).to(device),
            output_dtype=torch.bfloat16,
        )
        return _cpu(y)

    return "grouped_matmul int8 per-token x per-channel (sglang W8A8 MoE)", run, torch.bfloat16


# ---- finalize, activations -------------------------------------------------------------------


def finalize_routing() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(9)
        tokens, top_k, hidden, experts = 24, 4, 128, 16
        rows = torch.randn(tokens * top_k, hidden, generator=g).bfloat16()
        src_to_dst = torch.randperm(tokens * top_k, generator=g).int()
        scales = torch.rand(tokens, top_k, generator=g).bfloat16()
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
        skip = torch.randn(tokens, hidden, generator=g).bfloat16()
        bias = torch.randn(experts, hidden, generator=g).bfloat16()
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
        return _cpu(out2, out0)

    return (
        "moe_finalize_routing drop_pad_mode 2 (sglang) and 0 with skips+bias",
        run,
        torch.bfloat16,
    )


def swiglu_bf16() -> Case:
    def run(device: str) -> Outputs:
        x = torch.randn(96, 256, generator=_gen(10)).bfloat16().to(device)
        return _cpu(ops.swiglu(x))

    return "swiglu bf16", run, torch.bfloat16


# ---- quantisation ----------------------------------------------------------------------------


def dynamic_quant_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(11)
        x = torch.randn(64, 512, generator=g).bfloat16()
        smooth = (torch.rand(512, generator=g) + 0.5).bfloat16()
        y, s = ops.dynamic_quant(x.to(device))
        ys, ss = ops.dynamic_quant(x.to(device), smooth_scales=smooth.to(device))
        y, s, ys, ss = _cpu(y, s, ys, ss)
        return _dequantised(y, s), s, _dequantised(ys, ss), ss

    return "dynamic_quant bf16 (plain and smooth_scales)", run, torch.bfloat16


def quant_matmul_w8a8() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(12)
        x1 = torch.randint(-127, 128, (32, 256), generator=g, dtype=torch.int8)
        x2 = torch.randint(-127, 128, (256, 128), generator=g, dtype=torch.int8)
        scale = torch.rand(128, generator=g) / 500
        pts = torch.rand(32, generator=g) / 50
        bias_f = torch.randn(128, generator=g)
        bias_i = torch.randint(-3000, 3000, (128,), generator=g, dtype=torch.int32)
        dynamic = ops.quant_matmul(
            x1.to(device),
            x2.to(device),
            scale.to(device),
            pertoken_scale=pts.to(device),
            bias=bias_f.to(device),
            output_dtype=torch.bfloat16,
        )
        static = ops.quant_matmul(
            x1.to(device),
            x2.to(device),
            scale.to(device),
            bias=bias_i.to(device),
            output_dtype=torch.bfloat16,
        )
        return _cpu(dynamic, static)

    return "quant_matmul bf16 (dynamic: float bias; static: int32 bias)", run, torch.bfloat16


def dequant_swiglu_quant_cases() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(13)
        h = torch.randn(64, 256, generator=g).bfloat16()
        y, s = ops.dequant_swiglu_quant(h.to(device), quant_mode=1, activate_left=True)
        x = torch.randint(-2000, 2000, (64, 256), generator=g, dtype=torch.int32)
        weight_scale = torch.rand(2, 256, generator=g) / 100
        activation_scale = torch.rand(64, generator=g) / 10
        quant_scale = torch.rand(2, 128, generator=g) + 0.5
        counts = torch.tensor([20, 44])
        yi, si = ops.dequant_swiglu_quant(
            x.to(device),
            weight_scale=weight_scale.to(device),
            activation_scale=activation_scale.to(device),
            quant_scale=quant_scale.to(device),
            group_index=counts.to(device),
            activate_left=True,
            quant_mode=1,
        )
        y, s, yi, si = _cpu(y, s, yi, si)
        return _dequantised(y, s), s, _dequantised(yi, si), si

    return "dequant_swiglu_quant (sglang bf16; int32 with group_index)", run, torch.bfloat16


CASES: list[Callable[[], Case]] = [
    gating_top_k_softmax,
    gating_top_k_deepseek_v3,
    gating_top_k_softmax_bias,
    init_routing_v2_sglang_bf16,
    init_routing_v2_dynamic_quant,
    init_routing_v2_expert_range,
    grouped_matmul_unquant_transposed,
    grouped_matmul_w8a8,
    finalize_routing,
    swiglu_bf16,
    dynamic_quant_bf16,
    quant_matmul_w8a8,
    dequant_swiglu_quant_cases,
]
