"""``quant_matmul``: the dequantisation formula, the dynamic W8A8 linear against the float matmul,
batch broadcasting, and every documented rule with its message."""

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
from quant_cases import OUT_RTOL, ROUND_SLACK, SETTINGS, _gen, _per_channel_int8

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# quant_matmul
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    m=st.integers(1, 5),
    k=st.integers(1, 40),
    n=st.integers(1, 6),
    out_dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    bias_kind=st.sampled_from(["none", "int32", "float32"]),
    per_tensor=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_quant_matmul_matches_the_dequantisation_formula(
    m: int, k: int, n: int, out_dtype: torch.dtype, bias_kind: str, per_tensor: bool, seed: int
) -> None:
    g = _gen(seed)
    x1 = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    x2 = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
    scale = torch.rand(1 if per_tensor else n, generator=g) / 1000
    pts = torch.rand(m, generator=g) + 0.5
    bias = None
    if bias_kind == "int32":
        bias = torch.randint(-5000, 5000, (n,), generator=g, dtype=torch.int32)
    elif bias_kind == "float32":
        bias = torch.randn(n, generator=g)
    out = ops.quant_matmul(x1, x2, scale, pertoken_scale=pts, bias=bias, output_dtype=out_dtype)
    assert out.dtype == out_dtype and out.shape == (m, n)
    acc = x1.double() @ x2.double()
    # int32 bias joins the integer accumulator; a float bias is added after dequantisation.
    if bias is not None and bias.dtype == torch.int32:
        acc = acc + bias.double()
    dequant = acc * scale.double() * pts.double().unsqueeze(-1)
    ref = dequant + (bias.double() if bias is not None and bias.dtype != torch.int32 else 0)
    # One output rounding (OUT_RTOL of |ref|) plus float32 steps measured on the dequantised
    # magnitude (a float bias may cancel it).
    bound = OUT_RTOL[out_dtype] * ref.abs() + 2.0**-20 * dequant.abs()
    assert bool(((out.double() - ref).abs() <= bound + 1e-30).all())


def test_quant_matmul_dynamic_w8a8_linear_is_close_to_the_float_matmul() -> None:
    # NPUW8A8Int8DynamicLinearMethod: dynamic_quant(x), then quant_matmul(q, W^T [K, N],
    # weight_scale [N], pertoken_scale, output_dtype=x.dtype).
    g = _gen(8)
    x = torch.randn(7, 96, generator=g).bfloat16()
    w = torch.randn(96, 24, generator=g) / 10
    w_q, w_scale = _per_channel_int8(w)
    q, s = ops.dynamic_quant(x)
    out = ops.quant_matmul(q, w_q, w_scale, pertoken_scale=s.flatten(), output_dtype=x.dtype)
    # x W - x^ W^ = (x - x^) W + x^ (W - W^), with |x - x^| <= s_x/2 and |W - W^| <= s_w/2:
    # |error| <= s_x/2 * sum_k |W_kn| + s_w,n/2 * sum_k |x^_k|, plus the bf16 output rounding.
    x_hat = q.double() * s.double().unsqueeze(-1)
    bound = s.double().unsqueeze(-1) / 2 * w.double().abs().sum(0) + w_scale.double() / 2 * (
        x_hat.abs().sum(-1, keepdim=True)
    )
    ref = x.double() @ w.double()
    bound = bound * ROUND_SLACK + OUT_RTOL[torch.bfloat16] * ref.abs() + 1e-6
    assert bool(((out.double() - ref).abs() <= bound).all())


def test_quant_matmul_broadcasts_batch_axes_and_3d_bias() -> None:
    g = _gen(9)
    x1 = torch.randint(-20, 20, (2, 3, 4), generator=g, dtype=torch.int8)
    x2 = torch.randint(-20, 20, (4, 5), generator=g, dtype=torch.int8)
    bias = torch.randint(-9, 9, (2, 1, 5), generator=g, dtype=torch.int32)
    scale = torch.full((5,), 0.5)
    out = ops.quant_matmul(x1, x2, scale, bias=bias, output_dtype=torch.bfloat16)
    torch.testing.assert_close(out, ((x1.float() @ x2.float() + bias) * 0.5).bfloat16())


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


_I8 = torch.ones(3, 4, dtype=torch.int8)
_W8 = torch.ones(4, 5, dtype=torch.int8)
_S = torch.ones(5)


_QMM = {"output_dtype": torch.bfloat16}


VALIDATION_CASES = [
    (
        "qmm x2 dtype",
        ops.quant_matmul,
        (_I8, _W8.int(), _S),
        _QMM,
        r"x2=.*must have dtype in \(torch.int8\)",
    ),
    (
        "qmm int8 out pts",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {"output_dtype": torch.int8, "pertoken_scale": torch.ones(3)},
        r"pertoken_scale=.*is not allowed: not supported for torch.int8 output",
    ),
    (
        "qmm offset shape",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {"output_dtype": torch.int8, "offset": torch.ones(4)},
        r"offset=.*must have shape \(1,\) or \(N=5,\)",
    ),
    (
        "qmm x1 dtype",
        ops.quant_matmul,
        (_I8.float(), _W8, _S),
        _QMM,
        r"x1=.*must have dtype in \(torch.int(8|32), torch.int(8|32)\)",
    ),
    (
        "qmm x1 dims",
        ops.quant_matmul,
        (torch.ones(4, dtype=torch.int8), _W8, _S),
        _QMM,
        r"x1=.*must have 2 to 6 dimensions",
    ),
    (
        "qmm x2 K",
        ops.quant_matmul,
        (_I8, torch.ones(3, 5, dtype=torch.int8), _S),
        _QMM,
        r"x2=.*must be \[..., K=4, N\]",
    ),
    (
        "qmm K limit",
        ops.quant_matmul,
        (
            torch.ones(1, 65536, dtype=torch.int8),
            torch.ones(65536, 1, dtype=torch.int8),
            torch.ones(1),
        ),
        _QMM,
        r"x2=.*must have K and N <= 65535",
    ),
    (
        "qmm batch",
        ops.quant_matmul,
        (torch.ones(2, 3, 4, dtype=torch.int8), torch.ones(3, 4, 5, dtype=torch.int8), _S),
        _QMM,
        r"x2=.*must have batch axes broadcastable with x1's \(2,\)",
    ),
    (
        "qmm out dtype",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {"output_dtype": torch.float32},
        r"output_dtype=torch.float32 is not allowed: must be None \(int8\), torch.int8, torch.f",
    ),
    (
        "qmm int64 scale",
        ops.quant_matmul,
        (_I8, _W8, _S.long()),
        _QMM,
        r"scale=.*must have dtype in \(torch.bfloat16, torch.float32\) for torch.bfloat16 output",
    ),
    (
        "qmm scale dtype",
        ops.quant_matmul,
        (_I8, _W8, _S.half()),
        _QMM,
        r"scale=.*must have dtype in",
    ),
    (
        "qmm scale shape",
        ops.quant_matmul,
        (_I8, _W8, torch.ones(4)),
        _QMM,
        r"scale=.*must have shape \(1,\) or \(N=5,\)",
    ),
    (
        "qmm offset",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "offset": torch.ones(5)},
        r"offset=.*is only supported with int8 output",
    ),
    (
        "qmm pts dtype",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "pertoken_scale": torch.ones(3).half()},
        r"pertoken_scale=.*must have dtype in \(torch.float32\)",
    ),
    (
        "qmm pts shape",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "pertoken_scale": torch.ones(4)},
        r"pertoken_scale=.*must have shape \(3,\)",
    ),
    (
        "qmm fp16 scale",
        ops.quant_matmul,
        (_I8, _W8, _S.bfloat16()),
        {"output_dtype": torch.float16},
        r"scale=.*must have dtype in \(torch.float32, torch.int64\) for torch.float16 output",
    ),
    (
        "qmm fp16 float bias no pts",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {"output_dtype": torch.float16, "bias": torch.ones(5)},
        r"bias=.*must have dtype in \(torch.int32\) for torch.float16 output$",
    ),
    (
        "qmm bf16 fp16 bias",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "bias": torch.ones(5).half()},
        r"bias=.*must have dtype in .* for torch.bfloat16 output",
    ),
    (
        "qmm bias shape",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "bias": torch.ones(2, 5)},
        r"bias=.*must have shape in \[\(5,\), \(1, 5\)\] for a 2-D output",
    ),
]


# Arguments the NPU kernel supports but the reference does not implement: the validator lets
# them through (so an NPU call reaches torch_npu) and the reference refuses them.
REFERENCE_LIMIT_CASES = [
    (
        "qmm x1_dtype",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "x1_dtype": torch.int8},
        r"quant_matmul: x1_dtype=torch.int8 is not implemented",
    ),
    (
        "qmm y_scale",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {**_QMM, "y_scale": torch.ones(1)},
        r"y_scale=.*is not implemented",
    ),
    (
        "qmm int4",
        ops.quant_matmul,
        (_I8.int(), _W8.int(), _S),
        _QMM,
        r"x1=.*not implemented by the reference \(it supports int8 x1/x2",
    ),
    (
        "qmm int8 out",
        ops.quant_matmul,
        (_I8, _W8, _S),
        {},
        r"output_dtype=None is not implemented by the reference",
    ),
    (
        "qmm int64 scale",
        ops.quant_matmul,
        (_I8, _W8, _S.long()),
        {"output_dtype": torch.float16},
        r"scale=.*packed int64 is not",
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
