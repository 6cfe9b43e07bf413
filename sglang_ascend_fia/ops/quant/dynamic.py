"""``npu_dynamic_quant``: per-token symmetric int8, and the row quantiser other ops share.

Sources: torch_npu 2.14 (op-schema yaml, ``_op_plugin_docs.py``); see the package docstring of
:mod:`sglang_ascend_fia.ops.quant`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

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
