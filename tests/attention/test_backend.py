"""The FIA backend on sglang's real KV pools, against a brute-force attention oracle.

Fast tier: no model and no server. Requests are laid out in shuffled whole pages exactly as
sglang's paged allocator does, prefixes sit in the cache before the step that extends them, and
every layer's output is compared with per-request causal softmax attention over the full
(prefix + new) sequence.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
from op_spy import spying
from sglang.srt.model_executor.forward_batch_info import ForwardMode

from attention.helpers import (
    GQA7,
    GQA7_FULL,
    POOL_KINDS,
    TINY,
    FakeNPUGraph,
    Requests,
    Shape,
    forward_batch,
    graph_decode_batch,
    make_layer,
    make_pool,
    make_runner,
)
from sglang_ascend_fia import ops
from sglang_ascend_fia.attention.backend import AscendFIABackend, UnsupportedConfiguration

PAGES = 24


def oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of the last ``len(q)`` positions over ``k``/``v`` (bottom-right aligned).

    q [S, Hq, D], k/v [L, Hkv, D] -> [S, Hq * D]; query head h reads KV head h // (Hq / Hkv).
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).double()
    v = v.repeat_interleave(group, dim=1).double()
    scores = torch.einsum("shd,lhd->hsl", q.double(), k) * scale
    s, length = q.shape[0], k.shape[0]
    future = torch.arange(length)[None, :] > torch.arange(s)[:, None] + (length - s)
    probs = scores.masked_fill(future, float("-inf")).softmax(-1)
    return torch.einsum("hsl,lhd->shd", probs, v).reshape(s, -1).float()


class Harness:
    """One backend over one pool, with the K/V history of every request kept for the oracle."""

    def __init__(
        self,
        shape: Shape,
        page: int,
        pool_kind: str,
        n_reqs: int,
        monkeypatch: Any,
        pages: int | None = None,
        views: bool = False,
    ):
        self.shape = shape
        self.views = views  # q/k/v as views of one fused qkv projection, as gpt2.py passes them
        pages = pages or max(PAGES, 2 * n_reqs + 2)  # default: room for two pages per request
        pool = make_pool(pool_kind, shape, page, pages, monkeypatch)
        self.runner = make_runner(pool, shape, page)
        self.backend = AscendFIABackend(self.runner)
        self.reqs = Requests.create(self.runner.req_to_token_pool.req_to_token, page, pages, n_reqs)
        self.layers = [make_layer(shape, i) for i in range(shape.layers)]
        self.history: list[list[tuple[torch.Tensor, torch.Tensor]]] = [
            [(self._empty(), self._empty()) for _ in range(n_reqs)] for _ in self.layers
        ]
        self.gen = torch.Generator().manual_seed(0)

    def _empty(self) -> torch.Tensor:
        return torch.empty(0, self.shape.kv_heads, self.shape.head_dim)

    def _rand(self, *size: int) -> torch.Tensor:
        return torch.randn(*size, generator=self.gen)

    def batch(self, mode: ForwardMode, new_lens: list[int], which: list[int] | None = None) -> Any:
        which = list(range(len(new_lens))) if which is None else which
        locs = [self.reqs.extend(r, n) for r, n in zip(which, new_lens, strict=True)]
        return forward_batch(mode, self.reqs, new_lens, torch.cat(locs), which)

    def share_prefix(self, src: int, dst: int, pages: int) -> None:
        """Request ``dst`` starts on ``src``'s first ``pages`` pages (a radix-cache hit)."""
        self.reqs.share_prefix(src, dst, pages)
        tokens = pages * self.reqs.page
        for layer_history in self.history:
            k, v = layer_history[src]
            layer_history[dst] = (k[:tokens], v[:tokens])

    def step(
        self, mode: ForwardMode, new_lens: list[int], which: list[int] | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """Run one forward over every layer; return (output, oracle) per layer."""
        which = list(range(len(new_lens))) if which is None else which
        fb = self.batch(mode, new_lens, which)
        self.backend.init_forward_metadata(fb)
        return [self.run_layer(i, fb, new_lens, which) for i in range(len(self.layers))]

    def _qkv(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.shape
        sizes = [s.q_heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim]
        if self.views:
            # Views into one [tokens, (Hq + 2 Hkv) * D] tensor: none of them is contiguous.
            q, k, v = self._rand(tokens, sum(sizes)).split(sizes, dim=-1)
            assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
        else:
            q, k, v = (self._rand(tokens, size) for size in sizes)
        return q, k.view(tokens, s.kv_heads, s.head_dim), v.view(tokens, s.kv_heads, s.head_dim)

    def run_layer(
        self, i: int, fb: Any, new_lens: list[int], which: list[int] | None = None
    ) -> tuple[torch.Tensor, ...]:
        s = self.shape
        which = list(range(len(new_lens))) if which is None else which
        q, k, v = self._qkv(sum(new_lens))
        out = self.backend.forward(q, k, v, self.layers[i], fb)
        expected, start = [], 0
        for r, n in zip(which, new_lens, strict=True):
            old_k, old_v = self.history[i][r]
            full_k = torch.cat([old_k, k[start : start + n]])
            full_v = torch.cat([old_v, v[start : start + n]])
            self.history[i][r] = (full_k, full_v)
            q_r = q[start : start + n].reshape(n, s.q_heads, s.head_dim)
            expected.append(oracle(q_r, full_k, full_v, self.layers[i].scaling))
            start += n
        return out, torch.cat(expected)


def assert_close(results: list[tuple[torch.Tensor, ...]]) -> None:
    for out, expected in results:
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pool_kind", POOL_KINDS)
@pytest.mark.parametrize("page", [128, 256])
@pytest.mark.parametrize("shape", [TINY, GQA7], ids=lambda s: s.id)
def test_prefill_prefix_extend_and_decode_match_oracle(
    shape: Shape, page: int, pool_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fresh prefill, then an extend whose prefix is cached (radix hit / next chunk), a mixed
    batch with single-token extends, then decode steps; every layer matches the oracle."""
    h = Harness(shape, page, pool_kind, n_reqs=3, monkeypatch=monkeypatch)
    assert_close(h.step(ForwardMode.EXTEND, [5, 130, page + 3]))
    # Prefix lengths 5 / 130 / page+3: the new tokens must attend the cached ones.
    assert_close(h.step(ForwardMode.EXTEND, [70, 1, page]))
    assert_close(h.step(ForwardMode.MIXED, [1, 9, 1]))
    for _ in range(3):
        assert_close(h.step(ForwardMode.DECODE, [1, 1, 1]))


def record_layouts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each FIA call's ``input_layout`` (the call itself still runs)."""
    layouts: list[str] = []
    real = ops.fused_infer_attention_score

    def recording(*args: Any, **kwargs: Any) -> Any:
        layouts.append(kwargs["input_layout"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "fused_infer_attention_score", spying(recording))
    return layouts


@pytest.mark.parametrize(
    ("shape", "extend_layout"),
    [(Shape(4, 2, 64), "BSND"), (Shape(2, 1, 256), "TND"), (Shape(6, 2, 80), "BSND")],
    ids=lambda v: v.id if isinstance(v, Shape) else v,
)
def test_head_dims_use_tnd_only_where_upstream_does(
    shape: Shape, extend_layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D 64/80 (Qwen2.5-0.5B, Phi-3-mini): prefill is one padded BSND call per layer; D 256 one
    TND call. Both match the oracle, with prefixes, mixed batches and ragged lengths."""
    h = Harness(shape, 128, "npu-fia", n_reqs=3, monkeypatch=monkeypatch)
    layouts = record_layouts(monkeypatch)
    assert_close(h.step(ForwardMode.EXTEND, [5, 130, 1]))
    assert_close(h.step(ForwardMode.EXTEND, [70, 1, 129]))
    assert_close(h.step(ForwardMode.MIXED, [1, 9, 1]))
    assert_close(h.step(ForwardMode.EXTEND, [1, 1, 1]))  # every request one new token
    assert layouts == [extend_layout] * (4 * shape.layers)
    layouts.clear()
    assert_close(h.step(ForwardMode.DECODE, [1, 1, 1]))
    assert layouts == ["BSND"] * shape.layers


def test_views_of_a_fused_qkv_are_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """q, k and v as views of one fused qkv projection (gpt2.py's ``chunk``): FIA gets a
    contiguous query and the KV write contiguous rows, at both prefill forms and decode."""
    written: list[bool] = []
    real_write = ops.scatter_pa_kv_cache

    def write(key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        written.append(key.is_contiguous() and value.is_contiguous())
        return real_write(key, value, *args, **kwargs)

    monkeypatch.setattr(ops, "scatter_pa_kv_cache", spying(write))
    for shape in (TINY, Shape(2, 1, 128)):
        h = Harness(shape, 128, "npu-fia", n_reqs=2, monkeypatch=monkeypatch, views=True)
        assert_close(h.step(ForwardMode.EXTEND, [7, 130]))
        assert_close(h.step(ForwardMode.EXTEND, [3, 2]))
        assert_close(h.step(ForwardMode.DECODE, [1, 1]))
    assert written and all(written)


def test_many_requests_decode_on_shared_prefix_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """sglang's radix cache: eight requests start on request 0's two prefix pages and decode in
    one batch. Their pages sum to 24 in a pool of 12; every layer matches the oracle."""
    n = 8
    h = Harness(TINY, 128, "npu-fia", n_reqs=n, monkeypatch=monkeypatch, pages=12)
    assert_close(h.step(ForwardMode.EXTEND, [2 * 128 + 5], which=[0]))
    for r in range(1, n):
        h.share_prefix(0, r, pages=2)
    assert_close(h.step(ForwardMode.EXTEND, [3 + r for r in range(1, n)], which=list(range(1, n))))
    for _ in range(3):
        assert_close(h.step(ForwardMode.DECODE, [1] * n))
    per_request = sum(-(-length // 128) for length in h.reqs.lens)
    assert per_request == 3 * n > 12 >= h.reqs.pages_in_use()


def test_full_qwen25_7b_head_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(GQA7_FULL, 128, "npu-fia", n_reqs=2, monkeypatch=monkeypatch)
    assert_close(h.step(ForwardMode.EXTEND, [40, 129]))
    assert_close(h.step(ForwardMode.EXTEND, [17, 3]))
    assert_close(h.step(ForwardMode.DECODE, [1, 1]))


def test_kv_lands_in_the_pool_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write goes to sglang's own buffers at ``out_cache_loc``: stock readers see it."""
    h = Harness(TINY, 128, "stock", n_reqs=2, monkeypatch=monkeypatch)
    fb = h.batch(ForwardMode.EXTEND, [3, 4])
    h.backend.init_forward_metadata(fb)
    k = torch.randn(7, TINY.kv_heads, TINY.head_dim)
    v = torch.randn(7, TINY.kv_heads, TINY.head_dim)
    q = torch.randn(7, TINY.q_heads * TINY.head_dim)
    h.backend.forward(q, k, v, h.layers[1], fb)
    pool = h.runner.token_to_kv_pool
    torch.testing.assert_close(pool.get_key_buffer(1)[fb.out_cache_loc], k)
    torch.testing.assert_close(pool.get_value_buffer(1)[fb.out_cache_loc], v)
    assert not pool.get_key_buffer(0).any(), "layer 0 must be untouched"


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_one_fia_launch_per_layer_for_any_batch(
    batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = Shape(4, 2, 16, layers=3)
    h = Harness(shape, 128, "npu-fia", n_reqs=batch, monkeypatch=monkeypatch)
    for mode, lens in (
        (ForwardMode.EXTEND, [3 + i % 5 for i in range(batch)]),
        (ForwardMode.EXTEND, [1 + i % 2 for i in range(batch)]),
        (ForwardMode.DECODE, [1] * batch),
    ):
        ops.reset_launch_counts()
        h.step(mode, lens)
        counts = ops.launch_counts()
        assert counts["fused_infer_attention_score"] == shape.layers, (mode, counts)
        # K and V writes: one scatter_pa_kv_cache per layer for both, never per request.
        assert counts["scatter_pa_kv_cache"] == shape.layers, (mode, counts)
        assert set(counts) == {"fused_infer_attention_score", "scatter_pa_kv_cache"}, counts


def test_one_validation_per_batch_over_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """All layers of a batch share one FIA geometry and one KV-write geometry: the first layer's
    calls validate fully, the others only launch (``ops.PreparedCall``); each new batch (new
    metadata lists, table and slots) validates again."""
    shape = Shape(4, 2, 16, layers=6)
    h = Harness(shape, 128, "npu-fia", n_reqs=5, monkeypatch=monkeypatch)
    ops.reset_validation_counts()
    steps = (
        (ForwardMode.EXTEND, [3, 9, 1, 4, 6]),
        (ForwardMode.DECODE, [1] * 5),
        (ForwardMode.DECODE, [1] * 5),
        (ForwardMode.EXTEND, [2, 1, 1, 130, 5]),
    )
    for step, (mode, lens) in enumerate(steps, start=1):
        ops.reset_launch_counts()
        assert_close(h.step(mode, lens))
        assert ops.launch_counts()["fused_infer_attention_score"] == shape.layers
        assert ops.validation_counts()["fused_infer_attention_score"] == step, mode
        assert ops.validation_counts()["scatter_pa_kv_cache"] == step, mode
    ops.reset_validation_counts()


SYNC_METHODS = ("tolist", "item", "cpu")


class SyncCounter:
    """Counts ``Tensor.tolist/.item/.cpu`` calls made outside the ops references, while active.

    The references stand in for device kernels (on an NPU the calls go to torch_npu), so what
    they do internally is the kernel's business, not host work of the backend.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def __enter__(self) -> SyncCounter:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            frames = traceback.extract_stack(limit=16)[:-1]
            if not any(f"sglang_ascend_fia{os.sep}ops{os.sep}" in f.filename for f in frames):
                self.calls.append(f"{name} at {frames[-1].filename}:{frames[-1].lineno}")
            return original(tensor, *args, **kwargs)

        return counted


@pytest.mark.parametrize("layers", [1, 8])
def test_layer_forwards_make_no_host_sync(layers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """All host work is in init_forward_metadata; the layers make none, however many."""
    shape = Shape(4, 2, 16, layers=layers)
    h = Harness(shape, 128, "npu-fia", n_reqs=4, monkeypatch=monkeypatch)
    for mode, lens in ((ForwardMode.EXTEND, [9, 3, 130, 1]), (ForwardMode.DECODE, [1] * 4)):
        fb = h.batch(mode, lens)
        with SyncCounter() as counter:
            h.backend.init_forward_metadata(fb)
            per_batch = list(counter.calls)
            for i in range(layers):
                h.run_layer(i, fb, lens)
        # seq_lens_cpu.tolist(): one conversion of a host tensor, no device involved.
        assert len(per_batch) == 1, per_batch
        assert counter.calls == per_batch, counter.calls[len(per_batch) :]


def test_graph_replay_rebinds_kv_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capture a decode of every layer the way NPUGraphRunner does (every length 0, every
    ``req_pool_indices`` 0: npu_graph_runner.py:335-347 pads with those), then replay twice at
    real lengths via the ``actual_seq_lengths_kv`` update: every layer's replayed output equals
    an eager decode each time. (A CPU run has no NPU graph runner to sample tokens from; the
    tokens are a function of these outputs, which the eager path is proven to get right.)"""
    shape = Shape(4, 2, 16, layers=3)
    h = Harness(shape, 128, "npu-fia", n_reqs=3, monkeypatch=monkeypatch)
    h.step(ForwardMode.EXTEND, [20, 140, 7])
    h.backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4)
    q_static = [torch.randn(3, shape.q_heads * shape.head_dim) for _ in h.layers]

    def decode_batch(lens: list[int], rows: list[int]) -> Any:
        return graph_decode_batch(h.reqs, lens, rows)

    def all_layers(fb: Any, **kwargs: Any) -> list[torch.Tensor]:
        return [
            h.backend.forward(q, None, None, layer, fb, **kwargs)
            for q, layer in zip(q_static, h.layers, strict=True)
        ]

    graph = FakeNPUGraph()
    capture_fb = decode_batch([0, 0, 0], [0, 0, 0])
    h.backend.init_forward_metadata_out_graph(capture_fb, in_capture=True)
    out_static = graph.capture(monkeypatch, lambda: all_layers(capture_fb))
    # One FIA call per layer, all bound to the batch's one lengths list.
    assert len(graph.calls) == shape.layers
    assert graph.bound_lists == [h.backend.forward_metadata.kv_lens]
    assert graph.bound_lists[0] is h.backend.forward_metadata.kv_lens

    for growth in ((1, 1, 60), (130, 2, 1)):
        # Next step: the requests grew (the new tokens are already in the cache).
        for i, n in enumerate(growth):
            h.reqs.extend(i, n)
        replay_lens = list(h.reqs.lens)
        for q in q_static:
            q.copy_(torch.randn_like(q))
        # Replay: the runner copies the real lengths and rows in, the backend refreshes in place.
        h.backend.init_forward_metadata_out_graph(decode_batch(replay_lens, h.reqs.rows))
        graph.replay()
        stale = [out.clone() for out in out_static]
        graph.update(cpu_update_input=[{"actual_seq_lengths_kv": replay_lens}])
        graph.replay()

        fb = decode_batch(replay_lens, h.reqs.rows)
        h.backend.init_forward_metadata(fb)
        eager = all_layers(fb, save_kv_cache=False)
        for layer, (replayed, expected, old) in enumerate(
            zip(out_static, eager, stale, strict=True)
        ):
            torch.testing.assert_close(replayed, expected, rtol=1e-5, atol=1e-5, msg=str(layer))
            # Without the update the graph reads the capture-time lengths: the update matters.
            assert not torch.allclose(old, expected, atol=1e-3), layer


def test_a_graph_refresh_revalidates_the_lengths_it_rewrote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The graph metadata's lengths are rewritten in place on every refresh, so the calls
    prepared with them before (at capture) must validate again: a forward on the refreshed
    metadata validates once and equals an eager decode."""
    shape = Shape(4, 2, 16, layers=3)
    h = Harness(shape, 128, "npu-fia", n_reqs=3, monkeypatch=monkeypatch)
    h.step(ForwardMode.EXTEND, [20, 140, 7])
    h.backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4)
    queries = [torch.randn(3, shape.q_heads * shape.head_dim) for _ in h.layers]

    def all_layers(fb: Any) -> list[torch.Tensor]:
        return [
            h.backend.forward(q, None, None, layer, fb, save_kv_cache=False)
            for q, layer in zip(queries, h.layers, strict=True)
        ]

    capture_fb = graph_decode_batch(h.reqs, [0, 0, 0], [0, 0, 0])
    h.backend.init_forward_metadata_out_graph(capture_fb, in_capture=True)
    all_layers(capture_fb)
    for growth in ((1, 1, 60), (3, 2, 1)):
        for i, n in enumerate(growth):
            h.reqs.extend(i, n)
        fb = graph_decode_batch(h.reqs, list(h.reqs.lens), h.reqs.rows)
        h.backend.init_forward_metadata_out_graph(fb)
        ops.reset_validation_counts()
        refreshed = all_layers(fb)
        assert ops.validation_counts() == {"fused_infer_attention_score": 1}
        h.backend.init_forward_metadata(fb)
        for got, expected in zip(refreshed, all_layers(fb), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("page", [1, 16, 24, 32, 64, 1024])
def test_illegal_page_size_refused_at_construction(
    page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool("npu-fia", TINY, page, 8, monkeypatch)
    with pytest.raises(UnsupportedConfiguration) as err:
        AscendFIABackend(make_runner(pool, TINY, page))
    message = str(err.value)
    legal = ops.legal_page_sizes(mla=False)
    assert 128 in legal and page not in legal
    assert f"--page-size={page}" in message
    assert f"accepts page sizes {legal}" in message


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"use_mla_backend": True}, "MLA"),
        ({"is_draft_worker": True}, "speculative"),
        ({"sliding_window_size": 4096}, "sliding-window"),
        ({"is_hybrid_swa": True}, "sliding-window"),
    ],
)
def test_unsupported_configurations_refused_at_construction(
    overrides: dict[str, Any], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    with pytest.raises(UnsupportedConfiguration, match=needle):
        AscendFIABackend(make_runner(pool, TINY, 128, **overrides))


def test_speculative_algorithm_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128, spec_algorithm=SpeculativeAlgorithm.EAGLE)
    with pytest.raises(UnsupportedConfiguration, match="speculative"):
        AscendFIABackend(runner)


def test_gqa_ratio_above_fia_limit_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = Shape(128, 1, 16)
    pool = make_pool("npu-fia", shape, 128, 8, monkeypatch)
    with pytest.raises(UnsupportedConfiguration, match="GQA ratio"):
        AscendFIABackend(make_runner(pool, shape, 128))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_refused_on_an_npu(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 runs on the reference ops only; on an NPU it is refused before anything allocates
    there (no NPU is needed: the refusal comes first)."""
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128, device="npu:0", dtype=dtype)
    with pytest.raises(UnsupportedConfiguration, match="is not a dtype FIA takes on an NPU"):
        AscendFIABackend(runner)


def test_float64_refused_off_the_npu_too(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128, dtype=torch.float64)
    with pytest.raises(UnsupportedConfiguration, match="--dtype float64 is not a dtype FIA or"):
        AscendFIABackend(runner)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_any_float_dtype_runs_on_the_reference(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    assert AscendFIABackend(make_runner(pool, TINY, 128, dtype=dtype)).data_type == dtype


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        (Shape(4, 2, 24), "head_dim 24 is not one FIA prefill takes"),
        (Shape(4, 2, 576), "head_dim 576 is not one FIA prefill takes"),
        (Shape(272, 1, 16), "272 query heads per rank exceed FIA's limit 256"),
    ],
    ids=["d24", "d576", "272-heads"],
)
def test_head_geometry_fia_refuses_is_refused_at_construction(
    shape: Shape, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool("npu-fia", shape, 128, 8, monkeypatch)
    with pytest.raises(UnsupportedConfiguration, match=needle):
        AscendFIABackend(make_runner(pool, shape, 128))
