"""``verify-ops`` cases for the W8A8 ops: dynamic and static quant, int8 matmul,
dequant-SwiGLU-quant.

Protocol and helpers: :mod:`.common`. int8 results are returned
dequantised (``y * scale``) next to their scale, and inputs are scaled so that one int8 step
(``rowmax / 127``) stays below the case's absolute tolerance: a one-step rounding difference on
the NPU is then within tolerance, anything larger is not. The first case of each op is sglang
0.5.23's call (``NPUW8A8Int8*LinearMethod``, ``NPUSwigluQuant``). ``quantize`` is compared
as the int8 it returns, exactly: the reference does the kernel's float32 steps in its order, so
any difference is a finding; its ties case settles the rounding mode, an inferred rule.

Covered per op (enforced by ``tests/verify/test_verify_coverage.py``): ``dynamic_quant`` in fp16 and
bf16, 2-D and 3-D, without smooth scales, with one smooth row and with ``group_index`` groups,
``dst_type`` None and int8; ``quantize`` (div_mode False) on fp16, bf16 and fp32, 1-D to 3-D,
scales (1,), (K,) and (1, K), with and without zero points, dtype qint8 and int8, axis -1 and
the default 1; ``quant_matmul`` with bf16 and fp16 output, fp32 and bf16 scales of
shape (N,) and (1,), with and without per-token scales, no/int32/bf16/fp16/fp32 bias, 2-D and
batched 3-D x1; ``dequant_swiglu_quant`` on bf16 and int32 input, activate_left True and False,
with and without ``group_index`` (its counts summing to all rows and to fewer), fp32/fp16/bf16
``quant_scale``, (T,) and (T, 1) activation scales.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import BF16, FP16, FP32, call, cpu, dequantised, gen


def _int8(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)


def _w8a8(
    m: int, k: int, n: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """int8 x1 (m, k) and x2 (k, n), fp32 per-channel (n,) and per-token (m,) scales."""
    x1, x2 = _int8((m, k), g), _int8((k, n), g)
    return x1, x2, torch.rand(n, generator=g) / 500, torch.rand(m, generator=g) / 50


def _swiglu_int32_grouped(
    device: str,
    g: torch.Generator,
    counts: torch.Tensor,
    act_scale_shape: tuple[int, ...],
    quant_scale_dtype: torch.dtype,
    *,
    activate_left: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dequant_swiglu_quant`` on int32 x of ``act_scale_shape[0]`` rows in groups of ``counts``
    rows: a weight and a quant scale per group, an activation scale per row."""
    x = torch.randint(-2000, 2000, (act_scale_shape[0], 256), generator=g, dtype=torch.int32)
    weight_scale = torch.rand(len(counts), 256, generator=g) / 100
    activation_scale = torch.rand(act_scale_shape, generator=g) / 20
    quant_scale = (torch.rand(len(counts), 128, generator=g) + 0.5).to(quant_scale_dtype)
    out: tuple[torch.Tensor, torch.Tensor] = call(
        ops.dequant_swiglu_quant,
        device,
        x,
        weight_scale=weight_scale,
        activation_scale=activation_scale,
        quant_scale=quant_scale,
        group_index=counts,
        activate_left=activate_left,
        quant_mode=1,
    )
    return out


# ---- dynamic_quant ---------------------------------------------------------------------------


def dynamic_quant_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(11)
        x = (torch.randn(64, 512, generator=g) * 0.5).to(BF16)
        smooth = (torch.rand(512, generator=g) + 0.5).to(BF16)
        y, s = call(ops.dynamic_quant, device, x)
        ys, ss = call(ops.dynamic_quant, device, x, smooth_scales=smooth)
        y, s, ys, ss = cpu(y, s, ys, ss)
        return dequantised(y, s), s, dequantised(ys, ss), ss

    return "dynamic_quant bf16 (plain and smooth_scales)", run, BF16


def dynamic_quant_grouped_fp16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(32)
        x = (torch.randn(3, 8, 256, generator=g) * 0.08).to(FP16)
        smooth = (torch.rand(4, 256, generator=g) + 0.5).to(FP16)
        group_index = torch.tensor([5, 5, 14, 24], dtype=torch.int32)  # row ends; one empty group
        y, s = call(
            ops.dynamic_quant,
            device,
            x,
            smooth_scales=smooth,
            group_index=group_index,
            dst_type=torch.int8,
        )
        y, s = cpu(y, s)
        return dequantised(y, s), s

    return "dynamic_quant fp16 3-D, group_index with 4 smooth rows, dst_type int8", run, FP16


# ---- quantize --------------------------------------------------------------------------------


def _quantize(
    device: str,
    x: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    dtype: torch.dtype = torch.qint8,
    axis: int = -1,
) -> torch.Tensor:
    out: torch.Tensor = call(ops.quantize, device, x, scales, zero_points, dtype, axis, False)
    return out


def quantize_w8a8_static_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(36)
        k = 256
        # sglang's static call: 1 / input_scale and input_offset repeated over K, in the model
        # dtype; the tails (|x| > 2.5 sigma) saturate at both ends.
        x = (torch.randn(32, k, generator=g) * 2).to(BF16)
        reciprocal = 1 / torch.tensor([0.04]).to(BF16).repeat(k)
        offset = torch.tensor([-5.0]).to(BF16).repeat(k)
        static = _quantize(device, x, reciprocal, offset)
        # Per channel, no zero points, 3-D.
        x3 = (torch.randn(2, 8, 128, generator=g) * 4).to(BF16)
        channel = (torch.rand(128, generator=g) * 20 + 1).to(BF16)
        per_channel = _quantize(device, x3, channel, None)
        return cpu(static, per_channel)

    return (
        "quantize bf16 (sglang's static call, K-repeated scale + offset; per-channel 3-D)",
        run,
        BF16,
    )


def quantize_fp16_fp32() -> Case:
    def run(device: str) -> Outputs:
        g = gen(37)
        x = (torch.randn(16, 96, generator=g) * 3).to(FP16)
        scale = torch.tensor([9.5]).to(FP16)
        offset = torch.tensor([2.0]).to(FP16)
        per_tensor = _quantize(device, x, scale, offset, torch.int8)
        # A (1, K) scale and zero points, and torch_npu's default axis 1 (the last axis too).
        scale_nd = (torch.rand(1, 96, generator=g) * 10 + 1).to(FP16)
        offset_nd = torch.randint(-8, 9, (1, 96), generator=g).to(FP16)
        nd = _quantize(device, x, scale_nd, offset_nd, axis=1)
        x1 = torch.randn(64, generator=g) * 10  # fp32, 1-D, with a bf16 scale
        flat = _quantize(device, x1, (torch.rand(64, generator=g) + 2).to(BF16), None)
        return cpu(per_tensor, nd, flat)

    return "quantize fp16 ((1,) and (1, K) scales, axis 1, int8) and fp32 1-D", run, FP16


def quantize_ties() -> Case:
    def run(device: str) -> Outputs:
        # x * scale + offset is exactly k + 0.5: ties to even is inferred (see ops.quantize).
        halves = torch.arange(-16, 16, dtype=torch.float32) + 0.5
        x = halves.to(FP16).reshape(2, 16)
        by_scale = _quantize(device, (halves / 2).to(FP16), torch.tensor([2.0]).to(FP16), None)
        by_offset = _quantize(
            device, x - 1, torch.tensor([1.0]).to(FP16), torch.tensor([1.0]).to(FP16)
        )
        plain = _quantize(device, x, torch.ones(1).to(FP16), None)
        edges = torch.tensor([126.5, -127.5, 127.5, -128.5]).to(FP16)  # 126, -128, 127, -128
        saturated = _quantize(device, edges, torch.ones(1).to(FP16), None)
        return cpu(plain, by_scale, by_offset, saturated)

    return "quantize fp16 ties (x*scale+offset = k+0.5: half to even, inferred)", run, FP16


# ---- quant_matmul ----------------------------------------------------------------------------


def quant_matmul_w8a8() -> Case:
    def run(device: str) -> Outputs:
        g = gen(12)
        x1, x2, scale, pts = _w8a8(32, 256, 128, g)
        bias_f = torch.randn(128, generator=g)
        bias_i = torch.randint(-3000, 3000, (128,), generator=g, dtype=torch.int32)
        mm = ops.quant_matmul
        dynamic = call(
            mm, device, x1, x2, scale, pertoken_scale=pts, bias=bias_f, output_dtype=BF16
        )
        static = call(mm, device, x1, x2, scale, bias=bias_i, output_dtype=BF16)
        return cpu(dynamic, static)

    return "quant_matmul bf16 (dynamic: float bias; static: int32 bias)", run, BF16


def quant_matmul_fp16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(33)
        x1, x2, scale, pts = _w8a8(24, 256, 64, g)
        bias_h = torch.randn(64, generator=g).to(FP16)
        mm = ops.quant_matmul
        per_token = call(
            mm, device, x1, x2, scale, pertoken_scale=pts, bias=bias_h, output_dtype=FP16
        )
        # Without per-token scales fp16 output takes an fp32 (or int64) scale and an int32 bias.
        tensor_scale = torch.tensor([1 / 20000.0])
        bias_i = torch.randint(-3000, 3000, (1, 64), generator=g, dtype=torch.int32)
        per_tensor = call(mm, device, x1, x2, tensor_scale, bias=bias_i, output_dtype=FP16)
        return cpu(per_token, per_tensor)

    return (
        "quant_matmul fp16 (per-token + fp16 bias; per-tensor scale + (1, N) int32 bias)",
        run,
        FP16,
    )


def quant_matmul_batched_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(34)
        x1, x2 = _int8((2, 16, 64), g), _int8((64, 48), g)  # x2 broadcasts over the batch
        scale = (torch.rand(48, generator=g) / 200).to(BF16)
        bias = torch.randn(2, 1, 48, generator=g).to(BF16)
        with_bias = call(ops.quant_matmul, device, x1, x2, scale, bias=bias, output_dtype=BF16)
        without_bias = call(ops.quant_matmul, device, x1, x2, scale, output_dtype=BF16)
        return cpu(with_bias, without_bias)

    return "quant_matmul bf16 batched 3-D x1, bf16 scale, (B,1,N) bf16 bias and none", run, BF16


# ---- dequant_swiglu_quant --------------------------------------------------------------------


def dequant_swiglu_quant_cases() -> Case:
    def run(device: str) -> Outputs:
        g = gen(13)
        h = (torch.randn(64, 256, generator=g) * 0.5).to(BF16)
        y, s = call(ops.dequant_swiglu_quant, device, h, quant_mode=1, activate_left=True)
        counts = torch.tensor([20, 44])
        yi, si = _swiglu_int32_grouped(device, g, counts, (64,), FP32, activate_left=True)
        y, s, yi, si = cpu(y, s, yi, si)
        return dequantised(y, s), s, dequantised(yi, si), si

    return "dequant_swiglu_quant (sglang bf16; int32 with group_index)", run, BF16


def dequant_swiglu_quant_right() -> Case:
    def run(device: str) -> Outputs:
        g = gen(35)
        h = (torch.randn(32, 256, generator=g) * 0.5).to(BF16)
        smooth = (torch.rand(1, 128, generator=g) + 0.5).to(BF16)
        y, s = call(
            ops.dequant_swiglu_quant,
            device,
            h,
            quant_scale=smooth,
            quant_mode=1,
            activate_left=False,
        )
        counts = torch.tensor([12, 20])  # 32 of 40 rows: rows past the sum are garbage (doc)
        yi, si = _swiglu_int32_grouped(device, g, counts, (40, 1), FP16, activate_left=False)
        y, s, yi, si = cpu(y, s, yi, si)
        covered = int(counts.sum())
        return dequantised(y, s), s, dequantised(yi[:covered], si[:covered]), si[:covered]

    return (
        "dequant_swiglu_quant activate_left=False (bf16 + smooth; int32, groups cover 32/40 rows)",
        run,
        BF16,
    )


CASES: list[CaseFactory] = [
    dynamic_quant_bf16,
    dynamic_quant_grouped_fp16,
    quantize_w8a8_static_bf16,
    quantize_fp16_fp32,
    quantize_ties,
    quant_matmul_w8a8,
    quant_matmul_fp16,
    quant_matmul_batched_bf16,
    dequant_swiglu_quant_cases,
    dequant_swiglu_quant_right,
]
