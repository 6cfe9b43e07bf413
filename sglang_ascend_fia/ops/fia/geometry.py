"""Geometry of an FIA call: reading B, S/T, N and D off the tensors, the per-request lengths,
the paged cache and the mask, each step checking the documented constraints it reads.

Used by :mod:`.plan`, which runs these steps in order; :mod:`.reference` reuses
:func:`dense_mask_view`. Doc sources: see :mod:`sglang_ascend_fia.ops.fia`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from sglang_ascend_fia.ops._checks import FLOAT_DTYPES, fail, not_implemented
from sglang_ascend_fia.ops.fia.rules import (
    INT32_MAX,
    MASK_TEMPLATE_SIZE,
    MAX_3D_CACHE_HIDDEN,
    OP,
    TREE_MASK_SPARSE_MODE,
    check_block_size,
)

MASK_DTYPES = (torch.bool, torch.int8, torch.uint8)


def shape_of(t: torch.Tensor | None) -> object:
    return None if t is None else tuple(t.shape)


# ---------------------------------------------------------------------------------------------
# Planning: validate every documented constraint and resolve the per-request geometry.
# ---------------------------------------------------------------------------------------------


def _is_integral(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex())


def int_list(name: str, value: object) -> list[int]:
    """Lengths as ints: a list/tuple of ints or a 1-D integer tensor, all non-negative."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype == torch.bool or not _is_integral(value):
            fail(
                OP,
                name,
                (value.dtype, shape_of(value)),
                "must be a list of ints or a 1-D int tensor",
            )
        out = [int(v) for v in value.tolist()]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        try:
            out = [operator.index(v) for v in value]
        except TypeError:
            fail(OP, name, value, "must be a list of ints")
    else:
        fail(OP, name, value, "must be a list of ints")
    if any(v < 0 for v in out):
        fail(OP, name, out, "lengths must be non-negative")
    return out


def per_batch(name: str, value: object, batch: int, limit: int) -> list[int]:
    """Doc rule for per-batch lengths: one value broadcasts; >= B values take the first B."""
    lens = int_list(name, value)
    if len(lens) == 1:
        lens = lens * batch
    elif len(lens) < batch:
        fail(OP, name, lens, f"needs 1 or at least B={batch} entries")
    lens = lens[:batch]
    if any(v > limit for v in lens):
        fail(OP, name, lens, f"each length must be <= {limit}")
    return lens


def cumulative(name: str, value: object, total: int) -> list[int]:
    cum = int_list(name, value)
    if not cum:
        fail(OP, name, cum, "TND needs one cumulative length per request")
    if any(b < a for a, b in zip([0, *cum], cum, strict=False)):
        fail(OP, name, cum, "TND lengths are cumulative and must be non-decreasing")
    if cum[-1] > total:
        fail(OP, name, cum, f"the last cumulative length must be <= the token count {total}")
    return cum


def query_geometry(query: torch.Tensor, q_layout: str, num_heads: int) -> tuple[int, int, int]:
    """(S or T, N, D) of the query; B is read separately."""
    if q_layout == "BSH":
        if query.size(2) % num_heads:
            fail(OP, "num_heads", num_heads, f"query H={query.size(2)} must be divisible by it")
        return query.size(1), num_heads, query.size(2) // num_heads
    if q_layout == "BSND":
        s, n, d = query.size(1), query.size(2), query.size(3)
    elif q_layout == "BNSD":
        n, s, d = query.size(1), query.size(2), query.size(3)
    else:  # TND
        s, n, d = query.size(0), query.size(1), query.size(2)
    if n != num_heads:
        fail(OP, "num_heads", num_heads, f"must equal the query's N axis ({n}) for {q_layout}")
    return s, n, d


def dense_kv_geometry(
    name: str, t: torch.Tensor, q_layout: str, batch: int, nkv: int
) -> tuple[int, int]:
    """(KV_S or KV_T, D) of a non-paged key/value in the query's layout."""
    if q_layout == "BSH":
        if t.size(2) % nkv:
            fail(OP, name, shape_of(t), f"H must be divisible by num_key_value_heads={nkv}")
        s, d = t.size(1), t.size(2) // nkv
    elif q_layout == "BSND":
        s, n, d = t.size(1), t.size(2), t.size(3)
    elif q_layout == "BNSD":
        n, s, d = t.size(1), t.size(2), t.size(3)
    else:
        s, n, d = t.size(0), t.size(1), t.size(2)
    if q_layout in ("BSND", "BNSD", "TND") and n != nkv:
        fail(OP, name, shape_of(t), f"its N axis must equal num_key_value_heads={nkv}")
    if q_layout != "TND" and t.size(0) != batch:
        fail(OP, name, shape_of(t), f"its batch axis must equal the query's B={batch}")
    return s, d


def _paged_kv_geometry(
    name: str, t: torch.Tensor, q_layout: str, nkv: int, block_size: int
) -> tuple[int, int, int]:
    """(num_blocks, D, rank) of a paged cache; rank 5 is the NZ ``[blocks, KV_N, D/16, bs, 16]``."""
    if t.dim() == 5:
        if t.size(1) != nkv or t.size(3) != block_size:
            fail(
                OP,
                name,
                shape_of(t),
                f"an NZ cache is (blocks, KV_N={nkv}, D/16, {block_size}, 16)",
            )
        return t.size(0), t.size(2) * t.size(4), 5
    if t.dim() == 3:
        if t.size(1) != block_size:
            fail(
                OP,
                name,
                shape_of(t),
                f"dim 1 of a (blocks, block_size, H) cache must be {block_size}",
            )
        if t.size(2) % nkv:
            fail(OP, name, shape_of(t), f"H must be divisible by num_key_value_heads={nkv}")
        if t.size(2) > MAX_3D_CACHE_HIDDEN:
            fail(
                OP,
                name,
                shape_of(t),
                f"a (blocks, block_size, H) cache needs KV_N*D <= {MAX_3D_CACHE_HIDDEN}; "
                "use the (blocks, KV_N, block_size, D) layout",
            )
        return t.size(0), t.size(2) // nkv, 3
    if t.dim() == 4:
        if q_layout in ("BSH", "BSND"):
            fail(
                OP,
                name,
                shape_of(t),
                f"a {q_layout} query only takes the (blocks, block_size, H) cache layout",
            )
        if t.size(1) != nkv or t.size(2) != block_size:
            fail(
                OP,
                name,
                shape_of(t),
                f"a 4-D cache is (blocks, KV_N={nkv}, block_size={block_size}, D)",
            )
        return t.size(0), t.size(3), 4
    fail(OP, name, shape_of(t), "page attention takes a 3-D, 4-D or 5-D (NZ) cache")


def check_input(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        fail(OP, name, type(t).__name__, "must be a tensor")
    if t.dtype not in dtypes:
        fail(OP, name, t.dtype, f"dtype must be one of {dtypes}")
    if not t.is_contiguous():
        fail(OP, name, shape_of(t), "the kernel does not take non-contiguous tensors (doc)")


def paged_lengths(
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
        fail(
            OP,
            "block_table",
            (block_table.dtype, shape_of(block_table)),
            "must be a 2-D int32 tensor",
        )
    if block_table.size(0) != batch:
        fail(OP, "block_table", shape_of(block_table), f"dim 0 must equal the batch B={batch}")
    if block_size <= 0:
        fail(OP, "block_size", block_size, "page attention (block_table given) needs it > 0")
    if prefill and query.dtype == torch.int8:
        fail(OP, "query", query.dtype, "page attention with Q_S>1 does not take an int8 query")
    if not prefill and key.dtype == torch.int32 and query.is_floating_point():
        fail(OP, "key", key.dtype, "page attention with Q_S=1 does not take int4 (int32) KV")
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
        fail(
            OP, "value", shape_of(value), f"must have the key's block count/layout {shape_of(key)}"
        )
    if k_dim != q_dim:
        fail(OP, "key", shape_of(key), f"its D ({k_dim}) must equal the query's D ({q_dim})")
    for name, t in (("key", key), ("value", value)):
        if t.numel() > INT32_MAX:
            fail(OP, name, shape_of(t), "a page-attention cache must have at most 2**31-1 elements")
    if reference and k_rank == 5:
        not_implemented(OP, "key", shape_of(key), "ND caches; NZ caches are not")
    if actual_seq_lengths_kv is None:
        fail(OP, "actual_seq_lengths_kv", None, "page attention requires per-request KV lengths")
    capacity = block_table.size(1) * block_size
    # Paged: per-batch lengths, also for a TND query (doc, Q_S=1 page attention section).
    kv_lens = per_batch("actual_seq_lengths_kv", actual_seq_lengths_kv, batch, capacity)
    # The doc also states that the cache's block count must be at least the sum of every
    # request's blocks. sglang's radix cache shares prefix pages between requests, so that sum
    # can exceed the pool, and sglang's own backend passes such tables to the kernel unchecked:
    # the rule is not enforced here (docs/ops-semantics.md, "The cache's block count"; verify-ops
    # case fia_shared_prefix_blocks asks the kernel). What matters is that every id a request's
    # length reaches lies inside the cache: the reference checks that where it reads the ids
    # anyway; on an NPU it would cost a device sync per call, so it is not checked there.
    return kv_lens, v_dim, k_rank == 4


def rope_dim_of(
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
    check_input(
        "query_rope", query_rope, (query.dtype,) if query.is_floating_point() else FLOAT_DTYPES
    )
    check_input("key_rope", key_rope, (key.dtype,) if key.is_floating_point() else FLOAT_DTYPES)
    if query_rope.dim() != query.dim() or (
        q_layout != "BSH" and query_rope.shape[:-1] != query.shape[:-1]
    ):
        fail(
            OP, "query_rope", shape_of(query_rope), f"must match the query {shape_of(query)} but D"
        )
    rope_dim = query_rope.size(2) // num_heads if q_layout == "BSH" else query_rope.size(-1)
    if q_layout == "BSH" and (
        query_rope.shape[:2] != query.shape[:2] or query_rope.size(2) % num_heads
    ):
        fail(OP, "query_rope", shape_of(query_rope), "must be (B, S, N*rope_D)")
    if key.dim() == 5:  # NZ: (blocks, KV_N, D/16, block_size, 16), D sits in dims 2 and 4
        same = key_rope.dim() == 5 and (key_rope.shape[:2], key_rope.shape[3:]) == (
            key.shape[:2],
            key.shape[3:],
        )
    else:
        same = key_rope.dim() == key.dim() and key_rope.shape[:-1] == key.shape[:-1]
    if not same:
        fail(OP, "key_rope", shape_of(key_rope), f"must match the key {shape_of(key)} but D")
    k_rope_dim = key_rope.size(-1)
    if key.dim() == 3 and (paged or q_layout == "BSH"):
        k_rope_dim = key_rope.size(2) // nkv
    elif key.dim() == 5:
        k_rope_dim = key_rope.size(2) * key_rope.size(4)
    if k_rope_dim != rope_dim or rope_dim == 0:
        fail(OP, "key_rope", shape_of(key_rope), f"rope D must equal query_rope's ({rope_dim})")
    return rope_dim


def mask_mode(
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
        check_input("atten_mask", atten_mask, MASK_DTYPES)
    ignores_sparse = not prefill and not rope
    if sparse_mode in (2, 3, 4) and not ignores_sparse:
        template = (MASK_TEMPLATE_SIZE, MASK_TEMPLATE_SIZE)
        if (
            atten_mask is None
            or tuple(atten_mask.shape[-2:]) != template
            or any(d != 1 for d in atten_mask.shape[:-2])
        ):
            fail(
                OP,
                "atten_mask",
                shape_of(atten_mask),
                f"sparse_mode={sparse_mode} needs the 2048x2048 lower-triangular template "
                "(2048,2048), (1,2048,2048) or (1,1,2048,2048)",
            )
        return {2: "left_up", 3: "right_down", 4: "band"}[sparse_mode]
    if sparse_mode == TREE_MASK_SPARSE_MODE:
        return "tree"  # shape undocumented; the reference refuses the mode
    if sparse_mode in (0, 1) and atten_mask is not None:
        if atten_mask.dim() == 2 and not two_d_mask_ok:
            fail(
                OP,
                "atten_mask",
                shape_of(atten_mask),
                "the 2-D (Q_S,KV_S)/(B,KV_S) form needs BSH/BSND/BNSD/BNSD_BSND, equal query "
                "and value D and no query_rope; pass (1,Q_S,KV_S) or (B,1,Q_S,KV_S)",
            )
        dense_mask_view(
            atten_mask, batch, max(q_lens, default=0), max(kv_lens, default=0), prefill=prefill
        )
        if block_table is not None:
            # Doc, Q_S=1: the last dim ">= block_table的第二维 * block_size"; Q_S>1: KV_S >=
            # maxBlockNumPerSeq * blockSize, the blocks of the longest request.
            blocks = -(-max(kv_lens, default=0) // block_size) if prefill else block_table.size(1)
            if atten_mask.size(-1) < blocks * block_size:
                fail(
                    OP,
                    "atten_mask",
                    shape_of(atten_mask),
                    f"with page attention its last dim must be >= {blocks} blocks * "
                    f"block_size {block_size} = {blocks * block_size}",
                )
        return "dense"
    if sparse_mode == 1 and not ignores_sparse:
        fail(OP, "atten_mask", None, "sparse_mode=1 (allMask) needs a full mask")
    return "none"


def dense_mask_view(
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
        fail(
            OP,
            "atten_mask",
            shape_of(mask),
            f"needs (1,Q_S,KV_S), (B,1,Q_S,KV_S), (1,1,Q_S,KV_S), (Q_S,KV_S) if Q_S>1 or (B,KV_S) "
            f"if Q_S=1, with B={batch}",
        )
    if view.size(1) < q_len or view.size(2) < kv_len:
        fail(
            OP,
            "atten_mask",
            shape_of(mask),
            f"must cover Q_S={q_len} query rows and KV_S={kv_len} key columns",
        )
    return view
