"""Implementations behind the TEST-ONLY torch_npu stand-in.

Kernels the plugin's ``ops`` facade already has are handed to it unchanged (its validator runs).
The three ATB kernels below are not in ``ops``; each has a brute-force reference written from
its public callers and docs, and marks what is inferred. All compute in fp32 and write the
caller's dtype, as the ``ops`` references do.

Sources:
- torch_npu's op-plugin schema (``op_plugin/config/op_plugin_functions.yaml``, torch_npu 2.x):
  ``_npu_reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache,
  Tensor(b!) value_cache, Tensor slot_indices) -> ()``,
  ``_npu_paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, int num_kv_heads,
  int num_heads, float scale_value, Tensor block_table, Tensor context_lens, *, Tensor(a!) out)``
  and ``_npu_flash_attention_qlens(Tensor query, Tensor key_cache, Tensor value_cache,
  Tensor block_table, Tensor mask, Tensor seq_len, Tensor context_lens, int num_kv_heads,
  int num_heads, float scale_value, *, Tensor(a!) out)``.
- vllm-ascend ``vllm_ascend/attention/attention_v1.py`` (v0.9-v0.11): the KV write
  (``_npu_reshape_and_cache`` with ``slot_indices=slot_mapping``, one flat slot per token over
  ``[num_blocks, block_size]``), the decode path (``_npu_paged_attention``, one query token per
  request attending ``context_lens[i]`` cached tokens through ``block_table``) and the chunked /
  prefix-hit prefill path (``_npu_flash_attention_qlens`` with ``seq_len=query_lens`` and
  ``context_lens=seq_lens``, causal, the new tokens being the last ``seq_len[i]`` of
  ``context_lens[i]``).
"""

from __future__ import annotations

from typing import Any

import torch

from torch_npu.standin import int_array, zero_cost_enabled

# ---------------------------------------------------------------------------------------------
# Kernels handed to the plugin's ops facade
# ---------------------------------------------------------------------------------------------
_V1_INT_ARRAYS = ("actual_seq_lengths", "actual_seq_lengths_kv", "actual_shared_prefix_len")
_V2_INT_ARRAYS = ("actual_seq_qlen", "actual_seq_kvlen")
_preallocated: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def _int_arrays(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: (int_array(v) if k in names else v) for k, v in kwargs.items()}


def _zero_cost_attention(
    args: tuple[Any, ...], kwargs: dict[str, Any], heads_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A preallocated FIA output of the query's shape (value head dim == query head dim)."""
    query = args[0] if args else kwargs["query"]
    value = args[2] if len(args) > 2 else kwargs["value"]
    kv_heads = kwargs.get("num_key_value_heads") or kwargs.get(heads_key) or 1
    if value.shape[-1] not in (query.shape[-1], kv_heads * query.shape[-1]):
        raise NotImplementedError(
            "zero-cost FIA: only value head dim == query head dim is preallocated"
        )
    key = (tuple(query.shape), query.dtype, query.device)
    if key not in _preallocated:
        _preallocated[key] = (torch.empty_like(query), torch.empty(1, device=query.device))
    return _preallocated[key]


def fused_infer_attention_score(*args: Any, **kwargs: Any) -> Any:
    """``npu_fused_infer_attention_score``: ``ops.fused_infer_attention_score``, unchanged."""
    if zero_cost_enabled():
        return _zero_cost_attention(args, kwargs, "num_heads")
    from sglang_ascend_fia import ops

    return ops.fused_infer_attention_score(*args, **_int_arrays(kwargs, _V1_INT_ARRAYS))


def fused_infer_attention_score_v2(*args: Any, **kwargs: Any) -> Any:
    """``npu_fused_infer_attention_score_v2``: ``ops.fused_infer_attention_score_v2``."""
    if zero_cost_enabled():
        return _zero_cost_attention(args, kwargs, "num_query_heads")
    from sglang_ascend_fia import ops

    return ops.fused_infer_attention_score_v2(*args, **_int_arrays(kwargs, _V2_INT_ARRAYS))


def scatter_nd_update_(
    self: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    """``npu_scatter_nd_update_``: ``ops.scatter_nd_update_``, unchanged."""
    if zero_cost_enabled():
        return self
    from sglang_ascend_fia import ops

    return ops.scatter_nd_update_(self, indices, updates)


def scatter_pa_kv_cache(*args: Any, **kwargs: Any) -> None:
    """``npu_scatter_pa_kv_cache``: ``ops.scatter_pa_kv_cache``, unchanged."""
    if zero_cost_enabled():
        return None
    from sglang_ascend_fia import ops

    return ops.scatter_pa_kv_cache(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# ATB kernels with their own brute-force references
# ---------------------------------------------------------------------------------------------
def _require(condition: bool, kernel: str, message: str) -> None:
    if not condition:
        raise ValueError(f"torch_npu stand-in {kernel}: {message}")


def _slots(block_table: torch.Tensor, row: int, length: int, block_size: int) -> torch.Tensor:
    """Flat cache slots of a request's first ``length`` tokens through its block-table row."""
    positions = torch.arange(length)
    blocks = block_table[row].long()[positions // block_size]
    return blocks * block_size + positions % block_size


def _attend(
    query: torch.Tensor,  # [q, N, D] fp32
    keys: torch.Tensor,  # [kv, Hkv, D] fp32
    values: torch.Tensor,  # [kv, Hkv, Dv] fp32
    scale: float,
    first_position: int,  # absolute position of query row 0 (causal); None-like -1: no mask
) -> torch.Tensor:
    group = query.shape[1] // keys.shape[1]
    keys = keys.repeat_interleave(group, dim=1)
    values = values.repeat_interleave(group, dim=1)
    scores = torch.einsum("qnd,knd->nqk", query, keys) * scale
    if first_position >= 0:
        rows = torch.arange(query.shape[0])[:, None] + first_position
        scores = scores.masked_fill(torch.arange(keys.shape[0])[None, :] > rows, float("-inf"))
    return torch.einsum("nqk,knd->qnd", torch.softmax(scores, dim=-1), values)


def _check_heads(kernel: str, num_heads: int, num_kv_heads: int, cache_heads: int) -> None:
    _require(num_kv_heads == cache_heads, kernel, f"num_kv_heads={num_kv_heads} != cache heads")
    _require(
        num_heads % num_kv_heads == 0,
        kernel,
        f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}",
    )


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_indices: torch.Tensor,
) -> None:
    """``_npu_reshape_and_cache``: ``cache.view(-1, H, D)[slot_indices[t]] = key[t]`` in place.

    Caches are ``[num_blocks, block_size, H, D]``; slot ``s`` is token ``s % block_size`` of block
    ``s // block_size``. Slots must be int32 and inside the cache (out of range is refused).
    """
    if zero_cost_enabled():
        return
    kernel = "_npu_reshape_and_cache"
    _require(slot_indices.dtype == torch.int32, kernel, f"slot_indices {slot_indices.dtype}")
    for cache, new in ((key_cache, key), (value_cache, value)):
        _require(cache.dim() == 4, kernel, f"cache must be [blocks, page, H, D], got {cache.shape}")
        rows = cache.view(-1, cache.shape[2], cache.shape[3])
        slots = slot_indices.reshape(-1).long()
        _require(new.numel() == slots.numel() * rows[0].numel(), kernel, f"{new.shape} vs slots")
        _require(
            bool(((slots >= 0) & (slots < rows.shape[0])).all()),
            kernel,
            f"slot out of range [0, {rows.shape[0]})",
        )
        rows[slots] = new.reshape(-1, *rows.shape[1:]).to(cache.dtype)


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    num_kv_heads: int,
    num_heads: int,
    scale_value: float,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    out: torch.Tensor,
) -> None:
    """``_npu_paged_attention``: decode, one query token per request, written into ``out``.

    ``query [B, N, D]`` attends, for request ``b``, the first ``context_lens[b]`` cached tokens
    reached through ``block_table[b]`` (caches ``[num_blocks, block_size, Hkv, D]``); no mask.
    """
    if zero_cost_enabled():
        return
    kernel = "_npu_paged_attention"
    _check_heads(kernel, num_heads, num_kv_heads, key_cache.shape[2])
    page = key_cache.shape[1]
    queries = query.reshape(-1, num_heads, query.shape[-1] if query.dim() == 3 else -1)
    lens = [int(n) for n in context_lens.tolist()]
    _require(len(lens) == queries.shape[0], kernel, f"{len(lens)} context_lens, {queries.shape}")
    flat_k = key_cache.reshape(-1, *key_cache.shape[2:])
    flat_v = value_cache.reshape(-1, *value_cache.shape[2:])
    result = out.view(queries.shape[0], num_heads, -1)
    for b, length in enumerate(lens):
        slots = _slots(block_table, b, length, page)
        attended = _attend(
            queries[b : b + 1].float(),
            flat_k[slots].float(),
            flat_v[slots].float(),
            scale_value,
            -1,
        )
        result[b] = attended[0].to(out.dtype)


def flash_attention_qlens(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    mask: torch.Tensor,
    block_table: torch.Tensor,
    seq_len: torch.Tensor,
    context_lens: torch.Tensor,
    scale_value: float,
    num_heads: int,
    num_kv_heads: int,
    out: torch.Tensor,
) -> None:
    """``_npu_flash_attention_qlens``: causal prefill over a paged cache that already holds the
    new tokens, written into ``out``.

    Request ``b`` owns ``seq_len[b]`` consecutive query rows, the last ``seq_len[b]`` of its
    ``context_lens[b]`` tokens; row ``r`` attends cached tokens ``0 .. context - seq_len + r``.
    ``mask`` is the kernel's compressed causal mask (upper triangle marked); the kernel derives
    each request's mask from it (inferred from vllm-ascend's use), so the reference checks its
    form and applies the causal rule itself.
    """
    if zero_cost_enabled():
        return
    kernel = "_npu_flash_attention_qlens"
    _check_heads(kernel, num_heads, num_kv_heads, key_cache.shape[2])
    _require(mask.dim() == 2 and mask.shape[0] == mask.shape[1], kernel, f"mask shape {mask.shape}")
    marked = mask != 0
    _require(
        bool(marked.triu(1).eq(torch.ones_like(marked).triu(1)).all())
        and not bool(marked.tril().any()),
        kernel,
        "mask is not a causal (upper-triangle) mask",
    )
    q_lens = [int(n) for n in seq_len.tolist()]
    kv_lens = [int(n) for n in context_lens.tolist()]
    _require(len(q_lens) == len(kv_lens), kernel, f"seq_len {q_lens} vs context_lens {kv_lens}")
    head_dim = key_cache.shape[3]
    queries = query.reshape(-1, num_heads, head_dim)
    _require(queries.shape[0] == sum(q_lens), kernel, f"{queries.shape[0]} rows vs {q_lens}")
    page = key_cache.shape[1]
    flat_k = key_cache.reshape(-1, *key_cache.shape[2:])
    flat_v = value_cache.reshape(-1, *value_cache.shape[2:])
    result = out.view(queries.shape[0], num_heads, -1)
    offset = 0
    for b, (q_len, kv_len) in enumerate(zip(q_lens, kv_lens, strict=True)):
        _require(q_len <= kv_len, kernel, f"request {b}: seq_len {q_len} > context {kv_len}")
        slots = _slots(block_table, b, kv_len, page)
        rows = slice(offset, offset + q_len)
        attended = _attend(
            queries[rows].float(),
            flat_k[slots].float(),
            flat_v[slots].float(),
            scale_value,
            kv_len - q_len,
        )
        result[rows] = attended.to(out.dtype)
        offset += q_len
