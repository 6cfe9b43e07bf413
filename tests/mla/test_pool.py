"""The split latent/rope MLA pool: byte accounting, per-layer views, writes through ``ops``."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mla.helpers import PAGE, ROPE, R, make_pool
from sglang_ascend_fia import ops


def test_bytes_match_the_tensors_and_sglangs_cell_size() -> None:
    """``get_kv_size_bytes`` is exactly the two buffers, and equals what sglang's sizing
    (``calculate_mla_kv_cache_dim`` x layers x element size per token) reserves for ``size``
    tokens plus the one padding page."""
    from sglang.srt.mem_cache.kv_cache_configurator import calculate_mla_kv_cache_dim

    pages, layers = 6, 3
    pool = make_pool(pages, layers=layers)
    tensors = pool.k_buffer.nbytes + pool.v_buffer.nbytes
    assert pool.get_kv_size_bytes() == tensors
    model_config = SimpleNamespace(
        hf_config=SimpleNamespace(architectures=["DeepseekV2ForCausalLM"]),
        kv_lora_rank=R,
        qk_rope_head_dim=ROPE,
    )
    cell = (
        calculate_mla_kv_cache_dim(model_config=model_config, kv_cache_dtype=torch.float32)
        * layers
        * 4
    )
    assert tensors == cell * (pages * PAGE + PAGE)
    assert pool.k_buffer.shape == (layers, pages + 1, PAGE, 1, R)
    assert pool.v_buffer.shape == (layers, pages + 1, PAGE, 1, ROPE)


def test_layer_views_are_the_buffers_without_copies() -> None:
    pool = make_pool(2)
    for layer in range(2):
        k, v = pool.get_key_buffer(layer), pool.get_value_buffer(layer)
        assert k.data_ptr() == pool.k_buffer[layer].data_ptr() and k.shape == (3, PAGE, 1, R)
        assert v.data_ptr() == pool.v_buffer[layer].data_ptr() and v.shape == (3, PAGE, 1, ROPE)
        # FIA's paged (blocks, page, D) view needs no copy either.
        assert k.view(-1, PAGE, R).data_ptr() == k.data_ptr()


def test_writes_land_in_their_slots_through_ops() -> None:
    pool = make_pool(3)
    layer = SimpleNamespace(layer_id=1)
    loc = torch.tensor([PAGE + 5, 3 * PAGE + 127, 2 * PAGE])
    latent, rope = torch.randn(3, R), torch.randn(3, 1, ROPE)
    ops.reset_launch_counts()
    pool.set_kv_buffer(layer, loc, latent.unsqueeze(1), rope)
    assert ops.launch_counts() == {"scatter_nd_update_": 2}
    k = pool.get_key_buffer(1).view(-1, R)
    v = pool.get_value_buffer(1).view(-1, ROPE)
    assert torch.equal(k[loc], latent) and torch.equal(v[loc], rope.squeeze(1))
    untouched = torch.ones(k.shape[0], dtype=torch.bool)
    untouched[loc] = False
    assert not k[untouched].any() and not v[untouched].any()
    assert not pool.get_key_buffer(0).any(), "another layer was written"


def test_a_concatenated_row_is_split_into_latent_and_rope() -> None:
    pool = make_pool(1)
    row = torch.randn(2, 1, R + ROPE)
    loc = torch.tensor([7, 9])
    pool.set_kv_buffer(SimpleNamespace(layer_id=0), loc, row, None)
    assert torch.equal(pool.get_key_buffer(0).view(-1, R)[loc], row[:, 0, :R])
    assert torch.equal(pool.get_value_buffer(0).view(-1, ROPE)[loc], row[:, 0, R:])
