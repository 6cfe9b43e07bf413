"""``dynamic_quant``: the per-row int8 round trip within half a step, smooth scales per group, and
every documented rule with its message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from op_refusals import (
    REFUSAL_FIELDS,
    assert_reference_refuses,
    assert_validator_rejects,
    refusal_params,
)
from quant_cases import _BF, SETTINGS, _assert_round_trip, _gen

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# dynamic_quant
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    shape=st.sampled_from([(1, 1), (3, 7), (2, 3, 16), (5, 64)]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    magnitude=st.sampled_from([1e-3, 1.0, 300.0]),
    smooth=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_dynamic_quant_round_trip_is_within_half_a_step(
    shape: tuple[int, ...], dtype: torch.dtype, magnitude: float, smooth: bool, seed: int
) -> None:
    g = _gen(seed)
    x = (torch.randn(shape, generator=g) * magnitude).to(dtype)
    s = (torch.rand(shape[-1], generator=g) + 0.5).to(dtype) if smooth else None
    y, scale = ops.dynamic_quant(x, smooth_scales=s)
    assert y.dtype == torch.int8 and y.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == x.shape[:-1]
    target = x.float() * s.float() if s is not None else x.float()
    _assert_round_trip(target, y, scale)


def test_dynamic_quant_zero_row_has_zero_scale_and_values() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.bfloat16)
    y, scale = ops.dynamic_quant(x, dst_type=torch.int8)
    assert scale.tolist() == [0.0, pytest.approx(2 / 127)]
    assert y.tolist() == [[0, 0], [64, -127]]  # 1 / (2/127) = 63.5 rounds half to even


def test_dynamic_quant_group_index_applies_each_smooth_row_to_its_block() -> None:
    g = _gen(4)
    x = torch.randn(6, 8, generator=g).half()
    smooth = (torch.rand(3, 8, generator=g) + 0.5).half()
    ends = torch.tensor([2, 2, 6], dtype=torch.int32)  # the middle group is empty
    y, scale = ops.dynamic_quant(x, smooth_scales=smooth, group_index=ends)
    rows_smooth = smooth[[0, 0, 2, 2, 2, 2]].float()
    _assert_round_trip(x.float() * rows_smooth, y, scale)


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


VALIDATION_CASES = [
    (
        "dq dtype",
        ops.dynamic_quant,
        (torch.ones(2, 4),),
        {},
        r"dynamic_quant: input=.*must have dtype in \(torch.float16, torch.bfloat16\)",
    ),
    (
        "dq dims",
        ops.dynamic_quant,
        (torch.ones(4, dtype=torch.float16),),
        {},
        r"input=.*must have more than 1 dimension",
    ),
    (
        "dq smooth dims",
        ops.dynamic_quant,
        (_BF,),
        {"smooth_scales": torch.ones(1, 8, dtype=torch.bfloat16)},
        r"smooth_scales=.*must have 1 dimensions",
    ),
    (
        "dq smooth dtype",
        ops.dynamic_quant,
        (_BF,),
        {"smooth_scales": torch.ones(8)},
        r"smooth_scales=.*must have dtype in \(torch.bfloat16\)",
    ),
    (
        "dq smooth shape",
        ops.dynamic_quant,
        (_BF,),
        {"smooth_scales": torch.ones(7, dtype=torch.bfloat16)},
        r"smooth_scales=.*must have shape \(8,\)",
    ),
    (
        "dq group dtype",
        ops.dynamic_quant,
        (_BF,),
        {"group_index": torch.tensor([2])},
        r"group_index=.*must have dtype in \(torch.int32\)",
    ),
    (
        "dq group needs smooth",
        ops.dynamic_quant,
        (_BF,),
        {"group_index": torch.tensor([2], dtype=torch.int32)},
        r"group_index=.*is not allowed: it needs smooth_scales",
    ),
    (
        "dq group smooth dims",
        ops.dynamic_quant,
        (_BF,),
        {
            "group_index": torch.tensor([2], dtype=torch.int32),
            "smooth_scales": torch.ones(8, dtype=torch.bfloat16),
        },
        r"smooth_scales=.*must have 2 dimensions",
    ),
    (
        "dq group smooth shape",
        ops.dynamic_quant,
        (_BF,),
        {
            "group_index": torch.tensor([2], dtype=torch.int32),
            "smooth_scales": torch.ones(2, 8, dtype=torch.bfloat16),
        },
        r"smooth_scales=.*must have shape \(1, 8\)",
    ),
    (
        "dq dst_type",
        ops.dynamic_quant,
        (_BF,),
        {"dst_type": torch.float16},
        r"dst_type=torch.float16 is not allowed: must be None, torch.int8 or torch.quint4x2",
    ),
    (
        "dq int4 last dim",
        ops.dynamic_quant,
        (torch.ones(2, 6, dtype=torch.bfloat16),),
        {"dst_type": torch.quint4x2},
        r"input=.*must have a last dim divisible by 8 for int4",
    ),
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
    (
        "dq dst int4",
        ops.dynamic_quant,
        (_BF,),
        {"dst_type": torch.quint4x2},
        r"dst_type=torch.quint4x2 is not implemented by the reference",
    ),
    (
        "dq quant_mode",
        ops.dynamic_quant,
        (_BF,),
        {"quant_mode": "pertensor"},
        r"quant_mode='pertensor' is not implemented",
    ),
    (
        "dq dst max",
        ops.dynamic_quant,
        (_BF,),
        {"dst_type_max": 7.0},
        r"dst_type_max=7.0 is not implemented",
    ),
]


# Documented constraints on tensor values, checked by the reference only (no device sync on NPU).
VALUE_CASES = [
    (
        "dq group values",
        ops.dynamic_quant,
        (_BF,),
        {
            "group_index": torch.tensor([1], dtype=torch.int32),
            "smooth_scales": torch.ones(1, 8, dtype=torch.bfloat16),
        },
        r"group_index=\[1\] is not allowed: must be non-decreasing row ends finishing at .* 2",
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
