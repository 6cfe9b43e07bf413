"""``npu_quant_matmul``: int8 x int8 matmul with per-channel and per-token dequantisation.

Sources: torch_npu 2.14 (op-schema yaml, ``_op_plugin_docs.py``, its A2/A3 dtype table) and
``aclnnQuantMatmulV4``; see the package docstring of :mod:`sglang_ascend_fia.ops.quant`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import check_shape, check_tensor, fail, not_implemented, require
from sglang_ascend_fia.ops._dispatch import npu_op

_QMM = "quant_matmul"
_QMM_INNER_LIMIT = 65535


def _validate_quant_matmul(a: Mapping[str, Any]) -> None:
    x1 = a["x1"]
    x2 = a["x2"]
    scale = a["scale"]
    offset = a["offset"]
    pertoken_scale = a["pertoken_scale"]
    bias = a["bias"]
    output_dtype = a["output_dtype"]
    op = _QMM
    require(
        output_dtype in (None, torch.int8, torch.float16, torch.bfloat16, torch.int32),
        op,
        "output_dtype",
        output_dtype,
        "must be None (int8), torch.int8, torch.float16, torch.bfloat16 or torch.int32",
    )
    check_tensor(op, "x1", x1, dims=set(range(2, 7)), dtypes={torch.int8, torch.int32})
    check_tensor(op, "x2", x2, dims=set(range(2, 7)), dtypes={x1.dtype})
    if x1.dtype == torch.int32:
        return  # int4 packed 8 per int32: the kernel checks its packed shapes
    m_dim, k_dim, n_dim = x1.shape[-2], x1.shape[-1], x2.shape[-1]
    require(
        x2.shape[-2] == k_dim,
        op,
        "x2",
        x2,
        f"must be [..., K={k_dim}, N] (x2's second-last axis is x1's K)",
    )
    require(
        max(k_dim, n_dim) <= _QMM_INNER_LIMIT,
        op,
        "x2",
        x2,
        f"must have K and N <= {_QMM_INNER_LIMIT}",
    )
    try:
        out_batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
    except RuntimeError:
        fail(op, "x2", x2, f"must have batch axes broadcastable with x1's {tuple(x1.shape[:-2])}")
    check_tensor(op, "scale", scale, dims={1}, dtypes={torch.float32, torch.bfloat16, torch.int64})
    require(
        scale.shape[0] in (1, n_dim), op, "scale", scale, f"must have shape (1,) or (N={n_dim},)"
    )
    if pertoken_scale is not None:
        check_tensor(op, "pertoken_scale", pertoken_scale, dims={1}, dtypes={torch.float32})
        check_shape(op, "pertoken_scale", pertoken_scale, (m_dim,), "one scale per row m of x1")
    # The A2/A3 dtype table of the torch_npu doc, one branch per output dtype.
    out = torch.int8 if output_dtype is None else output_dtype
    has_pts = pertoken_scale is not None
    if out == torch.float16 and has_pts:
        scales, biases = {torch.float32}, {torch.int32, torch.float16, torch.float32}
    elif out == torch.float16:
        scales, biases = {torch.int64, torch.float32}, {torch.int32}
    elif out == torch.bfloat16:
        scales, biases = (
            {torch.float32, torch.bfloat16},
            {torch.int32, torch.bfloat16, torch.float32},
        )
    elif out == torch.int8:
        scales, biases = {torch.int64, torch.float32}, {torch.int32}
    else:  # int32
        scales, biases = {torch.float32, torch.bfloat16}, {torch.int32}
    where = f"for {out} output" + (" with pertoken_scale" if has_pts else "")
    require(
        scale.dtype in scales,
        op,
        "scale",
        scale,
        f"must have dtype in ({', '.join(sorted(map(str, scales)))}) {where}",
    )
    if has_pts and out in (torch.int8, torch.int32):
        fail(op, "pertoken_scale", pertoken_scale, f"not supported {where}")
    if offset is not None:
        require(
            out == torch.int8,
            op,
            "offset",
            offset,
            "is only supported with int8 output (dtype table)",
        )
        check_tensor(op, "offset", offset, dims={1}, dtypes={torch.float32})
        require(
            offset.shape[0] in (1, n_dim),
            op,
            "offset",
            offset,
            f"must have shape (1,) or (N={n_dim},)",
        )
    if bias is not None:
        require(
            bias.dtype in biases,
            op,
            "bias",
            bias,
            f"must have dtype in ({', '.join(sorted(map(str, biases)))}) {where}",
        )
        out_dims = len(out_batch) + 2
        allowed: list[tuple[int, ...]] = [(n_dim,)]
        if out_dims == 2:
            allowed.append((1, n_dim))
        if out_dims == 3:
            allowed.append((out_batch[0], 1, n_dim))
        require(
            tuple(bias.shape) in allowed,
            op,
            "bias",
            bias,
            f"must have shape in {allowed} for a {out_dims}-D output",
        )


@npu_op("npu_quant_matmul", validate=_validate_quant_matmul)
def quant_matmul(
    x1: torch.Tensor,
    x2: torch.Tensor,
    scale: torch.Tensor,
    *,
    offset: torch.Tensor | None = None,
    pertoken_scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = None,
    x1_dtype: torch.dtype | None = None,
    x2_dtype: torch.dtype | None = None,
    pertoken_scale_dtype: torch.dtype | None = None,
    scale_dtype: torch.dtype | None = None,
    group_sizes: list[int] | None = None,
    y_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y = (x1 @ x2 [+ int32 bias]) * scale[n] * pertoken_scale[m] [+ float bias]``.

    Bias placement (inferred for torch_npu, whose doc is silent; taken from the CANN
    aclnnQuantMatmulV4 formulas): an int32 bias joins the exact integer accumulator before
    dequantisation, a bfloat16/float16/float32 bias is added after it. The rejected alternative,
    one placement for every dtype, would make an int32 bias (sglang's static ``quant_bias``,
    in accumulator units) or a float bias (the dynamic path's output-unit ``bias``) wrong by a
    factor of ``scale * pertoken_scale``.
    """
    for name, value in (
        ("x1_dtype", x1_dtype),
        ("x2_dtype", x2_dtype),
        ("pertoken_scale_dtype", pertoken_scale_dtype),
        ("scale_dtype", scale_dtype),
        ("group_sizes", group_sizes),
        ("y_scale", y_scale),
    ):
        if value is not None:
            not_implemented(_QMM, name, value, f"{name}=None")
    if x1.dtype == torch.int32:
        not_implemented(_QMM, "x1", x1, "int8 x1/x2 (int32-packed int4 is not)")
    if output_dtype not in (torch.bfloat16, torch.float16):
        not_implemented(_QMM, "output_dtype", output_dtype, "float16/bfloat16 output")
    if scale.dtype == torch.int64:
        rule = "float32/bfloat16 scales (npu_trans_quant_param's packed int64 is not)"
        not_implemented(_QMM, "scale", scale, rule)
    acc = x1.double() @ x2.double()
    if bias is not None and bias.dtype == torch.int32:
        acc = acc + bias.double()
    y = acc.float() * scale.float()
    if pertoken_scale is not None:
        y = y * pertoken_scale.float().unsqueeze(-1)
    if bias is not None and bias.dtype != torch.int32:
        y = y + bias.float()
    return y.to(output_dtype)
