"""The FIA backend under data-parallel attention: batches padded the way sglang pads them.

With ``--enable-dp-attention`` every attention-DP rank runs each forward at the gathered width:
``prepare_mlp_sync_batch`` pads a rank's batch with requests of KV length
``get_cpu_graph_seq_len_fill_value()`` (``get_cuda_graph_seq_len_fill_value()`` off the CPU) on
``req_pool_indices`` row 0, and its tokens with ``out_cache_loc`` slot 0; a rank with no request
runs an IDLE forward padded the same way (forward_batch_info.py:1845-1946, 1990-2032). The
padding here is sglang's own ``_pad_inputs_to_size`` (``attention.helpers.dp_pad``). Real rows
must equal the oracle, padded rows must attend nothing, and the only cache rows a padded row may
write are those of page 0, which sglang's allocator never hands to a request.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from attention.helpers import (
    POOL_KINDS,
    TINY,
    FakeNPUGraph,
    Shape,
    dp_pad,
    graph_decode_batch,
    idle_batch,
    make_layer,
    make_pool,
    make_runner,
)
from attention.test_backend import Harness, assert_close, oracle
from sglang_ascend_fia.attention.backend import AscendFIABackend, UnsupportedConfiguration

PAGE = 128


def cache_rows(h: Harness, layer_id: int) -> torch.Tensor:
    """K and V of one layer, one row per slot (every pool layout is slot-ordered)."""
    pool = h.runner.token_to_kv_pool
    width = h.shape.kv_heads * h.shape.head_dim
    buffers = (pool.get_key_buffer(layer_id), pool.get_value_buffer(layer_id))
    return torch.cat([b.reshape(-1, width) for b in buffers], dim=-1).clone()


def changed_slots(before: torch.Tensor, after: torch.Tensor) -> set[int]:
    return set((before != after).any(dim=-1).nonzero().flatten().tolist())


def padded_step(
    h: Harness, mode: ForwardMode, new_lens: list[int], which: list[int], tokens: int, bs: int
) -> None:
    """One forward of requests ``which`` padded to ``tokens`` token rows and ``bs`` requests;
    asserts every layer's real rows against the oracle and where the layer wrote."""
    fb = dp_pad(h.batch(mode, new_lens, which), h.backend, tokens, bs)
    assert fb.seq_lens_cpu.tolist()[len(which) :] == [0] * (bs - len(which))
    h.backend.init_forward_metadata(fb)
    real = sum(new_lens)
    real_slots = set(fb.out_cache_loc[:real].tolist())
    for i, layer in enumerate(h.layers):
        before = cache_rows(h, i)
        q, k, v = h._qkv(tokens)
        out = h.backend.forward(q, k, v, layer, fb)
        expected, start = [], 0
        for r, n in zip(which, new_lens, strict=True):
            old_k, old_v = h.history[i][r]
            h.history[i][r] = (
                torch.cat([old_k, k[start : start + n]]),
                torch.cat([old_v, v[start : start + n]]),
            )
            q_r = q[start : start + n].reshape(n, h.shape.q_heads, h.shape.head_dim)
            expected.append(oracle(q_r, *h.history[i][r], layer.scaling))
            start += n
        assert out.shape[0] == tokens
        torch.testing.assert_close(out[:real], torch.cat(expected), rtol=1e-4, atol=1e-4)
        # Padded rows attend nothing (KV length 0, or no row at all): zeros.
        assert not out[real:].any()
        changed = changed_slots(before, cache_rows(h, i))
        assert real_slots <= changed, "a real token's K/V was not written"
        assert changed - real_slots <= set(range(PAGE)), "padding wrote outside page 0"


@pytest.mark.parametrize("pool_kind", POOL_KINDS)
def test_dp_padded_decode_and_extend_leave_real_requests_exact(
    pool_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decode of 2 of 3 requests padded to 4 rows (a peer rank decodes 4); an extend over cached
    prefixes with its tokens padded (attention-TP alignment); decode rows relabelled as 1-token
    extends with padded requests (sglang's MAX_LEN extend arm). Afterwards every request decodes
    unpadded against the oracle: the padding corrupted no real cache row."""
    h = Harness(TINY, PAGE, pool_kind, n_reqs=3, monkeypatch=monkeypatch)
    assert h.backend.get_cpu_graph_seq_len_fill_value() == 0
    assert h.backend.get_cuda_graph_seq_len_fill_value() == 0
    assert_close(h.step(ForwardMode.EXTEND, [20, 140, 7]))
    padded_step(h, ForwardMode.DECODE, [1, 1], [0, 2], tokens=4, bs=4)
    padded_step(h, ForwardMode.EXTEND, [5, 6], [0, 1], tokens=12, bs=2)
    padded_step(h, ForwardMode.EXTEND, [1, 1], [1, 2], tokens=4, bs=4)
    assert_close(h.step(ForwardMode.DECODE, [1, 1, 1]))


def test_a_padded_idle_rank_runs_no_attention_and_touches_no_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An IDLE rank padded to 3 rows: metadata builds, sglang's ``forward`` answers IDLE itself
    (base_attn_backend.py:332-333); the decode launch a graph captured for DECODE makes there
    attends nothing and writes page 0 only."""
    h = Harness(TINY, PAGE, "npu-fia", n_reqs=2, monkeypatch=monkeypatch)
    h.step(ForwardMode.EXTEND, [9, 130])
    fb = dp_pad(idle_batch(), h.backend, 3, 3)
    h.backend.init_forward_metadata(fb)
    before = [cache_rows(h, i) for i in range(len(h.layers))]
    for i, layer in enumerate(h.layers):
        q, k, v = h._qkv(3)
        assert h.backend.forward(q, k, v, layer, fb).shape == (3, TINY.q_heads * TINY.head_dim)
        out = h.backend.forward_decode(q, k, v, layer, fb)
        assert out.shape == (3, TINY.q_heads * TINY.head_dim) and not out.any()
        assert changed_slots(before[i], cache_rows(h, i)) == {0}
    assert_close(h.step(ForwardMode.DECODE, [1, 1]))


def test_graph_replay_with_dp_padded_and_idle_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode graph captured at 4 rows, replayed as sglang replays it under DP attention: 2
    real requests + 2 padded rows (the peer rank had 4), then an IDLE rank (4 padded rows,
    build_replay_fb_view keeps the capture mode, decode_cuda_graph_runner.py:197-203). Real
    rows equal an eager decode of the real requests alone; padded rows stay zero."""
    shape = Shape(4, 2, 16, layers=3)
    h = Harness(shape, PAGE, "npu-fia", n_reqs=3, monkeypatch=monkeypatch)
    h.step(ForwardMode.EXTEND, [20, 140, 7])
    h.backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4)
    fill = h.backend.get_cuda_graph_seq_len_fill_value()
    q_static = [torch.randn(4, shape.q_heads * shape.head_dim) for _ in h.layers]

    def all_layers(fb: Any) -> list[torch.Tensor]:
        return [
            h.backend.forward(q, None, None, layer, fb, save_kv_cache=False)
            for q, layer in zip(q_static, h.layers, strict=True)
        ]

    graph = FakeNPUGraph()
    capture_fb = graph_decode_batch(h.reqs, [0] * 4, [0] * 4)
    h.backend.init_forward_metadata_out_graph(capture_fb, in_capture=True)
    out_static = graph.capture(monkeypatch, lambda: all_layers(capture_fb))

    for i, n in ((0, 1), (2, 60)):
        h.reqs.extend(i, n)
    real_lens, real_rows = [h.reqs.lens[0], h.reqs.lens[2]], [h.reqs.rows[0], h.reqs.rows[2]]
    for lens, rows in ((real_lens, real_rows), ([], [])):
        pad = 4 - len(lens)
        view = graph_decode_batch(h.reqs, lens + [fill] * pad, rows + [0] * pad)
        h.backend.init_forward_metadata_out_graph(view)
        graph.update(cpu_update_input=[{"actual_seq_lengths_kv": lens + [fill] * pad}])
        graph.replay()
        if lens:
            eager_fb = graph_decode_batch(h.reqs, lens, rows)
            h.backend.init_forward_metadata(eager_fb)
            real_q = [q[: len(lens)].clone() for q in q_static]
            eager = [
                h.backend.forward(q, None, None, layer, eager_fb, save_kv_cache=False)
                for q, layer in zip(real_q, h.layers, strict=True)
            ]
            for replayed, expected in zip(out_static, eager, strict=True):
                torch.testing.assert_close(replayed[: len(lens)], expected, rtol=1e-5, atol=1e-5)
        for replayed in out_static:
            assert not replayed[len(lens) :].any()


def test_a_layer_sharded_unlike_the_pool_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sglang's dense Qwen2 shards attention by --tp-size even under --enable-dp-attention
    (qwen2.py:165-178) while its KV pool holds the attention-TP share (2 KV heads here, 1 per
    layer): the backend names the mismatch instead of failing to reshape the K/V write."""
    h = Harness(TINY, PAGE, "npu-fia", n_reqs=1, monkeypatch=monkeypatch)
    sharded = Shape(TINY.q_heads // 2, TINY.kv_heads // 2, TINY.head_dim)
    layer = make_layer(sharded, 0)
    fb = h.batch(ForwardMode.EXTEND, [5])
    h.backend.init_forward_metadata(fb)
    q = torch.randn(5, sharded.q_heads * sharded.head_dim)
    k = v = torch.randn(5, sharded.kv_heads, sharded.head_dim)
    with pytest.raises(
        UnsupportedConfiguration, match="layer 0 has 1 KV heads per rank, the KV pool 2"
    ):
        h.backend.forward(q, k, v, layer, fb)


def test_a_model_sharded_unlike_the_pool_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same mismatch found in the model's layers when the backend is built, before any
    request: start-up fails with the layer named."""
    sharded = Shape(TINY.q_heads // 2, TINY.kv_heads // 2, TINY.head_dim)
    model = torch.nn.ModuleList([make_layer(TINY, 0), make_layer(sharded, 1)])
    pool = make_pool("npu-fia", TINY, PAGE, 8, monkeypatch)
    runner = make_runner(pool, TINY, PAGE, model=model)
    with pytest.raises(
        UnsupportedConfiguration, match="layer 1 has 1 KV heads per rank, the KV pool 2"
    ):
        AscendFIABackend(runner)
