"""MoE gating: ``npu_moe_gating_top_k`` and ``npu_moe_gating_top_k_softmax``.

Sources: torch_npu 2.14 (op-schema yaml, ``_op_plugin_docs.py``) and the CANN kernel
``moe_gating_top_k_generalized.h``; see the package docstring of :mod:`sglang_ascend_fia.ops.moe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import (
    FLOAT_DTYPES,
    check_shape,
    check_tensor,
    fail,
    not_implemented,
    require,
)
from sglang_ascend_fia.ops._dispatch import npu_op

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


def _validate_moe_gating_top_k(a: Mapping[str, Any]) -> None:
    x = a["x"]
    k = a["k"]
    bias = a["bias"]
    input_ids = a["input_ids"]
    tid2eid = a["tid2eid"]
    k_group = a["k_group"]
    group_count = a["group_count"]
    group_select_mode = a["group_select_mode"]
    renorm = a["renorm"]
    norm_type = a["norm_type"]
    op = _GATING
    check_tensor(op, "x", x, dims={2}, dtypes=FLOAT_DTYPES)
    num_experts = x.shape[-1]
    require(num_experts <= 2048, op, "x", x, "must have at most 2048 experts (last dim)")
    if (input_ids is None) != (tid2eid is None):
        fail(op, "input_ids", input_ids, "input_ids and tid2eid must be given together (hash mode)")
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


def _validate_moe_gating_top_k_softmax(a: Mapping[str, Any]) -> None:
    x = a["x"]
    finished = a["finished"]
    k = a["k"]
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
