"""``verify-ops`` cases for the MoE gating ops: ``moe_gating_top_k_softmax``, ``moe_gating_top_k``.

Protocol and helpers: :mod:`.common`; routing and SwiGLU live in :mod:`.moe`. Integer outputs
(expert ids) must match exactly, and ``norm_out`` is compared only with ``out_flag``. Gating inputs
are continuous random values, so top-k ties (whose order no doc states) do not occur; the fp16
cases and the bf16 group-max case use well-separated scores (a random permutation times a step)
so the kernel's rounding cannot reorder close experts either. The first case of each op is sglang
0.5.23's call (see ``ops/moe/``).

Covered per op (enforced by ``tests/verify/test_verify_coverage.py``): every float dtype the kernel
takes; gating softmax 2-D/3-D with and without ``finished``, k=1 and k>1; gating top-k with
softmax/sigmoid, with/without bias, ungrouped and both group-select modes, renorm 0/1, out_flag
on/off.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import BF16, FP16, FP32, cpu, gen


def _separated(shape: tuple[int, ...], g: torch.Generator, step: float) -> torch.Tensor:
    """Scores whose last axis is a random permutation of ``0, step, 2*step, ...``, centred."""
    ranks = torch.argsort(torch.rand(shape, generator=g), dim=-1).float()
    return (ranks - (shape[-1] - 1) / 2) * step


# ---- gating ----------------------------------------------------------------------------------


def gating_top_k_softmax() -> Case:
    def run(device: str) -> Outputs:
        x = torch.randn(32, 64, generator=gen(1)).to(BF16).to(device)
        return cpu(*ops.moe_gating_top_k_softmax(x, k=8))

    return "moe_gating_top_k_softmax bf16 T=32 E=64 k=8", run, BF16


def gating_top_k_softmax_finished_3d() -> Case:
    def run(device: str) -> Outputs:
        g = gen(14)
        x = _separated((2, 12, 32), g, 0.25).to(FP16)
        finished = torch.rand(2, 12, generator=g) < 0.3
        return cpu(*ops.moe_gating_top_k_softmax(x.to(device), finished.to(device), k=4))

    return "moe_gating_top_k_softmax fp16 3-D x with a (B, S) finished mask, k=4", run, FP16


def gating_top_k_softmax_k1() -> Case:
    def run(device: str) -> Outputs:
        g = gen(15)
        x = _separated((16, 16), g, 0.25)
        finished = torch.rand(16, generator=g) < 0.3
        return cpu(*ops.moe_gating_top_k_softmax(x.to(device), finished=finished.to(device)))

    return "moe_gating_top_k_softmax fp32 with a (T,) finished mask, k=1 (default)", run, FP32


def gating_top_k_deepseek_v3() -> Case:
    def run(device: str) -> Outputs:
        g = gen(2)
        x = torch.randn(32, 256, generator=g).to(device)
        bias = (torch.rand(256, generator=g) * 0.1).to(device)
        y, idx, norm = ops.moe_gating_top_k(
            x,
            k=8,
            bias=bias,
            k_group=4,
            group_count=8,
            group_select_mode=1,
            renorm=1,
            norm_type=1,
            out_flag=True,
            routed_scaling_factor=2.5,
            eps=1e-20,
        )
        return cpu(y, idx, norm)

    return "moe_gating_top_k sigmoid+bias grouped (DeepSeek-V3) fp32", run, FP32


def gating_top_k_softmax_bias() -> Case:
    def run(device: str) -> Outputs:
        g = gen(3)
        x = torch.randn(32, 64, generator=g).to(device)
        bias = (torch.rand(64, generator=g) * 0.01).to(device)
        outs = []
        # renorm 0 keeps raw softmax weights; renorm 1 is the kernel branch the torch_npu doc
        # calls unsupported but sglang passes (renorm=renormalize).
        for renorm in (0, 1):
            y, idx, norm = ops.moe_gating_top_k(
                x, k=6, bias=bias, renorm=renorm, norm_type=0, out_flag=True, eps=1e-20
            )
            outs += [y, idx, norm]
        return cpu(*outs)

    return "moe_gating_top_k softmax+bias renorm 0/1 fp32", run, FP32


def gating_top_k_group_max() -> Case:
    def run(device: str) -> Outputs:
        x = _separated((24, 64), gen(16), 0.125).to(BF16)
        y, idx, _ = ops.moe_gating_top_k(
            x.to(device), k=4, k_group=2, group_count=4, group_select_mode=0, norm_type=0
        )
        return cpu(y, idx)  # norm_out is written only with out_flag (doc)

    return "moe_gating_top_k softmax, group max (mode 0), no bias, out_flag off bf16", run, BF16


def gating_top_k_sigmoid_fp16() -> Case:
    def run(device: str) -> Outputs:
        g = gen(17)
        x = _separated((20, 32), g, 0.2).to(FP16)
        # +1 lifts four experts above every sigmoid score, so biased scores stay separated.
        bias = (torch.randperm(32, generator=g) < 4).to(FP16)
        return cpu(
            *ops.moe_gating_top_k(
                x.to(device),
                k=3,
                bias=bias.to(device),
                k_group=2,
                group_count=4,
                group_select_mode=1,
                norm_type=1,
                out_flag=True,
                routed_scaling_factor=1.5,
            )
        )

    return "moe_gating_top_k sigmoid+bias, group top-2 sum (mode 1), scaled fp16", run, FP16


CASES: list[CaseFactory] = [
    gating_top_k_softmax,
    gating_top_k_softmax_finished_3d,
    gating_top_k_softmax_k1,
    gating_top_k_deepseek_v3,
    gating_top_k_softmax_bias,
    gating_top_k_group_max,
    gating_top_k_sigmoid_fp16,
]
