"""``moe_finalize_routing``: the reference against the documented formula, and every documented
rule with its message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import _IDS, FP32, SETTINGS, _gen
from op_refusals import (
    REFUSAL_FIELDS,
    assert_reference_refuses,
    assert_validator_rejects,
    refusal_params,
)

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# moe_finalize_routing
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


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


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
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
    (
        "fin drop pad",
        ops.moe_finalize_routing,
        (),
        _fin(drop_pad_mode=1),
        r"moe_finalize_routing: drop_pad_mode=1 is not implemented",
    ),
]


# Documented constraints on tensor *values*: reading values would cost the NPU path a device
# sync per call, so the reference checks them and the validator does not.
VALUE_CASES = [
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
