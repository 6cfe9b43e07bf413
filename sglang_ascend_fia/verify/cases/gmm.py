"""``verify-ops`` cases for ``grouped_matmul`` (the MoE expert GEMMs), float and W8A8.

Protocol and helpers: :mod:`.common`. The first two cases are sglang
0.5.23's calls (``moe/matmul.py``: BF16 ``weight=[w.transpose(1, 2)]`` of a stored
``[E, out, in]``; W8A8 ``weight=[w]`` pre-transposed with per-channel and per-token scales).
Covered (enforced by ``tests/verify/test_verify_coverage.py``): fp16, bf16, fp32 and int8 x; one
``[E, K, N]`` weight, plain and transposed, and a list of ``[K, N]`` weights, plain and
transposed; group_list_type 0 (cumulative) and 1 (counts); no bias, fp16/fp32 bias for float x
and int32 bias for int8 x; bf16 and fp32 scales with and without per-token scales; output dtype
None, fp16, bf16 and fp32. Only split_item=2, group_type=0 (one 2-D x split into row groups), the
form the reference implements.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import BF16, FP16, FP32, cpu, gen, on


def _counts(experts: int, rows: int, g: torch.Generator) -> torch.Tensor:
    cuts = torch.sort(torch.randint(0, rows + 1, (experts - 1,), generator=g)).values
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([rows])])
    return (bounds[1:] - bounds[:-1]).to(torch.int64)


def _gmm(
    device: str,
    x: torch.Tensor,
    weight: list[torch.Tensor],
    group_list: torch.Tensor,
    group_list_type: int,
    *,
    transposed: bool = False,
    **extra: Any,
) -> torch.Tensor:
    """``grouped_matmul`` in the one form the reference implements (split_item 2, group_type 0:
    one 2-D x split into row groups), every tensor moved to ``device``. ``transposed`` passes each
    weight as a transposed view of the moved tensor, like sglang's BF16 path."""
    weight = [w.to(device) for w in weight]
    if transposed:
        weight = [w.transpose(-2, -1) for w in weight]
    (y,) = ops.grouped_matmul(
        x=[x.to(device)],
        weight=weight,
        split_item=2,
        group_list_type=group_list_type,
        group_type=0,
        group_list=group_list.to(device),
        **{name: on(device, value) for name, value in extra.items()},
    )
    return y


def grouped_matmul_unquant_transposed() -> Case:
    def run(device: str) -> Outputs:
        g = gen(7)
        x = torch.randn(96, 128, generator=g).to(BF16)
        w13 = (torch.randn(8, 256, 128, generator=g) / 11).to(BF16)  # stored [E, out, in]
        counts = _counts(8, 96, g)
        outs = []
        for kind, groups in ((1, counts), (0, counts.cumsum(0))):  # group_list_type 1, then 0
            outs.append(_gmm(device, x, [w13], groups, kind, transposed=True, output_dtype=BF16))
        return cpu(*outs)

    return "grouped_matmul bf16, weight=[w.transpose(1,2)], counts and cumsum", run, BF16


def grouped_matmul_plain_bias_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(22)
        x = torch.randn(64, 96, generator=g).to(BF16)
        w = (torch.randn(6, 96, 80, generator=g) / 10).to(BF16)  # contiguous [E, K, N]
        bias = torch.randn(6, 80, generator=g)  # fp32: the bias dtype for bf16 x (doc table)
        return cpu(_gmm(device, x, [w], _counts(6, 64, g).cumsum(0), 0, bias=[bias]))

    return "grouped_matmul bf16, contiguous [E, K, N] weight, fp32 bias, cumsum groups", run, BF16


def grouped_matmul_weight_list_fp16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(23)
        x = torch.randn(48, 64, generator=g).to(FP16)
        stored = [(torch.randn(32, 64, generator=g) / 8).to(FP16) for _ in range(4)]  # [N, K]
        bias = [torch.randn(32, generator=g).to(FP16) for _ in range(4)]
        counts = _counts(4, 48, g)
        y = _gmm(device, x, stored, counts, 1, transposed=True, bias=bias, output_dtype=FP16)
        return cpu(y)

    return "grouped_matmul fp16, list of 4 transposed [K, N] weights, fp16 bias", run, FP16


def grouped_matmul_fp32() -> Case:
    def run(device: str) -> Outputs:
        g = gen(24)
        x = torch.randn(40, 32, generator=g)
        w = torch.randn(3, 32, 24, generator=g) / 6
        return cpu(_gmm(device, x, [w], _counts(3, 40, g), 1, output_dtype=FP32))

    return "grouped_matmul fp32, [E, K, N] weight, counts", run, FP32


def grouped_matmul_w8a8() -> Case:
    def run(device: str) -> Outputs:
        g = gen(8)
        x = torch.randint(-127, 128, (96, 128), generator=g, dtype=torch.int8)
        w = torch.randint(-127, 128, (8, 128, 64), generator=g, dtype=torch.int8)  # [E, in, out]
        scale = (torch.rand(8, 64, generator=g) / 500).to(BF16)
        pts = torch.rand(96, generator=g) / 50
        counts = _counts(8, 96, g)
        y = _gmm(device, x, [w], counts, 1, scale=[scale], per_token_scale=[pts], output_dtype=BF16)
        return cpu(y)

    return "grouped_matmul int8 per-token x per-channel (sglang W8A8 MoE)", run, BF16


def grouped_matmul_w8a8_bias_cumsum() -> Case:
    def run(device: str) -> Outputs:
        g = gen(25)
        x = torch.randint(-127, 128, (80, 128), generator=g, dtype=torch.int8)
        w = torch.randint(-127, 128, (6, 128, 64), generator=g, dtype=torch.int8)
        bias = torch.randint(-3000, 3000, (6, 64), generator=g, dtype=torch.int32)
        scale = (torch.rand(6, 64, generator=g) / 500).to(BF16)
        pts = torch.rand(80, generator=g) / 50
        y = _gmm(
            device,
            x,
            [w],
            _counts(6, 80, g).cumsum(0),
            0,
            bias=[bias],
            scale=[scale],
            per_token_scale=[pts],
            output_dtype=BF16,
        )
        return cpu(y)

    return "grouped_matmul int8 with int32 bias, per-token scale, cumsum groups", run, BF16


def grouped_matmul_w8a8_weight_list() -> Case:
    def run(device: str) -> Outputs:
        g = gen(26)
        x = torch.randint(-127, 128, (40, 64), generator=g, dtype=torch.int8)
        w = [torch.randint(-127, 128, (64, 32), generator=g, dtype=torch.int8) for _ in range(4)]
        scale = [torch.rand(32, generator=g) / 5000 for _ in range(4)]  # fp32 -> fp16 out (doc)
        return cpu(_gmm(device, x, w, _counts(4, 40, g), 1, scale=scale, output_dtype=FP16))

    return "grouped_matmul int8, list of 4 weights, per-channel fp32 scale, fp16 out", run, FP16


CASES: list[CaseFactory] = [
    grouped_matmul_unquant_transposed,
    grouped_matmul_plain_bias_bf16,
    grouped_matmul_weight_list_fp16,
    grouped_matmul_fp32,
    grouped_matmul_w8a8,
    grouped_matmul_w8a8_bias_cumsum,
    grouped_matmul_w8a8_weight_list,
]
