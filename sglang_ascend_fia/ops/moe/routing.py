"""MoE routing and expert-compute ops: gating top-k, init/finalize routing, grouped matmul, SwiGLU.

Each op mirrors ``torch_npu.npu_<name>`` (torch_npu 2.14: the op-schema yaml for names and
defaults, ``_op_plugin_docs.py`` for semantics). The references compute in float32 (int8 dot
products accumulate exactly in float64, as the NPU's int32 accumulator does) and cast to the
documented output dtype at the end.

Sources beyond the torch_npu docstrings are named where used: the CANN ops-transformer kernels
and golden-data generators (``moe_gating_top_k_generalized.h``, ``moe_init_routing_v3``
``gen_data.py``) and the CANN aclnn docs (``aclnnMoeFinalizeRoutingV2``,
``aclnnGroupedMatmulV4``). Anything that no document states is marked **(inferred)**.

Two kinds of rejection, both ``ValueError``: each op's validator enforces the *documented*
kernel constraints and runs before either implementation (``_dispatch``), so it never refuses a
call the NPU kernel accepts; arguments the kernel supports but the reference does not implement
are refused by the reference itself ("... is not implemented by the reference"), so only
CPU/CUDA runs see them.

How sglang 0.5.23 calls these (``hardware_backend/npu/moe``): ``AscendTPDispatcher`` routes with
``moe_init_routing_v2(quant_mode=-1|1, expert_tokens_num_type=1, expert_tokens_num_flag=True,
active_num=T*K, active_expert_range=[0, E])`` and combines with ``moe_finalize_routing(
drop_pad_mode=2)``; the runner calls ``grouped_matmul(split_item=2, group_type=0,
group_list_type=1)`` with ``weight=[w.transpose(1, 2)]`` for BF16 (stored ``[E, out, in]``) and
``weight=[w]`` for W8A8 (pre-transposed, stored ``[E, in, out]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sglang_ascend_fia.ops._dispatch import npu_op
from sglang_ascend_fia.ops._moe_quant_util import (
    FLOAT_DTYPES,
    absent,
    check_shape,
    check_tensor,
    dynamic_int8_rows,
    fail,
    not_implemented,
    require,
)

# The NPU sorts descending; among equal scores the lower index comes first (inferred: the Ascend
# Sort docs do not state a tie order). A stable descending sort makes the reference
# deterministic; torch.topk's tie order is unspecified, so it is not used. The op docstrings
# repeat this where they pick experts or groups.


def _topk_stable(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, idx = torch.sort(scores, dim=-1, descending=True, stable=True)
    return values[..., :k], idx[..., :k]


# ---------------------------------------------------------------------------------------------
# npu_moe_gating_top_k
# ---------------------------------------------------------------------------------------------

_GATING = "moe_gating_top_k"


def _validate_moe_gating_top_k(
    x: torch.Tensor,
    k: int,
    *,
    bias: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    tid2eid: torch.Tensor | None = None,
    k_group: int = 1,
    group_count: int = 1,
    group_select_mode: int = 0,
    renorm: int = 0,
    norm_type: int = 0,
    out_flag: bool = False,
    routed_scaling_factor: float = 1.0,
    eps: float = 1e-20,
) -> None:
    op = _GATING
    check_tensor(op, "x", x, dims={2}, dtypes=FLOAT_DTYPES)
    num_experts = x.shape[-1]
    require(num_experts <= 2048, op, "x", x, "must have at most 2048 experts (last dim)")
    if (input_ids is None) != (tid2eid is None):
        fail(op, "input_ids", input_ids, "and tid2eid must be given together (hash mode)")
    if input_ids is not None and tid2eid is not None:
        check_tensor(op, "input_ids", input_ids, dims={1}, dtypes={torch.int32, torch.int64})
        check_shape(op, "input_ids", input_ids, x.shape[:1], "one id per row of x")
        check_tensor(op, "tid2eid", tid2eid, dims={2}, dtypes={torch.int32, torch.int64})
        require(tid2eid.shape[1] == k, op, "tid2eid", tid2eid, f"must have k={k} columns")
    require(norm_type in (0, 1), op, "norm_type", norm_type, "must be 0 (softmax) or 1 (sigmoid)")
    require(
        group_select_mode in (0, 1),
        op,
        "group_select_mode",
        group_select_mode,
        "must be 0 (group max) or 1 (sum of the group's top 2)",
    )
    # The torch_npu 2.14 doc says "renorm currently only 0", but the A2/A3 kernel
    # (moe_gating_top_k_generalized.h) implements renorm=1 and sglang passes renorm=renormalize.
    require(renorm in (0, 1), op, "renorm", renorm, "must be 0 or 1")
    require(group_count > 0, op, "group_count", group_count, "must be > 0")
    require(
        num_experts % group_count == 0,
        op,
        "group_count",
        group_count,
        f"must divide the expert count x.shape[-1]={num_experts}",
    )
    per_group = num_experts // group_count
    require(
        per_group > 2,
        op,
        "group_count",
        group_count,
        f"must leave more than 2 experts per group (x.shape[-1] // group_count = {per_group})",
    )
    aligned = -(-per_group // 32) * 32 * group_count
    require(
        aligned <= 2048,
        op,
        "group_count",
        group_count,
        f"must satisfy align32(x.shape[-1] // group_count) * group_count <= 2048 (got {aligned})",
    )
    require(
        1 <= k_group <= group_count,
        op,
        "k_group",
        k_group,
        f"must satisfy 1 <= k_group <= group_count={group_count}",
    )
    k_max = per_group * k_group
    require(
        1 <= k <= k_max,
        op,
        "k",
        k,
        f"must satisfy 1 <= k <= x.shape[-1] // group_count * k_group = {k_max}",
    )
    if bias is not None:
        check_tensor(op, "bias", bias, dims={1})
        check_shape(op, "bias", bias, (num_experts,), "one value per expert")
        require(bias.dtype == x.dtype, op, "bias", bias, f"must have x's dtype {x.dtype}")


@npu_op("npu_moe_gating_top_k", validate=_validate_moe_gating_top_k)
def moe_gating_top_k(
    x: torch.Tensor,
    k: int,
    *,
    bias: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    tid2eid: torch.Tensor | None = None,
    k_group: int = 1,
    group_count: int = 1,
    group_select_mode: int = 0,
    renorm: int = 0,
    norm_type: int = 0,
    out_flag: bool = False,
    routed_scaling_factor: float = 1.0,
    eps: float = 1e-20,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Norm, optional bias, grouped top-k, then weights from the *unbiased* norm.

    ``n = softmax(x)`` (norm_type 0) or ``sigmoid(x)`` (1); experts are ranked by ``n + bias``.
    With groups, each of ``group_count`` equal groups is scored by its max (group_select_mode 0)
    or the sum of its top two (1) biased scores; only the top ``k_group`` groups stay eligible.
    ``y = n[idx]``, renormalised ``y / (sum(y) + eps)`` when norm_type is 1 or ``renorm`` is 1,
    then multiplied by ``routed_scaling_factor``. Outputs ``(y in x.dtype, idx int32, n fp32)``.

    Sources: the CANN doc formula covers sigmoid only and always renormalises. The A2/A3 kernel
    (``moe_gating_top_k_generalized.h``, ``needRenorm = normType == 1 || renorm == 1``) is
    followed instead, including for softmax (inferred for this torch_npu build; the rejected
    alternative, "always renormalise" from the doc formula, contradicts the kernel). Note that
    sigmoid renormalises even when renorm is 0. ``norm_out`` is only written by the kernel when
    ``out_flag`` is set; the reference always returns it (a defined superset).

    Ties (equal scores, for experts and for groups): the lower index wins (inferred: the Ascend
    Sort docs state no tie order; rejected: ``torch.topk``'s unspecified order, which would make
    the reference non-deterministic).
    """
    if input_ids is not None:
        not_implemented(_GATING, "input_ids", input_ids, "the non-hash mode: input_ids=None")
    scores = x.float()
    norm = torch.softmax(scores, dim=-1) if norm_type == 0 else torch.sigmoid(scores)
    ranked = norm + bias.float() if bias is not None else norm
    if group_count > 1:
        tokens, num_experts = ranked.shape
        groups = ranked.view(tokens, group_count, num_experts // group_count)
        if group_select_mode == 0:
            group_score = groups.amax(dim=-1)
        else:
            group_score = _topk_stable(groups, 2)[0].sum(dim=-1)
        keep_groups = _topk_stable(group_score, k_group)[1]
        keep = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep_groups, True)
        ranked = ranked.masked_fill(
            ~keep.repeat_interleave(num_experts // group_count, 1), -torch.inf
        )
    idx = _topk_stable(ranked, k)[1]
    y = norm.gather(1, idx)
    if norm_type == 1 or renorm == 1:
        y = y / (y.sum(dim=-1, keepdim=True) + eps)
    y = y * routed_scaling_factor
    return y.to(x.dtype), idx.to(torch.int32), norm


# ---------------------------------------------------------------------------------------------
# npu_moe_gating_top_k_softmax
# ---------------------------------------------------------------------------------------------

_GATING_SOFTMAX = "moe_gating_top_k_softmax"


def _validate_moe_gating_top_k_softmax(
    x: torch.Tensor, finished: torch.Tensor | None = None, k: int = 1
) -> None:
    op = _GATING_SOFTMAX
    check_tensor(op, "x", x, dims={2, 3}, dtypes=FLOAT_DTYPES)
    num_experts = x.shape[-1]
    require(
        0 < k <= num_experts and k <= 1024,
        op,
        "k",
        k,
        f"must satisfy 0 < k <= min(x.shape[-1]={num_experts}, 1024)",
    )
    if finished is not None:
        check_tensor(op, "finished", finished, dtypes={torch.bool})
        check_shape(op, "finished", finished, x.shape[:-1], "x.shape[:-1]")


@npu_op("npu_moe_gating_top_k_softmax", validate=_validate_moe_gating_top_k_softmax)
def moe_gating_top_k_softmax(
    x: torch.Tensor, finished: torch.Tensor | None = None, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of ``softmax(x)``, last axis: ``(values in x.dtype, expert idx int32, row_idx)``.

    ``row_idx[i, j] = j * rows + i`` (column-major, from the CANN formula
    ``arange(N*K).reshape(K, N).transpose``); for a 3-D ``x`` the leading two axes are flattened
    into ``rows`` (inferred: the formula is written for 2-D; rejected: numbering the rows of each
    leading index from 0). Rows with ``finished[i]`` True get expert index ``num_experts``
    (documented) and keep their softmax values (inferred from the TensorRT-LLM kernel this op
    ports; the rejected alternative, zeroed values, has no source). Ties: the lower expert index
    wins (inferred: the Ascend Sort docs state no tie order; rejected: ``torch.topk``'s
    unspecified order).
    """
    probs = torch.softmax(x.float(), dim=-1)
    values, idx = _topk_stable(probs, k)
    num_experts = x.shape[-1]
    if finished is not None:
        idx = idx.masked_fill(finished.unsqueeze(-1), num_experts)
    rows = idx[..., 0].numel()
    row_idx = (
        torch.arange(rows * k, dtype=torch.int32, device=x.device)
        .view(k, rows)
        .transpose(0, 1)
        .reshape(idx.shape)
    )
    return values.to(x.dtype), idx.to(torch.int32), row_idx


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


def _validate_moe_init_routing_v2(
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
) -> None:
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
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= expert_num):
        fail(_INIT, "expert_idx", expert_idx, f"values must lie in [0, expert_num={expert_num})")
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
# npu_grouped_matmul
# ---------------------------------------------------------------------------------------------

_GMM = "grouped_matmul"
_GMM_INNER_LIMIT = 65536
# A2/A3 dtype table (torch_npu doc, group_list as Tensor; aclnnGroupedMatmulV4): the bias dtype
# of the non-quantised form, and the (scale dtype -> output dtype) pairs of the quantised form.
_GMM_FLOAT_BIAS = {
    torch.float16: torch.float16,
    torch.bfloat16: torch.float32,
    torch.float32: torch.float32,
}
_GMM_SCALE_TO_OUT = {
    torch.int64: torch.int8,
    torch.bfloat16: torch.bfloat16,
    torch.float32: torch.float16,
}


def _gmm_weight_is_transposed(w: torch.Tensor) -> bool:
    # "Transposed" per the doc: the last two axes are a transposed view of a contiguous [.., N, K].
    return w.dim() >= 2 and w.stride(-2) == 1 and w.stride(-1) != 1


def _validate_grouped_matmul(
    x: list[torch.Tensor],
    weight: list[torch.Tensor],
    *,
    bias: list[torch.Tensor] | None = None,
    scale: list[torch.Tensor] | None = None,
    offset: list[torch.Tensor] | None = None,
    antiquant_scale: list[torch.Tensor] | None = None,
    antiquant_offset: list[torch.Tensor] | None = None,
    per_token_scale: list[torch.Tensor] | None = None,
    group_list: torch.Tensor | None = None,
    activation_input: list[torch.Tensor] | None = None,
    activation_quant_scale: list[torch.Tensor] | None = None,
    activation_quant_offset: list[torch.Tensor] | None = None,
    split_item: int = 0,
    group_type: int | None = None,
    group_list_type: int = 0,
    act_type: int = 0,
    tuning_config: list[int] | None = None,
    output_dtype: torch.dtype | None = None,
    x_dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
    scale_dtype: torch.dtype | None = None,
    per_token_scale_dtype: torch.dtype | None = None,
) -> None:
    op = _GMM
    for name, value in (
        ("offset", offset),
        ("activation_input", activation_input),
        ("activation_quant_scale", activation_quant_scale),
        ("activation_quant_offset", activation_quant_offset),
    ):
        if not absent(value):
            fail(op, name, value, "must be None (doc: 'currently only None')")
    require(
        split_item in (0, 1, 2, 3),
        op,
        "split_item",
        split_item,
        "must be 0/1 (one output per weight) or 2/3 (one output)",
    )
    require(
        group_list_type in (0, 1),
        op,
        "group_list_type",
        group_list_type,
        "must be 0 (cumulative ends) or 1 (per-group counts)",
    )
    require(
        act_type in (0, 1, 2, 4, 5),
        op,
        "act_type",
        act_type,
        "must be 0 (none), 1 (relu), 2 (gelu_tanh), 4 (fast_gelu) or 5 (silu)",
    )
    for name, tensors in (("x", x), ("weight", weight)):
        if not isinstance(tensors, list | tuple) or not 1 <= len(tensors) <= 128:
            fail(op, name, tensors, "must be a list of 1 to 128 tensors")
    if split_item not in (2, 3) or group_type != 0 or len(x) != 1:
        return  # the kernel checks the other scenarios; the reference refuses them
    xs = check_tensor(op, "x[0]", x[0], dims={2}, dtypes=(*FLOAT_DTYPES, torch.int8))
    k_dim = xs.shape[1]
    require(k_dim < _GMM_INNER_LIMIT, op, "x[0]", xs, f"must have K < {_GMM_INNER_LIMIT}")
    if len(weight) == 1:
        check_tensor(op, "weight[0]", weight[0], dims={3})
        groups, n_dim = weight[0].shape[0], weight[0].shape[2]
        max_groups = 1024
    else:
        for i, w in enumerate(weight):
            check_tensor(op, f"weight[{i}]", w, dims={2})
        groups, n_dim = len(weight), weight[0].shape[1]
        max_groups = 128
    require(groups <= max_groups, op, "weight", weight, f"must hold at most {max_groups} groups")
    for i, w in enumerate(weight):
        require(w.dtype == xs.dtype, op, f"weight[{i}]", w, f"must have x's dtype {xs.dtype}")
        require(
            w.shape[-2] == k_dim and w.shape[-1] == n_dim,
            op,
            f"weight[{i}]",
            w,
            f"must be [K={k_dim}, N={n_dim}] per group (the op takes weight as [E, K, N])",
        )
        inner = k_dim if _gmm_weight_is_transposed(w) else n_dim
        require(
            inner < _GMM_INNER_LIMIT,
            op,
            f"weight[{i}]",
            w,
            f"must have its innermost axis < {_GMM_INNER_LIMIT}",
        )
    per_group_shape = (groups, n_dim) if len(weight) == 1 else (n_dim,)
    if group_list is None:
        fail(op, "group_list", group_list, "is required when group_type=0")
    check_tensor(op, "group_list", group_list, dims={1}, dtypes={torch.int64})
    check_shape(op, "group_list", group_list, (groups,), "one entry per weight group")
    quantised = xs.dtype == torch.int8
    if not absent(bias):
        assert bias is not None
        require(len(bias) == len(weight), op, "bias", bias, "must have one tensor per weight")
        want = torch.int32 if quantised else _GMM_FLOAT_BIAS[xs.dtype]
        for i, b in enumerate(bias):
            check_tensor(op, f"bias[{i}]", b, dtypes={want})
            check_shape(op, f"bias[{i}]", b, per_group_shape, "one row of N per group")
    if not quantised:
        if not absent(scale) or not absent(per_token_scale):
            fail(op, "scale", scale, "must be None for float x (scales are for int8 x)")
        require(
            output_dtype in (None, xs.dtype),
            op,
            "output_dtype",
            output_dtype,
            f"must be None or x's dtype {xs.dtype} for float x",
        )
        return
    # int8 x, A2/A3 table: no scale -> int32 out; int64 (packed) -> int8; bf16 -> bf16;
    # float32 -> float16. Only the bf16/float32 rows take a per_token_scale.
    if absent(scale):
        require(
            output_dtype == torch.int32,
            op,
            "output_dtype",
            output_dtype,
            "must be torch.int32 for int8 x without a scale",
        )
        if not absent(per_token_scale):
            fail(op, "per_token_scale", per_token_scale, "requires a bfloat16/float32 scale")
        return
    assert scale is not None
    require(len(scale) == len(weight), op, "scale", scale, "must have one tensor per weight")
    for i, s in enumerate(scale):
        check_tensor(op, f"scale[{i}]", s, dtypes=_GMM_SCALE_TO_OUT)
        check_shape(op, f"scale[{i}]", s, per_group_shape, "per-channel: one row of N per group")
    want_out = _GMM_SCALE_TO_OUT[scale[0].dtype]
    allowed_out = (None, want_out) if want_out == torch.int8 else (want_out,)
    require(
        output_dtype in allowed_out,
        op,
        "output_dtype",
        output_dtype,
        f"must be {want_out} with a {scale[0].dtype} scale (A2/A3 dtype table)",
    )
    if not absent(per_token_scale):
        assert per_token_scale is not None
        if scale[0].dtype == torch.int64:
            fail(op, "per_token_scale", per_token_scale, "requires a bfloat16/float32 scale")
        require(
            len(per_token_scale) == 1,
            op,
            "per_token_scale",
            per_token_scale,
            "must be a list of one tensor (x is a single tensor)",
        )
        pts = check_tensor(
            op, "per_token_scale[0]", per_token_scale[0], dims={1}, dtypes={torch.float32}
        )
        check_shape(op, "per_token_scale[0]", pts, (xs.shape[0],), "one scale per row of x")


def _gmm_reference_limits(
    x: list[torch.Tensor],
    split_item: int,
    group_type: int | None,
    act_type: int,
    scale: list[torch.Tensor] | None,
    unsupported: dict[str, object],
) -> None:
    """What the kernel supports but the reference does not (checked in the reference only)."""
    op = _GMM
    if split_item != 2 or group_type != 0 or len(x) != 1:
        not_implemented(
            op,
            "split_item/group_type",
            (split_item, group_type),
            "split_item=2, group_type=0: one 2-D x split into row groups by group_list",
        )
    if act_type != 0:
        not_implemented(op, "act_type", act_type, "act_type=0 (no fused activation)")
    for name, value in unsupported.items():
        if not absent(value):
            not_implemented(op, name, value, f"{name}=None")
    if x[0].dtype == torch.int8:
        if absent(scale):
            not_implemented(op, "scale", scale, "int8 x with a bfloat16/float32 scale")
        assert scale is not None
        if scale[0].dtype == torch.int64:
            not_implemented(
                op, "scale[0]", scale[0], "bfloat16/float32 scales (int64 packed scales are not)"
            )


def _gmm_counts(group_list: torch.Tensor, group_list_type: int, rows: int) -> list[int]:
    values = [int(v) for v in group_list.tolist()]
    if group_list_type == 0:
        if any(v < 0 for v in values) or any(b < a for a, b in itertools.pairwise(values)):
            fail(_GMM, "group_list", values, "must be non-negative and non-decreasing")
        if values[-1] != rows:
            fail(_GMM, "group_list", values, f"must end at x's row count {rows}")
        return [b - a for a, b in zip([0, *values[:-1]], values, strict=True)]
    if any(v < 0 for v in values):
        fail(_GMM, "group_list", values, "must be non-negative (counts)")
    if sum(values) != rows:
        fail(_GMM, "group_list", values, f"must sum to x's row count {rows}")
    return values


@npu_op("npu_grouped_matmul", validate=_validate_grouped_matmul)
def grouped_matmul(
    x: list[torch.Tensor],
    weight: list[torch.Tensor],
    *,
    bias: list[torch.Tensor] | None = None,
    scale: list[torch.Tensor] | None = None,
    offset: list[torch.Tensor] | None = None,
    antiquant_scale: list[torch.Tensor] | None = None,
    antiquant_offset: list[torch.Tensor] | None = None,
    per_token_scale: list[torch.Tensor] | None = None,
    group_list: torch.Tensor | None = None,
    activation_input: list[torch.Tensor] | None = None,
    activation_quant_scale: list[torch.Tensor] | None = None,
    activation_quant_offset: list[torch.Tensor] | None = None,
    split_item: int = 0,
    group_type: int | None = None,
    group_list_type: int = 0,
    act_type: int = 0,
    tuning_config: list[int] | None = None,
    output_dtype: torch.dtype | None = None,
    x_dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
    scale_dtype: torch.dtype | None = None,
    per_token_scale_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Row-grouped matmul: rows of ``x[0]`` in group g times ``W_g`` (``[K, N]``), one output.

    ``group_list`` gives the row groups: cumulative ends (group_list_type 0) or counts (1).
    ``weight`` is ``[W]`` with ``W`` of shape ``[E, K, N]`` or a list of E ``[K, N]`` tensors;
    either may be a transposed (non-contiguous) view, which the doc allows and sglang's BF16 path
    uses (``[w.transpose(1, 2)]`` of a stored ``[E, N, K]``).

    * float x: ``y_g = x_g @ W_g + b_g``, output in x's dtype.
    * int8 x (doc formula 3, aclnnGroupedMatmulV4): ``y_g = (x_g @ W_g + b_g) * scale_g *
      per_token_scale`` with int32 bias ``b_g`` added to the exact integer accumulator, per-channel
      ``scale_g`` (``[E, N]``) and per-row ``per_token_scale`` (``[M]``, optional).

    ``tuning_config`` is a kernel tiling hint with no effect on the result, so it is accepted.
    """
    _gmm_reference_limits(
        x,
        split_item,
        group_type,
        act_type,
        scale,
        {
            "antiquant_scale": antiquant_scale,
            "antiquant_offset": antiquant_offset,
            "x_dtype": x_dtype,
            "weight_dtype": weight_dtype,
            "scale_dtype": scale_dtype,
            "per_token_scale_dtype": per_token_scale_dtype,
        },
    )
    xs = x[0]
    rows = xs.shape[0]
    assert group_list is not None
    counts = _gmm_counts(group_list, group_list_type, rows)
    weights = list(weight[0]) if len(weight) == 1 else list(weight)
    quantised = xs.dtype == torch.int8
    biases = None
    if not absent(bias):
        assert bias is not None
        biases = list(bias[0]) if len(weight) == 1 else list(bias)
    scales = None
    if quantised:
        assert scale is not None
        scales = list(scale[0]) if len(weight) == 1 else list(scale)
    n_dim = weights[0].shape[-1]
    out_dtype = output_dtype if output_dtype is not None else xs.dtype
    out = torch.empty(rows, n_dim, dtype=out_dtype, device=xs.device)
    begin = 0
    for g, count in enumerate(counts):
        rows_g = slice(begin, begin + count)
        begin += count
        if quantised:
            assert scales is not None
            # float64 holds every int8 x int8 dot product exactly, like the int32 accumulator.
            acc = xs[rows_g].double() @ weights[g].double()
            if biases is not None:
                acc = acc + biases[g].double()
            y = acc.float() * scales[g].float()
            if not absent(per_token_scale):
                assert per_token_scale is not None
                y = y * per_token_scale[0][rows_g].float().unsqueeze(-1)
        else:
            y = xs[rows_g].float() @ weights[g].float()
            if biases is not None:
                y = y + biases[g].float()
        out[rows_g] = y.to(out_dtype)
    return [out]


# ---------------------------------------------------------------------------------------------
# npu_moe_finalize_routing
# ---------------------------------------------------------------------------------------------

_FINAL = "moe_finalize_routing"


def _validate_moe_finalize_routing(
    expanded_permuted_rows: torch.Tensor,
    skip1: torch.Tensor | None,
    skip2: torch.Tensor | None,
    bias: torch.Tensor | None,
    scales: torch.Tensor | None,
    expanded_src_to_dst_row: torch.Tensor,
    export_for_source_row: torch.Tensor | None,
    drop_pad_mode: int = 0,
    k: int = 1,
) -> None:
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
        fail(op, "skip1", skip1, "needs skip2 (with skip2=None, skip1 must be None)")
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
            fail(op, "bias", bias, "requires export_for_source_row (the expert of each slot)")
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
    if total and (int(idx.min()) < 0 or int(idx.max()) >= total):
        fail(_FINAL, "expanded_src_to_dst_row", idx, f"values must lie in [0, NUM_ROWS*K={total})")
    token = torch.arange(num_rows, device=idx.device).unsqueeze(1)
    slot = torch.arange(top_k, device=idx.device).unsqueeze(0)
    pos = token * top_k + slot if drop_pad_mode == 2 else token + slot * num_rows
    picked = expanded_permuted_rows.float()[idx[pos]]  # [N, K, H]
    if bias is not None:
        assert export_for_source_row is not None
        experts = export_for_source_row.long()
        if int(experts.min()) < 0 or int(experts.max()) >= bias.shape[0]:
            fail(
                _FINAL,
                "export_for_source_row",
                experts,
                f"values must lie in [0, E={bias.shape[0]})",
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


# ---------------------------------------------------------------------------------------------
# npu_swiglu
# ---------------------------------------------------------------------------------------------

_SWIGLU = "swiglu"


# ``self`` is the schema's name for the input (``npu_swiglu(Tensor self, int dim=-1)``); keeping
# it lets keyword callers reach torch_npu unchanged.
def _validate_swiglu(self: torch.Tensor, dim: int = -1) -> None:
    op = _SWIGLU
    check_tensor(op, "self", self, dims=set(range(1, 9)), dtypes=FLOAT_DTYPES)
    require(-self.dim() <= dim < self.dim(), op, "dim", dim, f"must index one of {self.dim()} axes")
    require(
        self.shape[dim] % 2 == 0,
        op,
        "self",
        self,
        f"must have an even size along dim={dim} (it is split into A, B)",
    )


@npu_op("npu_swiglu", validate=_validate_swiglu)
def swiglu(self: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``silu(A) * B`` with ``A, B = split(self, 2, dim)`` (A the first half), in self's dtype."""
    a, b = self.float().chunk(2, dim=dim)
    return (F.silu(a) * b).to(self.dtype)
