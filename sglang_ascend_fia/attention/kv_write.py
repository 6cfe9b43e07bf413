"""The MHA/GQA backend's KV-cache views and the rows it writes through ``ops``.

sglang's MHA pools keep one buffer per layer whose rows are token slots in slot order: the stock
``MHATokenToKVPool`` as ``[size + page, H, D]``, ``NPUMHATokenToKVPool`` as
``[(pages + 1) * page, 1, H, D]`` (FIA on) or ``[pages + 1, page, H, D]`` (FIA off). All three are
the same contiguous memory, so the views :class:`LayerKV` builds once per layer serve whichever
pool sglang built: ``(blocks, page, H, D)`` for the scatter and ``(blocks, page, H * D)`` for FIA.

The MHA/GQA backend writes K and V of a layer in one ``npu_scatter_pa_kv_cache`` launch
(:class:`LayerKV`, :func:`kv_rows`), as sglang's own NPU pool does with
``SGLANG_NPU_USE_SCATTER_PA_KV_CACHE`` (``memory_pool_npu.py:317-329``). The split MLA pool
writes its own caches (``mla/pool.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
