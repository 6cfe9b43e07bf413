"""The FIA reference computation: executes a validated :class:`~.plan.Plan` in fp32 on any device.

An online (flash-style) softmax over KV chunks, so neither the whole gathered cache nor the whole
score matrix is ever materialised; results are cast to the query dtype at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import fail
from sglang_ascend_fia.ops.fia.geometry import dense_mask_view
from sglang_ascend_fia.ops.fia.plan import Plan
from sglang_ascend_fia.ops.fia.rules import OP

# Chunk budgets, in elements. A gathered K chunk (about 4 MiB in fp32) stays in cache from gather
# through conversion to matmul; measured on 2 cores, 2^19-2^20 is the sweet spot (2^17 and 2^21
# are 1.5-2.5x slower). The score chunk bounds the prefill working set.
KV_CHUNK_ELEMS = 1 << 20
SCORE_CHUNK_ELEMS = 1 << 22


def _f32(t: torch.Tensor) -> torch.Tensor:
    """fp32 and contiguous in one pass (a permuted view is packed while it is converted)."""
    if t.dtype == torch.float32 and t.is_contiguous():
        return t
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


def _query_bnsd(plan: Plan, q: torch.Tensor, dim: int) -> torch.Tensor:
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


def _as_wide_rows(t: torch.Tensor) -> torch.Tensor:
    """``t``'s bytes viewed with 8-byte elements where the layout allows it, else ``t``.

    Gathering a block moves raw bytes, so the element type does not change the result, but
    ``index_select`` on 8-byte elements is several times faster on CPU than on 2-byte bf16/fp16
    (measured: 11 ms against 81 ms for 134 MB of bf16 KV).
    """
    wide = torch.int64
    ratio = wide.itemsize // t.element_size()
    if (
        t.element_size() >= wide.itemsize
        or t.stride(-1) != 1
        or t.size(-1) % ratio
        or t.storage_offset() % ratio
        or any(stride % ratio for stride in t.stride()[:-1])
    ):
        return t
    return t.view(wide)


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
        plan: Plan,
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
        # Paged caches as the rows index_select gathers, worked out once per call, not per chunk.
        self.wide_rows: dict[str, torch.Tensor] = {}
        if plan.paged:
            assert block_table is not None
            self.block_ids = _checked_block_ids(plan, block_table, key.size(0))
            caches = {"k": key, "v": value, "r": key_rope}
            self.wide_rows = {tag: _as_wide_rows(t) for tag, t in caches.items() if t is not None}
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
            rows = self.wide_rows[tag]
            gathered = self._buffer(tag, (ids.numel(), *rows.shape[1:]), rows.dtype)
            torch.index_select(rows, 0, ids, out=gathered)
            gathered = gathered.view(t.dtype)
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
        fail(
            OP,
            "block_table",
            f"[{b}, {c}] = {int(ids[b, c])}",
            f"request {b} needs block slot {c} for its {kv_lens[b]} tokens; ids must be "
            f"in [0, {num_blocks})",
        )


def _checked_block_ids(plan: Plan, block_table: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Block ids as int64 on the table's device; ids in slots past a request's length (-1 padding)
    are clamped into range: they are read and masked out."""
    ids = block_table.to(device="cpu", dtype=torch.long)
    if bool(((ids < 0) | (ids >= num_blocks)).any()):
        # Only now work out which slots the lengths reach (sglang's tables hold no padding ids,
        # so the usual call stops at the line above).
        _check_block_ids(plan.kv_lens, plan.block_size, ids, num_blocks)
        ids.clamp_(0, num_blocks - 1)  # unreached slots: any id, read and masked out
    return ids.to(block_table.device)


class _Masker:
    """``[b, rows, cols]`` True where query row i of a request may attend KV position j."""

    def __init__(self, plan: Plan, atten_mask: torch.Tensor | None, device: Any) -> None:
        self.plan, self.device = plan, device
        self.q_len = torch.tensor(plan.q_lens, device=device)[:, None, None]
        self.kv_len = torch.tensor(plan.kv_lens, device=device)[:, None, None]
        self.dense: torch.Tensor | None = None
        if plan.mask_mode == "dense":
            assert atten_mask is not None
            view = dense_mask_view(
                atten_mask, plan.batch, max(plan.q_lens), max(plan.kv_lens), prefill=plan.q_s > 1
            )
            self.dense = view.to(device=device, dtype=torch.bool)

    def needed(self, b0: int, b1: int, i1: int, j1: int) -> bool:
        """False when every row < i1 of requests [b0, b1) sees every position < j1."""
        p = self.plan
        return p.mask_mode != "none" or min(p.q_lens[b0:b1]) < i1 or min(p.kv_lens[b0:b1]) < j1

    def keep(self, b0: int, b1: int, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        p = self.plan
        j = torch.arange(j0, j1, device=self.device)[None, None, :]
        kv_len = self.kv_len[b0:b1]
        keep = j < kv_len
        if p.mask_mode == "none" and min(p.q_lens[b0:b1]) >= i1:
            return keep  # decode and full-length rows: only the KV lengths mask
        i = torch.arange(i0, i1, device=self.device)[None, :, None]
        q_len = self.q_len[b0:b1]
        keep = keep & (i < q_len)
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


def attention(
    plan: Plan,
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

    source = _KVSource(plan, key, value, key_rope, block_table)
    masker = _Masker(plan, atten_mask, device)
    sink_f = None if sink is None else sink.to(device=device, dtype=torch.float32).view(nkv, g, 1)

    per_token = nkv * (plan.q_dim + plan.rope_dim)  # gathered K elements per request and position
    step = plan.block_size if plan.paged else 1
    group = max(1, min(b, KV_CHUNK_ELEMS // max(1, per_token * step)))
    tiles: list[tuple[int, int, int, int, torch.Tensor, torch.Tensor]] = []
    for b0 in range(0, b, group):
        b1 = min(b, b0 + group)
        extent = source.extent(b0, b1)
        kv_chunk = max(step, KV_CHUNK_ELEMS // max(1, (b1 - b0) * per_token) // step * step)
        width = min(kv_chunk, max(extent, 1))
        rows_per_chunk = max(1, SCORE_CHUNK_ELEMS // ((b1 - b0) * n * width))
        for i0 in range(0, s, rows_per_chunk):
            i1 = min(s, i0 + rows_per_chunk)
            o, m = _attend_rows(
                q[b0:b1, :, :, i0:i1], source, masker, sink_f, b0, b1, i0, i1, extent, kv_chunk
            )
            tiles.append((b0, b1, i0, i1, o, m))
    if len(tiles) == 1:  # one tile covers everything (decode, short prompts): no copies
        out, lse = tiles[0][4], tiles[0][5]
    else:
        out = torch.empty(b, nkv, g, s, dv, dtype=torch.float32, device=device)
        lse = torch.empty(b, nkv, g, s, dtype=torch.float32, device=device)
        for b0, b1, i0, i1, o, m in tiles:
            out[b0:b1, :, :, i0:i1] = o
            lse[b0:b1, :, :, i0:i1] = m
    return out.reshape(b, n, s, dv), lse.reshape(b, n, s)


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
    output and ``[b, Nkv, g, rows]`` LSE.

    When every position fits one KV chunk (decode and short prompts: the common case) this is the
    plain formula, ``softmax(scores) @ V`` with ``LSE = logsumexp(scores)``; otherwise the online
    softmax over chunks. Rows with no visible key give output 0 and LSE -inf (the reference's
    choice for fully masked rows, inferred). A learnable sink is one extra logit per head that
    takes probability mass but adds no value (inferred from "吸收Attention Score").
    """
    bb, nkv, g, rows, _ = q.shape
    dv = source.plan.v_dim
    q = q.reshape(bb, nkv, g * rows, -1)
    # [b, Nkv, g*rows, 1] sink logits, or None.
    sink_rows = None if sink is None else sink.expand(nkv, g, rows).reshape(1, nkv, g * rows, 1)
    if 0 < extent <= kv_chunk:
        scores, v = _scores(q, source, masker, (b0, b1, i0, i1), 0, extent, g)
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)
        if sink_rows is not None:
            lse = torch.logaddexp(lse, sink_rows)
        # exp(s - lse) sums to 1 (less the sink's share); where lse is -inf, subtract 0 instead
        # so exp() gives 0, not nan.
        p = scores.sub_(lse.masked_fill(torch.isinf(lse), 0.0)).exp_()
        out = torch.matmul(p, v)
    else:
        out, lse = attend_online(q, source, masker, sink_rows, (b0, b1, i0, i1), extent, kv_chunk)
    return out.view(bb, nkv, g, rows, dv), lse.view(bb, nkv, g, rows)


def _scores(
    q: torch.Tensor,
    source: _KVSource,
    masker: _Masker,
    tile: tuple[int, int, int, int],
    j0: int,
    j1: int,
    g: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked ``[b, Nkv, g*rows, j1-j0]`` scores of positions [j0, j1), and their values."""
    b0, b1, i0, i1 = tile
    k, v = source.read(b0, b1, j0, j1)
    scores = torch.matmul(q, k.transpose(-1, -2))
    if masker.needed(b0, b1, i1, j1):
        keep = masker.keep(b0, b1, i0, i1, j0, j1)
        bb, nkv = scores.shape[:2]
        scores.view(bb, nkv, g, i1 - i0, -1).masked_fill_(~keep[:, None, None], -math.inf)
    return scores, v


def attend_online(
    q: torch.Tensor,
    source: _KVSource,
    masker: _Masker,
    sink_rows: torch.Tensor | None,
    tile: tuple[int, int, int, int],
    extent: int,
    kv_chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flash-attention recurrence over KV chunks: a running max, denominator and weighted
    sum, rescaled as larger logits arrive. Seeding the state with the sink logit is exact."""
    bb, nkv, gr, _ = q.shape
    g = gr // (tile[3] - tile[2])
    shape = (bb, nkv, gr, 1)
    if sink_rows is None:
        m = torch.full(shape, -math.inf, device=q.device)
        denom = torch.zeros(shape, device=q.device)
    else:
        m = sink_rows.expand(shape).clone()
        denom = torch.ones(shape, device=q.device)
    acc = torch.zeros(bb, nkv, gr, source.plan.v_dim, device=q.device)
    for j0 in range(0, extent, kv_chunk):
        scores, v = _scores(q, source, masker, tile, j0, min(extent, j0 + kv_chunk), g)
        m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
        # Rows with nothing visible yet keep max -inf; use 0 there so exp() gives 0, not nan.
        m_safe = m_new.masked_fill(torch.isinf(m_new), 0.0)
        p = scores.sub_(m_safe).exp_()
        alpha = torch.exp(m - m_safe)
        denom.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
        acc.mul_(alpha).add_(torch.matmul(p, v))
        m = m_new
    # denom >= 1 wherever a logit was visible (the max contributes exp(0)).
    visible = denom > 0
    out = torch.where(visible, acc / denom.clamp_min(1e-30), 0.0)
    lse = torch.where(visible, m + torch.log(denom.clamp_min(1e-30)), -math.inf)
    return out, lse


def to_output_layout(
    plan: Plan, out: torch.Tensor, lse: torch.Tensor, dtype: torch.dtype, want_lse: bool
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
        return attn, (lse_t if want_lse else no_lse(out.device))
    if plan.out_layout == "BSH":
        attn = out.transpose(1, 2).reshape(b, s, n * dv)
    elif plan.out_layout == "BSND":
        attn = out.transpose(1, 2)
    else:
        attn = out
    lse_out = lse.unsqueeze(-1) if want_lse else no_lse(out.device)
    return attn.to(dtype).contiguous(), lse_out


def no_lse(device: Any) -> torch.Tensor:
    # The doc says "shape为[1]的值为0的Tensor"; the meta registration returns shape [0]. The doc
    # wins here: a [1] zero tensor.
    return torch.zeros(1, dtype=torch.float32, device=device)
