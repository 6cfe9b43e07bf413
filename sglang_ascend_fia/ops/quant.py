"""W8A8 quantisation ops: dynamic per-token quantisation, int8 matmul, fused dequant-SwiGLU-quant.

Each op mirrors ``torch_npu.npu_<name>`` (torch_npu 2.14 op-schema yaml for names and defaults,
``_op_plugin_docs.py`` for semantics). References compute in float32; int8 x int8 dot products
accumulate exactly in float64, which equals the NPU's int32 accumulator for every in-range input.

sglang 0.5.23 calls: ``dynamic_quant(x)`` and ``quant_matmul(q, W^T, weight_scale,
pertoken_scale=s, bias, output_dtype)`` in ``NPUW8A8Int8DynamicLinearMethod``;
``quant_matmul(x, W^T, deq_scale, bias=quant_bias (int32), output_dtype)`` in the static
``NPUW8A8Int8LinearMethod``; ``dequant_swiglu_quant(h, quant_mode=1, activate_left=True)`` as the
W8A8 MoE activation (``hardware_backend/npu/moe/activation.py``).

Validators enforce only documented kernel constraints (they run before the NPU kernel too); what
the kernel supports but the reference does not is refused by the reference ("... is not
implemented by the reference"); both worded by ``ops._checks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from sglang_ascend_fia.ops._checks import (
    HALF_DTYPES,
    check_shape,
    check_tensor,
    fail,
    not_implemented,
    require,
)
from sglang_ascend_fia.ops._dispatch import npu_op

INT8_MAX = 127.0


def dynamic_int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantisation: ``scale = rowmax|x| / 127``, ``y = round(x / scale)``.

    ``x`` is float32 with the quantised axis last. ``torch.round`` rounds half to even, the same
    as the NPU's RINT cast (inferred: the CANN docs say "round" without a mode). An all-zero row
    gets scale 0 and y 0 (inferred: the CANN golden generators divide by zero there and produce
    NaN, whose int8 cast is undefined). Shared with ``moe_init_routing_v2``'s quant_mode 1.
    """
    scale = x.abs().amax(dim=-1) / INT8_MAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = torch.round(x / safe.unsqueeze(-1)).clamp(-INT8_MAX, INT8_MAX)
    y = torch.where((scale > 0).unsqueeze(-1), y, torch.zeros_like(y))
    return y.to(torch.int8), scale


# ---------------------------------------------------------------------------------------------
# npu_dynamic_quant
# ---------------------------------------------------------------------------------------------

_DQ = "dynamic_quant"


# ``input`` is the schema's name for x (``npu_dynamic_quant(Tensor input, ...)``).
def _validate_dynamic_quant(a: Mapping[str, Any]) -> None:
    input = a["input"]
    smooth_scales = a["smooth_scales"]
    group_index = a["group_index"]
    dst_type = a["dst_type"]
    op = _DQ
    x = check_tensor(op, "input", input, dtypes=HALF_DTYPES)
    require(x.dim() > 1, op, "input", x, "must have more than 1 dimension")
    require(
        dst_type in (None, torch.int8, torch.quint4x2),
        op,
        "dst_type",
        dst_type,
        "must be None, torch.int8 or torch.quint4x2",
    )
    hidden = x.shape[-1]
    if dst_type == torch.quint4x2:
        require(hidden % 8 == 0, op, "input", x, "must have a last dim divisible by 8 for int4")
    if group_index is None:
        if smooth_scales is not None:
            check_tensor(op, "smooth_scales", smooth_scales, dims={1}, dtypes={x.dtype})
            check_shape(op, "smooth_scales", smooth_scales, (hidden,), "input's last dim")
        return
    check_tensor(op, "group_index", group_index, dims={1}, dtypes={torch.int32})
    if smooth_scales is None:
        fail(op, "group_index", group_index, "it needs smooth_scales (it groups their rows)")
    check_tensor(op, "smooth_scales", smooth_scales, dims={2}, dtypes={x.dtype})
    check_shape(
        op,
        "smooth_scales",
        smooth_scales,
        (group_index.shape[0], hidden),
        "(len(group_index), input's last dim) with group_index",
    )


@npu_op("npu_dynamic_quant", validate=_validate_dynamic_quant)
def dynamic_quant(
    input: torch.Tensor,
    *,
    smooth_scales: torch.Tensor | None = None,
    group_index: torch.Tensor | None = None,
    dst_type: torch.dtype | None = None,
    quant_mode: str = "pertoken",
    dst_type_max: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8: ``scale = rowmax|x*s| / 127``, ``y = round(x*s / scale)``.

    ``s`` is ``smooth_scales`` (all rows) or, with ``group_index`` (cumulative row ends, MoE
    mode), row block ``[group_index[g-1], group_index[g])`` uses ``smooth_scales[g]``. Returns
    ``(y int8 like input, scale fp32 of input.shape[:-1])``. Reconstruction error is at most
    ``scale / 2`` per element, the rounding bound. Rounding mode and zero rows: see
    ``dynamic_int8_rows``.
    """
    if dst_type == torch.quint4x2:
        not_implemented(_DQ, "dst_type", dst_type, "dst_type None or torch.int8")
    if quant_mode != "pertoken":
        not_implemented(_DQ, "quant_mode", quant_mode, "quant_mode='pertoken'")
    if dst_type_max != 0.0:
        not_implemented(_DQ, "dst_type_max", dst_type_max, "dst_type_max=0.0 (127 for int8)")
    hidden = input.shape[-1]
    rows = input.reshape(-1, hidden).float()
    if smooth_scales is not None and group_index is None:
        rows = rows * smooth_scales.float()
    elif smooth_scales is not None and group_index is not None:
        ends = [int(v) for v in group_index.tolist()]
        decreasing = any(b < a for a, b in zip([0, *ends], ends, strict=False))
        if not ends or decreasing or ends[-1] != rows.shape[0]:
            rule = f"must be non-decreasing row ends finishing at the row count {rows.shape[0]}"
            fail(_DQ, "group_index", ends, rule)
        counts = torch.tensor([b - a for a, b in zip([0, *ends], ends, strict=False)])
        group_of_row = torch.repeat_interleave(torch.arange(len(ends)), counts).to(rows.device)
        rows = rows * smooth_scales.float()[group_of_row]
    y, scale = dynamic_int8_rows(rows)
    return y.reshape(input.shape), scale.reshape(input.shape[:-1])


# ---------------------------------------------------------------------------------------------
# npu_quant_matmul
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# npu_dequant_swiglu_quant
# ---------------------------------------------------------------------------------------------

_DSQ = "dequant_swiglu_quant"
_DSQ_GROUP_MAX_H = 10496


def _validate_dequant_swiglu_quant(a: Mapping[str, Any]) -> None:
    x = a["x"]
    weight_scale = a["weight_scale"]
    activation_scale = a["activation_scale"]
    bias = a["bias"]
    quant_scale = a["quant_scale"]
    quant_offset = a["quant_offset"]
    group_index = a["group_index"]
    quant_mode = a["quant_mode"]
    dst_type = a["dst_type"]
    activate_dim = a["activate_dim"]
    swiglu_mode = a["swiglu_mode"]
    op = _DSQ
    check_tensor(op, "x", x, dims={2}, dtypes={torch.int32, *HALF_DTYPES})
    tokens, width = x.shape
    require(width % 2 == 0, op, "x", x, "must have an even last dim (it is split in two halves)")
    hidden = width // 2
    require(quant_mode in (0, 1), op, "quant_mode", quant_mode, "must be 0 (static) or 1 (dynamic)")
    require(
        swiglu_mode in (0, 1),
        op,
        "swiglu_mode",
        swiglu_mode,
        "must be 0 (swiglu) or 1 (clamped variant)",
    )
    require(
        dst_type in (None, torch.int8), op, "dst_type", dst_type, "must be int8 (doc: y is int8)"
    )
    if bias is not None:
        check_tensor(op, "bias", bias, dtypes={torch.int32})
    if quant_offset is not None:
        check_tensor(
            op, "quant_offset", quant_offset, dtypes={torch.float32, torch.float16, torch.bfloat16}
        )
    if group_index is not None:
        check_tensor(op, "group_index", group_index, dims={1}, dtypes={torch.int64})
        require(
            activate_dim in (None, -1, x.dim() - 1),
            op,
            "activate_dim",
            activate_dim,
            "must be the last dim with group_index",
        )
        require(
            quant_mode == 1,
            op,
            "quant_mode",
            quant_mode,
            "must be 1 (dynamic) with group_index",
        )
        for name, value in (("bias", bias), ("quant_offset", quant_offset)):
            if value is not None:
                fail(op, name, value, "must be None with group_index")
        groups = group_index.shape[0]
        require(
            hidden <= _DSQ_GROUP_MAX_H and hidden % 64 == 0,
            op,
            "x",
            x,
            f"must have H = x.shape[1] // 2 <= {_DSQ_GROUP_MAX_H} and a multiple of 64 with "
            "group_index",
        )
    else:
        groups = 1
    if x.dtype == torch.int32:
        if weight_scale is None or activation_scale is None:
            fail(op, "weight_scale", weight_scale, "int32 x needs it and activation_scale")
        check_tensor(op, "weight_scale", weight_scale, dims={2}, dtypes={torch.float32})
        check_shape(op, "weight_scale", weight_scale, (groups, width), "(groupNum, 2H)")
        check_tensor(op, "activation_scale", activation_scale, dims={1, 2}, dtypes={torch.float32})
        require(
            activation_scale.numel() == tokens and activation_scale.shape[0] == tokens,
            op,
            "activation_scale",
            activation_scale,
            f"must have shape ({tokens},) or ({tokens}, 1): one scale per token",
        )
    else:
        for name, value in (
            ("weight_scale", weight_scale),
            ("activation_scale", activation_scale),
            ("bias", bias),
        ):
            if value is not None:
                fail(op, name, value, f"must be None for {x.dtype} x (it applies to int32 x)")
    if quant_scale is not None:
        check_tensor(
            op,
            "quant_scale",
            quant_scale,
            dims={2},
            dtypes={torch.float32, torch.float16, torch.bfloat16},
        )
        check_shape(op, "quant_scale", quant_scale, (groups, hidden), "(groupNum, H)")


@npu_op("npu_dequant_swiglu_quant", validate=_validate_dequant_swiglu_quant)
def dequant_swiglu_quant(
    x: torch.Tensor,
    *,
    weight_scale: torch.Tensor | None = None,
    activation_scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    quant_scale: torch.Tensor | None = None,
    quant_offset: torch.Tensor | None = None,
    group_index: torch.Tensor | None = None,
    activate_left: bool = False,
    quant_mode: int = 0,
    dst_type: torch.dtype | None = None,
    round_mode: int | None = None,
    activate_dim: int | None = None,
    swiglu_mode: int = 0,
    clamp_limit: float = 7.0,
    glu_alpha: float = 1.702,
    glu_bias: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantise (int32 x), SwiGLU, then dynamic per-token int8: ``(y int8 [T, H], scale [T])``.

    ``h = x * weight_scale[g] * activation_scale[t]`` for int32 x (``h = x`` for float x);
    ``out = silu(h[:, :H]) * h[:, H:]`` when ``activate_left`` else ``silu(h[:, H:]) *
    h[:, :H]``; ``out *= quant_scale[g]`` if given; then ``dynamic_int8_rows``. With
    ``group_index`` (per-group token counts) row t belongs to group g by those counts; rows past
    the counts' sum are undefined on the NPU ("garbage") and zero here. ``clamp_limit``,
    ``glu_alpha`` and ``glu_bias`` only act in swiglu_mode 1 (doc), which is not implemented.
    """
    if quant_mode != 1:
        rule = "quant_mode=1 (how static mode applies quant_scale is undocumented)"
        not_implemented(_DSQ, "quant_mode", quant_mode, rule)
    if swiglu_mode != 0:
        rule = "swiglu_mode=0 (the clamped variant's formula is undocumented)"
        not_implemented(_DSQ, "swiglu_mode", swiglu_mode, rule)
    if bias is not None:
        rule = "bias=None (where the int32 bias is added is undocumented)"
        not_implemented(_DSQ, "bias", bias, rule)
    if quant_offset is not None:
        not_implemented(_DSQ, "quant_offset", quant_offset, "quant_offset=None (static only)")
    if round_mode not in (None, 0):
        not_implemented(_DSQ, "round_mode", round_mode, "round_mode None/0 (half to even)")
    if activate_dim not in (None, -1, 1):
        not_implemented(_DSQ, "activate_dim", activate_dim, "activation along the last dim")
    tokens, width = x.shape
    hidden = width // 2
    if group_index is not None:
        counts = [int(v) for v in group_index.tolist()]
        if any(c < 0 for c in counts) or sum(counts) > tokens:
            rule = f"must hold non-negative counts summing to at most x.shape[0]={tokens}"
            fail(_DSQ, "group_index", counts, rule)
        covered = sum(counts)
        group_of_row = torch.repeat_interleave(
            torch.arange(len(counts)), torch.tensor(counts, dtype=torch.int64)
        ).to(x.device)
    else:
        covered = tokens
        group_of_row = torch.zeros(tokens, dtype=torch.int64, device=x.device)
    h = x[:covered].float()
    if x.dtype == torch.int32:
        assert weight_scale is not None and activation_scale is not None
        h = (
            h
            * weight_scale.float()[group_of_row]
            * activation_scale.float().reshape(-1, 1)[:covered]
        )
    first, second = h[:, :hidden], h[:, hidden:]
    out = F.silu(first) * second if activate_left else F.silu(second) * first
    if quant_scale is not None:
        out = out * quant_scale.float()[group_of_row]
    q, s = dynamic_int8_rows(out)
    y = torch.zeros(tokens, hidden, dtype=torch.int8, device=x.device)
    scale = torch.zeros(tokens, dtype=torch.float32, device=x.device)
    y[:covered] = q
    scale[:covered] = s
    return y, scale
