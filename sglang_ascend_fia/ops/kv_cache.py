"""KV-cache writes: ``npu_scatter_nd_update_`` and ``npu_scatter_pa_kv_cache``.

Doc source: torch_npu 2.14.0 ``_op_plugin_docs.py`` (both ops) and the op yaml; summary in
``docs/ops-semantics.md``. sglang 0.5.23 writes its NPU KV pools with these two
(``hardware_backend/npu/memory_pool_npu.py:317-346``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import fail, not_implemented
from sglang_ascend_fia.ops._dispatch import npu_op

# Doc, A2/A3 products: "数据类型支持float32、float16、bool、bfloat16、int64、int8".
SCATTER_ND_DTYPES = (
    torch.float32,
    torch.float16,
    torch.bool,
    torch.bfloat16,
    torch.int64,
    torch.int8,
)
# Doc: "数据类型支持float16、float、bfloat16、int8、uint8、int16、uint16、int32、uint32、hifloat8、
# float8_e5m2、float8_e4m3fn" (hifloat8 has no torch dtype).
SCATTER_PA_DTYPES = (
    torch.float16,
    torch.float32,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.float8_e5m2,
    torch.float8_e4m3fn,
)
_INDEX_DTYPES = (torch.int32, torch.int64)


# ---------------------------------------------------------------------------------------------
# npu_scatter_nd_update_
# ---------------------------------------------------------------------------------------------


# The first parameter is ``self``, as in the op schema (npu_native_functions_by_codegen.yaml:
# ``npu_scatter_nd_update_(Tensor(a!) self, Tensor indices, Tensor updates)``), so a keyword
# call means the same here and on an NPU. The doc calls this argument ``input``.


def _validate_scatter_nd_update(a: Mapping[str, Any]) -> None:
    target = a["self"]
    indices = a["indices"]
    updates = a["updates"]
    op = "scatter_nd_update_"
    if target.dtype not in SCATTER_ND_DTYPES:
        fail(op, "self", target.dtype, f"dtype must be one of {SCATTER_ND_DTYPES}")
    if updates.dtype != target.dtype:
        fail(op, "updates", updates.dtype, f"dtype must equal self's {target.dtype}")
    if not 1 <= target.dim() <= 8:
        fail(op, "self", tuple(target.shape), "must have 1 to 8 dimensions")
    if indices.dtype not in _INDEX_DTYPES:
        fail(op, "indices", indices.dtype, "dtype must be int32 or int64")
    if indices.dim() < 2 or indices.size(-1) > target.dim():
        fail(
            op,
            "indices",
            tuple(indices.shape),
            f"must be at least 2-D with a last dim <= self's rank {target.dim()}",
        )
    depth = indices.size(-1)
    expected = (*indices.shape[:-1], *target.shape[depth:])
    if tuple(updates.shape) != expected:
        fail(
            op,
            "updates",
            tuple(updates.shape),
            f"must be indices.shape[:-1] + self.shape[{depth}:] = {expected}",
        )


@npu_op("npu_scatter_nd_update_", validate=_validate_scatter_nd_update)
def scatter_nd_update_(
    self: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
) -> torch.Tensor:
    """``torch_npu.npu_scatter_nd_update_``: ``self[indices[n]] = updates[n]`` in place.

    ``self`` is the schema's name for the doc's ``input``. With ``indices`` of shape
    ``[..., a]`` each index row addresses the first ``a`` dims of ``self``; ``updates`` has shape
    ``indices.shape[:-1] + self.shape[a:]`` (doc example: input (4,5,6), indices (3,2) ->
    updates (3,6)). sglang uses ``a = 1``: ``indices[N, 1]`` selects rows along dim 0. Indices
    must be in bounds ("不支持越界", negatives included); the reference raises ``ValueError``
    otherwise. Duplicate indices: last write wins is not guaranteed (same as the kernel, which
    documents no order). Returns ``self``.
    """
    depth = indices.size(-1)
    flat = indices.reshape(-1, depth).to(device=self.device, dtype=torch.long)
    bounds = torch.tensor(self.shape[:depth], device=self.device)
    if flat.numel() and bool(((flat < 0) | (flat >= bounds)).any()):
        bad = flat[((flat < 0) | (flat >= bounds)).any(dim=1)][0].tolist()
        fail(
            "scatter_nd_update_",
            "indices",
            bad,
            f"out of bounds for self's dims {tuple(self.shape[:depth])}",
        )
    values = updates.reshape(flat.size(0), *self.shape[depth:])
    self[tuple(flat.unbind(dim=1))] = values
    return self


# ---------------------------------------------------------------------------------------------
# npu_scatter_pa_kv_cache
# ---------------------------------------------------------------------------------------------


def _validate_scatter_pa_kv_cache(a: Mapping[str, Any]) -> None:
    key = a["key"]
    value = a["value"]
    key_cache = a["key_cache"]
    value_cache = a["value_cache"]
    slot_mapping = a["slot_mapping"]
    compress_lens = a["compress_lens"]
    seq_lens = a["seq_lens"]
    cache_mode = a["cache_mode"]
    op = "scatter_pa_kv_cache"
    if cache_mode not in (None, "Norm", "PA_NZ"):
        fail(op, "cache_mode", cache_mode, "must be None, 'Norm' or 'PA_NZ'")
    if key.dtype not in SCATTER_PA_DTYPES:
        fail(op, "key", key.dtype, f"dtype must be one of {SCATTER_PA_DTYPES}")
    for name, t in (("value", value), ("key_cache", key_cache), ("value_cache", value_cache)):
        if t.dtype != key.dtype:
            fail(op, name, t.dtype, f"dtype must equal key's {key.dtype}")
    for name, t in (
        ("key", key),
        ("value", value),
        ("key_cache", key_cache),
        ("value_cache", value_cache),
        ("slot_mapping", slot_mapping),
    ):
        if not t.is_contiguous():
            fail(op, name, tuple(t.shape), "inputs must be contiguous (doc: 不支持非连续)")
    if slot_mapping.dtype not in _INDEX_DTYPES or slot_mapping.dim() != 1:
        fail(
            op,
            "slot_mapping",
            (slot_mapping.dtype, tuple(slot_mapping.shape)),
            "must be a 1-D int32/int64 tensor",
        )
    if key.dim() == 4 or compress_lens is not None or seq_lens is not None:
        return  # scenario 3 (compressed); the reference refuses it, the kernel checks it
    if key.dim() != 3 or value.dim() != 3:
        fail(
            op,
            "key/value",
            (tuple(key.shape), tuple(value.shape)),
            "must be 3-D [tokens, heads, head_size] (4-D is the unsupported compressed case)",
        )
    if key.shape[:2] != value.shape[:2] or key.size(0) != slot_mapping.size(0):
        fail(
            op,
            "key/value",
            (tuple(key.shape), tuple(value.shape)),
            f"must share [tokens, heads] with one slot per token ({slot_mapping.size(0)})",
        )
    if key_cache.dim() != 4 or value_cache.dim() != 4:
        fail(
            op,
            "key_cache/value_cache",
            (tuple(key_cache.shape), tuple(value_cache.shape)),
            "must be 4-D",
        )
    if key_cache.size(0) != value_cache.size(0):
        fail(op, "value_cache", tuple(value_cache.shape), "must have key_cache's block count")
    for name, src, cache in (("key_cache", key, key_cache), ("value_cache", value, value_cache)):
        heads, size = src.size(1), src.size(2)
        if cache_mode == "PA_NZ":
            last = cache.size(3)
            if (heads * size) % last or cache.size(1) != heads * size // last:
                fail(
                    op,
                    name,
                    tuple(cache.shape),
                    f"PA_NZ needs [blocks, heads*size//last, block_size, last] for "
                    f"heads={heads}, size={size}",
                )
            block_size = cache.size(2)
        else:
            if tuple(cache.shape[2:]) != (heads, size):
                fail(
                    op,
                    name,
                    tuple(cache.shape),
                    f"'Norm' needs [blocks, block_size, {heads}, {size}]",
                )
            block_size = cache.size(1)
        if name == "value_cache" and block_size != (
            key_cache.size(2) if cache_mode == "PA_NZ" else key_cache.size(1)
        ):
            fail(op, name, tuple(cache.shape), "must have key_cache's block size")


@npu_op("npu_scatter_pa_kv_cache", validate=_validate_scatter_pa_kv_cache)
def scatter_pa_kv_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    compress_lens: torch.Tensor | None = None,
    compress_seq_offsets: torch.Tensor | None = None,
    seq_lens: torch.Tensor | None = None,
    cache_mode: str | None = "PA_NZ",
) -> None:
    """``torch_npu.npu_scatter_pa_kv_cache``: write each token's K/V into its cache slot, in place.

    Slot ``s`` is block ``s // block_size``, offset ``s % block_size`` (values in
    ``[0, blocks*block_size)``, not repeated — doc). Scenarios (doc), chosen by ``cache_mode``:

    - ``'Norm'`` / ``None`` (scenario 2, ND): key ``[T, H, Dk]``, key_cache
      ``[blocks, block_size, H, Dk]``: ``key_cache.view(-1, H, Dk)[slot] = key``. sglang 0.5.23
      calls it this way (``memory_pool_npu.py:317-329``).
    - ``'PA_NZ'`` (scenario 1, the default): key_cache ``[blocks, H*Dk//last, block_size, last]``;
      token t's row ``key[t].reshape(H*Dk//last, last)`` goes to ``key_cache[blk, :, off, :]``
      (inferred: the doc gives only the shapes; this is the FRACTAL_NZ tiling of each block's
      ``[block_size, H*Dk]`` matrix into ``last``-wide column tiles. Rejected: filling the block
      token-major, i.e. writing the token's whole row contiguously at ``off * H*Dk``).

    The compressed scenario 3 (4-D key with ``compress_lens``/``seq_lens``) passes the validator
    (the kernel supports it) but the reference raises ``ValueError`` ("not implemented by the
    reference"). Returns None (the schema returns ``()``).
    """
    compressed = {
        name: t
        for name, t in (
            ("compress_lens", compress_lens),
            ("compress_seq_offsets", compress_seq_offsets),
            ("seq_lens", seq_lens),
        )
        if t is not None
    }
    if compressed or key.dim() == 4:
        name, t = next(iter(compressed.items()), ("key", key))
        not_implemented(
            "scatter_pa_kv_cache",
            name,
            t,
            "scenarios 1 and 2, the uncompressed 3-D key; the compressed scenario 3 is not",
        )
    nz = cache_mode == "PA_NZ"
    block_size = key_cache.size(2) if nz else key_cache.size(1)
    slots = slot_mapping.to(device=key.device, dtype=torch.long)
    capacity = key_cache.size(0) * block_size
    if slots.numel() and bool(((slots < 0) | (slots >= capacity)).any()):
        fail(
            "scatter_pa_kv_cache",
            "slot_mapping",
            slots.tolist(),
            f"slots must be in [0, {capacity})",
        )
    for src, cache in ((key, key_cache), (value, value_cache)):
        if nz:
            rows = src.reshape(src.size(0), cache.size(1), cache.size(3))
            cache[slots // block_size, :, slots % block_size, :] = rows
        else:
            cache.view(-1, src.size(1), src.size(2)).index_copy_(0, slots, src)
