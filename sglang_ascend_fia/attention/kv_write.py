"""KV-cache views and writes through ``ops``, shared by the MHA/GQA backend and the MLA pool.

sglang's MHA pools keep one buffer per layer whose rows are token slots in slot order: the stock
``MHATokenToKVPool`` as ``[size + page, H, D]``, ``NPUMHATokenToKVPool`` as
``[(pages + 1) * page, 1, H, D]`` (FIA on) or ``[pages + 1, page, H, D]`` (FIA off). All three are
the same contiguous memory, so the views :class:`LayerKV` builds once per layer serve whichever
pool sglang built: ``(blocks, page, H, D)`` for the scatter and ``(blocks, page, H * D)`` for FIA.

The MHA/GQA backend writes K and V of a layer in one ``npu_scatter_pa_kv_cache`` launch
(:class:`LayerKV`, :func:`kv_rows`), as sglang's own NPU pool does with
``SGLANG_NPU_USE_SCATTER_PA_KV_CACHE`` (``memory_pool_npu.py:317-329``); the split MLA pool
(``mla/pool.py``, buffers ``[pages + 1, page, 1, D]``) keeps two ``npu_scatter_nd_update_``
writes (:func:`write_kv`), one per cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_ascend_fia import ops


def token_rows(buffer: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """``buffer`` as ``[slots, heads, head_dim]`` without a copy."""
    return buffer.view(-1, heads, head_dim)


def write_kv(
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    loc: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
) -> None:
    """Scatter this step's K and V rows into their token slots ``loc``.

    ``k_buffer``/``v_buffer`` are one layer's buffers, slot-ordered rows ending in ``[H, D]``;
    ``cache_k``/``cache_v`` are ``[tokens, H, D]`` (or anything that views as that).
    """
    heads, head_dim = k_buffer.shape[-2], k_buffer.shape[-1]
    v_heads, v_head_dim = v_buffer.shape[-2], v_buffer.shape[-1]
    rows = loc.numel()
    # aclnnScatterNdUpdate wants [N, 1] indices and 3-D [slot, H, D] tensors
    # (memory_pool_npu.py:331-346 flattens the 4-D FIA view for the same reason).
    indices = loc.reshape(rows, 1)
    # Contiguous updates, as sglang's own NPU pool writes them (memory_pool_npu.py:331-346):
    # some models pass k/v as views of a fused qkv projection.
    ops.scatter_nd_update_(
        token_rows(k_buffer, heads, head_dim),
        indices,
        cache_k.reshape(rows, heads, head_dim).to(k_buffer.dtype).contiguous(),
    )
    ops.scatter_nd_update_(
        token_rows(v_buffer, v_heads, v_head_dim),
        indices,
        cache_v.reshape(rows, v_heads, v_head_dim).to(v_buffer.dtype).contiguous(),
    )


@dataclass(frozen=True)
class LayerKV:
    """One layer's KV buffers and the views its kernels take, built once per layer: the
    ``(blocks, page, H, D)`` caches ``scatter_pa_kv_cache`` writes ('Norm', scenario 2) and the
    ``(blocks, page, H * D)`` caches FIA reads. The buffers are kept to notice a new pool."""

    k_buffer: torch.Tensor
    v_buffer: torch.Tensor
    k_blocks: torch.Tensor
    v_blocks: torch.Tensor
    k_paged: torch.Tensor
    v_paged: torch.Tensor

    @classmethod
    def of(cls, k_buffer: torch.Tensor, v_buffer: torch.Tensor, page_size: int) -> LayerKV:
        k_blocks = k_buffer.view(-1, page_size, k_buffer.shape[-2], k_buffer.shape[-1])
        v_blocks = v_buffer.view(-1, page_size, v_buffer.shape[-2], v_buffer.shape[-1])
        return cls(
            k_buffer,
            v_buffer,
            k_blocks,
            v_blocks,
            k_blocks.view(k_blocks.shape[0], page_size, -1),
            v_blocks.view(v_blocks.shape[0], page_size, -1),
        )


def kv_rows(cache: torch.Tensor, rows: int, blocks: torch.Tensor) -> torch.Tensor:
    """This step's K (or V) as the contiguous ``[rows, H, D]`` in ``blocks``' dtype that
    ``scatter_pa_kv_cache`` takes; some models pass k/v as views of a fused qkv projection."""
    shape = (rows, blocks.shape[2], blocks.shape[3])
    # RadixAttention hands k/v as [tokens, H, D] views already; a reshape costs ~1.5 us.
    out = cache if cache.shape == shape else cache.reshape(shape)
    if out.dtype != blocks.dtype:
        out = out.to(blocks.dtype)
    return out.contiguous()
