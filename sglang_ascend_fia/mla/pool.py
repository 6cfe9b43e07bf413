"""The split-K/V MLA pool, with every write through ``ops`` (manifest entry ``fia-mla-kv-pool``).

sglang 0.5.23's ``NPUMLATokenToKVPool`` (``hardware_backend/npu/memory_pool_npu.py:629-787``)
already keeps the normalised latent (``kv_lora_rank``) in ``k_buffer`` and the rope part
(``qk_rope_head_dim``) in ``v_buffer``, each ``[layers, pages + 1, page, 1, D]``, so FIA reads
the latent as key/value and the rope part as ``key_rope`` without a split or a concatenation.
Its writes call ``torch_npu`` directly (``memory_pool_npu.py:1039-1050``), so on any other device
the first write raises ``NameError``. This subclass keeps the allocation, the per-layer views and
the byte accounting, and writes through ``ops.scatter_nd_update_`` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from sglang.srt.hardware_backend.npu.memory_pool_npu import NPUMLATokenToKVPool
from sglang.srt.mem_cache.memory_pool import unwrap_write_loc

from sglang_ascend_fia import ops

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention

__sglang_patches__ = ("fia-mla-kv-pool",)


def write_latent(
    k_layer: torch.Tensor,
    v_layer: torch.Tensor,
    loc: torch.Tensor,
    latent: torch.Tensor,
    rope: torch.Tensor,
) -> None:
    """Scatter ``latent`` ``[T, R]`` and ``rope`` ``[T, r]`` (any shape that views as that)
    into one layer's split buffers ``[pages + 1, page, 1, R|r]`` at token slots ``loc``: one
    ``npu_scatter_nd_update_`` per cache, as ``memory_pool_npu.py:1039-1050`` writes them."""
    rows = loc.numel()
    # aclnnScatterNdUpdate wants [N, 1] indices and 3-D [slot, 1, D] tensors: one KV head of
    # width R (resp. r), the rows memory_pool_npu.py:1039-1050 scatters into.
    indices = loc.reshape(rows, 1)
    for buffer, update in ((k_layer, latent), (v_layer, rope)):
        width = buffer.shape[-1]
        # Contiguous updates: the DeepSeek step passes split views of one projection.
        ops.scatter_nd_update_(
            buffer.view(-1, 1, width),
            indices,
            update.reshape(rows, 1, width).to(buffer.dtype).contiguous(),
        )


class FIAMLATokenToKVPool(NPUMLATokenToKVPool):
    """``NPUMLATokenToKVPool`` whose latent/rope writes go through ``ops``.

    FIA's NZ tile order (``SGLANG_USE_FIA_NZ``) and the packed FP8 DSA record are NPU-only
    features of the parent; their writes stay the parent's (``torch_npu``), and the plugin hands
    both to sglang's own attention backend at start-up (``mla/handoff.py``).
    """

    def set_kv_buffer(
        self,
        layer: RadixAttention,
        loc_info: Any,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor | None,
    ) -> None:
        if self.use_fia_nz or self.dsa_kv_cache_store_fp8:
            super().set_kv_buffer(layer, loc_info, cache_k, cache_v)
            return
        loc, _, _ = unwrap_write_loc(loc_info)
        self._raise_if_native_kv_cache_disabled()
        if cache_v is None:
            # A caller passing the concatenated row (memory_pool_npu.py:1027-1030): split the
            # incoming rows, never the cache.
            cache_k, cache_v = cache_k.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        cache_k = cache_k.to(self.dtype)
        cache_v = cache_v.to(self.dtype)
        if self.store_dtype != self.dtype:
            cache_k = cache_k.view(self.store_dtype)
            cache_v = cache_v.view(self.store_dtype)
        offset = layer.layer_id - self.start_layer
        write_latent(self.k_buffer[offset], self.v_buffer[offset], loc, cache_k, cache_v)
