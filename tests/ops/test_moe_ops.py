"""MoE op references against brute force, and the sglang 0.5.23 Ascend MoE chain end to end."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from op_refusals import assert_reference_refuses, assert_validator_rejects

from sglang_ascend_fia import ops

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
FP32 = {"rtol": 1e-5, "atol": 1e-5}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_topk_ids(tokens: int, experts: int, k: int, g: torch.Generator) -> torch.Tensor:
    # Distinct experts per token, as every router produces.
    return torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]).int()


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
# moe_gating_top_k
# ---------------------------------------------------------------------------------------------


def brute_force_gating(
    x: torch.Tensor,
    k: int,
    bias: torch.Tensor | None,
    k_group: int,
    group_count: int,
    group_select_mode: int,
    renorm: int,
    norm_type: int,
    routed_scaling_factor: float,
    eps: float,
) -> tuple[list[list[float]], list[list[int]], list[list[float]]]:
    ys, ids, norms = [], [], []
    experts = x.shape[1]
    per_group = experts // group_count
    for row in x.double().tolist():
        if norm_type == 0:
            peak = max(row)
            exps = [math.exp(v - peak) for v in row]
            n = [v / sum(exps) for v in exps]
        else:
            n = [1 / (1 + math.exp(-v)) for v in row]
        v = [n[e] + (float(bias[e]) if bias is not None else 0.0) for e in range(experts)]
        scores = []
        for grp in range(group_count):
            members = sorted(v[grp * per_group : (grp + 1) * per_group], reverse=True)
            scores.append(members[0] if group_select_mode == 0 else members[0] + members[1])
        chosen = sorted(range(group_count), key=lambda grp: (-scores[grp], grp))[:k_group]
        eligible = [e for e in range(experts) if e // per_group in chosen]
        top = sorted(eligible, key=lambda e: (-v[e], e))[:k]
        y = [n[e] for e in top]
        if norm_type == 1 or renorm == 1:
            total = sum(y)
            y = [w / (total + eps) for w in y]
        ys.append([w * routed_scaling_factor for w in y])
        ids.append(top)
        norms.append(n)
    return ys, ids, norms


@st.composite
def gating_configs(draw: st.DrawFn) -> dict[str, object]:
    group_count = draw(st.sampled_from([1, 2, 4]))
    per_group = draw(st.sampled_from([3, 4, 8]))
    k_group = draw(st.integers(1, group_count))
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    experts = group_count * per_group
    return {
        "x": torch.randn(draw(st.integers(1, 5)), experts, generator=g) * 2,
        "k": draw(st.integers(1, per_group * k_group)),
        "bias": torch.rand(experts, generator=g) if draw(st.booleans()) else None,
        "k_group": k_group,
        "group_count": group_count,
        "group_select_mode": draw(st.sampled_from([0, 1])),
        "renorm": draw(st.sampled_from([0, 1])),
        "norm_type": draw(st.sampled_from([0, 1])),
        "routed_scaling_factor": draw(st.sampled_from([1.0, 2.5])),
        "eps": 1e-20,
    }


@SETTINGS
@given(cfg=gating_configs())
def test_moe_gating_top_k_matches_brute_force(cfg: dict[str, object]) -> None:
    x, k = cfg.pop("x"), cfg.pop("k")
    assert isinstance(x, torch.Tensor) and isinstance(k, int)
    y, idx, norm = ops.moe_gating_top_k(x, k, **cfg)  # type: ignore[arg-type]
    ys, ids, norms = brute_force_gating(x, k, **cfg)  # type: ignore[arg-type]
    assert idx.dtype == torch.int32 and norm.dtype == torch.float32 and y.dtype == x.dtype
    assert idx.tolist() == ids
    torch.testing.assert_close(y.double(), torch.tensor(ys, dtype=torch.float64), **FP32)
    torch.testing.assert_close(norm.double(), torch.tensor(norms, dtype=torch.float64), **FP32)


def test_moe_gating_top_k_deepseek_v3_matches_sglang_biased_grouped_topk() -> None:
    # DeepSeek-V3 routing: 256 experts, 8 groups, top-4 groups by top-2 sum, 8 experts, sigmoid
    # scores with e_score_correction_bias, renormalised then scaled by 2.5; called exactly as
    # sglang's fused_topk_npu calls the NPU op.
    # sglang's topk module imports torchvision, which needs the test bed's start-up schema fix.
    # `make test` runs it via PYTHONPATH; a bare `pytest` has the path (conftest) but not the
    # start-up hook, so run it here (a no-op when it already ran).
    importlib.import_module("sitecustomize")
    from sglang.srt.layers.moe.topk import biased_grouped_topk_impl

    g = _gen(11)
    logits = torch.randn(6, 256, generator=g)
    bias = torch.rand(256, generator=g) * 0.1
    y, idx, _ = ops.moe_gating_top_k(
        logits,
        k=8,
        bias=bias,
        k_group=4,
        group_count=8,
        group_select_mode=1,
        renorm=True,
        norm_type=1,
        routed_scaling_factor=2.5,
        eps=1e-20,
    )
    ref_w, ref_ids = biased_grouped_topk_impl(
        logits,
        logits,
        bias,
        topk=8,
        renormalize=True,
        num_expert_group=8,
        topk_group=4,
        routed_scaling_factor=2.5,
        apply_routed_scaling_factor_on_output=True,
    )
    # sglang's topk is unsorted; compare per-token (expert -> weight) maps.
    for t in range(6):
        ours = dict(zip(idx[t].tolist(), y[t].tolist(), strict=True))
        theirs = dict(zip(ref_ids[t].tolist(), ref_w[t].tolist(), strict=True))
        assert ours.keys() == theirs.keys()
        for e, w in ours.items():
            assert w == pytest.approx(theirs[e], rel=1e-5)
    _, ids, _ = brute_force_gating(logits, 8, bias, 4, 8, 1, 1, 1, 2.5, 1e-20)
    assert idx.tolist() == ids


def test_moe_gating_top_k_softmax_without_renorm_keeps_raw_probabilities() -> None:
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    y, idx, norm = ops.moe_gating_top_k(x, 2)
    probs = torch.softmax(x, -1)
    assert idx.tolist() == [[3, 2]]
    torch.testing.assert_close(y, probs[:, [3, 2]])
    torch.testing.assert_close(norm, probs)


def test_moe_gating_top_k_sigmoid_renormalises_whatever_renorm_says() -> None:
    # The kernel (moe_gating_top_k_generalized.h: needRenorm = normType == 1 || renorm == 1)
    # and the CANN formula both divide sigmoid weights by their sum, so renorm=0 cannot give
    # DeepSeek-V3's norm_topk_prob=False weights; the raw ones are norm_out at the chosen ids
    # (what sglang_ascend_fia.moe.gating uses). Brute force in float64, by hand.
    x = torch.tensor([[-1.0, 2.0, 0.5, 1.5, -0.5, 0.0], [0.3, -2.0, 1.0, 0.2, 0.8, -0.1]])
    raw = [[1 / (1 + math.exp(-v)) for v in row] for row in x.double().tolist()]
    top = [sorted(range(6), key=lambda e, r=r: -r[e])[:3] for r in raw]
    for renorm in (0, 1):
        y, idx, norm = ops.moe_gating_top_k(
            x, 3, renorm=renorm, norm_type=1, out_flag=True, routed_scaling_factor=2.0
        )
        assert idx.tolist() == top
        for t, experts in enumerate(top):
            picked = [raw[t][e] for e in experts]
            expected = [2.0 * w / sum(picked) for w in picked]
            assert y[t].tolist() == pytest.approx(expected, rel=1e-6)
            assert norm[t, idx[t].long()].tolist() == pytest.approx(picked, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# moe_gating_top_k_softmax
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    lead=st.sampled_from([(3,), (1,), (2, 3)]),
    experts=st.integers(1, 9),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_moe_gating_top_k_softmax_matches_brute_force(
    lead: tuple[int, ...], experts: int, data: st.DataObject, seed: int
) -> None:
    k = data.draw(st.integers(1, experts))
    x = torch.randn(*lead, experts, generator=_gen(seed))
    y, idx, row_idx = ops.moe_gating_top_k_softmax(x, k=k)
    rows = math.prod(lead)
    flat_x, flat_y, flat_idx = x.reshape(rows, experts), y.reshape(rows, k), idx.reshape(rows, k)
    for r in range(rows):
        probs = torch.softmax(flat_x[r].double(), -1).tolist()
        top = sorted(range(experts), key=lambda e: (-probs[e], e))[:k]
        assert flat_idx[r].tolist() == top
        torch.testing.assert_close(
            flat_y[r].double(), torch.tensor([probs[e] for e in top]).double()
        )
    # Documented: rowIdx = arange(N*K).reshape(K, N).transpose(1, 0).
    expected_rows = [[j * rows + r for j in range(k)] for r in range(rows)]
    assert row_idx.reshape(rows, k).tolist() == expected_rows
    assert idx.dtype == torch.int32 and row_idx.dtype == torch.int32 and y.dtype == x.dtype


def test_moe_gating_top_k_softmax_finished_rows_point_past_the_last_expert() -> None:
    x = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    y, idx, _ = ops.moe_gating_top_k_softmax(x, torch.tensor([True, False]), k=2)
    assert idx.tolist() == [[3, 3], [0, 2]]
    torch.testing.assert_close(y[0], torch.softmax(x[0], -1)[[1, 2]])


# ---------------------------------------------------------------------------------------------
# moe_init_routing_v2
# ---------------------------------------------------------------------------------------------


def test_init_routing_v2_orders_sources_row_major_not_column_major() -> None:
    # token 0 -> experts (1, 0), token 1 -> experts (0, 1). Row-major sources i*K+k put token 0
    # first inside expert 0's block: [x0, x1 | x0, x1]. Column-major k*N+i (v1's row_idx)
    # would give expert 0 [x1, x0]. (inferred semantic pinned here; see moe_init_routing_v2)
    x = torch.tensor([[10.0, 11.0], [20.0, 21.0]])
    ids = torch.tensor([[1, 0], [0, 1]], dtype=torch.int32)
    ex, row_idx, counts, _ = ops.moe_init_routing_v2(
        x, ids, expert_num=2, expert_tokens_num_type=1, expert_tokens_num_flag=True
    )
    assert ex[:, 0].tolist() == [10.0, 20.0, 10.0, 20.0]
    assert row_idx.tolist() == [2, 0, 1, 3]  # gather index: [source i*K+k] -> destination
    assert counts.tolist() == [2, 2] and counts.dtype == torch.int64


def brute_force_routing(
    x: torch.Tensor, ids: torch.Tensor, start: int, end: int
) -> tuple[list[int], list[int]]:
    """Destination order of source positions i*K+k (experts in [start, end), then source)."""
    top_k = ids.shape[1]
    pairs = [
        (int(ids[i, k]), i * top_k + k)
        for i in range(ids.shape[0])
        for k in range(top_k)
        if start <= int(ids[i, k]) < end
    ]
    pairs.sort()
    return [src for _, src in pairs], [e for e, _ in pairs]


@SETTINGS
@given(
    tokens=st.integers(1, 6),
    experts=st.integers(1, 8),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_init_routing_v2_matches_brute_force(
    tokens: int, experts: int, data: st.DataObject, seed: int
) -> None:
    g = _gen(seed)
    top_k = data.draw(st.integers(1, min(experts, 3)))
    start = data.draw(st.integers(0, experts - 1))
    end = data.draw(st.integers(start + 1, experts))
    row_idx_type = data.draw(st.sampled_from([0, 1]))
    tokens_type = data.draw(st.sampled_from([0, 1, 2]))
    x = torch.randn(tokens, 5, generator=g).bfloat16()
    ids = _random_topk_ids(tokens, experts, top_k, g)
    scale = torch.rand(tokens, generator=g)
    ex, row_idx, expert_tokens, ex_scale = ops.moe_init_routing_v2(
        x,
        ids,
        scale=scale,
        active_num=tokens * top_k,
        expert_num=experts,
        expert_tokens_num_type=tokens_type,
        expert_tokens_num_flag=True,
        active_expert_range=[start, end],
        row_idx_type=row_idx_type,
    )
    srcs, exps = brute_force_routing(x, ids, start, end)
    avail = len(srcs)
    assert ex.dtype == x.dtype and ex.shape == (tokens * top_k, 5)
    assert torch.equal(ex[:avail], x[[s // top_k for s in srcs]])
    torch.testing.assert_close(ex_scale[:avail], scale[[s // top_k for s in srcs]])
    if row_idx_type == 0:
        gather = [-1] * (tokens * top_k)
        for d, s in enumerate(srcs):
            gather[s] = d
        assert row_idx.tolist() == gather
    else:
        assert row_idx[:avail].tolist() == srcs
    counts = [exps.count(e) for e in range(start, end)]
    if tokens_type == 1:
        assert expert_tokens.tolist() == counts
    elif tokens_type == 0:
        assert expert_tokens.tolist() == [sum(counts[: i + 1]) for i in range(len(counts))]
    else:
        pairs = [[e, c] for e, c in zip(range(start, end), counts, strict=True) if c]
        if len(pairs) < experts:
            pairs.append([0, 0])
        assert expert_tokens.shape == (experts, 2)
        assert expert_tokens[: len(pairs)].tolist() == pairs


@pytest.mark.parametrize("smooth_rows", [0, 1, 4])
def test_init_routing_v2_dynamic_quant_rows_round_trip(smooth_rows: int) -> None:
    g = _gen(5)
    x = torch.randn(6, 16, generator=g).bfloat16()
    ids = _random_topk_ids(6, 4, 2, g)
    # No smooth scale, one shared row, or one row per expert.
    smooth_scale = torch.rand(smooth_rows, 16, generator=g) + 0.5 if smooth_rows else None
    ex, _, _, ex_scale = ops.moe_init_routing_v2(
        x,
        ids,
        scale=smooth_scale,
        expert_num=4,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        quant_mode=1,
    )
    srcs, exps = brute_force_routing(x, ids, 0, 4)
    target = x[[s // 2 for s in srcs]].float()
    if smooth_scale is not None:
        target = target * smooth_scale[exps if smooth_rows > 1 else [0] * len(exps)]
    assert ex.dtype == torch.int8
    assert ex.abs().amax(-1).tolist() == [127] * len(srcs)
    torch.testing.assert_close(ex_scale, target.abs().amax(-1) / 127)
    err = (ex.float() * ex_scale.unsqueeze(-1) - target).abs()
    assert bool((err <= ex_scale.unsqueeze(-1) / 2 * (1 + 1e-6)).all())


# ---------------------------------------------------------------------------------------------
# grouped_matmul
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    counts=st.lists(st.integers(0, 4), min_size=1, max_size=5),
    k_dim=st.integers(1, 6),
    n_dim=st.integers(1, 6),
    layout=st.sampled_from(["stored_out_in_transposed", "stored_in_out", "list"]),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_grouped_matmul_float_matches_per_row_loop(
    counts: list[int], k_dim: int, n_dim: int, layout: str, with_bias: bool, seed: int
) -> None:
    g = _gen(seed)
    groups, rows = len(counts), sum(counts)
    x = torch.randn(rows, k_dim, generator=g)
    stored_out_in = torch.randn(groups, n_dim, k_dim, generator=g)
    w_kn = stored_out_in.transpose(1, 2)  # the op's [E, K, N] view
    if layout == "stored_out_in_transposed":
        # sglang's BF16 path: stored [E, N, K], passed as a non-contiguous transposed view.
        weight = [w_kn]
        assert weight[0].stride() == (n_dim * k_dim, 1, k_dim)
    elif layout == "stored_in_out":
        weight = [w_kn.contiguous()]  # the W8A8-style pre-transposed [E, K, N]
    else:
        weight = list(w_kn.unbind(0))
    bias = torch.randn(groups, n_dim, generator=g)
    bias_arg = None
    if with_bias:
        bias_arg = [bias] if layout != "list" else list(bias.unbind(0))
    out = ops.grouped_matmul(
        [x],
        weight,
        bias=bias_arg,
        group_list=torch.tensor(counts),
        split_item=2,
        group_type=0,
        group_list_type=1,
    )
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == (rows, n_dim)
    row = 0
    for grp, c in enumerate(counts):
        for _ in range(c):
            ref = x[row].double() @ w_kn[grp].double()
            if with_bias:
                ref = ref + bias[grp].double()
            torch.testing.assert_close(out[0][row].double(), ref, **FP32)
            row += 1


def test_grouped_matmul_bf16_takes_float32_bias_and_keeps_dtype() -> None:
    g = _gen(2)
    x = torch.randn(5, 8, generator=g).bfloat16()
    w = torch.randn(2, 8, 3, generator=g).bfloat16()
    bias = torch.randn(2, 3, generator=g)
    out = ops.grouped_matmul(
        [x],
        [w],
        bias=[bias],
        group_list=torch.tensor([2, 5]),
        split_item=2,
        group_type=0,
        group_list_type=0,
        output_dtype=torch.bfloat16,
    )[0]
    ref = torch.cat(
        [x[:2].float() @ w[0].float() + bias[0], x[2:].float() @ w[1].float() + bias[1]]
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref.bfloat16())


# ---------------------------------------------------------------------------------------------
# moe_finalize_routing, swiglu
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    tokens=st.integers(1, 5),
    top_k=st.integers(1, 3),
    mode=st.sampled_from([0, 2]),
    extras=st.sampled_from(["none", "skip2", "both_skips", "bias", "all"]),
    no_scales=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_moe_finalize_routing_matches_formula(
    tokens: int, top_k: int, mode: int, extras: str, no_scales: bool, seed: int
) -> None:
    g = _gen(seed)
    experts, hidden = 4, 3
    total = tokens * top_k
    rows = torch.randn(total, hidden, generator=g)
    src_to_dst = torch.randperm(total, generator=g).int()
    scales = None if no_scales else torch.rand(tokens, top_k, generator=g)
    ids = torch.randint(0, experts, (tokens, top_k), generator=g, dtype=torch.int32)
    skip1 = torch.randn(tokens, hidden, generator=g) if extras in ("both_skips", "all") else None
    skip2 = (
        torch.randn(tokens, hidden, generator=g)
        if extras in ("skip2", "both_skips", "all")
        else None
    )
    bias = torch.randn(experts, hidden, generator=g) if extras in ("bias", "all") else None
    out = ops.moe_finalize_routing(rows, skip1, skip2, bias, scales, src_to_dst, ids, mode, top_k)
    for i in range(tokens):
        ref = torch.zeros(hidden, dtype=torch.float64)
        for s in (skip1, skip2):
            if s is not None:
                ref += s[i].double()
        for k in range(top_k):
            # Documented index for mode 0 is i + k*NUM_ROWS; mode 2 is row-major i*K + k.
            pos = i + k * tokens if mode == 0 else i * top_k + k
            term = rows[int(src_to_dst[pos])].double()
            if bias is not None:
                term = term + bias[int(ids[i, k])].double()
            ref += (1.0 if scales is None else float(scales[i, k])) * term
        torch.testing.assert_close(out[i].double(), ref, **FP32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_swiglu_is_silu_of_first_half_times_second(dtype: torch.dtype, dim: int) -> None:
    x = torch.randn(4, 6, 8, generator=_gen(1)).to(dtype)
    a, b = x.double().chunk(2, dim=dim)
    ref = a * torch.sigmoid(a) * b
    out = ops.swiglu(x, dim)
    assert out.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out.double(), ref, **tol)


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


def _gating_args(**kw: object) -> tuple[tuple[object, ...], dict[str, object]]:
    x = kw.pop("x", torch.randn(2, 8))
    k = kw.pop("k", 2)
    return (x, k), kw


_X = torch.randn(3, 4)
_IDS = torch.tensor([[0, 1], [1, 2], [2, 3]], dtype=torch.int32)
_ROUTE = {"expert_num": 4, "expert_tokens_num_type": 1, "expert_tokens_num_flag": True}


def _gmm(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "x": [torch.randn(4, 3)],
        "weight": [torch.randn(2, 3, 5)],
        "group_list": torch.tensor([1, 3]),
        "split_item": 2,
        "group_type": 0,
        "group_list_type": 1,
    }
    base.update(kw)
    return base


def _gmm_int8(**kw: object) -> dict[str, object]:
    base = _gmm(
        x=[torch.ones(4, 3, dtype=torch.int8)],
        weight=[torch.ones(2, 3, 5, dtype=torch.int8)],
        scale=[torch.ones(2, 5, dtype=torch.bfloat16)],
        per_token_scale=[torch.ones(4)],
        output_dtype=torch.bfloat16,
    )
    base.update(kw)
    return base


def _fin(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "expanded_permuted_rows": torch.randn(6, 4),
        "skip1": None,
        "skip2": None,
        "bias": None,
        "scales": torch.rand(3, 2),
        "expanded_src_to_dst_row": torch.arange(6, dtype=torch.int32),
        "export_for_source_row": _IDS[:, :2].clone(),
        "drop_pad_mode": 2,
    }
    base.update(kw)
    return base


VALIDATION_CASES = [
    # moe_gating_top_k
    (
        "gating x dims",
        ops.moe_gating_top_k,
        (torch.randn(8), 2),
        {},
        r"moe_gating_top_k: x=.*must have 2 dimensions",
    ),
    (
        "gating x dtype",
        ops.moe_gating_top_k,
        (torch.zeros(2, 8, dtype=torch.int32), 2),
        {},
        r"x=.*must have dtype in",
    ),
    (
        "gating E<=2048",
        ops.moe_gating_top_k,
        (torch.randn(1, 2052), 2),
        {"group_count": 4},
        r"at most 2048 experts",
    ),
    (
        "gating norm_type",
        ops.moe_gating_top_k,
        *_gating_args(norm_type=2),
        r"norm_type=2 is not allowed: must be 0 \(softmax\) or 1 \(sigmoid\)",
    ),
    (
        "gating group_select_mode",
        ops.moe_gating_top_k,
        *_gating_args(group_select_mode=3),
        r"group_select_mode=3 is not allowed: must be 0",
    ),
    (
        "gating renorm",
        ops.moe_gating_top_k,
        *_gating_args(renorm=2),
        r"renorm=2 is not allowed: must be 0 or 1",
    ),
    (
        "gating group_count>0",
        ops.moe_gating_top_k,
        *_gating_args(group_count=0),
        r"group_count=0 is not allowed: must be > 0",
    ),
    (
        "gating divides",
        ops.moe_gating_top_k,
        *_gating_args(group_count=3),
        r"group_count=3 is not allowed: must divide the expert count",
    ),
    (
        "gating >2 per group",
        ops.moe_gating_top_k,
        *_gating_args(group_count=4),
        r"group_count=4 is not allowed: must leave more than 2 experts per group",
    ),
    (
        "gating align32",
        ops.moe_gating_top_k,
        (torch.randn(1, 2048), 2),
        {"group_count": 128},
        r"align32\(x.shape\[-1\] // group_count\) \* group_count <= 2048 \(got 4096\)",
    ),
    (
        "gating k_group",
        ops.moe_gating_top_k,
        *_gating_args(k_group=3, group_count=2),
        r"k_group=3 is not allowed: must satisfy 1 <= k_group <= group_count=2",
    ),
    (
        "gating k range",
        ops.moe_gating_top_k,
        *_gating_args(k=5, k_group=1, group_count=2),
        r"k=5 is not allowed: must satisfy 1 <= k <= x.shape\[-1\] // group_count \* k_group = 4",
    ),
    (
        "gating k zero",
        ops.moe_gating_top_k,
        *_gating_args(k=0),
        r"k=0 is not allowed: must satisfy 1 <= k",
    ),
    (
        "gating bias shape",
        ops.moe_gating_top_k,
        *_gating_args(bias=torch.randn(7)),
        r"bias=.*must have shape \(8,\)",
    ),
    (
        "gating bias dims",
        ops.moe_gating_top_k,
        *_gating_args(bias=torch.randn(1, 8)),
        r"bias=.*must have 1 dimensions",
    ),
    (
        "gating bias dtype",
        ops.moe_gating_top_k,
        *_gating_args(bias=torch.randn(8).double()),
        r"bias=.*must have x's dtype",
    ),
    (
        "gating hash pair",
        ops.moe_gating_top_k,
        *_gating_args(input_ids=torch.zeros(2, dtype=torch.int32)),
        r"input_ids=.*and tid2eid must be given together",
    ),
    (
        "gating tid2eid cols",
        ops.moe_gating_top_k,
        *_gating_args(
            input_ids=torch.zeros(2, dtype=torch.int32),
            tid2eid=torch.zeros(4, 3, dtype=torch.int32),
        ),
        r"tid2eid=.*must have k=2 columns",
    ),
    (
        "gmm split_item range",
        ops.grouped_matmul,
        (),
        _gmm(split_item=4),
        r"split_item=4 is not allowed: must be 0/1 \(one output per weight\) or 2/3",
    ),
    (
        "gmm act_type range",
        ops.grouped_matmul,
        (),
        _gmm(act_type=3),
        r"act_type=3 is not allowed: must be 0 \(none\), 1 \(relu\)",
    ),
    (
        "gmm activation_input",
        ops.grouped_matmul,
        (),
        _gmm(activation_input=[torch.zeros(1)]),
        r"activation_input=.*must be None",
    ),
    (
        "gmm int64 scale pts",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=[torch.ones(2, 5, dtype=torch.int64)], output_dtype=torch.int8),
        r"per_token_scale=.*is not allowed: it needs a bfloat16/float32 scale",
    ),
    (
        "route active_num range",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "active_num": -2},
        r"active_num=-2 is not allowed: must be >= -1",
    ),
    # moe_gating_top_k_softmax
    (
        "softmax x dims",
        ops.moe_gating_top_k_softmax,
        (torch.randn(4),),
        {},
        r"moe_gating_top_k_softmax: x=.*must have 2 or 3 dimensions",
    ),
    (
        "softmax x dtype",
        ops.moe_gating_top_k_softmax,
        (torch.zeros(2, 4, dtype=torch.int64),),
        {},
        r"x=.*must have dtype in",
    ),
    (
        "softmax k range",
        ops.moe_gating_top_k_softmax,
        (torch.randn(2, 4),),
        {"k": 5},
        r"k=5 is not allowed: must satisfy 0 < k <= min\(x.shape\[-1\]=4, 1024\)",
    ),
    (
        "softmax k<=1024",
        ops.moe_gating_top_k_softmax,
        (torch.randn(1, 1100),),
        {"k": 1025},
        r"k=1025 is not allowed: must satisfy",
    ),
    (
        "softmax finished dtype",
        ops.moe_gating_top_k_softmax,
        (torch.randn(2, 4), torch.zeros(2)),
        {"k": 1},
        r"finished=.*must have dtype in \(torch.bool\)",
    ),
    (
        "softmax finished shape",
        ops.moe_gating_top_k_softmax,
        (torch.randn(2, 4), torch.zeros(3, dtype=torch.bool)),
        {"k": 1},
        r"finished=.*must have shape \(2,\)",
    ),
    # moe_init_routing_v2
    (
        "route x dims",
        ops.moe_init_routing_v2,
        (torch.randn(3), _IDS),
        _ROUTE,
        r"moe_init_routing_v2: x=.*must have 2 dimensions",
    ),
    (
        "route x dtype",
        ops.moe_init_routing_v2,
        (_X.double(), _IDS),
        _ROUTE,
        r"x=.*must have dtype in",
    ),
    (
        "route ids dims",
        ops.moe_init_routing_v2,
        (_X, _IDS.view(-1)),
        _ROUTE,
        r"expert_idx=.*must have 2 dimensions",
    ),
    (
        "route ids dtype",
        ops.moe_init_routing_v2,
        (_X, _IDS.long()),
        _ROUTE,
        r"expert_idx=.*must have dtype in \(torch.int32\)",
    ),
    (
        "route rows",
        ops.moe_init_routing_v2,
        (_X, _IDS[:2]),
        _ROUTE,
        r"expert_idx=.*must have x's row count 3",
    ),
    (
        "route int8 requant",
        ops.moe_init_routing_v2,
        (_X.to(torch.int8), _IDS),
        {**_ROUTE, "quant_mode": 1},
        r"quant_mode=1 is not allowed: must be -1 when x is int8",
    ),
    (
        "route expert_num",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "expert_num": 0},
        r"expert_num=0 is not allowed: must be in \(0, 10240\]",
    ),
    (
        "route expert_num kv",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "expert_num": 6000, "expert_tokens_num_type": 2},
        r"expert_num=6000 is not allowed: must be in \(0, 5120\]",
    ),
    (
        "route range len",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "active_expert_range": [1]},
        r"active_expert_range=\[1\] is not allowed: must be \[\] or \[start, end\]",
    ),
    (
        "route range order",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "active_expert_range": [3, 2]},
        r"active_expert_range=\[3, 2\] is not allowed: must satisfy 0 <= start < end <= .*=4",
    ),
    (
        "route range end",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "active_expert_range": [0, 5]},
        r"must satisfy 0 <= start < end",
    ),
    (
        "route row_idx_type",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "row_idx_type": 2},
        r"row_idx_type=2 is not allowed: must be 0 or 1",
    ),
    (
        "route offset",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "offset": torch.zeros(1)},
        r"offset=.*must be None",
    ),
    (
        "route scale dtype",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "scale": torch.ones(3).double()},
        r"scale=.*must have dtype in \(torch.float32\)",
    ),
    (
        "route scale shape -1",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "scale": torch.ones(4)},
        r"scale=.*must have shape \(3,\) \(\(NUM_ROWS,\)",
    ),
    (
        "route scale shape 1",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "quant_mode": 1, "scale": torch.ones(3, 4)},
        r"scale=.*must have shape \(4, 4\) or \(1, 4\): smooth scales per active expert or shared",
    ),
    (
        "route drop_pad range",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "drop_pad_mode": 2},
        r"drop_pad_mode=2 is not allowed: must be 0 \(dropless\) or 1 \(drop and pad\)",
    ),
    (
        "route tokens type",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "expert_tokens_num_type": 3},
        r"expert_tokens_num_type=3 is not allowed: must be 0 \(cumsum\), 1 \(count\) or 2",
    ),
    (
        "route quant_mode range",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "quant_mode": 10},
        r"quant_mode=10 is not allowed: must be one of \[-1, 0, 1, 2",
    ),
    (
        "route static quant",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "quant_mode": 0},
        r"moe_init_routing_v2: quant_mode=0 is not allowed: must not be 0: static quantisation",
    ),
    (
        "gmm int8 without scale but per-token scale",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=None, output_dtype=torch.int32),
        r"grouped_matmul: per_token_scale=.*is not allowed: it needs a bfloat16/float32 scale",
    ),
    (
        "gating x not a tensor",
        ops.moe_gating_top_k,
        ([[0.5, 0.25]], 1),
        {},
        r"moe_gating_top_k: x=\[\[0.5, 0.25\]\] is not allowed: must be a torch.Tensor",
    ),
    # grouped_matmul
    (
        "gmm offset",
        ops.grouped_matmul,
        (),
        _gmm(offset=[torch.zeros(5)]),
        r"offset=.*must be None \(doc: 'currently only None'\)",
    ),
    (
        "gmm x dims",
        ops.grouped_matmul,
        (),
        _gmm(x=[torch.randn(4, 3, 1)]),
        r"x\[0\]=.*must have 2 dimensions",
    ),
    (
        "gmm K limit",
        ops.grouped_matmul,
        (),
        _gmm(x=[torch.randn(1, 65536)], weight=[torch.randn(2, 65536, 1)]),
        r"x\[0\]=.*must have K < 65536",
    ),
    (
        "gmm weight empty",
        ops.grouped_matmul,
        (),
        _gmm(weight=[]),
        r"weight=\[\] is not allowed: must be a list of 1 to 128 tensors",
    ),
    (
        "gmm weight dims",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.randn(3, 5)]),
        r"weight\[0\]=.*must have 3 dimensions",
    ),
    (
        "gmm weight list dims",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.randn(3, 5), torch.randn(1, 3, 5)]),
        r"weight\[1\]=.*must have 2 dimensions",
    ),
    (
        "gmm groups 1024",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.randn(1025, 3, 1)], group_list=torch.zeros(1025, dtype=torch.int64)),
        r"weight=.*must hold at most 1024 groups",
    ),
    (
        "gmm groups 128",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.randn(3, 1)] * 129, group_list=torch.zeros(129, dtype=torch.int64)),
        r"weight=.*must be a list of 1 to 128 tensors",
    ),
    (
        "gmm weight dtype",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.randn(2, 3, 5).double()]),
        r"weight\[0\]=.*must have x's dtype",
    ),
    (
        "gmm weight K",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.randn(2, 4, 5)]),
        r"weight\[0\]=.*must be \[K=3, N=5\] per group",
    ),
    (
        "gmm N limit",
        ops.grouped_matmul,
        (),
        _gmm(weight=[torch.empty(2, 3, 65536)]),
        r"weight\[0\]=.*innermost axis < 65536",
    ),
    (
        "gmm group_list none",
        ops.grouped_matmul,
        (),
        _gmm(group_list=None),
        r"group_list=None is not allowed: group_type=0 needs a group_list",
    ),
    (
        "gmm group_list dtype",
        ops.grouped_matmul,
        (),
        _gmm(group_list=torch.tensor([1, 3], dtype=torch.int32)),
        r"group_list=.*must have dtype in \(torch.int64\)",
    ),
    (
        "gmm group_list len",
        ops.grouped_matmul,
        (),
        _gmm(group_list=torch.tensor([4])),
        r"group_list=.*must have shape \(2,\) \(one entry per weight group\)",
    ),
    (
        "gmm group_list_type",
        ops.grouped_matmul,
        (),
        _gmm(group_list_type=2),
        r"group_list_type=2 is not allowed: must be 0 \(cumulative ends\) or 1",
    ),
    (
        "gmm bias len",
        ops.grouped_matmul,
        (),
        _gmm(bias=[torch.zeros(2, 5), torch.zeros(2, 5)]),
        r"bias=.*must have one tensor per weight",
    ),
    (
        "gmm bias dtype fp32",
        ops.grouped_matmul,
        (),
        _gmm(bias=[torch.zeros(2, 5).half()]),
        r"bias\[0\]=.*must have dtype in \(torch.float32\)",
    ),
    (
        "gmm bias dtype bf16",
        ops.grouped_matmul,
        (),
        _gmm(
            x=[torch.randn(4, 3).bfloat16()],
            weight=[torch.randn(2, 3, 5).bfloat16()],
            bias=[torch.zeros(2, 5).bfloat16()],
        ),
        r"bias\[0\]=.*must have dtype in \(torch.float32\)",
    ),
    (
        "gmm bias shape",
        ops.grouped_matmul,
        (),
        _gmm(bias=[torch.zeros(5)]),
        r"bias\[0\]=.*must have shape \(2, 5\)",
    ),
    (
        "gmm float scale",
        ops.grouped_matmul,
        (),
        _gmm(scale=[torch.ones(2, 5)]),
        r"scale=.*must be None for float x",
    ),
    (
        "gmm float out dtype",
        ops.grouped_matmul,
        (),
        _gmm(output_dtype=torch.float16),
        r"output_dtype=torch.float16 is not allowed: must be None or x's dtype",
    ),
    (
        "gmm int8 no scale",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=None, per_token_scale=None),
        r"output_dtype=torch.bfloat16 is not allowed: must be torch.int32 for int8 x without",
    ),
    (
        "gmm int8 scale len",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=[torch.ones(2, 5), torch.ones(2, 5)]),
        r"scale=.*must have one tensor per weight",
    ),
    (
        "gmm int64 scale",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=[torch.ones(2, 5, dtype=torch.int64)]),
        r"output_dtype=torch.bfloat16 is not allowed: must be torch.int8 with a torch.int64 scale",
    ),
    (
        "gmm scale shape",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=[torch.ones(5, dtype=torch.bfloat16)]),
        r"scale\[0\]=.*must have shape \(2, 5\)",
    ),
    (
        "gmm int8 out",
        ops.grouped_matmul,
        (),
        _gmm_int8(output_dtype=torch.int8),
        r"output_dtype=torch.int8 is not allowed: must be torch.bfloat16 with a torch.bfloat16",
    ),
    (
        "gmm scale/out pair",
        ops.grouped_matmul,
        (),
        _gmm_int8(output_dtype=torch.float16),
        r"output_dtype=torch.float16 is not allowed: must be torch.bfloat16 with a torch.bf",
    ),
    (
        "gmm int8 bias dtype",
        ops.grouped_matmul,
        (),
        _gmm_int8(bias=[torch.zeros(2, 5)]),
        r"bias\[0\]=.*must have dtype in \(torch.int32\)",
    ),
    (
        "gmm pts len",
        ops.grouped_matmul,
        (),
        _gmm_int8(per_token_scale=[torch.ones(4), torch.ones(4)]),
        r"per_token_scale=.*must be a list of one tensor",
    ),
    (
        "gmm pts dtype",
        ops.grouped_matmul,
        (),
        _gmm_int8(per_token_scale=[torch.ones(4).double()]),
        r"per_token_scale\[0\]=.*must have dtype in \(torch.float32\)",
    ),
    (
        "gmm pts shape",
        ops.grouped_matmul,
        (),
        _gmm_int8(per_token_scale=[torch.ones(3)]),
        r"per_token_scale\[0\]=.*must have shape \(4,\)",
    ),
    # moe_finalize_routing
    (
        "fin mode",
        ops.moe_finalize_routing,
        (),
        _fin(drop_pad_mode=4),
        r"drop_pad_mode=4 is not allowed: must be in \[0, 3\]",
    ),
    (
        "fin rows dims",
        ops.moe_finalize_routing,
        (),
        _fin(expanded_permuted_rows=torch.randn(2, 3, 4)),
        r"expanded_permuted_rows=.*must have 2 dimensions",
    ),
    (
        "fin rows dtype",
        ops.moe_finalize_routing,
        (),
        _fin(expanded_permuted_rows=torch.randn(6, 4).double()),
        r"expanded_permuted_rows=.*must have dtype in",
    ),
    (
        "fin idx dtype",
        ops.moe_finalize_routing,
        (),
        _fin(expanded_src_to_dst_row=torch.arange(6)),
        r"expanded_src_to_dst_row=.*must have dtype in \(torch.int32\)",
    ),
    (
        "fin scales dtype",
        ops.moe_finalize_routing,
        (),
        _fin(scales=torch.rand(3, 2).half()),
        r"scales=.*must have expanded_permuted_rows' dtype",
    ),
    (
        "fin scales dims",
        ops.moe_finalize_routing,
        (),
        _fin(scales=torch.rand(6)),
        r"scales=.*must have 2 dimensions",
    ),
    (
        "fin scales shape",
        ops.moe_finalize_routing,
        (),
        _fin(scales=torch.rand(2, 2)),
        r"scales=.*NUM_ROWS\*K = len\(expanded_src_to_dst_row\) = 6",
    ),
    (
        "fin k",
        ops.moe_finalize_routing,
        (),
        _fin(scales=None, k=0),
        r"k=0 is not allowed: must be >= 1",
    ),
    (
        "fin k divides",
        ops.moe_finalize_routing,
        (),
        _fin(scales=None, k=4),
        r"k=4 is not allowed: must divide len\(expanded_src_to_dst_row\)=6",
    ),
    (
        "fin rows shape",
        ops.moe_finalize_routing,
        (),
        _fin(expanded_permuted_rows=torch.randn(5, 4)),
        r"expanded_permuted_rows=.*must have shape \(6, 4\)",
    ),
    (
        "fin skip1 needs skip2",
        ops.moe_finalize_routing,
        (),
        _fin(skip1=torch.randn(3, 4)),
        r"skip1=Tensor\(shape=\(3, 4\).* needs skip2 \(with skip2=None, skip1 must be None\)",
    ),
    (
        "fin skip shape",
        ops.moe_finalize_routing,
        (),
        _fin(skip1=torch.randn(2, 4), skip2=torch.randn(3, 4)),
        r"skip1=.*must have shape \(3, 4\)",
    ),
    (
        "fin skip dtype",
        ops.moe_finalize_routing,
        (),
        _fin(skip1=torch.randn(3, 4).half(), skip2=torch.randn(3, 4)),
        r"skip1=.*must have dtype in \(torch.float32\)",
    ),
    (
        "fin expert shape",
        ops.moe_finalize_routing,
        (),
        _fin(export_for_source_row=_IDS[:2]),
        r"export_for_source_row=.*must have shape \(3, 2\)",
    ),
    (
        "fin expert dtype",
        ops.moe_finalize_routing,
        (),
        _fin(export_for_source_row=_IDS[:, :2].long()),
        r"export_for_source_row=.*must have dtype in \(torch.int32\)",
    ),
    (
        "fin bias needs experts",
        ops.moe_finalize_routing,
        (),
        _fin(bias=torch.randn(4, 4), export_for_source_row=None),
        r"bias=.*is not allowed: it needs export_for_source_row",
    ),
    (
        "fin bias dtype",
        ops.moe_finalize_routing,
        (),
        _fin(bias=torch.randn(4, 4).half()),
        r"bias=.*must have dtype in \(torch.float32\)",
    ),
    (
        "fin bias H",
        ops.moe_finalize_routing,
        (),
        _fin(bias=torch.randn(4, 3)),
        r"bias=.*must be \(E, H=4\)",
    ),
    # swiglu
    (
        "swiglu dtype",
        ops.swiglu,
        (torch.ones(2, 4, dtype=torch.int32),),
        {},
        r"swiglu: self=.*must have dtype in",
    ),
    (
        "swiglu dims",
        ops.swiglu,
        (torch.ones(()),),
        {},
        r"swiglu: self=.*must have 1 to 8 dimensions",
    ),
    (
        "swiglu dim",
        ops.swiglu,
        (torch.ones(2, 4), 2),
        {},
        r"dim=2 is not allowed: must index one of 2 axes",
    ),
    (
        "swiglu odd",
        ops.swiglu,
        (torch.ones(2, 5),),
        {},
        r"self=.*must have an even size along dim=-1",
    ),
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
    (
        "route drop_pad",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "drop_pad_mode": 1},
        r"drop_pad_mode=1 is not implemented by the reference",
    ),
    (
        "route flag",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "expert_tokens_num_flag": False},
        r"expert_tokens_num_flag=False is not implemented by the reference",
    ),
    (
        "route quant_mode",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "quant_mode": 3},
        r"quant_mode=3 is not implemented by the reference",
    ),
    (
        "gating hash mode",
        ops.moe_gating_top_k,
        *_gating_args(
            input_ids=torch.zeros(2, dtype=torch.int32),
            tid2eid=torch.zeros(4, 2, dtype=torch.int32),
        ),
        r"moe_gating_top_k: input_ids=.*is not implemented by the reference",
    ),
    (
        "route x_dtype",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "x_dtype": torch.int8},
        r"x_dtype=torch.int8 is not implemented",
    ),
    (
        "route active_num",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "active_num": 4},
        r"active_num=4 is not implemented by the reference .*NUM_ROWS\*K=6",
    ),
    (
        "gmm split_item",
        ops.grouped_matmul,
        (),
        _gmm(split_item=0),
        r"grouped_matmul: split_item/group_type=\(0, 0\) is not implemented",
    ),
    (
        "gmm group_type",
        ops.grouped_matmul,
        (),
        _gmm(group_type=-1),
        r"split_item/group_type=\(2, -1\) is not implemented",
    ),
    (
        "gmm antiquant",
        ops.grouped_matmul,
        (),
        _gmm(antiquant_scale=[torch.zeros(5)]),
        r"antiquant_scale=.*not implemented",
    ),
    (
        "gmm weight_dtype",
        ops.grouped_matmul,
        (),
        _gmm(weight_dtype=torch.int8),
        r"weight_dtype=torch.int8 is not implemented",
    ),
    ("gmm act_type", ops.grouped_matmul, (), _gmm(act_type=5), r"act_type=5 is not implemented"),
    (
        "gmm x list",
        ops.grouped_matmul,
        (),
        _gmm(x=[torch.randn(2, 3), torch.randn(2, 3)]),
        r"split_item/group_type=\(2, 0\) is not implemented by the reference",
    ),
    (
        "fin drop pad",
        ops.moe_finalize_routing,
        (),
        _fin(drop_pad_mode=1),
        r"moe_finalize_routing: drop_pad_mode=1 is not implemented",
    ),
    (
        "gmm int32 out",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=None, per_token_scale=None, output_dtype=torch.int32),
        r"scale=None is not implemented by the reference",
    ),
    (
        "gmm int64 scale",
        ops.grouped_matmul,
        (),
        _gmm_int8(
            scale=[torch.ones(2, 5, dtype=torch.int64)],
            per_token_scale=None,
            output_dtype=torch.int8,
        ),
        r"scale\[0\]=.*is not implemented by the reference \(it supports bfloat16/float32",
    ),
]

# Documented constraints on tensor *values*: reading values would cost the NPU path a device
# sync per call, so the reference checks them and the validator does not.
VALUE_CASES = [
    (
        "route expert value",
        ops.moe_init_routing_v2,
        (_X, _IDS + 1),
        _ROUTE,
        r"expert_idx=.*is not allowed: values must lie in \[0, expert_num=4\)",
    ),
    (
        "gmm cumsum order",
        ops.grouped_matmul,
        (),
        _gmm(group_list=torch.tensor([3, 1]), group_list_type=0),
        r"group_list=\[3, 1\] is not allowed: must be non-negative and non-decreasing",
    ),
    (
        "gmm cumsum end",
        ops.grouped_matmul,
        (),
        _gmm(group_list=torch.tensor([1, 3]), group_list_type=0),
        r"group_list=\[1, 3\] is not allowed: must end at x's row count 4",
    ),
    (
        "gmm counts sign",
        ops.grouped_matmul,
        (),
        _gmm(group_list=torch.tensor([-1, 5])),
        r"group_list=\[-1, 5\] is not allowed: must be non-negative",
    ),
    (
        "gmm counts sum",
        ops.grouped_matmul,
        (),
        _gmm(group_list=torch.tensor([1, 2])),
        r"group_list=\[1, 2\] is not allowed: must sum to x's row count 4",
    ),
    (
        "fin idx range",
        ops.moe_finalize_routing,
        (),
        _fin(expanded_src_to_dst_row=torch.arange(1, 7, dtype=torch.int32)),
        r"expanded_src_to_dst_row=.*is not allowed: values must lie in \[0, NUM_ROWS\*K=6\)",
    ),
    (
        "fin expert range",
        ops.moe_finalize_routing,
        (),
        _fin(bias=torch.randn(2, 4)),
        r"export_for_source_row=.*is not allowed: values must lie in \[0, E=2\)",
    ),
]


@pytest.mark.parametrize(
    ("op", "args", "kwargs", "match"),
    [pytest.param(op, a, kw, m, id=name) for name, op, a, kw, m in VALIDATION_CASES],
)
def test_validator_rejects_with_a_message_naming_argument_value_and_rule(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_validator_rejects(op, args, kwargs, match)


@pytest.mark.parametrize(
    ("op", "args", "kwargs", "match"),
    [
        pytest.param(op, a, kw, m, id=name)
        for name, op, a, kw, m in REFERENCE_LIMIT_CASES + VALUE_CASES
    ],
)
def test_reference_refuses_what_the_validator_lets_through(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_reference_refuses(op, args, kwargs, match)


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
