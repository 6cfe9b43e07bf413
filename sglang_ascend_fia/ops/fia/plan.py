"""The FIA validator and planner: every documented kernel constraint, checked before either
implementation runs (so on an NPU too), and the per-request :class:`Plan` the reference executes.

:func:`plan` reads a call in named steps: inputs and dtypes, modes and head counts, query lengths,
the branch (Q_S=1 or >1) rules, the key/value geometry, the scenario rules of :mod:`.scenarios`, the
mask, then (``reference=True``) what only the reference lacks. The geometry helpers live in
:mod:`.geometry`, the argument tables (unmodelled arguments, v2 names) in :mod:`.arguments`.
Doc sources: see :mod:`sglang_ascend_fia.ops.fia`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import FLOAT_DTYPES, fail, not_implemented, refuse_npu_float32
from sglang_ascend_fia.ops.fia.arguments import (
    TREE_MASK_EXCLUDES,
    V1_UNMODELLED,
    reject_unmodelled,
)
from sglang_ascend_fia.ops.fia.geometry import (
    check_input,
    cumulative,
    dense_kv_geometry,
    mask_mode,
    paged_lengths,
    per_batch,
    query_geometry,
    rope_dim_of,
    shape_of,
)
from sglang_ascend_fia.ops.fia.rules import (
    INT32_MAX,
    LAYOUTS,
    OP,
    TREE_MASK_SPARSE_MODE,
    check_head_counts,
    check_sparse_mode,
)
from sglang_ascend_fia.ops.fia.scenarios import (
    CallShape,
    check_mla,
    check_sizes,
    check_tnd_dense,
    check_tnd_paged,
)

QUERY_DTYPES = (*FLOAT_DTYPES, torch.int8)
KV_QUANT_DTYPES = (torch.int8, torch.int32)  # int8, and int4 packed in int32 (doc)


@dataclass(frozen=True)
class Plan:
    """A validated call's geometry, per request: what the reference executes."""

    q_layout: str  # BSH | BSND | BNSD | TND
    out_layout: str  # BSH | BSND | BNSD | TND
    batch: int
    num_heads: int
    num_kv_heads: int
    q_s: int  # query S axis (non-TND), or the longest request (TND)
    q_dim: int
    rope_dim: int  # 0 without query_rope
    v_dim: int
    q_lens: tuple[int, ...]
    q_starts: tuple[int, ...] | None  # TND only: first token of each request
    total_tokens: int  # TND only: T
    kv_lens: tuple[int, ...]
    kv_starts: tuple[int, ...] | None  # dense TND only
    paged: bool
    cache_4d: bool  # paged (blocks, Nkv, block_size, D) instead of (blocks, block_size, H)
    block_size: int
    mask_mode: str  # none | dense | left_up | right_down | band | tree (refused by the reference)
    pre_tokens: int
    next_tokens: int


# ---------------------------------------------------------------------------------------------
# The plan, step by step
# ---------------------------------------------------------------------------------------------


def plan(a: Mapping[str, Any], *, reference: bool, version: int = 1) -> Plan:
    """Check a v1-named call against the documented constraints (and, with ``reference``, the
    reference's own limits); return its geometry.

    ``version`` picks the doc (v1 or v2 op) where the two state different MLA/TND rules.
    """
    if a["sparse_mode"] == TREE_MASK_SPARSE_MODE:
        _check_tree_mask_excludes(a)
    if reference:
        reject_unmodelled(OP, a, V1_UNMODELLED)
    query, key, value = a["query"], a["key"], a["value"]
    q_layout, out_layout = _check_inputs(a, reference=reference)
    rope = a["query_rope"] is not None or a["key_rope"] is not None
    nkv = _check_modes(a, rope=rope, version=version)
    s_or_t, _, q_dim = query_geometry(query, q_layout, a["num_heads"])
    if rope and (a["query_rope"] is None or a["key_rope"] is None):
        fail(OP, "query_rope/key_rope", "only one given", "MLA needs both or neither")
    batch, q_s, q_lens, q_starts = _query_lengths(a, q_layout, s_or_t)
    prefill = q_s > 1
    _check_branch(a, q_s)
    paged = a["block_table"] is not None
    kv_lens, v_dim, cache_4d, kv_starts = _kv_lengths(
        a,
        q_layout,
        batch=batch,
        nkv=nkv,
        q_dim=q_dim,
        prefill=prefill,
        rope=rope,
        reference=reference,
    )
    rope_dim = 0
    if rope:
        rope_dim = rope_dim_of(
            query, key, a["query_rope"], a["key_rope"], q_layout, a["num_heads"], nkv, paged
        )
    tnd_dense = q_layout == "TND" and not paged
    call = CallShape(
        version=version,
        input_layout=a["input_layout"],
        q_layout=q_layout,
        q_s=q_s,
        num_heads=a["num_heads"],
        num_kv_heads=nkv,
        q_dim=q_dim,
        v_dim=v_dim,
        rope_dim=rope_dim,
        paged=paged,
        nz=paged and key.dim() == 5,
        int8=torch.int8 in (query.dtype, key.dtype),
        sparse_mode=a["sparse_mode"],
        mask_shape=shape_of(a["atten_mask"]),  # type: ignore[arg-type]
        q_lens=tuple(q_lens),
        kv_lens=tuple(kv_lens),
        tokens=(s_or_t, key.size(0), value.size(0)) if tnd_dense else (),
        pre_tokens=a["pre_tokens"],
        next_tokens=a["next_tokens"],
    )
    _check_scenario(call, query, tnd_dense=tnd_dense, rope=rope)
    mode = mask_mode(
        a["atten_mask"],
        sparse_mode=a["sparse_mode"],
        batch=batch,
        q_lens=q_lens,
        kv_lens=kv_lens,
        prefill=prefill,
        rope=rope,
        two_d_mask_ok=q_layout != "TND" and q_dim == v_dim and not rope,
        block_table=a["block_table"],
        block_size=a["block_size"],
    )
    if reference:
        _check_reference_limits(a, mode, prefill=prefill)
    return Plan(
        q_layout=q_layout,
        out_layout=out_layout,
        batch=batch,
        num_heads=a["num_heads"],
        num_kv_heads=nkv,
        q_s=q_s,
        q_dim=q_dim,
        rope_dim=rope_dim,
        v_dim=v_dim,
        q_lens=tuple(q_lens),
        q_starts=q_starts,
        total_tokens=s_or_t if q_layout == "TND" else 0,
        kv_lens=tuple(kv_lens),
        kv_starts=kv_starts,
        paged=paged,
        cache_4d=cache_4d,
        block_size=a["block_size"],
        mask_mode=mode,
        pre_tokens=a["pre_tokens"],
        next_tokens=a["next_tokens"],
    )


def _check_tree_mask_excludes(a: Mapping[str, Any]) -> None:
    for name in TREE_MASK_EXCLUDES:
        if a.get(name) is not None:
            shown = shape_of(a[name]) if isinstance(a[name], torch.Tensor) else a[name]
            fail(
                OP,
                name,
                shown,
                "sparse_mode=9 (treeMask) takes no left padding, pse_shift, shared prefix or "
                "int8 output",
            )


def _check_inputs(a: Mapping[str, Any], *, reference: bool) -> tuple[str, str]:
    """Layout, tensor kinds and dtypes; returns the (query, output) layouts."""
    input_layout, query, key, value = a["input_layout"], a["query"], a["key"], a["value"]
    if input_layout not in LAYOUTS:
        fail(OP, "input_layout", input_layout, f"must be one of {tuple(LAYOUTS)}")
    q_layout, out_layout, rank = LAYOUTS[input_layout]
    check_input("query", query, QUERY_DTYPES)
    refuse_npu_float32(OP, "query", query, "float16, bfloat16 or int8 queries")
    if query.dim() != rank:
        fail(OP, "query", shape_of(query), f"input_layout={input_layout} needs a {rank}-D query")
    check_input("key", key, (query.dtype, *KV_QUANT_DTYPES))
    check_input("value", value, (key.dtype,))
    if reference and (query.dtype not in FLOAT_DTYPES or key.dtype != query.dtype):
        not_implemented(
            OP,
            "query/key dtype",
            (query.dtype, key.dtype),
            "float attention with key/value in the query's dtype",
        )
    return q_layout, out_layout


def _check_modes(a: Mapping[str, Any], *, rope: bool, version: int) -> int:
    """Head counts, sparse mode and inner_precise; returns the KV head count."""
    nkv = check_head_counts(a["num_heads"], a["num_key_value_heads"], mla=rope)
    check_sparse_mode(a["sparse_mode"], rope=rope, version=version)
    if a["inner_precise"] not in (0, 1, 2, 3):
        fail(OP, "inner_precise", a["inner_precise"], "must be 0, 1, 2 or 3")
    return nkv


def _query_lengths(
    a: Mapping[str, Any], q_layout: str, s_or_t: int
) -> tuple[int, int, list[int], tuple[int, ...] | None]:
    """(batch, Q_S, per-request query lengths, TND start tokens)."""
    lengths = a["actual_seq_lengths"]
    if q_layout == "TND":
        if lengths is None:
            fail(
                OP, "actual_seq_lengths", None, "input_layout=TND requires cumulative query lengths"
            )
        cum = cumulative("actual_seq_lengths", lengths, s_or_t)
        q_lens = [hi - lo for lo, hi in zip([0, *cum], cum, strict=False)]
        return len(cum), max(q_lens), q_lens, tuple([0, *cum[:-1]])
    batch, q_s = a["query"].size(0), s_or_t
    if lengths is None or q_s == 1:
        # Doc: "Q_S为1时该参数无效" — ignored at Q_S=1, the S axis otherwise.
        return batch, q_s, [q_s] * batch, None
    return batch, q_s, per_batch("actual_seq_lengths", lengths, batch, q_s), None


def _check_branch(a: Mapping[str, Any], q_s: int) -> None:
    """What one branch (Q_S=1 IncreFlashAttention, Q_S>1 PromptFlashAttention) refuses."""
    if a["input_layout"] == "BNSD_BSND" and q_s == 1:
        fail(OP, "input_layout", a["input_layout"], "BNSD_BSND is only supported for Q_S > 1")
    if q_s > 1:
        return
    if a["inner_precise"] > 1:
        fail(OP, "inner_precise", a["inner_precise"], "Q_S=1 only supports 0 and 1")
    if a["query"].dtype == a["key"].dtype == torch.int8:
        fail(OP, "query/key/value dtype", torch.int8, "Q_S=1 does not support all-int8 inputs")


def _kv_lengths(
    a: Mapping[str, Any],
    q_layout: str,
    *,
    batch: int,
    nkv: int,
    q_dim: int,
    prefill: bool,
    rope: bool,
    reference: bool,
) -> tuple[list[int], int, bool, tuple[int, ...] | None]:
    """(per-request KV lengths, value D, 4-D paged cache, dense TND start tokens)."""
    query, key, value = a["query"], a["key"], a["value"]
    lengths = a["actual_seq_lengths_kv"]
    if a["block_table"] is not None:
        kv_lens, v_dim, cache_4d = paged_lengths(
            query,
            key,
            value,
            a["block_table"],
            lengths,
            q_layout=q_layout,
            batch=batch,
            nkv=nkv,
            q_dim=q_dim,
            prefill=prefill,
            rope=rope,
            sparse_mode=a["sparse_mode"],
            block_size=a["block_size"],
            reference=reference,
        )
        return kv_lens, v_dim, cache_4d, None
    if key.dim() != query.dim():
        fail(OP, "key", shape_of(key), f"a dense {q_layout} key must have the query's rank")
    kv_s, k_dim = dense_kv_geometry("key", key, q_layout, batch, nkv)
    v_s, v_dim = dense_kv_geometry("value", value, q_layout, batch, nkv)
    if value.dim() != key.dim() or v_s != kv_s:
        fail(OP, "value", shape_of(value), f"must match the key's shape {shape_of(key)} but for D")
    if k_dim != q_dim:
        fail(OP, "key", shape_of(key), f"its D ({k_dim}) must equal the query's D ({q_dim})")
    if q_layout != "TND":
        if lengths is None:
            return [kv_s] * batch, v_dim, False, None
        return per_batch("actual_seq_lengths_kv", lengths, batch, kv_s), v_dim, False, None
    if lengths is None:
        fail(OP, "actual_seq_lengths_kv", None, "a dense TND key needs cumulative lengths")
    cum_kv = cumulative("actual_seq_lengths_kv", lengths, kv_s)
    if len(cum_kv) != batch:
        fail(
            OP,
            "actual_seq_lengths_kv",
            cum_kv,
            f"needs one entry per request (B={batch} from actual_seq_lengths)",
        )
    kv_lens = [hi - lo for lo, hi in zip([0, *cum_kv], cum_kv, strict=False)]
    return kv_lens, v_dim, False, tuple([0, *cum_kv[:-1]])


def _check_scenario(call: CallShape, query: torch.Tensor, *, tnd_dense: bool, rope: bool) -> None:
    """Both branches' size limits, then TND without page attention, MLA, or TND with page
    attention (:mod:`.rules`)."""
    check_sizes(call)
    if tnd_dense:
        if query.dtype not in (torch.bfloat16, torch.float32):
            fail(
                OP,
                "query",
                query.dtype,
                "TND without page attention takes bfloat16 only (float32 off the NPU, for the "
                "reference)",
            )
        check_tnd_dense(call)
    elif rope:
        check_mla(call)
    elif call.q_layout == "TND":
        check_tnd_paged(call)


def _check_reference_limits(a: Mapping[str, Any], mode: str, *, prefill: bool) -> None:
    """What the reference refuses although the kernel takes it (CPU/CUDA runs only)."""
    sparse_mode, pre_tokens, next_tokens = a["sparse_mode"], a["pre_tokens"], a["next_tokens"]
    banded = (pre_tokens, next_tokens) != (INT32_MAX, INT32_MAX)
    if prefill and mode == "dense" and sparse_mode == 0 and banded:
        # Doc: a sparse_mode=0 mask "表示pre_tokens和next_tokens之间的部分需要计算"; where that
        # band is anchored (top-left or bottom-right) is not stated, so the reference does not
        # guess (rejected: the bottom-right anchor of sparse_mode=4).
        not_implemented(
            OP,
            "pre_tokens/next_tokens",
            (pre_tokens, next_tokens),
            "only the defaults with a sparse_mode=0 mask; use sparse_mode=4 for a band",
        )
    if sparse_mode == TREE_MASK_SPARSE_MODE:
        not_implemented(
            OP, "sparse_mode", sparse_mode, "sparse modes 0-4; the treeMask layout is undocumented"
        )
