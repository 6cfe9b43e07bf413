"""``moe_init_routing_v2``: the reference against brute force, and every documented rule with its
message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import _IDS, _ROUTE, SETTINGS, _gen, _random_topk_ids
from op_refusals import (
    REFUSAL_FIELDS,
    assert_reference_refuses,
    assert_validator_rejects,
    refusal_params,
)

from sglang_ascend_fia import ops

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
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


_X = torch.randn(3, 4)


VALIDATION_CASES = [
    (
        "route active_num range",
        ops.moe_init_routing_v2,
        (_X, _IDS),
        {**_ROUTE, "active_num": -2},
        r"active_num=-2 is not allowed: must be >= -1",
    ),
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
]


@pytest.mark.parametrize(REFUSAL_FIELDS, refusal_params(VALIDATION_CASES))
def test_validator_rejects_with_a_message_naming_argument_value_and_rule(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_validator_rejects(op, args, kwargs, match)


@pytest.mark.parametrize(REFUSAL_FIELDS, refusal_params(REFERENCE_LIMIT_CASES, VALUE_CASES))
def test_reference_refuses_what_the_validator_lets_through(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_reference_refuses(op, args, kwargs, match)
