"""MoE token routing: ``npu_moe_init_routing_v2`` (sort tokens by expert) and
``npu_moe_finalize_routing`` (weighted combine of each token's expert rows).

Sources: torch_npu 2.14 (op-schema yaml, ``_op_plugin_docs.py``), the CANN golden generator
``moe_init_routing_v3/.../gen_data.py`` and ``aclnnMoeFinalizeRoutingV2``; see the package
docstring of :mod:`sglang_ascend_fia.ops.moe`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import (
    FLOAT_DTYPES,
    check_shape,
    check_tensor,
    fail,
    not_implemented,
    require,
    require_indices_below,
)
from sglang_ascend_fia.ops._dispatch import npu_op
from sglang_ascend_fia.ops.quant import dynamic_int8_rows

# ---------------------------------------------------------------------------------------------
# npu_moe_init_routing_v2
# ---------------------------------------------------------------------------------------------

_INIT = "moe_init_routing_v2"
# quant_mode values the op's meta registration accepts (torch_npu 2.14).
_INIT_QUANT_MODES = frozenset({-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17})


def _expert_range(active_expert_range: Sequence[int], expert_num: int) -> tuple[int, int]:
    if len(active_expert_range) == 0:
        return 0, expert_num
    return int(active_expert_range[0]), int(active_expert_range[1])


def _validate_moe_init_routing_v2(a: Mapping[str, Any]) -> None:
    x = a["x"]
    expert_idx = a["expert_idx"]
    scale = a["scale"]
    offset = a["offset"]
    active_num = a["active_num"]
    expert_num = a["expert_num"]
    drop_pad_mode = a["drop_pad_mode"]
    expert_tokens_num_type = a["expert_tokens_num_type"]
    quant_mode = a["quant_mode"]
    active_expert_range = a["active_expert_range"]
    row_idx_type = a["row_idx_type"]
    op = _INIT
    check_tensor(op, "x", x, dims={2}, dtypes=(*FLOAT_DTYPES, torch.int8))
    check_tensor(op, "expert_idx", expert_idx, dims={2}, dtypes={torch.int32})
    require(
        expert_idx.shape[0] == x.shape[0],
        op,
        "expert_idx",
        expert_idx,
        f"must have x's row count {x.shape[0]} in dim 0",
    )
    # The torch_npu 2.14 docstring says "currently only" drop_pad_mode 0, expert_tokens_num_type
    # 1/2, expert_tokens_num_flag True and quant_mode -1/1. The op's meta registration accepts
    # more, the CANN golden generator implements cumsum (0) and drop-pad (1), and sglang 0.5.23
    # itself passes quant_mode=3 (MXFP8): the stale "only" is not enforced here, and the
    # reference refuses what it does not implement.
    require(
        drop_pad_mode in (0, 1),
        op,
        "drop_pad_mode",
        drop_pad_mode,
        "must be 0 (dropless) or 1 (drop and pad)",
    )
    require(
        expert_tokens_num_type in (0, 1, 2),
        op,
        "expert_tokens_num_type",
        expert_tokens_num_type,
        "must be 0 (cumsum), 1 (count) or 2 (key_value)",
    )
    require(
        quant_mode in _INIT_QUANT_MODES,
        op,
        "quant_mode",
        quant_mode,
        f"must be one of {sorted(_INIT_QUANT_MODES)} (-1 none, 0 static int8, 1 dynamic int8)",
    )
    # The meta accepts 0, but the doc's constraints say "不支持静态量化模式".
    require(
        quant_mode != 0,
        op,
        "quant_mode",
        quant_mode,
        "must not be 0: static quantisation is not supported (doc: 不支持静态量化模式)",
    )
    if quant_mode == 1:
        require(x.dtype != torch.int8, op, "quant_mode", quant_mode, "must be -1 when x is int8")
    limit = 5120 if expert_tokens_num_type == 2 else 10240
    require(
        0 < expert_num <= limit,
        op,
        "expert_num",
        expert_num,
        f"must be in (0, {limit}] for expert_tokens_num_type={expert_tokens_num_type}",
    )
    if len(active_expert_range) not in (0, 2):
        fail(op, "active_expert_range", active_expert_range, "must be [] or [start, end]")
    start, end = _expert_range(active_expert_range, expert_num)
    require(
        0 <= start < end <= expert_num,
        op,
        "active_expert_range",
        list(active_expert_range),
        f"must satisfy 0 <= start < end <= expert_num={expert_num}",
    )
    require(row_idx_type in (0, 1), op, "row_idx_type", row_idx_type, "must be 0 or 1")
    require(active_num >= -1, op, "active_num", active_num, "must be >= -1 (-1 and 0: all rows)")
    if quant_mode not in (-1, 1):
        return  # the other modes' scale layouts are the kernel's to check
    if offset is not None:
        fail(op, "offset", offset, "must be None for quant_mode -1 and 1")
    if scale is not None:
        check_tensor(op, "scale", scale, dtypes={torch.float32})
        if quant_mode == -1:
            check_shape(op, "scale", scale, (x.shape[0],), "(NUM_ROWS,) when quant_mode=-1")
        else:
            check_tensor(op, "scale", scale, dims={2})
            require(
                scale.shape[0] in (1, end - start) and scale.shape[1] == x.shape[1],
                op,
                "scale",
                scale,
                f"must have shape ({end - start}, {x.shape[1]}) or (1, {x.shape[1]}): smooth "
                "scales per active expert or shared",
            )


@npu_op("npu_moe_init_routing_v2", validate=_validate_moe_init_routing_v2)
def moe_init_routing_v2(
    x: torch.Tensor,
    expert_idx: torch.Tensor,
    *,
    scale: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    active_num: int = -1,
    expert_capacity: int = -1,
    expert_num: int = -1,
    drop_pad_mode: int = 0,
    expert_tokens_num_type: int = 0,
    expert_tokens_num_flag: bool = False,
    quant_mode: int = -1,
    active_expert_range: Sequence[int] = (),
    row_idx_type: int = 0,
    x_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the N*K (token, expert) pairs by expert and gather token rows into that order.

    Returns ``(expanded_x [N*K, H], expanded_row_idx int32 [N*K], expert_tokens int64,
    expanded_scale fp32 [N*K])``. Only pairs whose expert lies in ``active_expert_range``
    ``[start, end)`` are routed; ``avail`` is their number.

    * Source index of pair (token i, slot k) is ``i*K + k`` (row-major), and the sort is stable:
      within an expert, pairs keep source order. (Inferred for the torch_npu op from the CANN
      ops-transformer golden generator ``moe_init_routing_v3/.../gen_data.py``, which argsorts
      ``expert_idx.reshape(-1)`` stably and gathers ``x[src // K]``. The rejected alternative is
      v1's column-major ``k*N + i``; it orders pairs of one expert by slot first and is what
      ``moe_finalize_routing(drop_pad_mode=0)`` expects, hence sglang's ``drop_pad_mode=2``.)
    * ``expanded_x[d] = x[src_d // K]`` for ``d < avail``; quant_mode 1 quantises each such row
      (times the expert's smooth ``scale`` row if given) to int8 with ``expanded_scale[d] =
      rowmax|.| / 127``. The smooth scale multiplies (inferred: the doc only calls ``scale``
      "用于计算量化结果的参数" of shape (expert_end-expert_start, H); multiplying matches
      ``dynamic_quant``'s smooth_scales. Rejected: dividing by it). With quant_mode -1,
      ``expanded_scale[d] = scale[src_d // K]`` if ``scale`` is given. quant_mode 0 (static)
      is refused: "不支持静态量化模式".
    * ``expanded_row_idx``: row_idx_type 0 (gather) maps source to destination,
      ``[src_d] = d``, -1 for unrouted pairs; row_idx_type 1 (scatter) maps destination to
      source, ``[d] = src_d``.
    * ``expert_tokens``: type 1 counts per expert in ``[start, end)``; type 0 their running
      sum (torch_npu's doc calls cumsum unsupported, the CANN golden generator defines it);
      type 2 is ``(expert_num, 2)`` ``(expert, count)`` pairs for non-empty experts in
      ascending order, then one ``(0, 0)`` terminator when fewer than expert_num pairs.

    Entries the doc calls undefined (rows ``>= avail``, the tail of the scatter index, the type-2
    rows after the terminator, ``expanded_scale`` without a scale in quant_mode -1) are zeros
    here, and -1 in ``expanded_row_idx``. ``expert_capacity`` is unused by the kernel (doc).
    """
    num_rows, top_k = expert_idx.shape
    if x_dtype is not None:
        not_implemented(_INIT, "x_dtype", x_dtype, "x_dtype=None (x's own dtype)")
    if drop_pad_mode != 0:
        not_implemented(_INIT, "drop_pad_mode", drop_pad_mode, "drop_pad_mode=0 (dropless)")
    if quant_mode not in (-1, 1):
        not_implemented(
            _INIT, "quant_mode", quant_mode, "quant_mode -1 (none) and 1 (dynamic int8)"
        )
    if not expert_tokens_num_flag:
        # The count output is then undefined (the meta gives it no elements).
        rule = "expert_tokens_num_flag=True (the count output is undefined without it)"
        not_implemented(_INIT, "expert_tokens_num_flag", expert_tokens_num_flag, rule)
    if active_num not in (-1, 0, num_rows * top_k):
        # The aclnn V3 doc requires active_num == NUM_ROWS*K; what a smaller cap keeps is not
        # documented precisely enough to reproduce.
        not_implemented(_INIT, "active_num", active_num, f"-1, 0 or NUM_ROWS*K={num_rows * top_k}")
    hidden = x.shape[1]
    start, end = _expert_range(active_expert_range, expert_num)
    flat = expert_idx.reshape(-1).long()
    require_indices_below(_INIT, "expert_idx", expert_idx, expert_num, f"expert_num={expert_num}")
    routed = (flat >= start) & (flat < end)
    avail = int(routed.sum())
    # Unrouted pairs sort after every routed one; stable, so ties keep source order.
    key = torch.where(routed, flat, torch.full_like(flat, expert_num))
    src = torch.sort(key, stable=True).indices[:avail]
    dst = torch.arange(avail, device=x.device)

    total = num_rows * top_k
    if row_idx_type == 0:
        row_idx = torch.full((total,), -1, dtype=torch.int64, device=x.device)
        row_idx[src] = dst
    else:
        row_idx = torch.full((total,), -1, dtype=torch.int64, device=x.device)
        row_idx[:avail] = src

    gathered = x[src // top_k]
    expanded_scale = torch.zeros(total, dtype=torch.float32, device=x.device)
    if quant_mode == 1:
        rows_f = gathered.float()
        if scale is not None:
            # One smooth row per active expert, or a single shared row (meta: shape[0] in {E', 1}).
            smooth = scale.float()
            rows_f = rows_f * (smooth if smooth.shape[0] == 1 else smooth[flat[src] - start])
        q, s = dynamic_int8_rows(rows_f)
        expanded_x = torch.zeros(total, hidden, dtype=torch.int8, device=x.device)
        expanded_x[:avail] = q
        expanded_scale[:avail] = s
    else:
        expanded_x = torch.zeros(total, hidden, dtype=x.dtype, device=x.device)
        expanded_x[:avail] = gathered
        if scale is not None:
            expanded_scale[:avail] = scale.float()[src // top_k]

    counts = torch.bincount(flat[routed] - start, minlength=end - start).to(torch.int64)
    if expert_tokens_num_type == 1:
        expert_tokens = counts
    elif expert_tokens_num_type == 0:
        expert_tokens = counts.cumsum(0)
    else:
        expert_tokens = torch.zeros(expert_num, 2, dtype=torch.int64, device=x.device)
        nonempty = torch.nonzero(counts).flatten()
        expert_tokens[: nonempty.numel(), 0] = nonempty + start
        expert_tokens[: nonempty.numel(), 1] = counts[nonempty]
    return expanded_x, row_idx.to(torch.int32), expert_tokens, expanded_scale


# ---------------------------------------------------------------------------------------------
# npu_moe_finalize_routing
# ---------------------------------------------------------------------------------------------

_FINAL = "moe_finalize_routing"


def _validate_moe_finalize_routing(a: Mapping[str, Any]) -> None:
    expanded_permuted_rows = a["expanded_permuted_rows"]
    skip1 = a["skip1"]
    skip2 = a["skip2"]
    bias = a["bias"]
    scales = a["scales"]
    expanded_src_to_dst_row = a["expanded_src_to_dst_row"]
    export_for_source_row = a["export_for_source_row"]
    drop_pad_mode = a["drop_pad_mode"]
    k = a["k"]
    op = _FINAL
    require(
        drop_pad_mode in (0, 1, 2, 3),
        op,
        "drop_pad_mode",
        drop_pad_mode,
        "must be in [0, 3] (0/2 dropless column/row-major, 1/3 drop-and-pad)",
    )
    if drop_pad_mode in (1, 3):
        return  # [E, C, H] rows: the kernel checks that layout; the reference refuses it
    rows_in = check_tensor(
        op, "expanded_permuted_rows", expanded_permuted_rows, dims={2}, dtypes=FLOAT_DTYPES
    )
    idx = check_tensor(
        op, "expanded_src_to_dst_row", expanded_src_to_dst_row, dims={1}, dtypes={torch.int32}
    )
    total, hidden = idx.shape[0], rows_in.shape[1]
    if scales is not None:
        check_tensor(op, "scales", scales, dims={2})
        allowed = (
            {rows_in.dtype, torch.float32} if rows_in.dtype == torch.bfloat16 else {rows_in.dtype}
        )
        require(
            scales.dtype in allowed,
            op,
            "scales",
            scales,
            "must have expanded_permuted_rows' dtype (or float32 when that is bfloat16)",
        )
        num_rows, top_k = scales.shape
        require(
            num_rows * top_k == total,
            op,
            "scales",
            scales,
            f"must be (NUM_ROWS, K) with NUM_ROWS*K = len(expanded_src_to_dst_row) = {total}",
        )
    else:
        require(k >= 1, op, "k", k, "must be >= 1 (it gives K when scales is None)")
        require(total % k == 0, op, "k", k, f"must divide len(expanded_src_to_dst_row)={total}")
        num_rows, top_k = total // k, k
    check_shape(
        op,
        "expanded_permuted_rows",
        rows_in,
        (total, hidden),
        "(NUM_ROWS*K, H) in the dropless modes",
    )
    if skip1 is not None and skip2 is None:
        # Doc: "skip2参数为None时, skip1参数必须也为None". skip2 alone is allowed and adds alone.
        fail(op, "skip1", skip1, "it needs skip2 (with skip2=None, skip1 must be None)")
    for name, t in (("skip1", skip1), ("skip2", skip2)):
        if t is not None:
            check_tensor(op, name, t, dtypes={rows_in.dtype})
            check_shape(op, name, t, (num_rows, hidden), "the output's (NUM_ROWS, H)")
    if export_for_source_row is not None:
        check_tensor(op, "export_for_source_row", export_for_source_row, dtypes={torch.int32})
        check_shape(
            op, "export_for_source_row", export_for_source_row, (num_rows, top_k), "(NUM_ROWS, K)"
        )
    if bias is not None:
        if export_for_source_row is None:
            fail(op, "bias", bias, "it needs export_for_source_row (the expert of each slot)")
        check_tensor(op, "bias", bias, dims={2}, dtypes={rows_in.dtype})
        require(bias.shape[1] == hidden, op, "bias", bias, f"must be (E, H={hidden})")


@npu_op("npu_moe_finalize_routing", validate=_validate_moe_finalize_routing)
def moe_finalize_routing(
    expanded_permuted_rows: torch.Tensor,
    skip1: torch.Tensor | None,
    skip2: torch.Tensor | None,
    bias: torch.Tensor | None,
    scales: torch.Tensor | None,
    expanded_src_to_dst_row: torch.Tensor,
    export_for_source_row: torch.Tensor | None,
    drop_pad_mode: int = 0,
    k: int = 1,
) -> torch.Tensor:
    """Weighted sum of each token's K expert rows, plus optional skips and per-expert bias.

    ``out[i] = skip1[i] + skip2[i] + sum_k scales[i, k] * (rows[src_to_dst[p(i, k)]] +
    bias[expert[i, k]])`` with ``p(i, k) = i + k*N`` for drop_pad_mode 0 (column-major, v1 init
    routing's layout; torch_npu doc) and ``p(i, k) = i*K + k`` for drop_pad_mode 2. Mode 2 is
    documented only as "arranged by row, the aclnnMoeInitRoutingV2 output format"
    (aclnnMoeFinalizeRoutingV2); the exact ``i*K + k`` is inferred from that and from
    ``moe_init_routing_v2``'s source order (rejected alternative: mode 2 reading ``i + k*N``,
    which would mix tokens). Without ``scales`` every weight is 1 and ``K = k``.
    """
    if drop_pad_mode in (1, 3):
        not_implemented(_FINAL, "drop_pad_mode", drop_pad_mode, "the dropless modes 0 and 2")
    total = expanded_src_to_dst_row.shape[0]
    if scales is not None:
        num_rows, top_k = scales.shape
    else:
        num_rows, top_k = total // k, k
    idx = expanded_src_to_dst_row.long()
    require_indices_below(_FINAL, "expanded_src_to_dst_row", idx, total, f"NUM_ROWS*K={total}")
    token = torch.arange(num_rows, device=idx.device).unsqueeze(1)
    slot = torch.arange(top_k, device=idx.device).unsqueeze(0)
    pos = token * top_k + slot if drop_pad_mode == 2 else token + slot * num_rows
    picked = expanded_permuted_rows.float()[idx[pos]]  # [N, K, H]
    if bias is not None:
        assert export_for_source_row is not None
        experts = export_for_source_row.long()
        num_experts = bias.shape[0]
        require_indices_below(
            _FINAL, "export_for_source_row", experts, num_experts, f"E={num_experts}"
        )
        picked = picked + bias.float()[experts]
    weights = (
        scales.float() if scales is not None else torch.ones(num_rows, top_k, device=idx.device)
    )
    out = (weights.unsqueeze(-1) * picked).sum(dim=1)
    for skip in (skip1, skip2):
        if skip is not None:
            out = out + skip.float()
    return out.to(expanded_permuted_rows.dtype)
