"""The sglang 0.5.23 Ascend MoE chain end to end (routing, grouped matmul, SwiGLU, finalize)
against a dense per-token loop, and the launch counter over every MoE op."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import _ROUTE, FP32, SETTINGS, _gen, _random_topk_ids

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# The MoE chain exactly as sglang 0.5.23 calls it on Ascend (AscendTPDispatcher.dispatch,
# AscendRunnerCore.run with NPUUnquantMoEMethod + NPUSwiglu, AscendTPDispatcher.combine).
# ---------------------------------------------------------------------------------------------


def sglang_unquant_moe(
    hidden_states: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w13_weight: torch.Tensor,
    w2_weight: torch.Tensor,
    *,
    group_list_type: int = 1,
    drop_pad_mode: int = 2,
) -> torch.Tensor:
    num_experts = w13_weight.shape[0]
    # dispatch(): weights to the activation dtype, ids to int32, NPUMoEInitRouting_v2(-1).
    topk_weights = topk_weights.to(hidden_states.dtype)
    topk_ids = topk_ids.to(torch.int32)
    top_k = topk_weights.shape[-1]
    num_tokens = hidden_states.shape[0]
    permuted, expanded_row_idx, expert_tokens, _ = ops.moe_init_routing_v2(
        hidden_states,
        topk_ids,
        active_num=num_tokens * top_k,
        expert_num=num_experts,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        active_expert_range=[0, num_experts],
        quant_mode=-1,
    )
    expert_tokens = expert_tokens.to(torch.int64)
    # sglang always uses counts; the cumulative form exercises group_list_type=0.
    group_list = expert_tokens if group_list_type == 1 else expert_tokens.cumsum(0)
    # GroupedMatmul.forward with transposed=False: weight=[w.transpose(1, 2)] of [E, out, in].
    h = ops.grouped_matmul(
        x=[permuted],
        weight=[w13_weight.transpose(1, 2)],
        split_item=2,
        group_list_type=group_list_type,
        group_type=0,
        group_list=group_list,
        output_dtype=hidden_states.dtype,
    )[0]
    h = ops.swiglu(h)
    h = ops.grouped_matmul(
        x=[h],
        weight=[w2_weight.transpose(1, 2)],
        split_item=2,
        group_list_type=group_list_type,
        group_type=0,
        group_list=group_list,
        output_dtype=hidden_states.dtype,
    )[0]
    src_to_dst = expanded_row_idx
    if drop_pad_mode == 0:
        # Mode 0 reads the index column-major (position k*N + i): relayout v2's row-major one.
        src_to_dst = expanded_row_idx.view(num_tokens, top_k).t().reshape(-1)
    return ops.moe_finalize_routing(
        h,
        skip1=None,
        skip2=None,
        bias=None,
        scales=topk_weights,
        expanded_src_to_dst_row=src_to_dst,
        export_for_source_row=topk_ids,
        drop_pad_mode=drop_pad_mode,
    )


def dense_moe(
    hidden_states: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w13_weight: torch.Tensor,
    w2_weight: torch.Tensor,
) -> torch.Tensor:
    """The MoE written per token: sum_k w_k * W2_e @ (silu(gate) * up), gate/up = W13_e @ x."""
    x = hidden_states
    inter = w2_weight.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(topk_ids.shape[1]):
            e = int(topk_ids[t, j])
            gate_up = w13_weight[e].double() @ x[t].double()
            act = F.silu(gate_up[:inter]) * gate_up[inter:]
            out[t] += float(topk_weights[t, j]) * (w2_weight[e].double() @ act)
    return out


@st.composite
def moe_problems(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    tokens = draw(st.integers(1, 7))
    experts = draw(st.integers(1, 6))
    top_k = draw(st.integers(1, min(experts, 3)))
    hidden = draw(st.integers(1, 9))
    inter = draw(st.integers(1, 5))
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    weights = torch.rand(tokens, top_k, generator=g)
    return {
        "hidden_states": torch.randn(tokens, hidden, generator=g),
        "topk_weights": weights / weights.sum(-1, keepdim=True),
        "topk_ids": _random_topk_ids(tokens, experts, top_k, g),
        "w13_weight": torch.randn(experts, 2 * inter, hidden, generator=g),
        "w2_weight": torch.randn(experts, hidden, inter, generator=g),
    }


@SETTINGS
@given(problem=moe_problems())
def test_sglang_unquant_moe_chain_matches_dense_loop(problem: dict[str, torch.Tensor]) -> None:
    out = sglang_unquant_moe(**problem)
    ref = dense_moe(**problem)
    torch.testing.assert_close(out.double(), ref, **FP32)


@SETTINGS
@given(
    problem=moe_problems(), group_list_type=st.sampled_from([0, 1]), mode=st.sampled_from([0, 2])
)
def test_cumulative_group_list_and_column_major_finalize_agree(
    problem: dict[str, torch.Tensor], group_list_type: int, mode: int
) -> None:
    out = sglang_unquant_moe(**problem, group_list_type=group_list_type, drop_pad_mode=mode)
    torch.testing.assert_close(out.double(), dense_moe(**problem), **FP32)


def test_sglang_chain_bf16_is_close_to_fp32() -> None:
    g = _gen(3)
    problem = {
        "hidden_states": torch.randn(16, 32, generator=g),
        "topk_weights": torch.softmax(torch.randn(16, 2, generator=g), -1),
        "topk_ids": _random_topk_ids(16, 8, 2, g),
        "w13_weight": torch.randn(8, 24, 32, generator=g) / 6,
        "w2_weight": torch.randn(8, 32, 12, generator=g) / 4,
    }
    bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in problem.items()}
    out = sglang_unquant_moe(**bf16)
    assert out.dtype == torch.bfloat16
    ref = dense_moe(**bf16)
    # bf16 keeps 8 significant bits: three roundings (two matmul outputs, the activation) plus
    # the weights' own cast give a few 2^-8 relative errors on O(1) values.
    torch.testing.assert_close(out.double(), ref, rtol=4e-2, atol=4e-2)


# ---------------------------------------------------------------------------------------------
# Dispatch plumbing
# ---------------------------------------------------------------------------------------------


def test_launch_counter_counts_each_successful_call() -> None:
    ops.reset_launch_counts()
    x = torch.randn(3, 8)
    ops.moe_gating_top_k(x, 2)
    ops.moe_gating_top_k(x, 2)
    ops.moe_gating_top_k_softmax(x, k=2)
    ids = torch.tensor([[0, 1], [1, 2], [2, 3]], dtype=torch.int32)
    ex, row_idx, counts, _ = ops.moe_init_routing_v2(x, ids, **_ROUTE)
    h = ops.grouped_matmul(
        [ex],
        [torch.randn(4, 8, 6)],
        group_list=counts,
        split_item=2,
        group_type=0,
        group_list_type=1,
    )[0]
    ops.swiglu(h)
    ops.moe_finalize_routing(h, None, None, None, torch.rand(3, 2), row_idx, ids, 2)
    with pytest.raises(ValueError, match="even size"):
        ops.swiglu(torch.ones(3))  # refused by the validator: not a launch
    assert ops.launch_counts() == {
        "moe_gating_top_k": 2,
        "moe_gating_top_k_softmax": 1,
        "moe_init_routing_v2": 1,
        "grouped_matmul": 1,
        "swiglu": 1,
        "moe_finalize_routing": 1,
    }
