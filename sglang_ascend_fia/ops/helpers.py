"""Attention-side helper kernels: LSE merge, interleaved RoPE and fused add + RMSNorm.

Doc sources: torch_npu 2.14.0 ``_op_plugin_docs.py`` (``npu_attention_update``), the CANN API page
for ``torch_npu.npu_interleave_rope``, and the meta registration of ``npu_add_rms_norm``;
summary in ``docs/ops-semantics.md`` (one section per op).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import FLOAT_DTYPES, fail, refuse_npu_float32
from sglang_ascend_fia.ops._dispatch import npu_op

INTERLEAVE_ROPE_DIM = 64  # doc: "输入x、cos、sin的D维度均必须等于64"


# ---------------------------------------------------------------------------------------------
# npu_attention_update
# ---------------------------------------------------------------------------------------------


def _validate_attention_update(a: Mapping[str, Any]) -> None:
    lse = a["lse"]
    local_out = a["local_out"]
    update_type = a["update_type"]
    op = "attention_update"
    if update_type not in (0, 1):
        fail(op, "update_type", update_type, "must be 0 (output only) or 1 (output and LSE)")
    if len(lse) == 0 or len(lse) != len(local_out):
        fail(
            op,
            "lse/local_out",
            (len(lse), len(local_out)),
            "need the same non-zero number of partial results",
        )
    rows = lse[0].shape
    for i, (l_i, o_i) in enumerate(zip(lse, local_out, strict=True)):
        if l_i.dtype != torch.float32 or l_i.dim() != 1 or l_i.shape != rows:
            fail(
                op,
                f"lse[{i}]",
                (l_i.dtype, tuple(l_i.shape)),
                f"must be fp32 of shape (batch*seqLen*headNum,) = {tuple(rows)}",
            )
        if o_i.dtype not in FLOAT_DTYPES or o_i.dim() != 2 or o_i.size(0) != rows[0]:
            fail(
                op,
                f"local_out[{i}]",
                (o_i.dtype, tuple(o_i.shape)),
                f"must be float/fp16/bf16 of shape ({rows[0]}, head_dim)",
            )
        if o_i.shape != local_out[0].shape or o_i.dtype != local_out[0].dtype:
            fail(
                op,
                f"local_out[{i}]",
                (o_i.dtype, tuple(o_i.shape)),
                "all partial outputs must share shape and dtype",
            )


@npu_op("npu_attention_update", validate=_validate_attention_update)
def attention_update(
    lse: Sequence[torch.Tensor], local_out: Sequence[torch.Tensor], update_type: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch_npu.npu_attention_update``: merge partial attention results by their LSE.

    Doc formula: ``lse_max = max_i lse_i``, ``L = lse_max + log Σ_i exp(lse_i - lse_max)``,
    ``O = Σ_i O_i · exp(lse_i - L)``. Shapes: ``lse_i (B·S·N,)`` fp32, ``O_i (B·S·N, D)``.
    Returns ``(O in O_i's dtype, L fp32)``. The doc calls the second output valid only for
    ``update_type=1``; the reference returns L for both types. Rows where every ``lse_i`` is
    -inf (nothing attended anywhere) give O = 0 and L = -inf (inferred: the doc formula gives
    ``exp(-inf - -inf)`` = NaN there; sglang itself writes exactly 0 / -inf for prefix-free rows
    before merging, ``ascend_backend.py:2252``. Rejected: the formula's NaN, or a plain average
    of the partial outputs).
    """
    lses = torch.stack([t.float() for t in lse])  # [P, R]
    outs = torch.stack([t.float() for t in local_out])  # [P, R, D]
    top = lses.amax(dim=0)
    top_safe = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    total = top_safe + torch.log(torch.exp(lses - top_safe).sum(dim=0))
    weights = torch.exp(lses - total)  # exp(-inf - (-inf)) = nan only where all are -inf
    weights = torch.nan_to_num(weights, nan=0.0)
    merged = (outs * weights.unsqueeze(-1)).sum(dim=0)
    return merged.to(local_out[0].dtype), total


# ---------------------------------------------------------------------------------------------
# npu_interleave_rope
# ---------------------------------------------------------------------------------------------


def _validate_interleave_rope(a: Mapping[str, Any]) -> None:
    x = a["x"]
    cos = a["cos"]
    sin = a["sin"]
    op = "interleave_rope"
    # Doc: x/cos/sin bf16 or fp16; fp32 follows the project's dtype policy (off the NPU only).
    if x.dtype not in FLOAT_DTYPES:
        fail(op, "x", x.dtype, "dtype must be bf16 or fp16 (fp32 off the NPU only)")
    refuse_npu_float32(op, "x", x, "bfloat16 or float16")
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        if not t.is_contiguous():
            fail(op, name, tuple(t.shape), "must be contiguous (doc: 不支持非连续的Tensor)")
    if x.dim() != 4 or x.size(3) != INTERLEAVE_ROPE_DIM:
        fail(op, "x", tuple(x.shape), f"must be 4-D (B, N, S, {INTERLEAVE_ROPE_DIM})")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.dtype != x.dtype:
            fail(op, name, t.dtype, f"dtype must equal x's {x.dtype}")
        ok = (
            t.dim() == 4
            and t.size(0) == x.size(0)
            and t.size(1) == 1
            and t.size(2) in (1, x.size(2))
            and t.size(3) == INTERLEAVE_ROPE_DIM
        )
        if not ok:
            fail(
                op,
                name,
                tuple(t.shape),
                f"must be (B={x.size(0)}, 1, 1 or S={x.size(2)}, {INTERLEAVE_ROPE_DIM})",
            )
    if cos.shape != sin.shape:
        fail(op, "sin", tuple(sin.shape), f"must have cos's shape {tuple(cos.shape)}")


@npu_op("npu_interleave_rope", validate=_validate_interleave_rope)
def interleave_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``torch_npu.npu_interleave_rope``: RoPE on an interleaved-pair input, half-layout output.

    CANN doc: ``q = x.reshape(B,N,S,32,2).transpose(-1,-2).reshape(B,N,S,64)`` (de-interleave:
    even elements first, then odd), then ``y = q·cos + RotateHalf(q)·sin`` with
    ``RotateHalf(q) = cat(-q[..., 32:], q[..., :32])``. x is ``(B, N, S, 64)``; cos/sin are
    ``(B, 1, 1 or S, 64)`` and broadcast over N (and S). Computed in fp32, returned in x's dtype.
    The doc takes bf16/fp16, contiguous; fp32 is accepted off the NPU only (the project's dtype
    policy, ``ops._checks.refuse_npu_float32``).
    """
    half = x.size(-1) // 2
    q = x.float().unflatten(-1, (half, 2)).transpose(-1, -2).reshape(x.shape)
    rotated = torch.cat([-q[..., half:], q[..., :half]], dim=-1)
    return (q * cos.float() + rotated * sin.float()).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# npu_add_rms_norm
# ---------------------------------------------------------------------------------------------


def _validate_add_rms_norm(a: Mapping[str, Any]) -> None:
    x1 = a["x1"]
    x2 = a["x2"]
    gamma = a["gamma"]
    epsilon = a["epsilon"]
    op = "add_rms_norm"
    if x1.dtype not in FLOAT_DTYPES:
        fail(op, "x1", x1.dtype, f"dtype must be one of {FLOAT_DTYPES}")
    if x2.shape != x1.shape or x2.dtype != x1.dtype:
        fail(op, "x2", (x2.dtype, tuple(x2.shape)), f"must match x1 {x1.dtype} {tuple(x1.shape)}")
    if (
        gamma.dim() == 0
        or gamma.dim() > x1.dim()
        or gamma.shape != x1.shape[x1.dim() - gamma.dim() :]
    ):
        fail(
            op, "gamma", tuple(gamma.shape), f"must equal the trailing dims of x1 {tuple(x1.shape)}"
        )
    if epsilon <= 0:
        fail(op, "epsilon", epsilon, "must be positive")


@npu_op("npu_add_rms_norm", validate=_validate_add_rms_norm)
def add_rms_norm(
    x1: torch.Tensor, x2: torch.Tensor, gamma: torch.Tensor, epsilon: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch_npu.npu_add_rms_norm``: residual add fused with RMSNorm.

    ``x = x1 + x2``; ``rstd = 1 / sqrt(mean(x², over gamma's dims) + epsilon)``;
    ``y = x · rstd · gamma``. Returns ``(y like x1, rstd fp32, x like x1)``; rstd keeps x1's
    leading dims and has size 1 in gamma's dims (meta registration). The sum is kept in fp32 for
    y and rounded only for the returned x (inferred: the kernel's internal precision is not
    documented; rejected alternative: normalising the rounded sum). sglang calls it as
    ``(residual, x, weight)`` and uses outputs 0 and 2 (``layers/layernorm.py:651``).
    """
    x = x1.float() + x2.float()
    dims = tuple(range(x1.dim() - gamma.dim(), x1.dim()))
    rstd = torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + epsilon)
    y = x * rstd * gamma.float()
    return y.to(x1.dtype), rstd, x.to(x1.dtype)
