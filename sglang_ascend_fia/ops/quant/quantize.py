"""``npu_quantize``: static quantisation with given scales and zero points (static W8A8).

Sources: torch_npu's ``npu_quantize`` doc (op-plugin ``docs/context/torch_npu-npu_quantize.md``)
and op-schema yaml (``npu_quantize(Tensor self, ...)``). With ``div_mode=False`` torch_npu calls
``aclnnAscendQuantV3`` with round mode "round" (op-plugin ``QuantizeKernelNpuOpApi.cpp``); its
CANN page, parameter checks, kernel and golden generator (CANN ops-nn ``quant/ascend_quant_v2``)
fill in what the torch_npu doc leaves out. Rules and sources: docs/ops-semantics.md,
``npu_quantize``; see also the package docstring of :mod:`sglang_ascend_fia.ops.quant`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import (
    FLOAT_DTYPES,
    check_shape,
    check_tensor,
    not_implemented,
    require,
)
from sglang_ascend_fia.ops._dispatch import npu_op

_QZ = "quantize"
_QZ_MAX_DIMS = 8  # aclnnAscendQuantV3: x has 1 to 8 dims
_INT8_MIN, _INT8_MAX = -128, 127
# ``dtype`` per div_mode (TNPU). div_mode False also takes torch.int8, which op-plugin maps qint8
# to before it checks "dtype must be Int8 or Int4" (``QuantizeKernelNpuOpApi.cpp``).
_DIV_DTYPES = (torch.qint8, torch.quint8, torch.qint32, torch.int32)
_MUL_DTYPES = (torch.qint8, torch.int8, torch.quint4x2)


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return ", ".join(map(str, dtypes))


# ``self`` is the schema's name for the input (``npu_quantize(Tensor self, Tensor scales,
# Tensor? zero_points, ScalarType dtype, int axis=1, bool div_mode=True)``); the doc calls it
# ``input``. Keeping the schema's lets keyword callers reach torch_npu unchanged.
def _validate_quantize(a: Mapping[str, Any]) -> None:
    scales = a["scales"]
    zero_points = a["zero_points"]
    dtype = a["dtype"]
    axis = a["axis"]
    op = _QZ
    x = check_tensor(op, "self", a["self"], dtypes=FLOAT_DTYPES)
    if a["div_mode"]:
        require(dtype in _DIV_DTYPES, op, "dtype", dtype, f"must be in ({_names(_DIV_DTYPES)})")
        check_tensor(op, "scales", scales, dtypes={torch.float32, torch.bfloat16})
        if zero_points is not None:
            zero_dtypes = {torch.int8, torch.uint8, torch.int32, torch.bfloat16}
            check_tensor(op, "zero_points", zero_points, dtypes=zero_dtypes)
        return
    check_tensor(op, "self", x, dims=set(range(1, _QZ_MAX_DIMS + 1)))
    require(
        dtype in _MUL_DTYPES,
        op,
        "dtype",
        dtype,
        f"must be in ({_names(_MUL_DTYPES)}) with div_mode=False",
    )
    if dtype == torch.quint4x2:
        require(x.shape[-1] % 8 == 0, op, "self", x, "must have a last dim divisible by 8 for int4")
    require(
        -2 <= axis <= x.dim(),
        op,
        "axis",
        axis,
        f"must be in [-2, {x.dim()}] (self's dim count) with div_mode=False",
    )
    if axis == -2:
        require(x.dim() >= 2, op, "self", x, "must have at least 2 dims for axis=-2")
    check_tensor(op, "scales", scales, dims={1, x.dim()}, dtypes=FLOAT_DTYPES)
    if x.dtype != torch.float32:
        require(
            scales.dtype == x.dtype,
            op,
            "scales",
            scales,
            f"must have self's dtype {x.dtype} (only a float32 self takes other scale dtypes)",
        )
    # Any axis above -2 quantises along the last axis (TNPU, ``axis`` parameter).
    q = -2 if axis == -2 else -1
    size = x.shape[q]
    if scales.dim() == 1:
        ok = scales.shape[0] in (1, size)
        rule = f"must have shape (1,) or ({size},) (self's size along axis {q})"
    else:
        others = [n for i, n in enumerate(scales.shape) if i != x.dim() + q]
        ok = scales.shape[q] in (1, size) and all(n == 1 for n in others)
        rule = f"must be 1 on every axis but {q}, where it is 1 or {size} (self's size)"
    require(ok, op, "scales", scales, rule)
    if zero_points is not None:
        check_tensor(op, "zero_points", zero_points, dtypes={scales.dtype})
        check_shape(op, "zero_points", zero_points, scales.shape, "scales' shape")


@npu_op("npu_quantize", validate=_validate_quantize)
def quantize(
    self: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    dtype: torch.dtype,
    axis: int = 1,
    div_mode: bool = True,
) -> torch.Tensor:
    """``y = saturate_int8(round(self * scales + zero_points))`` along self's last axis
    (``div_mode=False``, the form sglang's static W8A8 linear method calls).

    As ``aclnnAscendQuantV3`` computes it (CANN ops-nn AscendQuantV2 kernel): self, scales and
    zero_points in float32, the product rounded before the offset is added, then rounded to an
    integer and saturated to ``[-128, 127]`` (the golden generator's clip); returns int8 like
    ``self``.
    ``zero_points`` None adds nothing. Ties round to even (inferred: torch_npu's doc says only
    "round"; the kernel casts with ``CAST_RINT`` for round mode "round" and the CANN golden
    generator uses ``torch.round``; rejected: ties away from zero, which neither does).
    """
    if div_mode:
        not_implemented(_QZ, "div_mode", div_mode, "div_mode=False: y = round(self*scales + zp)")
    if dtype == torch.quint4x2:
        not_implemented(_QZ, "dtype", dtype, "dtype torch.qint8 or torch.int8 (int8 output)")
    if axis == -2:
        not_implemented(_QZ, "axis", axis, "axis > -2 (scales along the last axis)")
    # Scales are (1,), (K,) or 1 everywhere but the last axis: flat, they broadcast along it.
    y = self.float() * scales.float().reshape(-1)
    if zero_points is not None:
        y = y + zero_points.float().reshape(-1)
    return torch.round(y).clamp(_INT8_MIN, _INT8_MAX).to(torch.int8)
