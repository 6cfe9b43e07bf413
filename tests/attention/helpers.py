"""Builders for the FIA backend on sglang's real KV pools, without a model or a server.

A ``ModelRunner`` stand-in carries only what :class:`AscendFIABackend` reads; the pools, the
req-to-token table and the forward modes are sglang's own classes, so the backend is exercised
against the exact buffer layouts an engine hands it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from op_spy import spying
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

from sglang_ascend_fia import ops


@dataclass
class Shape:
    q_heads: int
    kv_heads: int
    head_dim: int
    layers: int = 2

    @property
    def id(self) -> str:
        return f"{self.q_heads}q{self.kv_heads}kv-d{self.head_dim}"


TINY = Shape(4, 2, 16)
GQA7 = Shape(14, 2, 128)  # Qwen2.5-7B's 7:1 ratio and head_dim, per TP-2 rank
GQA7_FULL = Shape(28, 4, 128)


def make_pool(kind: str, shape: Shape, page: int, pages: int, monkeypatch: Any) -> Any:
    """One of sglang's MHA pools, sized ``pages`` pages plus the padding page."""
    kwargs = dict(
        size=pages * page,
        page_size=page,
        dtype=torch.float32,
        head_num=shape.kv_heads,
        head_dim=shape.head_dim,
        layer_num=shape.layers,
        device="cpu",
        enable_memory_saver=False,
    )
    if kind == "stock":
        from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool

        return MHATokenToKVPool(**kwargs)
    from sglang.srt.hardware_backend.npu.memory_pool_npu import NPUMHATokenToKVPool

    # The NPU pool reads the toggle itself: on, it keeps per-layer [(P+1)*page, 1, H, D] views
    # (memory_pool_npu.py:175-189); off, per-layer [P+1, page, H, D] slices.
    monkeypatch.setenv("ASCEND_USE_FIA", "1" if kind == "npu-fia" else "0")
    return NPUMHATokenToKVPool(**kwargs)


POOL_KINDS = ("stock", "npu-fia", "npu")


def fake_runner(
    pool: Any,
    page: int,
    q_heads: int,
    max_reqs: int,
    model_fields: dict[str, Any],
    **overrides: Any,
) -> Any:
    """A ``ModelRunner`` stand-in carrying what the FIA backends and the hand-off rules read,
    over sglang's own ``ReqToTokenPool``; ``overrides`` set runner attributes."""
    from sglang.srt.mem_cache.memory_pool import ReqToTokenPool
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    model_config = SimpleNamespace(
        context_len=2048,
        is_encoder_decoder=False,
        get_num_attention_heads=lambda tp: q_heads // tp,
        **model_fields,
    )
    runner = SimpleNamespace(
        device="cpu",
        page_size=page,
        req_to_token_pool=ReqToTokenPool(
            size=max_reqs, max_context_len=2048, device="cpu", enable_memory_saver=False
        ),
        token_to_kv_pool=pool,
        model_config=model_config,
        dtype=torch.float32,
        kv_cache_dtype=torch.float32,
        use_mla_backend=False,
        spec_algorithm=SpeculativeAlgorithm.NONE,
        is_draft_worker=False,
        is_hybrid_swa=False,
        sliding_window_size=None,
        # The layer ids the runner owns (sglang's ModelLayerInfo): the pool's.
        layer_info=SimpleNamespace(
            start_layer=getattr(pool, "start_layer", 0),
            num_effective_layers=getattr(pool, "layer_num", 0),
        ),
    )
    for key, value in overrides.items():
        setattr(runner, key, value)
    if "dtype" in overrides and "kv_cache_dtype" not in overrides:
        runner.kv_cache_dtype = runner.dtype  # sglang's "auto": the model's dtype
    return runner


def make_runner(pool: Any, shape: Shape, page: int, max_reqs: int = 64, **overrides: Any) -> Any:
    return fake_runner(
        pool, page, shape.q_heads, max_reqs, {"head_dim": shape.head_dim}, **overrides
    )


def make_layer(shape: Shape, layer_id: int, **kwargs: Any) -> Any:
    """sglang's own ``RadixAttention`` (``kwargs``: logit_cap, attn_type, ... as a model sets)."""
    from sglang.srt.layers.radix_attention import RadixAttention

    return RadixAttention(
        num_heads=shape.q_heads,
        head_dim=shape.head_dim,
        scaling=shape.head_dim**-0.5,
        num_kv_heads=shape.kv_heads,
        layer_id=layer_id,
        **kwargs,
    )


@dataclass
class Requests:
    """Requests laid out the way sglang's paged allocator lays them out: whole pages, in a
    shuffled order, page 0 left for padding writes."""

    page: int
    pages: int
    req_to_token: torch.Tensor
    rows: list[int]
    lens: list[int] = field(default_factory=list)  # tokens already in the cache per request
    _free: list[int] = field(default_factory=list)
    _owned: list[list[int]] = field(default_factory=list)

    @classmethod
    def create(cls, req_to_token: torch.Tensor, page: int, pages: int, n: int, seed: int = 0):
        free = list(range(1, pages + 1))
        random.Random(seed).shuffle(free)
        rows = list(range(1, n + 1))  # row 0 is sglang's padding row
        return cls(page, pages, req_to_token, rows, [0] * n, free, [[] for _ in range(n)])

    def share_prefix(self, src: int, dst: int, pages: int) -> None:
        """Point request ``dst`` (empty) at the first ``pages`` pages of request ``src``, as
        sglang's radix cache does for a prefix hit: no new pages, the same slot ids."""
        assert self.lens[dst] == 0 and self.lens[src] >= pages * self.page
        self._owned[dst] = self._owned[src][:pages]
        tokens = pages * self.page
        self.req_to_token[self.rows[dst], :tokens] = self.req_to_token[self.rows[src], :tokens]
        self.lens[dst] = tokens

    def pages_in_use(self) -> int:
        """Distinct pages the requests hold (shared pages once)."""
        return len({p for owned in self._owned for p in owned})

    def extend(self, i: int, new: int) -> torch.Tensor:
        """Allocate ``new`` more slots for request ``i``; return their slot ids."""
        start = self.lens[i]
        slots = []
        for j in range(start, start + new):
            if j // self.page >= len(self._owned[i]):
                self._owned[i].append(self._free.pop())
            slots.append(self._owned[i][j // self.page] * self.page + j % self.page)
        self.req_to_token[self.rows[i], start : start + new] = torch.tensor(
            slots, dtype=self.req_to_token.dtype
        )
        self.lens[i] += new
        return torch.tensor(slots, dtype=torch.int64)


def forward_batch(
    mode: Any,
    reqs: Requests,
    new_lens: list[int],
    out_cache_loc: torch.Tensor,
    which: list[int] | None = None,
):
    """A ``ForwardBatch`` stand-in over requests ``which`` (default: all), in that order."""
    which = list(range(len(reqs.lens))) if which is None else which
    lens = [reqs.lens[i] for i in which]
    seq_lens = torch.tensor(lens, dtype=torch.int64)
    return SimpleNamespace(
        forward_mode=mode,
        batch_size=len(which),
        seq_lens=seq_lens,
        seq_lens_cpu=seq_lens.clone(),
        req_pool_indices=torch.tensor([reqs.rows[i] for i in which], dtype=torch.int64),
        extend_seq_lens_cpu=list(new_lens),
        extend_prefix_lens_cpu=[n - q for n, q in zip(lens, new_lens, strict=True)],
        out_cache_loc=out_cache_loc,
    )


class _PaddableBatch(SimpleNamespace):
    """A ``ForwardBatch`` stand-in sglang's own DP padding can run on: every field it pads that
    a test did not set reads as None, as on a text-only batch without speculative decoding."""

    _pad_tensor_to_size = ForwardBatch._pad_tensor_to_size

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def dp_pad(fb: Any, backend: Any, num_tokens: int, bs: int) -> Any:
    """``fb`` padded by sglang's own ``ForwardBatch._pad_inputs_to_size``, as
    ``prepare_mlp_sync_batch`` pads an attention-DP rank to the gathered width
    (forward_batch_info.py:1941-1946, 1990-2032): ``num_tokens`` token rows (``out_cache_loc``
    padded with slot 0), ``bs`` requests (``seq_lens`` padded with the backend's CPU fill value,
    ``req_pool_indices`` with row 0)."""
    batch = _PaddableBatch(**vars(fb))
    tokens = fb.out_cache_loc.shape[0]
    batch.input_ids = torch.zeros(tokens, dtype=torch.int64)
    batch.positions = torch.zeros(tokens, dtype=torch.int64)
    ForwardBatch._pad_inputs_to_size(batch, SimpleNamespace(attn_backend=backend), num_tokens, bs)
    batch.batch_size = bs
    return batch


def idle_batch() -> Any:
    """What an attention-DP rank with no request holds (ForwardMode.IDLE): nothing, until
    ``dp_pad`` pads it to the gathered width."""
    empty = torch.zeros(0, dtype=torch.int64)
    return SimpleNamespace(
        forward_mode=ForwardMode.IDLE,
        batch_size=0,
        seq_lens=empty,
        seq_lens_cpu=empty.clone(),
        req_pool_indices=empty.clone(),
        extend_seq_lens_cpu=None,
        extend_prefix_lens_cpu=None,
        out_cache_loc=empty.clone(),
    )


def graph_decode_batch(reqs: Requests, lens: list[int], rows: list[int]) -> Any:
    """A decode batch as ``NPUGraphRunner`` hands it over: at capture every length 0 and every
    ``req_pool_indices`` 0 (npu_graph_runner.py:335-347 pads with those), at replay the real
    lengths and rows copied into the static buffers."""
    n = len(lens)
    # Any n rows (a graph's batch size need not be the request count): the lengths and rows
    # are set below.
    fb = forward_batch(
        ForwardMode.DECODE, reqs, [1] * n, torch.zeros(n, dtype=torch.long), which=[0] * n
    )
    fb.seq_lens_cpu = torch.tensor(lens)
    fb.seq_lens = fb.seq_lens_cpu.clone()
    fb.req_pool_indices = torch.tensor(rows)
    return fb


@pytest.fixture(autouse=True)
def parallel_context() -> Iterator[None]:
    """Single-rank parallel widths, as a one-device server publishes them (autouse where a
    conftest imports it: tests/attention and tests/mla)."""
    from sglang.srt.runtime_context import get_parallel

    # One rank of one: the registry's start-up line and the ranks' agreement read these.
    tp_group = SimpleNamespace(world_size=1, rank_in_group=0)
    one_rank = {"attn_dp_rank": 0, "attn_dp_size": 1, "moe_ep_rank": 0, "moe_ep_size": 1}
    with get_parallel().override(
        attn_tp_size=1,
        attn_cp_size=1,
        dcp_enabled=False,
        attn_dcp_size=1,
        attn_dcp_rank=0,
        tp_group=tp_group,
        **one_rank,
    ):
        yield


@pytest.fixture
def ascend_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], Any]]:
    """``ATTENTION_BACKENDS["ascend"]`` as sglang looks it up, with the plugin active."""
    monkeypatch.setenv("ASCEND_USE_FIA", "1")
    from sglang.srt.layers.attention import attention_registry

    # The MLA pool module first, as sglang's own import order has it: the fia-mla-kv-pool hook
    # fires when memory_pool_npu is imported, and it imports this module.
    import sglang_ascend_fia.mla.pool  # noqa: F401
    from sglang_ascend_fia import plugin

    plugin.activate()
    try:
        yield lambda runner: attention_registry.ATTENTION_BACKENDS["ascend"](runner)
    finally:
        plugin.deactivate()


def assert_handed_to_sglang(
    ascend_factory: Callable[[Any], Any], runner: Any, needle: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Building the ``"ascend"`` backend for ``runner`` records one hand-off to sglang's own
    backend whose reason holds ``needle`` and logs it in one line. On CPU sglang's own backend
    cannot be built (its module imports ``torch_npu``), so the registry refuses the hand-off in
    one line that names the reason; that the call then goes to sglang's own factory where
    torch_npu exists is proven with the stand-in (tests/e2e/test_fia_handoff.py)."""
    from sglang_ascend_fia.fia_backend import handoff
    from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration

    before = len(handoff.decisions())
    with (
        caplog.at_level(logging.INFO, logger="sglang_ascend_fia"),
        pytest.raises(
            UnsupportedConfiguration, match=r"which needs torch_npu, and torch_npu is not"
        ) as info,
    ):
        ascend_factory(runner)
    (decision,) = handoff.decisions()[before:]
    assert decision.backend == "sglang" and needle in decision.reason, decision
    assert needle in str(info.value)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("sglang_ascend_fia")]
    assert len(lines) == 1 and needle in lines[0], lines
    assert "sglang's own AscendAttnBackend" in lines[0]


class FakeNPUGraph:
    """What NPUGraphRunner relies on, modelled on CPU.

    Capture records every FIA call with its tensors (by reference: a graph keeps addresses) and a
    *copy* of its host lists (a captured kernel keeps the values it was given). ``update``
    replaces one keyword for every captured FIA call, as ``graph.update(cpu_update_input=...)``
    does; ``replay`` re-runs the calls and writes into the captured outputs.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any], torch.Tensor]] = []

    def capture(self, monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]) -> Any:
        real = ops.fused_infer_attention_score

        def recording(*args: Any, **kwargs: Any) -> Any:
            out, lse = real(*args, **kwargs)
            frozen = {k: list(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            self.calls.append((args, frozen, out))
            self.bound_lists = [v for v in kwargs.values() if isinstance(v, list)]
            return out, lse

        monkeypatch.setattr(ops, "fused_infer_attention_score", spying(recording))
        try:
            return run()
        finally:
            monkeypatch.setattr(ops, "fused_infer_attention_score", real)

    def update(self, cpu_update_input: list[dict[str, list[int]]]) -> None:
        # NPUGraphRunner sends one dict; it applies to every captured FIA call.
        (update,) = cpu_update_input
        for _, kwargs, _ in self.calls:
            for key, value in update.items():
                assert key in kwargs, f"captured FIA call has no {key!r} to update"
                assert isinstance(kwargs[key], list), f"{key} was not bound as a Python list"
                kwargs[key] = list(value)

    def replay(self) -> None:
        for args, kwargs, out in self.calls:
            out.copy_(ops.fused_infer_attention_score(*args, **kwargs)[0])


def count_rule_checks(
    monkeypatch: pytest.MonkeyPatch, rules_module: Any, backend_cls: type
) -> Counter[str]:
    """Replace ``rules_module.RULES`` (read by the registry) and ``backend_cls.handoff_rules``
    (read by a backend built without a verdict) with rules that count their checks."""
    import dataclasses

    calls: Counter[str] = Counter()

    def counted(rule: Any) -> Any:
        def check(runner: Any) -> str | None:
            calls[rule.text] += 1
            return rule.check(runner)

        return dataclasses.replace(rule, check=check)

    rules = tuple(counted(rule) for rule in rules_module.RULES)
    monkeypatch.setattr(rules_module, "RULES", rules)
    monkeypatch.setattr(backend_cls, "handoff_rules", rules)
    return calls
