"""``quantize`` (``npu_quantize``): the reference against a per-element float32 oracle, ties and
saturation, sglang's static W8A8 call, the launch count, and every documented rule with its
message."""

from __future__ import annotations

import numpy as np
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
from quant_cases import _BF, SETTINGS, _gen

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# The oracle: one element at a time, in numpy float32 scalars and Python's round
# ---------------------------------------------------------------------------------------------


def _broadcast_index(index: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The element of a (1,)/(K,) or (1, ..., K) tensor that multiplies ``index`` of self."""
    if len(shape) == 1:
        return (index[-1] if shape[0] > 1 else 0,)
    return tuple(i if n > 1 else 0 for i, n in zip(index, shape, strict=True))


def _oracle(x: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None) -> np.ndarray:
    """``clip(round_half_even(f32(f32(x * s) + zp)), -128, 127)`` element by element."""
    xs = x.float().numpy()
    s = scales.float().numpy()
    zp = zero_points.float().numpy() if zero_points is not None else None
    out = np.zeros(xs.shape, dtype=np.int8)
    for index in np.ndindex(*xs.shape):
        at = _broadcast_index(index, s.shape)
        value = np.float32(xs[index]) * np.float32(s[at])
        if zp is not None:
            value = np.float32(value + np.float32(zp[at]))
        if value >= 127:
            out[index] = 127
        elif value <= -128:
            out[index] = -128
        else:
            out[index] = round(float(value))  # Python rounds half to even
    return out


def _assert_matches_oracle(
    x: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None, **kwargs: object
) -> torch.Tensor:
    y = ops.quantize(x, scales, zero_points, torch.qint8, -1, False, **kwargs)
    assert y.dtype == torch.int8 and y.shape == x.shape
    want = _oracle(x, scales, zero_points)
    mismatched = int((y.numpy() != want).sum())
    assert mismatched == 0, (mismatched, y, want)
    return y


# ---------------------------------------------------------------------------------------------
# Semantics
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    shape=st.sampled_from([(1,), (7,), (3, 5), (1, 16), (2, 3, 8), (4, 1, 6)]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]),
    scale_form=st.sampled_from(["tensor", "channel", "channel-nd", "tensor-nd"]),
    offset=st.booleans(),
    magnitude=st.sampled_from([0.5, 20.0, 400.0]),  # 400: both ends saturate
    seed=st.integers(0, 2**31 - 1),
)
def test_quantize_matches_the_per_element_oracle(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    scale_form: str,
    offset: bool,
    magnitude: float,
    seed: int,
) -> None:
    g = _gen(seed)
    x = (torch.randn(shape, generator=g) * magnitude).to(dtype)
    k = shape[-1] if scale_form.startswith("channel") else 1
    scale_shape = (k,) if not scale_form.endswith("-nd") else (*[1] * (len(shape) - 1), k)
    scales = (torch.rand(scale_shape, generator=g) * 3 + 0.1).to(dtype)
    zero_points = None
    if offset:
        zero_points = torch.randint(-20, 21, scale_shape, generator=g).to(dtype)
    _assert_matches_oracle(x, scales, zero_points)


@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_a_float32_input_takes_every_scale_dtype(scale_dtype: torch.dtype) -> None:
    g = _gen(3)
    x = torch.randn(4, 12, generator=g) * 30
    scales = (torch.rand(12, generator=g) + 0.5).to(scale_dtype)
    zero_points = torch.randint(-5, 6, (12,), generator=g).to(scale_dtype)
    _assert_matches_oracle(x, scales, zero_points)


def test_exact_halves_round_to_even() -> None:
    x = torch.tensor([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5], dtype=torch.float16)
    ones = torch.ones(1, dtype=torch.float16)
    y = ops.quantize(x, ones, None, torch.qint8, -1, False)
    assert y.tolist() == [-4, -2, -2, 0, 0, 2, 2, 4]
    # Ties made by the scale (1.25 * 2 = 2.5) and by the offset (0.25 * 2 + 1 = 1.5).
    x = torch.tensor([1.25, -1.25, 0.25, 0.75], dtype=torch.bfloat16)
    two = torch.full((4,), 2.0, dtype=torch.bfloat16)
    offset = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.bfloat16)
    y = _assert_matches_oracle(x, two, offset)
    assert y.tolist() == [2, -2, 2, 2]


def test_the_sum_is_rounded_to_float32_before_the_integer_rounding() -> None:
    # 0.5 + 1e-9 is 0.5 in float32 (a tie, so 0); exact arithmetic would give 1.
    x = torch.tensor([0.5, -0.5])
    y = ops.quantize(x, torch.ones(1), torch.full((1,), 1e-9), torch.qint8, -1, False)
    assert y.tolist() == [0, 0]


def test_saturation_at_both_ends() -> None:
    x = torch.tensor([126.4, 126.6, 127.5, 1e4, -127.6, -128.5, -1e4, 65504.0], dtype=torch.float32)
    y = ops.quantize(x, torch.ones(1), None, torch.qint8, -1, False)
    assert y.tolist() == [126, 127, 127, 127, -128, -128, -128, 127]
    inf = torch.tensor([float("inf"), float("-inf")], dtype=torch.float16)
    one = torch.ones(1, dtype=torch.float16)
    assert ops.quantize(inf, one, None, torch.qint8, -1, False).tolist() == [127, -128]


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_every_axis_above_minus_two_is_the_last_axis(axis: int) -> None:
    g = _gen(5)
    x = (torch.randn(3, 6, generator=g) * 10).half()
    scales = (torch.rand(6, generator=g) + 0.5).half()
    want = ops.quantize(x, scales, None, torch.qint8, -1, False)
    assert torch.equal(ops.quantize(x, scales, None, torch.qint8, axis, False), want)
    assert torch.equal(ops.quantize(x, scales, None, torch.int8, axis, False), want)


def test_sglangs_static_w8a8_call() -> None:
    # NPUW8A8Int8LinearMethod (linear_method_npu.py:66-123): the per-tensor input scale and
    # offset repeated over K, the reciprocal passed as scales, qint8, axis -1, div_mode False.
    g = _gen(9)
    k = 64
    x = torch.randn(5, k, generator=g).bfloat16()
    input_scale = torch.tensor([0.05], dtype=torch.bfloat16)
    input_offset = torch.tensor([3.0], dtype=torch.bfloat16)
    reciprocal = 1 / input_scale.repeat(k)
    offset = input_offset.repeat(k)
    y = _assert_matches_oracle(x, reciprocal, offset)
    # Dequantised, the int8 values stand for x within half a step (none saturate here).
    assert int(y.abs().max()) < 127
    step = 1 / float(reciprocal[0])
    back = (y.double() - 3.0) * step
    assert bool(((back - x.double()).abs() <= step / 2 * (1 + 2**-20)).all())


def test_one_call_is_one_launch(cold_counters: None) -> None:
    ops.quantize(_BF, torch.ones(8, dtype=torch.bfloat16), None, torch.qint8, -1, False)
    assert ops.launch_counts() == {"quantize": 1}
    assert ops.validation_counts() == {"quantize": 1}


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------

_S = torch.ones(8, dtype=torch.bfloat16)
_MUL = {"dtype": torch.qint8, "axis": -1, "div_mode": False}
_QZ = ops.quantize

VALIDATION_CASES = [
    (
        "qz dtype",
        _QZ,
        (torch.ones(2, 8, dtype=torch.int32), _S, None),
        _MUL,
        r"quantize: self=.*must have dtype in \(torch.float16, torch.bfloat16, torch.float32\)",
    ),
    (
        "qz div dtype",
        _QZ,
        (_BF, torch.ones(8), None),
        {"dtype": torch.quint4x2},
        r"dtype=torch.quint4x2 is not allowed: must be in \(torch.qint8, torch.quint8, "
        r"torch.qint32, torch.int32\)",
    ),
    (
        "qz div scales dtype",
        _QZ,
        (_BF, torch.ones(8, dtype=torch.float16), None),
        {"dtype": torch.qint8},
        r"scales=.*must have dtype in",
    ),
    (
        "qz div zero_points dtype",
        _QZ,
        (_BF, torch.ones(8), torch.ones(8, dtype=torch.float16)),
        {"dtype": torch.qint8},
        r"zero_points=.*must have dtype in",
    ),
    (
        "qz dims",
        _QZ,
        (torch.ones((), dtype=torch.bfloat16), _S[:1], None),
        _MUL,
        r"self=.*must have 1 to 8 dimensions",
    ),
    (
        "qz mul dtype",
        _QZ,
        (_BF, _S, None),
        {**_MUL, "dtype": torch.quint8},
        r"dtype=torch.quint8 is not allowed: must be in \(torch.qint8, torch.int8, "
        r"torch.quint4x2\) with div_mode=False",
    ),
    (
        "qz int4 last dim",
        _QZ,
        (torch.ones(2, 6, dtype=torch.bfloat16), _S[:6], None),
        {**_MUL, "dtype": torch.quint4x2},
        r"self=.*must have a last dim divisible by 8 for int4",
    ),
    (
        "qz axis low",
        _QZ,
        (_BF, _S, None),
        {**_MUL, "axis": -3},
        r"axis=-3 is not allowed: must be in \[-2, 2\] \(self's dim count\)",
    ),
    (
        "qz axis high",
        _QZ,
        (_BF, _S, None),
        {**_MUL, "axis": 3},
        r"axis=3 is not allowed: must be in \[-2, 2\]",
    ),
    (
        "qz axis -2 on 1-D",
        _QZ,
        (_S, _S, None),
        {**_MUL, "axis": -2},
        r"self=.*must have at least 2 dims for axis=-2",
    ),
    (
        "qz scales dims",
        _QZ,
        (torch.ones(2, 3, 8, dtype=torch.bfloat16), torch.ones(1, 8, dtype=torch.bfloat16), None),
        _MUL,
        r"scales=.*must have 1 or 3 dimensions",
    ),
    (
        "qz scales dtype",
        _QZ,
        (_BF, torch.ones(8, dtype=torch.int32), None),
        _MUL,
        r"scales=.*must have dtype in",
    ),
    (
        "qz scales dtype match",
        _QZ,
        (_BF, torch.ones(8, dtype=torch.float16), None),
        _MUL,
        r"scales=.*must have self's dtype torch.bfloat16 \(only a float32 self",
    ),
    (
        "qz scales size",
        _QZ,
        (_BF, _S[:4], None),
        _MUL,
        r"scales=.*must have shape \(1,\) or \(8,\) \(self's size along axis -1\)",
    ),
    (
        "qz scales nd",
        _QZ,
        (_BF, torch.ones(2, 8, dtype=torch.bfloat16), None),
        _MUL,
        r"scales=.*must be 1 on every axis but -1, where it is 1 or 8",
    ),
    (
        "qz scales nd size",
        _QZ,
        (_BF, torch.ones(1, 7, dtype=torch.bfloat16), None),
        _MUL,
        r"scales=.*must be 1 on every axis but -1",
    ),
    (
        "qz zero_points dtype",
        _QZ,
        (_BF, _S, torch.ones(8)),
        _MUL,
        r"zero_points=.*must have dtype in \(torch.bfloat16\)",
    ),
    (
        "qz zero_points shape",
        _QZ,
        (_BF, _S, _S[:1]),
        _MUL,
        r"zero_points=.*must have shape \(8,\) \(scales' shape\)",
    ),
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
    (
        "qz div_mode",
        _QZ,
        (_BF, torch.ones(8), None),
        {"dtype": torch.qint8},
        r"quantize: div_mode=True is not implemented by the reference \(it supports "
        r"div_mode=False",
    ),
    (
        "qz int4",
        _QZ,
        (_BF, _S, None),
        {**_MUL, "dtype": torch.quint4x2},
        r"dtype=torch.quint4x2 is not implemented by the reference \(it supports dtype "
        r"torch.qint8 or torch.int8",
    ),
    (
        "qz axis -2",
        _QZ,
        (_BF, torch.ones(2, dtype=torch.bfloat16), None),
        {**_MUL, "axis": -2},
        r"axis=-2 is not implemented by the reference \(it supports axis > -2",
    ),
]


@pytest.mark.parametrize(REFUSAL_FIELDS, refusal_params(VALIDATION_CASES))
def test_validator_rejects_with_a_message_naming_argument_value_and_rule(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_validator_rejects(op, args, kwargs, match)


@pytest.mark.parametrize(REFUSAL_FIELDS, refusal_params(REFERENCE_LIMIT_CASES))
def test_reference_refuses_what_the_validator_lets_through(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_reference_refuses(op, args, kwargs, match)
