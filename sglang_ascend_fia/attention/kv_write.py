"""KV-cache writes through ``ops``, shared by the FIA backend and the patched NPU pool.

sglang's MHA pools keep one buffer per layer whose rows are token slots in slot order: the stock
``MHATokenToKVPool`` as ``[size + page, H, D]``, ``NPUMHATokenToKVPool`` as
``[(pages + 1) * page, 1, H, D]`` (FIA on) or ``[pages + 1, page, H, D]`` (FIA off). All three are
the same contiguous memory, so one ``[-1, H, D]`` view serves the scatter and one
``[-1, page, H * D]`` view serves FIA, whichever pool sglang built.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia import ops


def token_rows(buffer: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """``buffer`` as ``[slots, heads, head_dim]`` without a copy."""
    return buffer.view(-1, heads, head_dim)


def paged_view(buffer: torch.Tensor, page_size: int, heads: int, head_dim: int) -> torch.Tensor:
    """``buffer`` as FIA's paged ``(blocks, block_size, heads * head_dim)`` without a copy."""
    return buffer.view(-1, page_size, heads * head_dim)


def write_kv(
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    loc: torch.Tensor,
    cache_k: torch.Tensor,
    cache_v: torch.Tensor,
) -> None:
    """Scatter this step's K and V rows into their token slots ``loc``.

    ``k_buffer``/``v_buffer`` are one layer's buffers in any of the layouts above;
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
