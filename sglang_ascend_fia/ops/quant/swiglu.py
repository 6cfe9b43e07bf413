"""``npu_dequant_swiglu_quant``: dequantise, SwiGLU, then dynamic per-token int8 (W8A8 MoE).

Sources: torch_npu 2.14 (op-schema yaml, ``_op_plugin_docs.py``); see the package docstring of
:mod:`sglang_ascend_fia.ops.quant`.
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
from sglang_ascend_fia.ops.quant.dynamic import dynamic_int8_rows

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
