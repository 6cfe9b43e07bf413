"""``dequant_swiglu_quant``: against the float SwiGLU, int32 dequantisation with weight and
activation scales, per-group scales, and every documented rule with its message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from op_refusals import (
    REFUSAL_FIELDS,
    assert_reference_refuses,
    assert_validator_rejects,
    refusal_params,
)
from quant_cases import _BF, _assert_round_trip, _gen

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# dequant_swiglu_quant
# ---------------------------------------------------------------------------------------------


def _swiglu(h: torch.Tensor, activate_left: bool) -> torch.Tensor:
    a, b = h.chunk(2, dim=-1)
    return F.silu(a) * b if activate_left else F.silu(b) * a


@pytest.mark.parametrize("activate_left", [True, False])
def test_dequant_swiglu_quant_on_bf16_matches_float_swiglu(activate_left: bool) -> None:
    # NPUSwigluQuant: npu_dequant_swiglu_quant(h, quant_mode=1, activate_left=True).
    h = torch.randn(9, 32, generator=_gen(6)).bfloat16()
    y, scale = ops.dequant_swiglu_quant(h, quant_mode=1, activate_left=activate_left)
    assert y.dtype == torch.int8 and y.shape == (9, 16) and scale.shape == (9,)
    _assert_round_trip(_swiglu(h.float(), activate_left), y, scale)


def test_dequant_swiglu_quant_dequantises_int32_with_weight_and_activation_scales() -> None:
    g = _gen(12)
    x = torch.randint(-3000, 3000, (5, 20), generator=g, dtype=torch.int32)
    weight_scale = torch.rand(1, 20, generator=g) / 100
    activation_scale = torch.rand(5, generator=g) / 10
    quant_scale = torch.rand(1, 10, generator=g) + 0.5
    y, scale = ops.dequant_swiglu_quant(
        x,
        weight_scale=weight_scale,
        activation_scale=activation_scale,
        quant_scale=quant_scale,
        activate_left=True,
        quant_mode=1,
    )
    h = x.float() * weight_scale * activation_scale.unsqueeze(-1)
    _assert_round_trip(_swiglu(h, True) * quant_scale, y, scale)


def test_dequant_swiglu_quant_group_index_selects_per_group_scales() -> None:
    g = _gen(13)
    tokens, hidden = 6, 64
    x = torch.randint(-500, 500, (tokens, 2 * hidden), generator=g, dtype=torch.int32)
    weight_scale = torch.rand(2, 2 * hidden, generator=g) / 100
    activation_scale = torch.rand(tokens, 1, generator=g)
    quant_scale = torch.rand(2, hidden, generator=g) + 0.5
    counts = torch.tensor([2, 3])  # rows 0-1 group 0, rows 2-4 group 1, row 5 uncovered
    y, scale = ops.dequant_swiglu_quant(
        x,
        weight_scale=weight_scale,
        activation_scale=activation_scale,
        quant_scale=quant_scale,
        group_index=counts,
        activate_left=True,
        quant_mode=1,
    )
    group = torch.tensor([0, 0, 1, 1, 1])
    h = x[:5].float() * weight_scale[group] * activation_scale[:5]
    _assert_round_trip(_swiglu(h, True) * quant_scale[group], y[:5], scale[:5])
    # The NPU leaves rows past sum(group_index) as garbage; the reference zeroes them.
    assert y[5].abs().sum() == 0 and scale[5] == 0


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


VALIDATION_CASES = [
    (
        "dsq quant_mode",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 2},
        r"quant_mode=2 is not allowed: must be 0 \(static\) or 1 \(dynamic\)",
    ),
    (
        "dsq swiglu_mode range",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "swiglu_mode": 2},
        r"swiglu_mode=2 is not allowed: must be 0",
    ),
    (
        "dsq group static",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 128, dtype=torch.bfloat16),),
        {"quant_mode": 0, "group_index": torch.tensor([2])},
        r"quant_mode=0 is not allowed: must be 1 \(dynamic\) with group_index",
    ),
    (
        "dsq group offset",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 128, dtype=torch.bfloat16),),
        {"quant_mode": 1, "group_index": torch.tensor([2]), "quant_offset": torch.ones(1)},
        r"quant_offset=.*must be None with group_index",
    ),
    (
        "dsq group activate_dim",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 128, dtype=torch.bfloat16),),
        {"quant_mode": 1, "group_index": torch.tensor([2]), "activate_dim": 0},
        r"activate_dim=0 is not allowed: must be the last dim with group_index",
    ),
    (
        "dsq bias dtype",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 8, dtype=torch.int32),),
        {"quant_mode": 1, "bias": torch.ones(8)},
        r"bias=.*must have dtype in \(torch.int32\)",
    ),
    (
        "dsq dtype",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 4),),
        {"quant_mode": 1},
        r"dequant_swiglu_quant: x=.*must have dtype in",
    ),
    (
        "dsq dims",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 2, 4, dtype=torch.bfloat16),),
        {"quant_mode": 1},
        r"x=.*must have 2 dimensions",
    ),
    (
        "dsq odd",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 5, dtype=torch.bfloat16),),
        {"quant_mode": 1},
        r"x=.*must have an even last dim",
    ),
    (
        "dsq bias",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "bias": torch.ones(8, dtype=torch.int32)},
        r"bias=.*must be None for torch.bfloat16 x",
    ),
    (
        "dsq dst_type",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "dst_type": torch.uint8},
        r"dst_type=torch.uint8 is not allowed: must be int8",
    ),
    (
        "dsq group dtype",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "group_index": torch.tensor([2], dtype=torch.int32)},
        r"group_index=.*must have dtype in \(torch.int64\)",
    ),
    (
        "dsq group H",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "group_index": torch.tensor([2])},
        r"x=.*must have H = x.shape\[1\] // 2 <= 10496 and a multiple of 64",
    ),
    (
        "dsq int32 scales",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 8, dtype=torch.int32),),
        {"quant_mode": 1},
        r"weight_scale=None is not allowed: int32 x needs it and activation_scale",
    ),
    (
        "dsq weight_scale shape",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 8, dtype=torch.int32),),
        {"quant_mode": 1, "weight_scale": torch.ones(1, 4), "activation_scale": torch.ones(2)},
        r"weight_scale=.*must have shape \(1, 8\)",
    ),
    (
        "dsq weight_scale dtype",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 8, dtype=torch.int32),),
        {
            "quant_mode": 1,
            "weight_scale": torch.ones(1, 8).half(),
            "activation_scale": torch.ones(2),
        },
        r"weight_scale=.*must have dtype in \(torch.float32\)",
    ),
    (
        "dsq act shape",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 8, dtype=torch.int32),),
        {"quant_mode": 1, "weight_scale": torch.ones(1, 8), "activation_scale": torch.ones(3)},
        r"activation_scale=.*must have shape \(2,\) or \(2, 1\)",
    ),
    (
        "dsq float with scales",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "activation_scale": torch.ones(2)},
        r"activation_scale=.*must be None for torch.bfloat16 x",
    ),
    (
        "dsq quant_scale shape",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "quant_scale": torch.ones(1, 8)},
        r"quant_scale=.*must have shape \(1, 4\) \(\(groupNum, H\)\)",
    ),
    (
        "dsq quant_scale dtype",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "quant_scale": torch.ones(1, 4).double()},
        r"quant_scale=.*must have dtype in",
    ),
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
    (
        "dsq static",
        ops.dequant_swiglu_quant,
        (_BF,),
        {},
        r"quant_mode=0 is not implemented by the reference",
    ),
    (
        "dsq swiglu_mode",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "swiglu_mode": 1},
        r"swiglu_mode=1 is not implemented",
    ),
    (
        "dsq quant_offset",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "quant_offset": torch.ones(1, 4)},
        r"quant_offset=.*is not implemented by the reference",
    ),
    (
        "dsq round_mode",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "round_mode": 1},
        r"round_mode=1 is not implemented",
    ),
    (
        "dsq activate_dim",
        ops.dequant_swiglu_quant,
        (_BF,),
        {"quant_mode": 1, "activate_dim": 0},
        r"activate_dim=0 is not implemented",
    ),
    (
        "dsq int32 bias",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 8, dtype=torch.int32),),
        {
            "quant_mode": 1,
            "weight_scale": torch.ones(1, 8),
            "activation_scale": torch.ones(2),
            "bias": torch.ones(8, dtype=torch.int32),
        },
        r"bias=.*is not implemented by the reference",
    ),
]


# Documented constraints on tensor values, checked by the reference only (no device sync on NPU).
VALUE_CASES = [
    (
        "dsq group counts",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 128, dtype=torch.bfloat16),),
        {"quant_mode": 1, "group_index": torch.tensor([2, 1])},
        r"group_index=\[2, 1\] is not allowed: must hold non-negative counts .* x.shape\[0\]=2",
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
