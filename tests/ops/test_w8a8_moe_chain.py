"""int8 ``grouped_matmul`` against the float one, and the W8A8 MoE chain as sglang 0.5.23 calls
it on Ascend (NPUW8A8Int8MoEMethod on AscendTPDispatcher) against a float loop; the launch
counter over the quantisation ops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from quant_cases import _BF, OUT_RTOL, ROUND_SLACK, _gen, _per_channel_int8

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# int8 grouped matmul and the W8A8 MoE chain (NPUW8A8Int8MoEMethod on AscendTPDispatcher)
# ---------------------------------------------------------------------------------------------


def test_int8_grouped_matmul_is_close_to_the_float_grouped_matmul() -> None:
    g = _gen(14)
    counts = [3, 0, 4]
    x = torch.randn(7, 48, generator=g).bfloat16()
    w = torch.randn(3, 48, 10, generator=g) / 7  # [E, K, N], the W8A8 pre-transposed layout
    w_q, w_scale = _per_channel_int8(w)
    q, s = ops.dynamic_quant(x)
    out = ops.grouped_matmul(
        [q],
        [w_q],
        scale=[w_scale.bfloat16()],
        per_token_scale=[s],
        group_list=torch.tensor(counts),
        split_item=2,
        group_type=0,
        group_list_type=1,
        output_dtype=torch.bfloat16,
    )[0]
    group = torch.tensor([0, 0, 0, 2, 2, 2, 2])
    # The scale passed is bf16 (as sglang stores it); bound against the weights it describes.
    w_hat = w_q.double() * w_scale.bfloat16().double().unsqueeze(-2)
    ref = torch.einsum("mk,mkn->mn", x.double(), w.double()[group])
    x_hat = q.double() * s.double().unsqueeze(-1)
    bound = s.double().unsqueeze(-1) / 2 * w.double()[group].abs().sum(1)
    bound += torch.einsum("mk,mkn->mn", x_hat.abs(), (w_hat - w.double())[group].abs())
    bound = bound * ROUND_SLACK + OUT_RTOL[torch.bfloat16] * ref.abs() + 1e-6
    assert bool(((out.double() - ref).abs() <= bound).all())


def test_int8_grouped_matmul_adds_int32_bias_before_dequantisation() -> None:
    g = _gen(15)
    x = torch.randint(-9, 9, (3, 4), generator=g, dtype=torch.int8)
    w = torch.randint(-9, 9, (2, 4, 5), generator=g, dtype=torch.int8)
    bias = torch.randint(-50, 50, (2, 5), generator=g, dtype=torch.int32)
    scale = torch.rand(2, 5, generator=g)
    pts = torch.rand(3, generator=g)
    out = ops.grouped_matmul(
        [x],
        [w],
        bias=[bias],
        scale=[scale],
        per_token_scale=[pts],
        group_list=torch.tensor([1, 3]),
        split_item=2,
        group_type=0,
        group_list_type=0,
        output_dtype=torch.float16,
    )[0]
    group = torch.tensor([0, 1, 1])
    acc = torch.einsum("mk,mkn->mn", x.double(), w.double()[group]) + bias.double()[group]
    ref = acc * scale.double()[group] * pts.double().unsqueeze(-1)
    torch.testing.assert_close(out.double(), ref, rtol=OUT_RTOL[torch.float16], atol=1e-6)


def test_w8a8_moe_chain_as_sglang_calls_it_is_close_to_float() -> None:
    g = _gen(16)
    tokens, hidden, inter, experts, top_k = 12, 64, 32, 4, 2
    x = torch.randn(tokens, hidden, generator=g).bfloat16()
    topk_ids = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)])
    topk_weights = torch.softmax(torch.randn(tokens, top_k, generator=g), -1)
    # Checkpoint layout [E, out, in]; process_weights_after_loading stores [E, in, out] and a
    # bf16 scale [E, out] (squeezed from [E, out, 1]); GroupedMatmul gets weight=[w].
    w13 = torch.randn(experts, 2 * inter, hidden, generator=g) / 8
    w2 = torch.randn(experts, hidden, inter, generator=g) / 6
    w13_q, w13_scale = _per_channel_int8(w13.transpose(1, 2))
    w2_q, w2_scale = _per_channel_int8(w2.transpose(1, 2))
    w13_scale, w2_scale = w13_scale.bfloat16(), w2_scale.bfloat16()

    ids = topk_ids.int()
    h, row_idx, expert_tokens, pts = ops.moe_init_routing_v2(
        x,
        ids,
        active_num=tokens * top_k,
        expert_num=experts,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        active_expert_range=[0, experts],
        quant_mode=1,
    )
    gmm = {"split_item": 2, "group_type": 0, "group_list_type": 1, "output_dtype": torch.bfloat16}
    h = ops.grouped_matmul(
        x=[h], weight=[w13_q], scale=[w13_scale], per_token_scale=[pts],
        group_list=expert_tokens, **gmm,
    )[0]  # fmt: skip
    h, pts = ops.dequant_swiglu_quant(h, quant_mode=1, activate_left=True)
    h = ops.grouped_matmul(
        x=[h], weight=[w2_q], scale=[w2_scale], per_token_scale=[pts],
        group_list=expert_tokens, **gmm,
    )[0]  # fmt: skip
    out = ops.moe_finalize_routing(
        h,
        skip1=None,
        skip2=None,
        bias=None,
        scales=topk_weights.bfloat16(),
        expanded_src_to_dst_row=row_idx,
        export_for_source_row=ids,
        drop_pad_mode=2,
    )

    ref = torch.zeros(tokens, hidden, dtype=torch.float64)
    for t in range(tokens):
        for j in range(top_k):
            e = int(topk_ids[t, j])
            gate_up = w13[e].double() @ x[t].double()
            act = F.silu(gate_up[:inter]) * gate_up[inter:]
            ref[t] += float(topk_weights[t, j]) * (w2[e].double() @ act)
    # Each int8 rounding (two activations, two weights) is at most 1/254 of a row or column
    # max, and bf16 roundings add 2^-9 each; over K=64/32 sums these come to about 1.5% relative
    # error here, while any routing or scale defect gives O(1): 4% separates the two.
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel < 0.04, float(rel)


# ---------------------------------------------------------------------------------------------
# Dispatch plumbing
# ---------------------------------------------------------------------------------------------


def test_launch_counter_counts_each_successful_call() -> None:
    ops.reset_launch_counts()
    q, s = ops.dynamic_quant(_BF)
    ops.dynamic_quant(_BF)
    ops.quant_matmul(
        q,
        torch.ones(8, 3, dtype=torch.int8),
        torch.ones(3),
        pertoken_scale=s,
        output_dtype=torch.bfloat16,
    )
    ops.dequant_swiglu_quant(_BF, quant_mode=1, activate_left=True)
    with pytest.raises(ValueError, match="even last dim"):
        ops.dequant_swiglu_quant(torch.ones(2, 5, dtype=torch.bfloat16), quant_mode=1)
    assert ops.launch_counts() == {"dynamic_quant": 2, "quant_matmul": 1, "dequant_swiglu_quant": 1}
