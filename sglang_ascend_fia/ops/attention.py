"""``npu_fused_infer_attention_score`` (FIA) and its ``_v2``, with a pure-PyTorch reference.

What the kernel computes (doc: torch_npu 2.14.0 ``_op_plugin_docs.py``; meta shapes:
``op_plugin/meta/_meta_registrations.py``; summary in shared/notes/upstream-0.5.23.md §3.1-3.2)::

    attention_out = softmax(scale * (query @ key^T [+ query_rope @ key_rope^T]) + mask) @ value

per request and per query head, over that request's valid keys. The reference:

- reads the query in BSH ``[B,S,N*D]``, BSND ``[B,S,N,D]``, BNSD ``[B,N,S,D]``, BNSD_BSND (BNSD in,
  BSND out) or TND ``[T,N,D]`` and returns the output in the query's layout with the value's D;
- reads K/V dense (the query's layout, TND with cumulative lengths) or paged through
  ``block_table`` from a ``(blocks, block_size, Nkv*D)`` or ``(blocks, Nkv, block_size, D)`` cache;
- computes in fp32 with an online (flash-style) softmax over KV chunks, so neither the whole
  gathered cache nor the whole score matrix is materialised, and casts to the query dtype.

Two kinds of rejection, both ``ValueError``. The validator (run by ``_dispatch`` before either
implementation, so also on an NPU) enforces only the *documented* kernel constraints, and never
refuses a call the kernel accepts. What only the reference lacks — quantisation arguments, NZ
caches, int8 inputs, the v2-only ``*_NBSD``/``NTD`` layouts — is refused by the reference itself
("... is not supported by the reference"), so only CPU/CUDA runs see it.

Choices the doc does not settle are marked **(inferred)** where they are made.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

from sglang_ascend_fia.ops._dispatch import npu_op
from sglang_ascend_fia.ops._fia_rules import (
    MASK_TEMPLATE_SIZE,
    MAX_3D_CACHE_HIDDEN,
    MAX_ROPE_PAGED_QUERY_S,
    check_block_size,
    check_head_counts,
    check_sparse_mode,
)

INT32_MAX = 2147483647

# input_layout -> (query layout, output layout, query rank); meta ``LAYOUT_MAP`` restricted to the
# layouts FIA v1 documents.
_LAYOUTS: dict[str, tuple[str, str, int]] = {
    "BSH": ("BSH", "BSH", 3),
    "BSND": ("BSND", "BSND", 4),
    "BNSD": ("BNSD", "BNSD", 4),
    "BNSD_BSND": ("BNSD", "BSND", 4),
    "TND": ("TND", "TND", 3),
}
# v2 layouts the kernel documents but the reference does not model (output transposed to N-first).
_V2_ONLY_LAYOUTS = ("BSH_NBSD", "BSND_NBSD", "BNSD_NBSD", "TND_NTD", "NTD_TND")
# fp32 is a reference-only extension (the kernel documents fp16/bf16/int8 queries); the tests use
# it for tight tolerances.
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_QUERY_DTYPES = (*_FLOAT_DTYPES, torch.int8)
_KV_QUANT_DTYPES = (torch.int8, torch.int32)  # int8, and int4 packed in int32 (doc)
_MASK_DTYPES = (torch.bool, torch.int8, torch.uint8)

# Chunk budgets of the reference, in fp32 elements. A K+V chunk of about 4 MiB stays in cache
# while it is converted and multiplied; the score chunk bounds the prefill working set.
_KV_CHUNK_ELEMS = 1 << 20
_SCORE_CHUNK_ELEMS = 1 << 22

_OP = "fused_infer_attention_score"


def _fail(argument: str, value: object, rule: str) -> NoReturn:
    raise ValueError(f"{_OP}: {argument}={value!r} is not allowed: {rule}")


def _not_supported(argument: str, value: object, what: str) -> NoReturn:
    raise ValueError(f"{_OP}: {argument}={value!r} is not supported by the reference; {what}")


def _shape(t: torch.Tensor | None) -> object:
    return None if t is None else tuple(t.shape)


# ---------------------------------------------------------------------------------------------
# Planning: validate every documented constraint and resolve the per-request geometry.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
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
    mask_mode: str  # none | dense | left_up | right_down | band
    pre_tokens: int
    next_tokens: int


def _int_list(name: str, value: object) -> list[int]:
    if isinstance(value, torch.Tensor):
        if value.dim() != 1:
            _fail(name, _shape(value), "must be a 1-D list of ints")
        return [int(v) for v in value.tolist()]
    if not isinstance(value, Sequence) or isinstance(value, str):
        _fail(name, value, "must be a list of ints")
    out = [int(v) for v in value]  # type: ignore[union-attr]
    if any(v < 0 for v in out):
        _fail(name, out, "lengths must be non-negative")
    return out


def _per_batch(name: str, value: object, batch: int, limit: int) -> list[int]:
    """Doc rule for per-batch lengths: one value broadcasts; >= B values take the first B."""
    lens = _int_list(name, value)
    if len(lens) == 1:
        lens = lens * batch
    elif len(lens) < batch:
        _fail(name, lens, f"needs 1 or at least B={batch} entries")
    lens = lens[:batch]
    if any(v > limit for v in lens):
        _fail(name, lens, f"each length must be <= {limit}")
    return lens


def _cumulative(name: str, value: object, total: int) -> list[int]:
    cum = _int_list(name, value)
    if not cum:
        _fail(name, cum, "TND needs one cumulative length per request")
    if any(b < a for a, b in zip([0, *cum], cum, strict=False)):
        _fail(name, cum, "TND lengths are cumulative and must be non-decreasing")
    if cum[-1] > total:
        _fail(name, cum, f"the last cumulative length must be <= the token count {total}")
    return cum


def _query_geometry(query: torch.Tensor, q_layout: str, num_heads: int) -> tuple[int, int, int]:
    """(S or T, N, D) of the query; B is read separately."""
    if q_layout == "BSH":
        if query.size(2) % num_heads:
            _fail("num_heads", num_heads, f"query H={query.size(2)} must be divisible by it")
        return query.size(1), num_heads, query.size(2) // num_heads
    if q_layout == "BSND":
        s, n, d = query.size(1), query.size(2), query.size(3)
    elif q_layout == "BNSD":
        n, s, d = query.size(1), query.size(2), query.size(3)
    else:  # TND
        s, n, d = query.size(0), query.size(1), query.size(2)
    if n != num_heads:
        _fail("num_heads", num_heads, f"must equal the query's N axis ({n}) for {q_layout}")
    return s, n, d


def _dense_kv_geometry(
    name: str, t: torch.Tensor, q_layout: str, batch: int, nkv: int
) -> tuple[int, int]:
    """(KV_S or KV_T, D) of a non-paged key/value in the query's layout."""
    if q_layout == "BSH":
        if t.size(2) % nkv:
            _fail(name, _shape(t), f"H must be divisible by num_key_value_heads={nkv}")
        s, d = t.size(1), t.size(2) // nkv
    elif q_layout == "BSND":
        s, n, d = t.size(1), t.size(2), t.size(3)
    elif q_layout == "BNSD":
        n, s, d = t.size(1), t.size(2), t.size(3)
    else:
        s, n, d = t.size(0), t.size(1), t.size(2)
    if q_layout in ("BSND", "BNSD", "TND") and n != nkv:
        _fail(name, _shape(t), f"its N axis must equal num_key_value_heads={nkv}")
    if q_layout != "TND" and t.size(0) != batch:
        _fail(name, _shape(t), f"its batch axis must equal the query's B={batch}")
    return s, d


def _paged_kv_geometry(
    name: str, t: torch.Tensor, q_layout: str, nkv: int, block_size: int
) -> tuple[int, int, int]:
    """(num_blocks, D, rank) of a paged cache; rank 5 is the NZ ``[blocks, KV_N, D/16, bs, 16]``."""
    if t.dim() == 5:
        if t.size(1) != nkv or t.size(3) != block_size:
            _fail(name, _shape(t), f"an NZ cache is (blocks, KV_N={nkv}, D/16, {block_size}, 16)")
        return t.size(0), t.size(2) * t.size(4), 5
    if t.dim() == 3:
        if t.size(1) != block_size:
            _fail(name, _shape(t), f"dim 1 of a (blocks, block_size, H) cache must be {block_size}")
        if t.size(2) % nkv:
            _fail(name, _shape(t), f"H must be divisible by num_key_value_heads={nkv}")
        if t.size(2) > MAX_3D_CACHE_HIDDEN:
            _fail(
                name,
                _shape(t),
                f"a (blocks, block_size, H) cache needs KV_N*D <= {MAX_3D_CACHE_HIDDEN}; "
                "use the (blocks, KV_N, block_size, D) layout",
            )
        return t.size(0), t.size(2) // nkv, 3
    if t.dim() == 4:
        if q_layout in ("BSH", "BSND"):
            _fail(
                name,
                _shape(t),
                f"a {q_layout} query only takes the (blocks, block_size, H) cache layout",
            )
        if t.size(1) != nkv or t.size(2) != block_size:
            _fail(
                name,
                _shape(t),
                f"a 4-D cache is (blocks, KV_N={nkv}, block_size={block_size}, D)",
            )
        return t.size(0), t.size(3), 4
    _fail(name, _shape(t), "page attention takes a 3-D, 4-D or 5-D (NZ) cache")


def _check_tensor(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(name, type(t).__name__, "must be a tensor")
    if t.dtype not in dtypes:
        _fail(name, t.dtype, f"dtype must be one of {dtypes}")
    if not t.is_contiguous():
        _fail(name, _shape(t), "the kernel does not take non-contiguous tensors (doc)")


def _plan(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    atten_mask: torch.Tensor | None,
    actual_seq_lengths: object,
    actual_seq_lengths_kv: object,
    block_table: torch.Tensor | None,
    query_rope: torch.Tensor | None,
    key_rope: torch.Tensor | None,
    num_heads: int,
    pre_tokens: int,
    next_tokens: int,
    input_layout: str,
    num_key_value_heads: int,
    sparse_mode: int,
    inner_precise: int,
    block_size: int,
    reference: bool,
) -> _Plan:
    """Check the documented constraints (and, with ``reference``, the reference's own limits)."""
    if input_layout not in _LAYOUTS:
        _fail("input_layout", input_layout, f"must be one of {tuple(_LAYOUTS)}")
    q_layout, out_layout, rank = _LAYOUTS[input_layout]
    _check_tensor("query", query, _QUERY_DTYPES)
    if query.dim() != rank:
        _fail("query", _shape(query), f"input_layout={input_layout} needs a {rank}-D query")
    kv_dtypes = (query.dtype, *_KV_QUANT_DTYPES)
    _check_tensor("key", key, kv_dtypes)
    _check_tensor("value", value, (key.dtype,))
    if reference and (query.dtype not in _FLOAT_DTYPES or key.dtype != query.dtype):
        _not_supported(
            "query/key dtype",
            (query.dtype, key.dtype),
            "only float attention with key/value in the query's dtype is implemented",
        )
    nkv = check_head_counts(num_heads, num_key_value_heads)
    check_sparse_mode(sparse_mode)
    if inner_precise not in (0, 1, 2, 3):
        _fail("inner_precise", inner_precise, "must be 0, 1, 2 or 3")

    s_or_t, _, q_dim = _query_geometry(query, q_layout, num_heads)
    rope = query_rope is not None or key_rope is not None
    if rope and (query_rope is None or key_rope is None):
        _fail("query_rope/key_rope", "only one given", "MLA needs both or neither")

    # Query lengths and batch.
    q_starts: tuple[int, ...] | None = None
    if q_layout == "TND":
        if actual_seq_lengths is None:
            _fail("actual_seq_lengths", None, "input_layout=TND requires cumulative query lengths")
        cum = _cumulative("actual_seq_lengths", actual_seq_lengths, s_or_t)
        batch = len(cum)
        q_lens = [b - a for a, b in zip([0, *cum], cum, strict=False)]
        q_starts = tuple([0, *cum[:-1]])
        q_s = max(q_lens)
    else:
        batch, q_s = query.size(0), s_or_t
        if actual_seq_lengths is None or q_s == 1:
            # Doc: "Q_S为1时该参数无效" — ignored at Q_S=1, the S axis otherwise.
            q_lens = [q_s] * batch
        else:
            q_lens = _per_batch("actual_seq_lengths", actual_seq_lengths, batch, q_s)
    if input_layout == "BNSD_BSND" and q_s == 1:
        _fail("input_layout", input_layout, "BNSD_BSND is only supported for Q_S > 1")
    prefill = q_s > 1
    if inner_precise > 1 and not prefill:
        _fail("inner_precise", inner_precise, "Q_S=1 only supports 0 and 1")

    # Key/value geometry and lengths.
    paged = block_table is not None
    kv_starts: tuple[int, ...] | None = None
    cache_4d = False
    if paged:
        assert block_table is not None
        if block_table.dtype != torch.int32 or block_table.dim() != 2:
            _fail(
                "block_table",
                (block_table.dtype, _shape(block_table)),
                "must be a 2-D int32 tensor",
            )
        if block_table.size(0) != batch:
            _fail("block_table", _shape(block_table), f"dim 0 must equal the batch B={batch}")
        if block_size <= 0:
            _fail("block_size", block_size, "page attention (block_table given) needs it > 0")
        check_block_size(block_size, prefill=prefill, rope=rope, sparse_mode=sparse_mode)
        if rope and q_s > MAX_ROPE_PAGED_QUERY_S:
            _fail(
                "query_rope",
                _shape(query_rope),
                f"MLA page attention supports query S 1-{MAX_ROPE_PAGED_QUERY_S}, got {q_s}",
            )
        k_blocks, k_dim, k_rank = _paged_kv_geometry("key", key, q_layout, nkv, block_size)
        v_blocks, v_dim, v_rank = _paged_kv_geometry("value", value, q_layout, nkv, block_size)
        if (v_blocks, v_rank) != (k_blocks, k_rank):
            _fail("value", _shape(value), f"must have the key's block count/layout {_shape(key)}")
        if reference and k_rank == 5:
            _not_supported("key", _shape(key), "NZ caches are not implemented; use ND")
        cache_4d = k_rank == 4
        if actual_seq_lengths_kv is None:
            _fail("actual_seq_lengths_kv", None, "page attention requires per-request KV lengths")
        capacity = block_table.size(1) * block_size
        # Paged: per-batch lengths, also for a TND query (doc, Q_S=1 page attention section).
        kv_lens = _per_batch("actual_seq_lengths_kv", actual_seq_lengths_kv, batch, capacity)
    else:
        if key.dim() != query.dim():
            _fail("key", _shape(key), f"a dense {q_layout} key must have the query's rank")
        kv_s, k_dim = _dense_kv_geometry("key", key, q_layout, batch, nkv)
        v_s, v_dim = _dense_kv_geometry("value", value, q_layout, batch, nkv)
        if value.dim() != key.dim() or v_s != kv_s:
            _fail("value", _shape(value), f"must match the key's shape {_shape(key)} but for D")
        if q_layout == "TND":
            if actual_seq_lengths_kv is None:
                _fail("actual_seq_lengths_kv", None, "a dense TND key needs cumulative lengths")
            cum_kv = _cumulative("actual_seq_lengths_kv", actual_seq_lengths_kv, kv_s)
            if len(cum_kv) != batch:
                _fail(
                    "actual_seq_lengths_kv",
                    cum_kv,
                    f"needs one entry per request (B={batch} from actual_seq_lengths)",
                )
            kv_lens = [b - a for a, b in zip([0, *cum_kv], cum_kv, strict=False)]
            kv_starts = tuple([0, *cum_kv[:-1]])
        elif actual_seq_lengths_kv is None:
            kv_lens = [kv_s] * batch
        else:
            kv_lens = _per_batch("actual_seq_lengths_kv", actual_seq_lengths_kv, batch, kv_s)
    if k_dim != q_dim:
        _fail("key", _shape(key), f"its D ({k_dim}) must equal the query's D ({q_dim})")

    rope_dim = 0
    if rope:
        assert query_rope is not None and key_rope is not None
        _check_tensor(
            "query_rope", query_rope, (query.dtype,) if query.is_floating_point() else _FLOAT_DTYPES
        )
        _check_tensor(
            "key_rope", key_rope, (key.dtype,) if key.is_floating_point() else _FLOAT_DTYPES
        )
        if query_rope.dim() != query.dim() or (
            q_layout != "BSH" and query_rope.shape[:-1] != query.shape[:-1]
        ):
            _fail("query_rope", _shape(query_rope), f"must match the query {_shape(query)} but D")
        rope_dim = query_rope.size(2) // num_heads if q_layout == "BSH" else query_rope.size(-1)
        if q_layout == "BSH" and (
            query_rope.shape[:2] != query.shape[:2] or query_rope.size(2) % num_heads
        ):
            _fail("query_rope", _shape(query_rope), "must be (B, S, N*rope_D)")
        if key_rope.dim() != key.dim() or key_rope.shape[:-1] != key.shape[:-1]:
            _fail("key_rope", _shape(key_rope), f"must match the key {_shape(key)} but D")
        k_rope_dim = key_rope.size(-1)
        if key.dim() == 3 and (paged or q_layout == "BSH"):
            k_rope_dim = key_rope.size(2) // nkv
        elif key.dim() == 5:
            k_rope_dim = key_rope.size(2) * key_rope.size(4)
        if k_rope_dim != rope_dim or rope_dim == 0:
            _fail("key_rope", _shape(key_rope), f"rope D must equal query_rope's ({rope_dim})")

    # Masks. Q_S=1 without rope runs the incremental branch, which ignores sparse_mode (doc);
    # a 2048 template passed there masks nothing (inferred: its contents are never the mask).
    mask_mode = "none"
    ignores_sparse = not prefill and not rope
    if rope:
        if sparse_mode not in (0, 3, 4):
            _fail("sparse_mode", sparse_mode, "with query_rope/key_rope only 0, 3 or 4")
        if sparse_mode == 0 and atten_mask is not None:
            _fail("atten_mask", _shape(atten_mask), "MLA with sparse_mode=0 takes no mask")
    if atten_mask is not None and atten_mask.dtype not in _MASK_DTYPES:
        _fail("atten_mask", atten_mask.dtype, f"dtype must be one of {_MASK_DTYPES}")
    if sparse_mode in (2, 3, 4) and not ignores_sparse:
        template = (MASK_TEMPLATE_SIZE, MASK_TEMPLATE_SIZE)
        if (
            atten_mask is None
            or tuple(atten_mask.shape[-2:]) != template
            or any(d != 1 for d in atten_mask.shape[:-2])
        ):
            _fail(
                "atten_mask",
                _shape(atten_mask),
                f"sparse_mode={sparse_mode} needs the 2048x2048 lower-triangular template "
                "(2048,2048), (1,2048,2048) or (1,1,2048,2048)",
            )
        mask_mode = {2: "left_up", 3: "right_down", 4: "band"}[sparse_mode]
    elif sparse_mode in (0, 1) and atten_mask is not None:
        banded = (pre_tokens, next_tokens) != (INT32_MAX, INT32_MAX)
        if reference and prefill and sparse_mode == 0 and banded:
            # Doc: a sparse_mode=0 mask "表示pre_tokens和next_tokens之间的部分需要计算"; how the
            # two combine is not stated, so the reference does not guess.
            _not_supported(
                "pre_tokens/next_tokens",
                (pre_tokens, next_tokens),
                "with a sparse_mode=0 mask only the defaults are implemented; use sparse_mode=4",
            )
        mask_mode = "dense"
        _dense_mask_view(
            atten_mask, batch, max(q_lens, default=0), max(kv_lens, default=0), prefill=prefill
        )
    elif sparse_mode == 1 and not ignores_sparse:
        _fail("atten_mask", None, "sparse_mode=1 (allMask) needs a full mask")

    return _Plan(
        q_layout=q_layout,
        out_layout=out_layout,
        batch=batch,
        num_heads=num_heads,
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
        block_size=block_size,
        mask_mode=mask_mode,
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
    )


def _dense_mask_view(
    mask: torch.Tensor, batch: int, q_len: int, kv_len: int, *, prefill: bool
) -> torch.Tensor:
    """An explicit mask (sparse_mode 0/1) as ``[1 or B, Qm, KVm]``; True/1 means masked.

    Doc shapes: (1,Q_S,KV_S), (B,1,Q_S,KV_S), (1,1,Q_S,KV_S); (Q_S,KV_S) when Q_S>1 and (B,KV_S)
    when Q_S=1. Q_S/KV_S may be rounded up for alignment, so larger masks are sliced.
    """
    if mask.dim() == 4 and mask.size(1) == 1 and mask.size(0) in (1, batch):
        view = mask[:, 0]
    elif mask.dim() == 3 and mask.size(0) == 1:
        view = mask
    elif mask.dim() == 2 and prefill:
        view = mask[None]
    elif mask.dim() == 2 and not prefill and mask.size(0) == batch:
        view = mask[:, None]
    else:
        _fail(
            "atten_mask",
            _shape(mask),
            f"needs (1,Q_S,KV_S), (B,1,Q_S,KV_S), (1,1,Q_S,KV_S), (Q_S,KV_S) if Q_S>1 or (B,KV_S) "
            f"if Q_S=1, with B={batch}",
        )
    if view.size(1) < q_len or view.size(2) < kv_len:
        _fail(
            "atten_mask",
            _shape(mask),
            f"must cover Q_S={q_len} query rows and KV_S={kv_len} key columns",
        )
    return view


# ---------------------------------------------------------------------------------------------
# The reference computation.
# ---------------------------------------------------------------------------------------------


def _f32(t: torch.Tensor) -> torch.Tensor:
    """fp32 and contiguous in one pass (a permuted view is packed while it is converted)."""
    if t.dtype == torch.float32 and t.is_contiguous():
        return t
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


def _query_bnsd(plan: _Plan, q: torch.Tensor, dim: int) -> torch.Tensor:
    """Any query layout -> ``[B, N, S, dim]`` (TND right-padded to the longest request)."""
    b, n, s = plan.batch, plan.num_heads, plan.q_s
    if plan.q_layout == "BSH":
        return q.view(b, s, n, dim).transpose(1, 2)
    if plan.q_layout == "BSND":
        return q.transpose(1, 2)
    if plan.q_layout == "BNSD":
        return q
    rows = _tnd_rows(plan.q_starts, s, plan.total_tokens, q.device)
    return q.index_select(0, rows.reshape(-1)).view(b, s, n, dim).transpose(1, 2)


def _tnd_rows(starts: tuple[int, ...] | None, width: int, total: int, device: Any) -> torch.Tensor:
    """``[B, width]`` token index of position i of request b (clamped; padding is masked later)."""
    assert starts is not None
    start = torch.tensor(starts, dtype=torch.long, device=device)
    rows = start[:, None] + torch.arange(width, dtype=torch.long, device=device)
    return rows.clamp_(max=max(total - 1, 0))


class _KVSource:
    """Reads fp32 ``[b1-b0, Nkv, L, D]`` key/value chunks: requests ``[b0, b1)``, positions
    ``[j0, j1)``.

    Paged caches are gathered by block id, so paged chunks are whole blocks; position j of
    request b lives at ``cache[block_table[b, j // block_size], j % block_size]`` (doc). -1
    entries past a request's length are read as block 0 and masked out. The gather and the fp32
    conversion write into buffers reused across chunks: a chunk stays in cache from gather to
    matmul, and nothing the size of the cache is ever allocated.
    """

    def __init__(
        self,
        plan: _Plan,
        key: torch.Tensor,
        value: torch.Tensor,
        key_rope: torch.Tensor | None,
        block_table: torch.Tensor | None,
    ) -> None:
        self.plan = plan
        self.key, self.value, self.key_rope = key, value, key_rope
        # MLA passes the latent cache as both key and value: read it once.
        self.shared_kv = plan.v_dim == plan.q_dim and (
            value is key
            or (
                value.data_ptr() == key.data_ptr()
                and value.shape == key.shape
                and value.stride() == key.stride()
            )
        )
        self.block_ids: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        if plan.paged:
            assert block_table is not None
            self.block_ids = _checked_block_ids(plan, block_table, key.size(0))
        elif plan.q_layout == "TND":
            self.rows = _tnd_rows(
                plan.kv_starts, self.extent(0, plan.batch), key.size(0), key.device
            )
        self._buffers: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}

    def extent(self, b0: int, b1: int) -> int:
        """Positions to visit for requests [b0, b1): the longest, in whole blocks when paged."""
        longest = max(self.plan.kv_lens[b0:b1], default=0)
        bs = self.plan.block_size if self.plan.paged else 1
        return -(-longest // bs) * bs

    def _buffer(self, tag: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (tag, shape, dtype)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=dtype, device=self.key.device)
        return self._buffers[key]

    def _f32(self, tag: str, view: torch.Tensor) -> torch.Tensor:
        """``view`` converted to a contiguous fp32 buffer (transposes are packed on the way)."""
        return self._buffer(tag + "32", tuple(view.shape), torch.float32).copy_(view)

    def _read(
        self, tag: str, t: torch.Tensor, b0: int, b1: int, j0: int, j1: int, dim: int
    ) -> torch.Tensor:
        p = self.plan
        b, nkv, length = b1 - b0, p.num_kv_heads, j1 - j0
        if p.paged:
            assert self.block_ids is not None
            bs = p.block_size
            ids = self.block_ids[b0:b1, j0 // bs : j1 // bs].reshape(-1)
            gathered = self._buffer(tag, (ids.numel(), *t.shape[1:]), t.dtype)
            torch.index_select(t, 0, ids, out=gathered)
            if p.cache_4d:  # [b*nb, Nkv, bs, D] -> [b, Nkv, nb, bs, D] -> [b, Nkv, L, D]
                view = gathered.view(b, length // bs, nkv, bs, dim).transpose(1, 2)
                return self._f32(tag, view).view(b, nkv, length, dim)
            return self._f32(tag, gathered.view(b, length, nkv, dim).transpose(1, 2))
        if p.q_layout == "TND":
            assert self.rows is not None
            rows = self.rows[b0:b1, j0:j1].reshape(-1)
            view = t.index_select(0, rows).view(b, length, nkv, dim).transpose(1, 2)
        elif p.q_layout == "BSH":
            view = t[b0:b1, j0:j1].view(b, length, nkv, dim).transpose(1, 2)
        elif p.q_layout == "BSND":
            view = t[b0:b1, j0:j1].transpose(1, 2)
        else:
            view = t[b0:b1, :, j0:j1]
        return self._f32(tag, view)

    def read(self, b0: int, b1: int, j0: int, j1: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.plan
        k = self._read("k", self.key, b0, b1, j0, j1, p.q_dim)
        v = k if self.shared_kv else self._read("v", self.value, b0, b1, j0, j1, p.v_dim)
        if self.key_rope is not None:
            rope = self._read("r", self.key_rope, b0, b1, j0, j1, p.rope_dim)
            k = torch.cat([k, rope], dim=-1)
        return k, v


def _check_block_ids(
    kv_lens: Sequence[int], block_size: int, ids: torch.Tensor, num_blocks: int
) -> None:
    """Every block slot a request's length reaches must hold a real block id (doc: the kernel
    does not validate ids, so a bad one reads garbage; the reference refuses instead)."""
    needed = torch.tensor([-(-n // block_size) for n in kv_lens], dtype=torch.long)
    in_use = torch.arange(ids.size(1))[None, :] < needed[:, None]
    bad = in_use & ((ids < 0) | (ids >= num_blocks))
    if bool(bad.any()):
        b, c = (int(x) for x in bad.nonzero()[0])
        _fail(
            "block_table",
            f"[{b}, {c}] = {int(ids[b, c])}",
            f"request {b} needs block slot {c} for its {kv_lens[b]} tokens; ids must be "
            f"in [0, {num_blocks})",
        )


def _checked_block_ids(plan: _Plan, block_table: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Block ids as int64 on the table's device, -1 padding read as block 0 (masked later)."""
    ids = block_table.to(device="cpu", dtype=torch.long)
    _check_block_ids(plan.kv_lens, plan.block_size, ids, num_blocks)
    return ids.clamp_(min=0).to(block_table.device)


class _Masker:
    """``[b, rows, cols]`` True where query row i of a request may attend KV position j."""

    def __init__(self, plan: _Plan, atten_mask: torch.Tensor | None, device: Any) -> None:
        self.plan, self.device = plan, device
        self.q_len = torch.tensor(plan.q_lens, device=device)[:, None, None]
        self.kv_len = torch.tensor(plan.kv_lens, device=device)[:, None, None]
        self.dense: torch.Tensor | None = None
        if plan.mask_mode == "dense":
            assert atten_mask is not None
            view = _dense_mask_view(
                atten_mask, plan.batch, max(plan.q_lens), max(plan.kv_lens), prefill=plan.q_s > 1
            )
            self.dense = view.to(device=device, dtype=torch.bool)

    def needed(self, b0: int, b1: int, i1: int, j1: int) -> bool:
        """False when every row < i1 of requests [b0, b1) sees every position < j1."""
        p = self.plan
        return p.mask_mode != "none" or min(p.q_lens[b0:b1]) < i1 or min(p.kv_lens[b0:b1]) < j1

    def keep(self, b0: int, b1: int, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        p = self.plan
        i = torch.arange(i0, i1, device=self.device)[None, :, None]
        j = torch.arange(j0, j1, device=self.device)[None, None, :]
        q_len, kv_len = self.q_len[b0:b1], self.kv_len[b0:b1]
        keep = (j < kv_len) & (i < q_len)
        # Causal modes anchor on each request's own lengths: row i's diagonal is i + (kv - q).
        diagonal = i + (kv_len - q_len)
        if p.mask_mode == "left_up":  # masked iff j > i
            keep &= j <= i
        elif p.mask_mode == "right_down":  # masked iff j > i + (kv_len - q_len)
            keep &= j <= diagonal
        elif p.mask_mode == "band":
            # Band anchored at the bottom-right, both ends inclusive (inferred from
            # "参数起点为右下角"; rejected alternative: the top-left anchor of sparse_mode 0).
            keep &= (j >= diagonal - p.pre_tokens) & (j <= diagonal + p.next_tokens)
        elif self.dense is not None:
            dense = self.dense if self.dense.size(0) == 1 else self.dense[b0:b1]
            part = dense[:, i0:i1, j0:j1]
            cols = part.size(2)
            keep[..., :cols] &= ~part
            keep[..., cols:] = False
        return keep


def _attention(
    plan: _Plan,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    query_rope: torch.Tensor | None,
    key_rope: torch.Tensor | None,
    atten_mask: torch.Tensor | None,
    block_table: torch.Tensor | None,
    scale: float,
    sink: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``[B, N, S, Dv]`` output and ``[B, N, S]`` LSE in fp32.

    Loops: request groups (so a chunk stays cache-sized at any batch), query-row chunks (bounds
    the score tile in prefill), KV chunks with an online softmax (running max, denominator and
    weighted sum, rescaled as larger logits arrive — the standard flash-attention recurrence).
    """
    b, n, nkv, s, dv = plan.batch, plan.num_heads, plan.num_kv_heads, plan.q_s, plan.v_dim
    g = n // nkv
    device = query.device
    q = _query_bnsd(plan, query, plan.q_dim)
    if query_rope is not None:
        q = torch.cat([q, _query_bnsd(plan, query_rope, plan.rope_dim)], dim=-1)
    # Scale q once: scale*(q.k) == (scale*q).k up to rounding. Head h reads KV head h // g
    # (inferred; matches sglang's repeat_interleave fallback — rejected: h % nkv).
    q = (_f32(q) * scale).view(b, nkv, g, s, q.size(-1))

    out = torch.zeros(b, nkv, g, s, dv, dtype=torch.float32, device=device)
    lse = torch.full((b, nkv, g, s), -math.inf, dtype=torch.float32, device=device)
    source = _KVSource(plan, key, value, key_rope, block_table)
    masker = _Masker(plan, atten_mask, device)
    sink_f = None if sink is None else sink.to(device=device, dtype=torch.float32).view(nkv, g, 1)

    per_token = nkv * (plan.q_dim + plan.rope_dim)  # gathered K elements per request and position
    step = plan.block_size if plan.paged else 1
    group = max(1, min(b, _KV_CHUNK_ELEMS // max(1, per_token * step)))
    for b0 in range(0, b, group):
        b1 = min(b, b0 + group)
        extent = source.extent(b0, b1)
        kv_chunk = max(step, _KV_CHUNK_ELEMS // max(1, (b1 - b0) * per_token) // step * step)
        width = min(kv_chunk, max(extent, 1))
        rows_per_chunk = max(1, _SCORE_CHUNK_ELEMS // ((b1 - b0) * n * width))
        for i0 in range(0, s, rows_per_chunk):
            i1 = min(s, i0 + rows_per_chunk)
            o, m = _attend_rows(
                q[b0:b1, :, :, i0:i1], source, masker, sink_f, b0, b1, i0, i1, extent, kv_chunk
            )
            out[b0:b1, :, :, i0:i1] = o
            lse[b0:b1, :, :, i0:i1] = m
    return out.view(b, n, s, dv), lse.view(b, n, s)


def _attend_rows(
    q: torch.Tensor,
    source: _KVSource,
    masker: _Masker,
    sink: torch.Tensor | None,
    b0: int,
    b1: int,
    i0: int,
    i1: int,
    extent: int,
    kv_chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of query rows [i0, i1) of requests [b0, b1): fp32 ``[b, Nkv, g, rows, Dv]``
    output and ``[b, Nkv, g, rows]`` LSE."""
    bb, nkv, g, rows, _ = q.shape
    dv = source.plan.v_dim
    q = q.reshape(bb, nkv, g * rows, -1)
    if sink is None:
        m = torch.full((bb, nkv, g * rows, 1), -math.inf, device=q.device)
        denom = torch.zeros(bb, nkv, g * rows, 1, device=q.device)
    else:
        # A learnable sink is one extra logit per head that takes probability mass but adds no
        # value (inferred from "吸收Attention Score"); seeding the running state with it is exact.
        m = sink.expand(nkv, g, rows).reshape(1, nkv, g * rows, 1).repeat(bb, 1, 1, 1)
        denom = torch.ones(bb, nkv, g * rows, 1, device=q.device)
    acc = torch.zeros(bb, nkv, g * rows, dv, device=q.device)
    for j0 in range(0, extent, kv_chunk):
        j1 = min(extent, j0 + kv_chunk)
        k, v = source.read(b0, b1, j0, j1)
        scores = torch.matmul(q, k.transpose(-1, -2))  # [b, Nkv, g*rows, L]
        if masker.needed(b0, b1, i1, j1):
            keep = masker.keep(b0, b1, i0, i1, j0, j1)
            scores.view(bb, nkv, g, rows, -1).masked_fill_(~keep[:, None, None], -math.inf)
        m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
        # Rows with nothing visible yet keep max -inf; use 0 there so exp() gives 0, not nan.
        m_safe = m_new.masked_fill(torch.isinf(m_new), 0.0)
        p = scores.sub_(m_safe).exp_()
        alpha = torch.exp(m - m_safe)
        denom.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
        acc.mul_(alpha).add_(torch.matmul(p, v))
        m = m_new
    # denom >= 1 wherever a logit was visible (the max contributes exp(0)); rows with none give
    # output 0 and LSE -inf (the reference's choice for fully masked rows, inferred).
    visible = denom > 0
    out = torch.where(visible, acc / denom.clamp_min(1e-30), 0.0)
    lse = torch.where(visible, m + torch.log(denom.clamp_min(1e-30)), -math.inf)
    return out.view(bb, nkv, g, rows, dv), lse.view(bb, nkv, g, rows)


def _to_output_layout(
    plan: _Plan, out: torch.Tensor, lse: torch.Tensor, dtype: torch.dtype, want_lse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, s, dv = plan.batch, plan.num_heads, plan.q_s, plan.v_dim
    if plan.out_layout == "TND":
        t = plan.total_tokens
        rows = _tnd_rows(plan.q_starts, s, t, out.device).reshape(-1)
        valid = (torch.arange(s)[None, :] < torch.tensor(plan.q_lens)[:, None]).reshape(-1)
        valid = valid.to(out.device)
        # Tokens past the last cumulative length get 0 and LSE -inf (inferred).
        attn = torch.zeros(t, n, dv, dtype=dtype, device=out.device)
        attn[rows[valid]] = out.transpose(1, 2).reshape(b * s, n, dv)[valid].to(dtype)
        lse_t = torch.full((t, n, 1), -math.inf, dtype=torch.float32, device=out.device)
        lse_t[rows[valid]] = lse.transpose(1, 2).reshape(b * s, n, 1)[valid]
        return attn, (lse_t if want_lse else _no_lse(out.device))
    if plan.out_layout == "BSH":
        attn = out.transpose(1, 2).reshape(b, s, n * dv)
    elif plan.out_layout == "BSND":
        attn = out.transpose(1, 2)
    else:
        attn = out
    lse_out = lse.unsqueeze(-1) if want_lse else _no_lse(out.device)
    return attn.to(dtype).contiguous(), lse_out


def _no_lse(device: Any) -> torch.Tensor:
    # The doc says "shape为[1]的值为0的Tensor"; the meta registration returns shape [0]. The doc
    # wins here: a [1] zero tensor.
    return torch.zeros(1, dtype=torch.float32, device=device)


# ---------------------------------------------------------------------------------------------
# v1
# ---------------------------------------------------------------------------------------------

# Arguments the reference does not model; each must keep its default (None, or 0 for modes).
_V1_UNSUPPORTED = (
    "pse_shift",
    "dequant_scale1",
    "quant_scale1",
    "dequant_scale2",
    "quant_scale2",
    "quant_offset2",
    "antiquant_scale",
    "antiquant_offset",
    "key_antiquant_scale",
    "key_antiquant_offset",
    "value_antiquant_scale",
    "value_antiquant_offset",
    "query_padding_size",
    "kv_padding_size",
    "key_shared_prefix",
    "value_shared_prefix",
    "actual_shared_prefix_len",
    "key_rope_antiquant_scale",
    "antiquant_mode",
    "key_antiquant_mode",
    "value_antiquant_mode",
)
_V2_UNSUPPORTED = (
    "pse_shift",
    "dequant_scale_query",
    "dequant_scale_key",
    "dequant_offset_key",
    "dequant_scale_value",
    "dequant_offset_value",
    "dequant_scale_key_rope",
    "quant_scale_out",
    "quant_offset_out",
    "quant_scale_p",
    "query_quant_mode",
    "key_quant_mode",
    "value_quant_mode",
    "query_dtype",
    "key_dtype",
    "value_dtype",
    "query_rope_dtype",
    "key_rope_dtype",
    "key_shared_prefix_dtype",
    "value_shared_prefix_dtype",
    "dequant_scale_query_dtype",
    "dequant_scale_key_dtype",
    "dequant_scale_value_dtype",
    "dequant_scale_key_rope_dtype",
    "out_dtype",
)


def _reject_unsupported(op: str, a: dict[str, Any], names: tuple[str, ...]) -> None:
    """The reference refuses (never ignores) arguments it does not model."""
    for name in names:
        value = a[name]
        is_default = value is None if not name.endswith("_mode") else value == 0
        if not is_default:
            shown = _shape(value) if isinstance(value, torch.Tensor) else value
            raise ValueError(
                f"{op}: {name}={shown!r} is not supported by the reference; it implements float "
                "attention without quantisation, pse_shift, shared prefixes, left padding or "
                "dtype overrides"
            )


def _plan_v1(a: dict[str, Any], *, reference: bool) -> _Plan:
    if reference:
        _reject_unsupported(_OP, a, _V1_UNSUPPORTED)
    return _plan(
        a["query"],
        a["key"],
        a["value"],
        atten_mask=a["atten_mask"],
        actual_seq_lengths=a["actual_seq_lengths"],
        actual_seq_lengths_kv=a["actual_seq_lengths_kv"],
        block_table=a["block_table"],
        query_rope=a["query_rope"],
        key_rope=a["key_rope"],
        num_heads=a["num_heads"],
        pre_tokens=a["pre_tokens"],
        next_tokens=a["next_tokens"],
        input_layout=a["input_layout"],
        num_key_value_heads=a["num_key_value_heads"],
        sparse_mode=a["sparse_mode"],
        inner_precise=a["inner_precise"],
        block_size=a["block_size"],
        reference=reference,
    )


def _run_v1(
    a: dict[str, Any], sink: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference for a complete v1 argument dict (every parameter present)."""
    plan = _plan_v1(a, reference=True)
    query = a["query"]
    if query.numel() == 0:  # doc: an empty query returns at once
        return query.new_empty(_out_shape(plan, query)), _no_lse(query.device)
    out, lse = _attention(
        plan,
        query,
        a["key"],
        a["value"],
        query_rope=a["query_rope"],
        key_rope=a["key_rope"],
        atten_mask=a["atten_mask"],
        block_table=a["block_table"],
        scale=float(a["scale"]),
        sink=sink,
    )
    return _to_output_layout(plan, out, lse, query.dtype, bool(a["softmax_lse_flag"]))


def _out_shape(plan: _Plan, query: torch.Tensor) -> tuple[int, ...]:
    b, n, s, dv = plan.batch, plan.num_heads, plan.q_s, plan.v_dim
    return {
        "BSH": (b, s, n * dv),
        "BSND": (b, s, n, dv),
        "BNSD": (b, n, s, dv),
        "TND": (query.size(0), n, dv),
    }[plan.out_layout]


def _bind(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """All of ``op``'s parameters, defaults filled in, as the validator sees the call."""
    bound = inspect.signature(op.reference).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _validate_v1(*args: Any, **kwargs: Any) -> None:
    _plan_v1(_bind(fused_infer_attention_score, args, kwargs), reference=False)


@npu_op("npu_fused_infer_attention_score", validate=_validate_v1)
def fused_infer_attention_score(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    pse_shift: torch.Tensor | None = None,
    atten_mask: torch.Tensor | None = None,
    actual_seq_lengths: Sequence[int] | None = None,
    actual_seq_lengths_kv: Sequence[int] | None = None,
    dequant_scale1: torch.Tensor | None = None,
    quant_scale1: torch.Tensor | None = None,
    dequant_scale2: torch.Tensor | None = None,
    quant_scale2: torch.Tensor | None = None,
    quant_offset2: torch.Tensor | None = None,
    antiquant_scale: torch.Tensor | None = None,
    antiquant_offset: torch.Tensor | None = None,
    key_antiquant_scale: torch.Tensor | None = None,
    key_antiquant_offset: torch.Tensor | None = None,
    value_antiquant_scale: torch.Tensor | None = None,
    value_antiquant_offset: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    query_padding_size: torch.Tensor | None = None,
    kv_padding_size: torch.Tensor | None = None,
    key_shared_prefix: torch.Tensor | None = None,
    value_shared_prefix: torch.Tensor | None = None,
    actual_shared_prefix_len: Sequence[int] | None = None,
    query_rope: torch.Tensor | None = None,
    key_rope: torch.Tensor | None = None,
    key_rope_antiquant_scale: torch.Tensor | None = None,
    num_heads: int = 1,
    scale: float = 1.0,
    pre_tokens: int = INT32_MAX,
    next_tokens: int = INT32_MAX,
    input_layout: str = "BSH",
    num_key_value_heads: int = 0,
    sparse_mode: int = 0,
    inner_precise: int = 0,
    block_size: int = 0,
    antiquant_mode: int = 0,
    key_antiquant_mode: int = 0,
    value_antiquant_mode: int = 0,
    softmax_lse_flag: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch_npu.npu_fused_infer_attention_score``; parameters as in the 2.14 op yaml.

    ``attention_out = softmax(scale * (q·kᵀ [+ q_rope·k_ropeᵀ]) + mask) · v`` (doc formula), per
    request and query head; Q_S=1 is the IncreFlashAttention branch, Q_S>1 PromptFlashAttention.

    - **Layouts** (``input_layout``): BSH, BSND, BNSD, BNSD_BSND (BNSD in, BSND out, Q_S>1 only),
      TND. The output has the query's layout (BSND for BNSD_BSND) with the value's D (meta
      ``get_value_d``), and the query's dtype. For TND, Q_S is the longest request (inferred).
    - **Lengths**: ``actual_seq_lengths`` is cumulative and required for TND (its length is B);
      otherwise per batch (1 value broadcasts, else the first B) and ignored when Q_S=1.
      ``actual_seq_lengths_kv`` is cumulative for a dense TND key and **per batch** with page
      attention (also for a TND query — doc, Q_S=1 page-attention section); page attention
      requires it. Rows past a request's query length come out 0 (inferred).
    - **GQA**: ``num_key_value_heads`` (0 = ``num_heads``) divides ``num_heads``, ratio ≤ 64.
      Query head h reads KV head ``h // (N/Nkv)`` (inferred from sglang's ``repeat_interleave``
      fallback; rejected alternative: ``h % Nkv``).
    - **Page attention**: ``block_table`` int32 ``[B, ≥ max blocks]`` (-1 allowed past a
      request's length), ``block_size``, caches ``(blocks, block_size, Nkv*D)`` (Nkv*D ≤ 65535)
      or, for BNSD/TND queries, ``(blocks, Nkv, block_size, D)``. Token j of request b is
      ``cache[block_table[b, j // block_size], j % block_size]``. Block-size rules:
      :func:`sglang_ascend_fia.ops.check_block_size`.
    - **Masks** (True/1 = masked): ``sparse_mode`` 0 — ``atten_mask`` None means none, else an
      explicit mask; 1 — explicit mask required; 2 — leftUpCausal, masked iff ``j > i``;
      3 — rightDownCausal, masked iff ``j > i + (kv_len - q_len)`` per request; 4 — band around
      that diagonal, kept iff ``diag - pre_tokens ≤ j ≤ diag + next_tokens`` (both ends
      inclusive: inferred). Modes 2-4 take the 2048×2048 template, whose contents are not read.
      Q_S=1 without rope ignores ``sparse_mode`` (doc), so the template then masks nothing.
    - **MLA**: ``query_rope``/``key_rope`` add ``q_rope·k_ropeᵀ`` to the scores; key_rope has
      the key's layout. With page attention query S must be 1-16 and block_size 16 or 128.
    - **LSE** (``softmax_lse_flag``): fp32 ``(B, N, S, 1)``, ``(T, N, 1)`` for TND: log Σ exp
      of the scaled scores over visible keys. Otherwise a ``[1]`` zero tensor (the doc's shape;
      the meta registration says ``[0]``). Rows with no visible key give output 0 and LSE -inf
      (inferred: the doc leaves such rows unspecified unless inner_precise bit 1 is set).
    - ``inner_precise`` picks kernel precision and row-invalid correction; the reference always
      computes in fp32 and zeroes fully masked rows, which is what the corrected modes ask for.

    Not modelled: quantisation/antiquantisation arguments, ``pse_shift``, shared prefixes,
    query/kv left padding, NZ caches and int8 inputs raise ``ValueError`` ("not supported by the
    reference"). fp32 inputs are accepted by the reference only (the kernel takes fp16/bf16).
    """
    return _run_v1(dict(locals()))


# ---------------------------------------------------------------------------------------------
# v2
# ---------------------------------------------------------------------------------------------

# v2 name -> v1 name, for the arguments the two versions share under different names.
_V2_RENAMES = {
    "actual_seq_qlen": "actual_seq_lengths",
    "actual_seq_kvlen": "actual_seq_lengths_kv",
    "num_query_heads": "num_heads",
    "softmax_scale": "scale",
    "return_softmax_lse": "softmax_lse_flag",
}
_V2_SHARED = (
    "query",
    "key",
    "value",
    "query_rope",
    "key_rope",
    "atten_mask",
    "block_table",
    "num_key_value_heads",
    "pre_tokens",
    "next_tokens",
    "input_layout",
    "sparse_mode",
    "block_size",
    "inner_precise",
)


def _v2_to_v1(a: dict[str, Any], *, reference: bool) -> dict[str, Any]:
    """Check the v2-only arguments, then express the call with v1's names and defaults."""
    if reference:
        _reject_unsupported(f"{_OP}_v2", a, _V2_UNSUPPORTED)
        if a["input_layout"] in _V2_ONLY_LAYOUTS:
            _not_supported(
                "input_layout", a["input_layout"], "the N-first output layouts are not implemented"
            )
    sink = a["learnable_sink"]
    if sink is not None:
        n = a["num_query_heads"]
        if not isinstance(sink, torch.Tensor) or tuple(sink.shape) != (n,):
            _fail("learnable_sink", _shape(sink), f"must have shape (num_query_heads,) = ({n},)")
    v1 = {
        name: p.default
        for name, p in inspect.signature(fused_infer_attention_score.reference).parameters.items()
    }
    v1.update({name: a[name] for name in _V2_SHARED})
    v1.update({old: a[new] for new, old in _V2_RENAMES.items()})
    return v1


def _validate_v2(*args: Any, **kwargs: Any) -> None:
    a = _bind(fused_infer_attention_score_v2, args, kwargs)
    if a["input_layout"] in _V2_ONLY_LAYOUTS:
        # Documented v2 layouts the plan does not model: check what does not depend on them.
        check_head_counts(a["num_query_heads"], a["num_key_value_heads"])
        check_sparse_mode(a["sparse_mode"])
        return
    _plan_v1(_v2_to_v1(a, reference=False), reference=False)


@npu_op("npu_fused_infer_attention_score_v2", validate=_validate_v2)
def fused_infer_attention_score_v2(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    query_rope: torch.Tensor | None = None,
    key_rope: torch.Tensor | None = None,
    pse_shift: torch.Tensor | None = None,
    atten_mask: torch.Tensor | None = None,
    actual_seq_qlen: Sequence[int] | None = None,
    actual_seq_kvlen: Sequence[int] | None = None,
    block_table: torch.Tensor | None = None,
    dequant_scale_query: torch.Tensor | None = None,
    dequant_scale_key: torch.Tensor | None = None,
    dequant_offset_key: torch.Tensor | None = None,
    dequant_scale_value: torch.Tensor | None = None,
    dequant_offset_value: torch.Tensor | None = None,
    dequant_scale_key_rope: torch.Tensor | None = None,
    quant_scale_out: torch.Tensor | None = None,
    quant_offset_out: torch.Tensor | None = None,
    quant_scale_p: torch.Tensor | None = None,
    learnable_sink: torch.Tensor | None = None,
    num_query_heads: int = 1,
    num_key_value_heads: int = 0,
    softmax_scale: float = 1.0,
    pre_tokens: int = INT32_MAX,
    next_tokens: int = INT32_MAX,
    input_layout: str = "BSH",
    sparse_mode: int = 0,
    block_size: int = 0,
    query_quant_mode: int = 0,
    key_quant_mode: int = 0,
    value_quant_mode: int = 0,
    inner_precise: int = 0,
    return_softmax_lse: bool = False,
    query_dtype: int | None = None,
    key_dtype: int | None = None,
    value_dtype: int | None = None,
    query_rope_dtype: int | None = None,
    key_rope_dtype: int | None = None,
    key_shared_prefix_dtype: int | None = None,
    value_shared_prefix_dtype: int | None = None,
    dequant_scale_query_dtype: int | None = None,
    dequant_scale_key_dtype: int | None = None,
    dequant_scale_value_dtype: int | None = None,
    dequant_scale_key_rope_dtype: int | None = None,
    out_dtype: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch_npu.npu_fused_infer_attention_score_v2``: FIA with the v2 argument names.

    Same semantics as :func:`fused_infer_attention_score` (the v2 docstring repeats the v1
    formula and constraints), delegated to the same core under the renames
    ``num_query_heads``→``num_heads``, ``softmax_scale``→``scale``,
    ``actual_seq_qlen``/``actual_seq_kvlen``→``actual_seq_lengths``/``actual_seq_lengths_kv``,
    ``return_softmax_lse``→``softmax_lse_flag``.

    ``learnable_sink`` (shape ``(Q_N,)``) adds one logit per query head to every softmax
    denominator and contributes no value: ``p_j = exp(s_j) / (exp(sink_h) + Σ_k exp(s_k))``
    (inferred from "通过可学习的Sink Token起到吸收Attention Score的作用"; the returned LSE includes
    the sink term, also inferred). The doc limits sinks to TND with value D ≤ 128, but sglang
    0.5.23 also passes them to BSND decode, so the reference does not enforce the layout.

    The quantisation arguments and the reserved ``*_dtype``/``out_dtype`` must keep their
    defaults ("not supported by the reference"); the ``*_NBSD``/``NTD`` layouts are not modelled.
    """
    a = dict(locals())
    return _run_v1(_v2_to_v1(a, reference=True), sink=learnable_sink)
