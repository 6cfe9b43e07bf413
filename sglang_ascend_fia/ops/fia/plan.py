"""Validation and geometry of an FIA call: every documented kernel constraint, checked before
either implementation runs (so on an NPU too), and the per-request plan the reference executes.

Split from :mod:`sglang_ascend_fia.ops.attention` so the rules can be read on their own. Doc
sources are listed there.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch

from sglang_ascend_fia.ops._fia_rules import (
    MASK_TEMPLATE_SIZE,
    MAX_3D_CACHE_HIDDEN,
    OP,
    TREE_MASK_SPARSE_MODE,
    CallShape,
    check_block_size,
    check_head_counts,
    check_mla,
    check_sizes,
    check_sparse_mode,
    check_tnd_dense,
)
from sglang_ascend_fia.ops._fia_rules import fail as _fail

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
# fp32 is accepted off the NPU only; see the dtype policy below.
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_QUERY_DTYPES = (*_FLOAT_DTYPES, torch.int8)
_KV_QUANT_DTYPES = (torch.int8, torch.int32)  # int8, and int4 packed in int32 (doc)
_MASK_DTYPES = (torch.bool, torch.int8, torch.uint8)

_OP = OP

# ---------------------------------------------------------------------------------------------
# dtype policy (decided for the project, shared by every op that documents fp16/bf16 only)
# ---------------------------------------------------------------------------------------------
# The kernels take float16/bfloat16 (FIA also int8) inputs. The references also take float32 so
# that the CPU test bed, which runs whole models in fp32, can compare against HF and brute force
# at fp32 tolerance. float32 is therefore accepted only off the NPU: on an NPU tensor it is
# refused, as the kernel would refuse it. A "bf16 only" rule accepts bf16, and float32 off the
# NPU; float16 is refused everywhere. The device check is a string compare: no import, no sync.


def refuse_npu_float32(op: str, argument: str, tensor: torch.Tensor, kernel_dtypes: str) -> None:
    """``ValueError`` for a float32 ``tensor`` on an NPU; the kernel takes ``kernel_dtypes``."""
    if tensor.dtype == torch.float32 and tensor.device.type == "npu":
        raise ValueError(
            f"{op}: {argument}={tensor.dtype!r} is not allowed on an NPU tensor: the kernel takes "
            f"{kernel_dtypes}; float32 is accepted off the NPU only, by the reference"
        )


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
    mask_mode: str  # none | dense | left_up | right_down | band | tree (refused by the reference)
    pre_tokens: int
    next_tokens: int


def _is_integral(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex())


def _int_list(name: str, value: object) -> list[int]:
    """Lengths as ints: a list/tuple of ints or a 1-D integer tensor, all non-negative."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype == torch.bool or not _is_integral(value):
            _fail(name, (value.dtype, _shape(value)), "must be a list of ints or a 1-D int tensor")
        out = [int(v) for v in value.tolist()]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        try:
            out = [operator.index(v) for v in value]
        except TypeError:
            _fail(name, value, "must be a list of ints")
    else:
        _fail(name, value, "must be a list of ints")
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
    version: int = 1,
) -> _Plan:
    """Check the documented constraints (and, with ``reference``, the reference's own limits).

    ``version`` picks the doc (v1 or v2 op) where the two state different MLA/TND rules.
    """
    if input_layout not in _LAYOUTS:
        _fail("input_layout", input_layout, f"must be one of {tuple(_LAYOUTS)}")
    q_layout, out_layout, rank = _LAYOUTS[input_layout]
    _check_tensor("query", query, _QUERY_DTYPES)
    refuse_npu_float32(_OP, "query", query, "float16, bfloat16 or int8 queries")
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
    rope = query_rope is not None or key_rope is not None
    nkv = check_head_counts(num_heads, num_key_value_heads, mla=rope)
    check_sparse_mode(sparse_mode, rope=rope, version=version)
    if inner_precise not in (0, 1, 2, 3):
        _fail("inner_precise", inner_precise, "must be 0, 1, 2 or 3")

    s_or_t, _, q_dim = _query_geometry(query, q_layout, num_heads)
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
    if not prefill and query.dtype == key.dtype == torch.int8:
        _fail("query/key/value dtype", torch.int8, "Q_S=1 does not support all-int8 inputs")

    # Key/value geometry and lengths.
    paged = block_table is not None
    kv_starts: tuple[int, ...] | None = None
    cache_4d = False
    if paged:
        assert block_table is not None
        kv_lens, v_dim, cache_4d = _paged_lengths(
            query,
            key,
            value,
            block_table,
            actual_seq_lengths_kv,
            q_layout=q_layout,
            batch=batch,
            nkv=nkv,
            q_dim=q_dim,
            prefill=prefill,
            rope=rope,
            sparse_mode=sparse_mode,
            block_size=block_size,
            reference=reference,
        )
    else:
        if key.dim() != query.dim():
            _fail("key", _shape(key), f"a dense {q_layout} key must have the query's rank")
        kv_s, k_dim = _dense_kv_geometry("key", key, q_layout, batch, nkv)
        v_s, v_dim = _dense_kv_geometry("value", value, q_layout, batch, nkv)
        if value.dim() != key.dim() or v_s != kv_s:
            _fail("value", _shape(value), f"must match the key's shape {_shape(key)} but for D")
        if k_dim != q_dim:
            _fail("key", _shape(key), f"its D ({k_dim}) must equal the query's D ({q_dim})")
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

    rope_dim = 0
    if rope:
        assert query_rope is not None and key_rope is not None
        rope_dim = _rope_dim(query, key, query_rope, key_rope, q_layout, num_heads, nkv, paged)

    tnd_dense = q_layout == "TND" and not paged
    call = CallShape(
        version=version,
        input_layout=input_layout,
        q_layout=q_layout,
        q_s=q_s,
        num_heads=num_heads,
        num_kv_heads=nkv,
        q_dim=q_dim,
        v_dim=v_dim,
        rope_dim=rope_dim,
        paged=paged,
        nz=paged and key.dim() == 5,
        int8=torch.int8 in (query.dtype, key.dtype),
        sparse_mode=sparse_mode,
        mask_shape=_shape(atten_mask),  # type: ignore[arg-type]
        q_lens=tuple(q_lens),
        kv_lens=tuple(kv_lens),
        tokens=(s_or_t, key.size(0), value.size(0)) if tnd_dense else (),
        pre_tokens=pre_tokens,
        next_tokens=next_tokens,
    )
    check_sizes(call)
    if tnd_dense:
        if query.dtype not in (torch.bfloat16, torch.float32):
            _fail(
                "query",
                query.dtype,
                "TND without page attention takes bfloat16 only (float32 off the NPU, for the "
                "reference)",
            )
        check_tnd_dense(call)
    elif rope:
        check_mla(call)

    mask_mode = _mask_mode(
        atten_mask,
        sparse_mode=sparse_mode,
        batch=batch,
        q_lens=q_lens,
        kv_lens=kv_lens,
        prefill=prefill,
        rope=rope,
        two_d_mask_ok=q_layout != "TND" and q_dim == v_dim and not rope,
        block_table=block_table,
        block_size=block_size,
    )
    banded = (pre_tokens, next_tokens) != (INT32_MAX, INT32_MAX)
    if reference and prefill and mask_mode == "dense" and sparse_mode == 0 and banded:
        # Doc: a sparse_mode=0 mask "表示pre_tokens和next_tokens之间的部分需要计算"; where that
        # band is anchored (top-left or bottom-right) is not stated, so the reference does not
        # guess (rejected: the bottom-right anchor of sparse_mode=4).
        _not_supported(
            "pre_tokens/next_tokens",
            (pre_tokens, next_tokens),
            "with a sparse_mode=0 mask only the defaults are implemented; use sparse_mode=4",
        )
    if reference and sparse_mode == TREE_MASK_SPARSE_MODE:
        _not_supported("sparse_mode", sparse_mode, "the treeMask layout is not documented")

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


def _paged_lengths(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_table: torch.Tensor,
    actual_seq_lengths_kv: object,
    *,
    q_layout: str,
    batch: int,
    nkv: int,
    q_dim: int,
    prefill: bool,
    rope: bool,
    sparse_mode: int,
    block_size: int,
    reference: bool,
) -> tuple[list[int], int, bool]:
    """Page-attention checks; returns (per-request KV lengths, value D, 4-D cache)."""
    if block_table.dtype != torch.int32 or block_table.dim() != 2:
        _fail("block_table", (block_table.dtype, _shape(block_table)), "must be a 2-D int32 tensor")
    if block_table.size(0) != batch:
        _fail("block_table", _shape(block_table), f"dim 0 must equal the batch B={batch}")
    if block_size <= 0:
        _fail("block_size", block_size, "page attention (block_table given) needs it > 0")
    if prefill and query.dtype == torch.int8:
        _fail("query", query.dtype, "page attention with Q_S>1 does not take an int8 query")
    if not prefill and key.dtype == torch.int32 and query.is_floating_point():
        _fail("key", key.dtype, "page attention with Q_S=1 does not take int4 (int32) KV")
    check_block_size(
        block_size,
        prefill=prefill,
        rope=rope,
        sparse_mode=sparse_mode,
        kv_int8=key.dtype == torch.int8,
        nz=key.dim() == 5,
    )
    k_blocks, k_dim, k_rank = _paged_kv_geometry("key", key, q_layout, nkv, block_size)
    v_blocks, v_dim, v_rank = _paged_kv_geometry("value", value, q_layout, nkv, block_size)
    if (v_blocks, v_rank) != (k_blocks, k_rank):
        _fail("value", _shape(value), f"must have the key's block count/layout {_shape(key)}")
    if k_dim != q_dim:
        _fail("key", _shape(key), f"its D ({k_dim}) must equal the query's D ({q_dim})")
    for name, t in (("key", key), ("value", value)):
        if t.numel() > INT32_MAX:
            _fail(name, _shape(t), "a page-attention cache must have at most 2**31-1 elements")
    if reference and k_rank == 5:
        _not_supported("key", _shape(key), "NZ caches are not implemented; use ND")
    if actual_seq_lengths_kv is None:
        _fail("actual_seq_lengths_kv", None, "page attention requires per-request KV lengths")
    capacity = block_table.size(1) * block_size
    # Paged: per-batch lengths, also for a TND query (doc, Q_S=1 page attention section).
    kv_lens = _per_batch("actual_seq_lengths_kv", actual_seq_lengths_kv, batch, capacity)
    needed = sum(-(-n // block_size) for n in kv_lens)
    if k_blocks < needed:
        _fail(
            "key",
            _shape(key),
            f"the cache has {k_blocks} blocks but actual_seq_lengths_kv={kv_lens} need {needed} "
            f"blocks of {block_size}",
        )
    return kv_lens, v_dim, k_rank == 4


def _rope_dim(
    query: torch.Tensor,
    key: torch.Tensor,
    query_rope: torch.Tensor,
    key_rope: torch.Tensor,
    q_layout: str,
    num_heads: int,
    nkv: int,
    paged: bool,
) -> int:
    """The rope D after checking query_rope/key_rope against the query and key."""
    _check_tensor(
        "query_rope", query_rope, (query.dtype,) if query.is_floating_point() else _FLOAT_DTYPES
    )
    _check_tensor("key_rope", key_rope, (key.dtype,) if key.is_floating_point() else _FLOAT_DTYPES)
    if query_rope.dim() != query.dim() or (
        q_layout != "BSH" and query_rope.shape[:-1] != query.shape[:-1]
    ):
        _fail("query_rope", _shape(query_rope), f"must match the query {_shape(query)} but D")
    rope_dim = query_rope.size(2) // num_heads if q_layout == "BSH" else query_rope.size(-1)
    if q_layout == "BSH" and (
        query_rope.shape[:2] != query.shape[:2] or query_rope.size(2) % num_heads
    ):
        _fail("query_rope", _shape(query_rope), "must be (B, S, N*rope_D)")
    if key.dim() == 5:  # NZ: (blocks, KV_N, D/16, block_size, 16), D sits in dims 2 and 4
        same = key_rope.dim() == 5 and (key_rope.shape[:2], key_rope.shape[3:]) == (
            key.shape[:2],
            key.shape[3:],
        )
    else:
        same = key_rope.dim() == key.dim() and key_rope.shape[:-1] == key.shape[:-1]
    if not same:
        _fail("key_rope", _shape(key_rope), f"must match the key {_shape(key)} but D")
    k_rope_dim = key_rope.size(-1)
    if key.dim() == 3 and (paged or q_layout == "BSH"):
        k_rope_dim = key_rope.size(2) // nkv
    elif key.dim() == 5:
        k_rope_dim = key_rope.size(2) * key_rope.size(4)
    if k_rope_dim != rope_dim or rope_dim == 0:
        _fail("key_rope", _shape(key_rope), f"rope D must equal query_rope's ({rope_dim})")
    return rope_dim


def _mask_mode(
    atten_mask: torch.Tensor | None,
    *,
    sparse_mode: int,
    batch: int,
    q_lens: list[int],
    kv_lens: list[int],
    prefill: bool,
    rope: bool,
    two_d_mask_ok: bool,
    block_table: torch.Tensor | None,
    block_size: int,
) -> str:
    """Check the mask against ``sparse_mode``; return the plan's mask mode.

    Q_S=1 without rope runs the incremental branch, which ignores sparse_mode (doc); a 2048
    template passed there masks nothing (inferred: its contents are never the mask).
    """
    if atten_mask is not None:
        _check_tensor("atten_mask", atten_mask, _MASK_DTYPES)
    ignores_sparse = not prefill and not rope
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
        return {2: "left_up", 3: "right_down", 4: "band"}[sparse_mode]
    if sparse_mode == TREE_MASK_SPARSE_MODE:
        return "tree"  # shape undocumented; the reference refuses the mode
    if sparse_mode in (0, 1) and atten_mask is not None:
        if atten_mask.dim() == 2 and not two_d_mask_ok:
            _fail(
                "atten_mask",
                _shape(atten_mask),
                "the 2-D (Q_S,KV_S)/(B,KV_S) form needs BSH/BSND/BNSD/BNSD_BSND, equal query "
                "and value D and no query_rope; pass (1,Q_S,KV_S) or (B,1,Q_S,KV_S)",
            )
        _dense_mask_view(
            atten_mask, batch, max(q_lens, default=0), max(kv_lens, default=0), prefill=prefill
        )
        if block_table is not None:
            # Doc, Q_S=1: the last dim ">= block_table的第二维 * block_size"; Q_S>1: KV_S >=
            # maxBlockNumPerSeq * blockSize, the blocks of the longest request.
            blocks = -(-max(kv_lens, default=0) // block_size) if prefill else block_table.size(1)
            if atten_mask.size(-1) < blocks * block_size:
                _fail(
                    "atten_mask",
                    _shape(atten_mask),
                    f"with page attention its last dim must be >= {blocks} blocks * "
                    f"block_size {block_size} = {blocks * block_size}",
                )
        return "dense"
    if sparse_mode == 1 and not ignores_sparse:
        _fail("atten_mask", None, "sparse_mode=1 (allMask) needs a full mask")
    return "none"


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
