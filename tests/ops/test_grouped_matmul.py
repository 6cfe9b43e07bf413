"""``grouped_matmul``: the float reference against a per-row loop, and every documented rule with
its message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import FP32, SETTINGS, _gen
from op_refusals import (
    REFUSAL_FIELDS,
    assert_reference_refuses,
    assert_validator_rejects,
    refusal_params,
)

from sglang_ascend_fia import ops

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
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


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


VALIDATION_CASES = [
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
        "gmm int8 without scale but per-token scale",
        ops.grouped_matmul,
        (),
        _gmm_int8(scale=None, output_dtype=torch.int32),
        r"grouped_matmul: per_token_scale=.*is not allowed: it needs a bfloat16/float32 scale",
    ),
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
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
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
        _gmm(group_list=torch.tensor([1, 5]), group_list_type=0),
        r"group_list=\[1, 5\] is not allowed: must end at most at x's row count 4",
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
        _gmm(group_list=torch.tensor([3, 2])),
        r"group_list=\[3, 2\] is not allowed: must sum to at most x's row count 4",
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
