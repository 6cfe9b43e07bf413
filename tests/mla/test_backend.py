"""The FIA MLA backend on the real split pool, against a brute-force MLA oracle.

Requests get whole pages in shuffled order (as sglang's paged allocator hands them out); every
forward writes the latent/rope rows through the pool, then each layer's output is compared with
plain softmax attention computed from the rows each request has written so far: for decode the
absorbed form (latent as key and value), for prefill the expanded form (``kv_b_proj`` of the
latent), causal and aligned to the end of each request's context.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from attention.helpers import FakeNPUGraph, Requests, forward_batch, graph_decode_batch
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from mla.helpers import NOPE, PAGE, ROPE, R, V, make_layer, make_pool, make_runner
from sglang_ascend_fia import ops
from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration
from sglang_ascend_fia.mla.backend import AscendFIAMLABackend
from sglang_ascend_fia.mla.metadata import plan_prefill_launches

PAGES = 16


class Bed:
    """One backend over one pool; keeps every request's latent/rope history for the oracle."""

    def __init__(self, heads: int, n_reqs: int, layers: int = 2) -> None:
        self.gen = torch.Generator().manual_seed(heads * 100 + n_reqs)
        self.pool = make_pool(PAGES, layers=layers)
        self.runner = make_runner(self.pool, heads)
        self.backend = AscendFIAMLABackend(self.runner)
        self.heads = heads
        self.layers = [make_layer(i, heads, self.gen) for i in range(layers)]
        req_to_token = self.runner.req_to_token_pool.req_to_token
        self.reqs = Requests.create(req_to_token, PAGE, PAGES, n_reqs)
        # history[layer][request] = (latent [L, R], rope [L, ROPE])
        self.history = [[(torch.zeros(0, R), torch.zeros(0, ROPE))] * n_reqs for _ in self.layers]

    def rand(self, *size: int) -> torch.Tensor:
        return torch.randn(*size, generator=self.gen)

    def step(self, mode: ForwardMode, new_lens: list[int]) -> list[tuple[torch.Tensor, ...]]:
        loc = torch.cat([self.reqs.extend(i, n) for i, n in enumerate(new_lens)])
        fb = forward_batch(mode, self.reqs, new_lens, loc)
        self.backend.init_forward_metadata(fb)
        return [self.run_layer(i, fb, new_lens, loc) for i in range(len(self.layers))]

    def run_layer(self, i: int, fb: Any, new_lens: list[int], loc: torch.Tensor) -> tuple:
        layer, t, n = self.layers[i], loc.numel(), self.heads
        latent, rope = self.rand(t, R), self.rand(t, 1, ROPE)
        self.pool.set_kv_buffer(layer, loc, latent, rope)
        starts = [0, *torch.tensor(new_lens).cumsum(0).tolist()]
        for r, (a, b) in enumerate(itertools.pairwise(starts)):
            old_l, old_r = self.history[i][r]
            self.history[i][r] = (torch.cat([old_l, latent[a:b]]), torch.cat([old_r, rope[a:b, 0]]))
        decode = fb.forward_mode.is_decode()
        q = self.rand(t, n, R if decode else NOPE)
        q_rope = self.rand(t, n, ROPE)
        if decode:
            out = self.backend.forward_decode(
                q, None, None, layer, fb, save_kv_cache=False, q_rope=q_rope, k_rope=rope
            )
        else:
            k, v = self._expand(layer, latent)
            out = self.backend.forward_extend(
                q, k, v, layer, fb, save_kv_cache=False, q_rope=q_rope, k_rope=rope
            )
        expected = []
        for r, (a, b) in enumerate(itertools.pairwise(starts)):
            lat, rp = self.history[i][r]
            if decode:
                keys, values = (
                    lat.unsqueeze(1).expand(-1, n, -1),
                    lat.unsqueeze(1).expand(-1, n, -1),
                )
            else:
                keys, values = self._expand(layer, lat)
            expected.append(oracle(q[a:b], q_rope[a:b], keys, rp, values, layer.scaling))
        return out, torch.cat(expected).reshape(t, -1)

    def _expand(self, layer: Any, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = layer.kv_b_proj(latent)[0].view(-1, self.heads, NOPE + V)
        return kv[..., :NOPE], kv[..., NOPE:]


def oracle(
    q: torch.Tensor,
    q_rope: torch.Tensor,
    k: torch.Tensor,
    k_rope: torch.Tensor,
    v: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal MLA attention of the last ``len(q)`` tokens of a context of ``len(k)``."""
    sq, skv = q.shape[0], k.shape[0]
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double())
    scores = scores + torch.einsum("qhd,kd->hqk", q_rope.double(), k_rope.double())
    mask = torch.arange(skv)[None, :] > torch.arange(sq)[:, None] + (skv - sq)
    probs = torch.softmax((scores * scale).masked_fill(mask, float("-inf")), dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v.double()).float()


def assert_close(results: list[tuple[torch.Tensor, ...]]) -> None:
    for out, expected in results:
        torch.testing.assert_close(out, expected, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("heads", [16, 32, 4, 12])
def test_prefill_prefix_mixed_and_decode_match_the_oracle(heads: int) -> None:
    """Fresh prefill, a second chunk over a cached prefix (mixed with one-token extends), then
    decode steps, for head counts FIA takes directly (16, 32) and ones it needs padded (4:
    prefill to 8 and decode to 4; 12: to 16)."""
    bed = Bed(heads, n_reqs=3)
    assert_close(bed.step(ForwardMode.EXTEND, [130, 7, 260]))
    assert_close(bed.step(ForwardMode.EXTEND, [140, 1, 1]))
    for _ in range(2):
        assert_close(bed.step(ForwardMode.DECODE, [1, 1, 1]))


PREFILL_OP, DECODE_OP = "fused_infer_attention_score_v2", "fused_infer_attention_score"


def test_one_fia_launch_per_layer_whatever_the_batch() -> None:
    """Prefill: one FIA v2 TND launch per layer; decode: one v1 BSND paged launch."""
    bed = Bed(16, n_reqs=6, layers=3)
    for mode, lens, op in (
        (ForwardMode.EXTEND, [5, 9, 130, 1, 2, 3], PREFILL_OP),
        (ForwardMode.EXTEND, [1, 40, 1, 1, 200, 1], PREFILL_OP),
        (ForwardMode.DECODE, [1] * 6, DECODE_OP),
    ):
        ops.reset_launch_counts()
        bed.step(mode, lens)
        counts = ops.launch_counts()
        fia = {k: n for k, n in counts.items() if k.startswith(DECODE_OP)}
        assert fia == {op: 3}, (mode, counts)
        assert counts["scatter_nd_update_"] == 6, (mode, counts)


@pytest.mark.parametrize(
    ("max_tokens", "max_requests"), [(160, 4096), (10_000, 2)], ids=["kv-tokens", "requests"]
)
def test_a_batch_beyond_one_launch_is_cut_into_runs_of_requests(
    max_tokens: int, max_requests: int
) -> None:
    """With the per-launch limits lowered (FIA v2 takes 1M KV tokens and 4096 requests), a
    fresh batch and a prefix batch are cut into runs of whole requests, one launch each per
    layer, and the outputs still match the oracle."""
    bed = Bed(16, n_reqs=5)
    bed.backend.prefill_max_tokens = max_tokens
    bed.backend.prefill_max_requests = max_requests
    # fresh: 300 tokens -> [130, 7] [100, 60] [3]; prefix: KV [150, 8] [101] [69, 5]
    for lens in ([130, 7, 100, 60, 3], [20, 1, 1, 9, 2]):
        ops.reset_launch_counts()
        assert_close(bed.step(ForwardMode.EXTEND, lens))
        assert len(bed.backend.current_metadata().launches) == 3
        assert ops.launch_counts()[PREFILL_OP] == 3 * 2  # three launches in each of two layers
    ops.reset_launch_counts()
    assert_close(bed.step(ForwardMode.DECODE, [1] * 5))
    assert ops.launch_counts()[DECODE_OP] == 2  # decode stays one launch per layer


def test_launch_plan_cuts_at_the_limits_and_keeps_requests_whole() -> None:
    plan = plan_prefill_launches([3, 4, 5, 1], [10, 4, 20, 8], max_tokens=28, max_requests=8)
    assert [(p.q_rows, p.kv_rows) for p in plan] == [
        (slice(0, 7), slice(0, 14)),
        (slice(7, 13), slice(14, 42)),
    ]
    assert [(p.cum_q_lens, p.cum_kv_lens) for p in plan] == [([3, 7], [10, 14]), ([5, 6], [20, 28])]
    assert len(plan_prefill_launches([1] * 9, [1] * 9, 100, max_requests=4)) == 3
    (whole,) = plan_prefill_launches([2, 2], [5, 6], 11, 2)
    assert whole.cum_kv_lens == [5, 11]
    with pytest.raises(ValueError, match="request 1 attends 30 KV tokens, more than one FIA"):
        plan_prefill_launches([1, 1], [3, 30], 24, 8)


class CacheSplitOrCat(torch.overrides.TorchFunctionMode):
    """Records split/cat-like calls that touch the pool's storage."""

    NAMES = frozenset(
        {
            "cat",
            "concat",
            "concatenate",
            "split",
            "split_with_sizes",
            "chunk",
            "narrow",
            "unbind",
            "tensor_split",
        }
    )

    def __init__(self, storages: set[int]) -> None:
        super().__init__()
        self.storages = storages
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in self.NAMES and self._touches_pool(args):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))

    def _touches_pool(self, args: Any) -> bool:
        flat = [a for x in args for a in (x if isinstance(x, (list, tuple)) else [x])]
        return any(
            isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() in self.storages
            for a in flat
        )


def test_attention_never_splits_or_concatenates_the_cache() -> None:
    bed = Bed(16, n_reqs=2)
    storages = {
        bed.pool.k_buffer.untyped_storage().data_ptr(),
        bed.pool.v_buffer.untyped_storage().data_ptr(),
    }
    recorder = CacheSplitOrCat(storages)
    with recorder:
        bed.step(ForwardMode.EXTEND, [20, 3])
        bed.step(ForwardMode.EXTEND, [4, 1])
        bed.step(ForwardMode.DECODE, [1, 1])
    assert recorder.calls == []
    # The recorder does see such calls when they happen.
    with recorder:
        torch.cat([bed.pool.k_buffer[0], bed.pool.k_buffer[0]])
    assert recorder.calls == ["cat"]


def test_decode_padding_buffers_are_reused_across_layers_and_steps() -> None:
    bed = Bed(12, n_reqs=2, layers=3)
    bed.step(ForwardMode.EXTEND, [3, 4])
    bed.step(ForwardMode.DECODE, [1, 1])
    buffers = {name: t.data_ptr() for name, t in bed.backend.heads._buffers.items()}
    assert {"decode_q", "decode_q_rope", "prefill_q"} <= set(buffers)
    bed.step(ForwardMode.DECODE, [1, 1])
    assert {name: t.data_ptr() for name, t in bed.backend.heads._buffers.items()} == buffers


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"page_size": 64}, "--page-size=64 is not allowed"),
        ({"device": "npu:0", "dtype": torch.float32}, "--dtype float32 is not a dtype FIA takes"),
    ],
    ids=["page-64", "fp32-npu"],
)
def test_what_no_backend_runs_is_refused_at_construction(
    overrides: dict[str, Any], message: str
) -> None:
    runner = make_runner(make_pool(2), 16, **overrides)
    with pytest.raises(UnsupportedConfiguration, match="cannot start") as info:
        AscendFIAMLABackend(runner)
    assert message in str(info.value)


def test_what_is_handed_off_is_refused_if_built_directly() -> None:
    """The registry hands these to sglang's own backend; built directly, the backend names
    the reason instead of computing them wrongly."""
    runner = make_runner(make_pool(2), 16, is_hybrid_swa=True)
    with pytest.raises(UnsupportedConfiguration, match="sliding-window MLA"):
        AscendFIAMLABackend(runner)
    with pytest.raises(UnsupportedConfiguration, match="does not use MLA"):
        AscendFIAMLABackend(make_runner(make_pool(2), 16, use_mla_backend=False))


def test_decode_graph_replay_rebinds_kv_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capture an MLA decode the way NPUGraphRunner does (every length 0, every
    ``req_pool_indices`` 0), then replay at real lengths through the ``actual_seq_lengths_kv``
    update: the output equals an eager decode each time. (16 heads: the fake graph replays the
    FIA calls only, so the query must reach FIA without a padding copy.)"""
    heads = 16
    bed = Bed(heads, n_reqs=3)
    bed.step(ForwardMode.EXTEND, [20, 140, 7])
    backend, layer = bed.backend, bed.layers[0]
    backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4)
    q_static, q_rope_static = bed.rand(3, heads, R), bed.rand(3, heads, ROPE)
    k_rope = bed.rand(3, 1, ROPE)

    def decode_batch(lens: list[int], rows: list[int]) -> Any:
        return graph_decode_batch(bed.reqs, lens, rows)

    def decode(fb: Any) -> torch.Tensor:
        return backend.forward_decode(
            q_static,
            None,
            None,
            layer,
            fb,
            save_kv_cache=False,
            q_rope=q_rope_static,
            k_rope=k_rope,
        )

    graph = FakeNPUGraph()
    capture_fb = decode_batch([0, 0, 0], [0, 0, 0])
    backend.init_forward_metadata_out_graph(capture_fb, in_capture=True)
    out_static = graph.capture(monkeypatch, lambda: decode(capture_fb))
    assert graph.bound_lists == [backend.forward_metadata.kv_lens]

    for growth in ((1, 1, 60), (130, 2, 1)):
        for i, n in enumerate(growth):
            bed.reqs.extend(i, n)
        replay_lens = list(bed.reqs.lens)
        q_static.copy_(bed.rand(3, heads, R))
        backend.init_forward_metadata_out_graph(decode_batch(replay_lens, bed.reqs.rows))
        graph.update(cpu_update_input=[{"actual_seq_lengths_kv": replay_lens}])
        graph.replay()
        fb = decode_batch(replay_lens, bed.reqs.rows)
        backend.init_forward_metadata(fb)
        torch.testing.assert_close(out_static, decode(fb), rtol=1e-5, atol=1e-5)


def test_decode_head_padding_is_allocated_before_graph_capture() -> None:
    """12 heads pad to 16 for decode: init_cuda_graph_state sizes the padding buffers for the
    largest captured batch, so capturing or replaying any batch up to it never reallocates a
    buffer a graph reads."""
    bed = Bed(12, n_reqs=3)
    bed.step(ForwardMode.EXTEND, [5, 9, 3])
    bed.backend.init_cuda_graph_state(max_bs=8, max_num_tokens=8)
    reserved = {name: t.data_ptr() for name, t in bed.backend.heads._buffers.items()}
    assert {"decode_q", "decode_q_rope"} <= set(reserved)
    assert bed.backend.heads._buffers["decode_q"].shape == (8, 16, R)
    assert_close(bed.step(ForwardMode.DECODE, [1, 1, 1]))
    assert {name: t.data_ptr() for name, t in bed.backend.heads._buffers.items()} == reserved
