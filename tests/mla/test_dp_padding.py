"""The FIA MLA backend under data-parallel attention: batches padded the way sglang pads them.

As ``tests/attention/test_dp_padding.py`` for the MHA/GQA backend: sglang's own
``_pad_inputs_to_size`` pads a rank's batch to the gathered width (requests of KV length 0 on
``req_pool_indices`` row 0, tokens on ``out_cache_loc`` slot 0; forward_batch_info.py:1941-1946,
1990-2032), and the DeepSeek forward writes every row's latent at ``out_cache_loc`` before
attention, padding included. Real rows must equal the brute-force MLA oracle, padded rows must
attend nothing, and padding may write page 0 only, which sglang's allocator never hands out.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from attention.helpers import FakeNPUGraph, dp_pad, forward_batch, graph_decode_batch, idle_batch
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from mla.helpers import NOPE, PAGE, ROPE, R
from mla.test_backend import Bed, assert_close, oracle


def cache_rows(bed: Bed, layer_id: int) -> torch.Tensor:
    """Latent and rope of one layer, one row per slot."""
    latent = bed.pool.get_key_buffer(layer_id).reshape(-1, R)
    rope = bed.pool.get_value_buffer(layer_id).reshape(-1, ROPE)
    return torch.cat([latent, rope], dim=-1).clone()


def changed_slots(before: torch.Tensor, after: torch.Tensor) -> set[int]:
    return set((before != after).any(dim=-1).nonzero().flatten().tolist())


def padded_step(
    bed: Bed, mode: ForwardMode, new_lens: list[int], which: list[int], tokens: int, bs: int
) -> None:
    """One forward of requests ``which`` padded to ``tokens`` token rows and ``bs`` requests;
    asserts every layer's real rows against the oracle and where the layer wrote."""
    locs = [bed.reqs.extend(r, n) for r, n in zip(which, new_lens, strict=True)]
    fb = dp_pad(
        forward_batch(mode, bed.reqs, new_lens, torch.cat(locs), which), bed.backend, tokens, bs
    )
    bed.backend.init_forward_metadata(fb)
    real = sum(new_lens)
    real_slots = set(fb.out_cache_loc[:real].tolist())
    starts = [0, *itertools.accumulate(new_lens)]
    decode = mode.is_decode()
    n = bed.heads
    for i, layer in enumerate(bed.layers):
        before = cache_rows(bed, i)
        latent, rope = bed.rand(tokens, R), bed.rand(tokens, 1, ROPE)
        # As the DeepSeek forward does (mla/deepseek.py _project): every row, padding included.
        bed.pool.set_kv_buffer(layer, fb.out_cache_loc, latent, rope)
        q, q_rope = bed.rand(tokens, n, R if decode else NOPE), bed.rand(tokens, n, ROPE)
        if decode:
            out = bed.backend.forward_decode(
                q, None, None, layer, fb, save_kv_cache=False, q_rope=q_rope, k_rope=rope
            )
        else:
            k, v = bed._expand(layer, latent)
            out = bed.backend.forward_extend(
                q, k, v, layer, fb, save_kv_cache=False, q_rope=q_rope, k_rope=rope
            )
        expected = []
        for r, (a, b) in zip(which, itertools.pairwise(starts), strict=True):
            old_l, old_r = bed.history[i][r]
            lat, rp = torch.cat([old_l, latent[a:b]]), torch.cat([old_r, rope[a:b, 0]])
            bed.history[i][r] = (lat, rp)
            if decode:
                keys = values = lat.unsqueeze(1).expand(-1, n, -1)
            else:
                keys, values = bed._expand(layer, lat)
            expected.append(oracle(q[a:b], q_rope[a:b], keys, rp, values, layer.scaling))
        assert out.shape[0] == tokens
        torch.testing.assert_close(
            out[:real], torch.cat(expected).reshape(real, -1), atol=2e-4, rtol=2e-4
        )
        assert not out[real:].any(), "a padded row attended something"
        changed = changed_slots(before, cache_rows(bed, i))
        assert real_slots <= changed, "a real token's latent was not written"
        assert changed - real_slots <= set(range(PAGE)), "padding wrote outside page 0"


def test_dp_padded_decode_and_extend_leave_real_requests_exact() -> None:
    """Decode of 2 of 3 requests padded to 4 rows; a prefill over cached prefixes with padded
    tokens; a prefill without a prefix with padded tokens; decode rows relabelled as 1-token
    extends with padded requests (sglang's MAX_LEN extend arm). Then every request decodes
    unpadded against the oracle: the padding corrupted no real cache row."""
    bed = Bed(16, n_reqs=4)
    assert bed.backend.get_cpu_graph_seq_len_fill_value() == 0
    padded_step(bed, ForwardMode.EXTEND, [20, 140, 7], [0, 1, 2], tokens=167, bs=3)
    padded_step(bed, ForwardMode.DECODE, [1, 1], [0, 2], tokens=4, bs=4)
    padded_step(bed, ForwardMode.EXTEND, [5, 6], [0, 1], tokens=12, bs=2)
    padded_step(bed, ForwardMode.EXTEND, [9], [3], tokens=10, bs=1)
    padded_step(bed, ForwardMode.EXTEND, [1, 1], [1, 2], tokens=4, bs=4)
    assert_close(bed.step(ForwardMode.DECODE, [1, 1, 1, 1]))


def test_a_padded_idle_rank_attends_nothing_and_touches_no_request() -> None:
    """An IDLE rank padded to 3 rows: metadata builds, and the decode launch a graph captured
    for DECODE makes there (sglang's eager ``forward`` answers IDLE itself,
    base_attn_backend.py:332-333) attends nothing; its latent writes land on slot 0 only."""
    bed = Bed(16, n_reqs=2)
    bed.step(ForwardMode.EXTEND, [9, 130])
    fb = dp_pad(idle_batch(), bed.backend, 3, 3)
    bed.backend.init_forward_metadata(fb)
    for i, layer in enumerate(bed.layers):
        before = cache_rows(bed, i)
        latent, rope = bed.rand(3, R), bed.rand(3, 1, ROPE)
        bed.pool.set_kv_buffer(layer, fb.out_cache_loc, latent, rope)
        q, q_rope = bed.rand(3, 16, R), bed.rand(3, 16, ROPE)
        out = bed.backend.forward_decode(
            q, None, None, layer, fb, save_kv_cache=False, q_rope=q_rope, k_rope=rope
        )
        assert out.shape == (3, 16 * R) and not out.any()
        assert changed_slots(before, cache_rows(bed, i)) == {0}
    assert_close(bed.step(ForwardMode.DECODE, [1, 1]))


def test_graph_replay_with_dp_padded_and_idle_batches(monkeypatch: Any) -> None:
    """A decode graph captured at 4 rows, replayed as sglang replays it under DP attention: 2
    real requests + 2 padded rows, then an IDLE rank (4 padded rows in the capture mode,
    decode_cuda_graph_runner.py:197-203). Real rows equal an eager decode of the real requests
    alone; padded rows stay zero."""
    heads = 16
    bed = Bed(heads, n_reqs=3)
    bed.step(ForwardMode.EXTEND, [20, 140, 7])
    backend, layer = bed.backend, bed.layers[0]
    backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4)
    fill = backend.get_cuda_graph_seq_len_fill_value()
    q_static, q_rope_static = bed.rand(4, heads, R), bed.rand(4, heads, ROPE)
    k_rope = bed.rand(4, 1, ROPE)

    def decode(fb: Any, rows: int = 4) -> torch.Tensor:
        return backend.forward_decode(
            q_static[:rows],
            None,
            None,
            layer,
            fb,
            save_kv_cache=False,
            q_rope=q_rope_static[:rows],
            k_rope=k_rope[:rows],
        )

    graph = FakeNPUGraph()
    capture_fb = graph_decode_batch(bed.reqs, [0] * 4, [0] * 4)
    backend.init_forward_metadata_out_graph(capture_fb, in_capture=True)
    out_static = graph.capture(monkeypatch, lambda: decode(capture_fb))

    for i, n in ((0, 1), (2, 60)):
        bed.reqs.extend(i, n)
    real_lens, real_rows = (
        [bed.reqs.lens[0], bed.reqs.lens[2]],
        [bed.reqs.rows[0], bed.reqs.rows[2]],
    )
    for lens, rows in ((real_lens, real_rows), ([], [])):
        pad = 4 - len(lens)
        view = graph_decode_batch(bed.reqs, lens + [fill] * pad, rows + [0] * pad)
        backend.init_forward_metadata_out_graph(view)
        graph.update(cpu_update_input=[{"actual_seq_lengths_kv": lens + [fill] * pad}])
        graph.replay()
        if lens:
            eager_fb = graph_decode_batch(bed.reqs, lens, rows)
            backend.init_forward_metadata(eager_fb)
            expected = decode(eager_fb, rows=len(lens))
            torch.testing.assert_close(out_static[: len(lens)], expected, rtol=1e-5, atol=1e-5)
        assert not out_static[len(lens) :].any()
