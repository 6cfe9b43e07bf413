"""Quantisation op references: round trips, int8 matmuls against float with derived error bounds,
the fused dequant-SwiGLU-quant, and the W8A8 MoE chain as sglang 0.5.23 calls it on Ascend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from op_refusals import assert_reference_refuses, assert_validator_rejects

from sglang_ascend_fia import ops

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
# The quotient x / scale (at most 127) carries one float32 rounding, up to 127 * 2^-24 < 2^-17
# of a step, so a value within that of a half step may round the other way: the documented
# |x - y*scale| <= scale/2 holds up to a relative 2^-16.
ROUND_SLACK = 1 + 2.0**-16
# Unit roundoff of the output dtypes, doubled to cover the float32 steps before the final cast.
OUT_RTOL = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_round_trip(target: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> None:
    """|target - y*scale| <= scale/2 per element, and each row's max maps to +-127."""
    s = scale.double().unsqueeze(-1)
    err = (target.double() - y.double() * s).abs()
    assert bool((err <= s / 2 * ROUND_SLACK).all()), float((err - s / 2).max())
    nonzero = scale > 0
    assert bool((y.abs().amax(-1)[nonzero] == 127).all())
    torch.testing.assert_close(scale, target.float().abs().amax(-1) / 127, rtol=0, atol=0)


def _per_channel_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel weight quantisation of w [..., K, N]: (int8, scale [..., N])."""
    scale = w.abs().amax(-2) / 127
    return torch.round(w / scale.unsqueeze(-2)).to(torch.int8), scale


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
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------

_I8 = torch.ones(3, 4, dtype=torch.int8)
_W8 = torch.ones(4, 5, dtype=torch.int8)
_S = torch.ones(5)
_BF = torch.ones(2, 8, dtype=torch.bfloat16)
_QMM = {"output_dtype": torch.bfloat16}

VALIDATION_CASES = [
    # dynamic_quant
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
    # quant_matmul
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
    # dequant_swiglu_quant
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
    (
        "qmm int64 scale",
        ops.quant_matmul,
        (_I8, _W8, _S.long()),
        {"output_dtype": torch.float16},
        r"scale=.*packed int64 is not",
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
    (
        "dsq group counts",
        ops.dequant_swiglu_quant,
        (torch.ones(2, 128, dtype=torch.bfloat16),),
        {"quant_mode": 1, "group_index": torch.tensor([2, 1])},
        r"group_index=\[2, 1\] is not allowed: must hold non-negative counts .* x.shape\[0\]=2",
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
