"""Hand-off through sglang's real ``ATTENTION_BACKENDS["ascend"]`` with the plugin active.

What the FIA backend does not implement goes to sglang's own ``AscendAttnBackend`` (the wrapped
``create_ascend_backend``), with one log line naming the reason; what it implements gets
:class:`AscendFIABackend`. Here, without the test-only torch_npu stand-in on the path, sglang's
own backend cannot be built (its module imports ``torch_npu`` at top level,
ascend_backend.py:7-11), so the registry refuses the hand-off in one line that names the
reason. That the handed-off backend is built and serves where torch_npu exists is proven end to
end with the stand-in (``tests/support/npu_standin``) in ``tests/e2e/test_fia_handoff.py``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch

from attention.helpers import (
    TINY,
    assert_handed_to_sglang,
    count_rule_checks,
    make_layer,
    make_pool,
    make_runner,
)
from sglang_ascend_fia.attention.backend import AscendFIABackend, UnsupportedConfiguration
from sglang_ascend_fia.attention.handoff import RULES
from sglang_ascend_fia.fia_backend import handoff


class TinyModel(torch.nn.Module):
    """Two sglang ``RadixAttention`` layers, as a loaded model holds them."""

    def __init__(self, **layer_kwargs: Any) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [make_layer(TINY, 0), make_layer(TINY, 1, **layer_kwargs)]
        )


def _runner(monkeypatch: pytest.MonkeyPatch, layer_kwargs: dict[str, Any], **overrides: Any):
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    return make_runner(pool, TINY, 128, model=TinyModel(**layer_kwargs), **overrides)


def _handoff_cases() -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    from sglang.srt.layers.radix_attention import AttentionType
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    return [
        ("eagle", {}, {"spec_algorithm": SpeculativeAlgorithm.EAGLE}, "speculative decoding"),
        ("draft", {}, {"is_draft_worker": True}, "speculative decoding"),
        ("swa-runner", {}, {"sliding_window_size": 4096}, "sliding-window"),
        ("hybrid-swa", {}, {"is_hybrid_swa": True}, "sliding-window"),
        ("fp8-kv", {}, {"kv_cache_dtype": torch.float8_e4m3fn}, "--kv-cache-dtype float8_e4m3fn"),
        ("kv-dtype", {}, {"kv_cache_dtype": torch.bfloat16}, "in the model's float dtype only"),
        ("logit-cap", {"logit_cap": 30.0}, {}, "layer 1: logit_cap=30.0"),
        (
            "encoder-only",
            {"attn_type": AttentionType.ENCODER_ONLY},
            {},
            "layer 1: non-causal attention (ENCODER_ONLY)",
        ),
        (
            "bidirectional",
            {"attn_type": AttentionType.DECODER_BIDIRECTIONAL},
            {},
            "non-causal attention (DECODER_BIDIRECTIONAL)",
        ),
        ("cross", {"is_cross_attention": True}, {}, "layer 1: cross attention"),
        ("swa-layer", {"sliding_window_size": 64}, {}, "layer 1: sliding window 64"),
    ]


def _sinks_config(runner: Any) -> Any:
    runner.model_config.has_attention_sinks = True
    return runner


@pytest.mark.parametrize(
    ("layer_kwargs", "overrides", "needle"),
    [c[1:] for c in _handoff_cases()],
    ids=[c[0] for c in _handoff_cases()],
)
def test_what_fia_does_not_implement_goes_to_sglangs_own_backend(
    ascend_factory: Any,
    layer_kwargs: dict[str, Any],
    overrides: dict[str, Any],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert_handed_to_sglang(
        ascend_factory, _runner(monkeypatch, layer_kwargs, **overrides), needle, caplog
    )


def _hnd_layout(pool: Any) -> None:
    pool.use_hnd = True  # what SGLANG_USE_HND_KVCACHE=1 sets (memory_pool.py:2250)


def _quantized_cache(pool: Any) -> None:
    # Any KV-cache method but the unquantized one makes the pool quantized
    # (is_quantized_kv_cache, memory_pool.py:2430-2432).
    pool.quant_method = object()


@pytest.mark.parametrize(
    ("parallel", "adjust_pool", "needle"),
    [
        ({"attn_cp_size": 2}, None, "context parallel attention"),
        ({"dcp_enabled": True}, None, "context parallel attention"),
        ({}, _hnd_layout, "the HND KV-cache layout"),
        ({}, _quantized_cache, "quantized KV caches"),
    ],
    ids=["context-parallel", "decode-context-parallel", "hnd-kv", "quantized-kv"],
)
def test_parallel_and_pool_settings_go_to_sglangs_own_backend(
    ascend_factory: Any,
    parallel: dict[str, Any],
    adjust_pool: Callable[[Any], None] | None,
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sglang.srt.runtime_context import get_parallel

    runner = _runner(monkeypatch, {})
    if adjust_pool is not None:
        adjust_pool(runner.token_to_kv_pool)
    with get_parallel().override(**parallel) if parallel else contextlib.nullcontext():
        assert_handed_to_sglang(ascend_factory, runner, needle, caplog)


def test_attention_sinks_go_to_sglangs_own_backend(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = _sinks_config(_runner(monkeypatch, {}))
    with pytest.raises(UnsupportedConfiguration, match="needs torch_npu"):
        ascend_factory(runner)
    assert "attention sinks" in handoff.decisions()[-1].reason


def test_the_registry_runs_each_rule_once_and_hands_the_verdict_to_the_backend(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sglang_ascend_fia.attention import handoff as attention_handoff

    calls = count_rule_checks(monkeypatch, attention_handoff, AscendFIABackend)
    assert isinstance(ascend_factory(_runner(monkeypatch, {})), AscendFIABackend)
    assert calls == {rule.text: 1 for rule in RULES}
    calls.clear()
    # Built directly (no verdict), the backend runs the same rules itself.
    AscendFIABackend(_runner(monkeypatch, {}))
    assert calls == {rule.text: 1 for rule in RULES}


def test_causal_mha_gets_the_fia_backend(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runner = _runner(monkeypatch, {})
    with caplog.at_level(logging.WARNING, logger="sglang_ascend_fia"):
        backend = ascend_factory(runner)
    assert isinstance(backend, AscendFIABackend)
    assert handoff.decisions()[-1] == handoff.Decision("fia", "")
    assert not caplog.records, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"page_size": 64}, "--page-size=64 is not allowed"),
        ({"device": "npu:0", "dtype": torch.float32}, "--dtype float32 is not a dtype FIA takes"),
    ],
    ids=["page-64", "fp32-npu"],
)
def test_what_no_backend_runs_is_still_refused_through_the_factory(
    ascend_factory: Any,
    overrides: dict[str, Any],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = overrides.get("page_size", 128)
    pool = make_pool("npu-fia", TINY, page, 8, monkeypatch)
    runner = make_runner(pool, TINY, page, model=TinyModel(), **overrides)
    with pytest.raises(UnsupportedConfiguration, match=needle):
        ascend_factory(runner)


@pytest.mark.parametrize(
    "layer_kwargs",
    [{"logit_cap": 30.0}, {"is_cross_attention": True}, {"sliding_window_size": 8}],
    ids=["logit-cap", "cross", "swa"],
)
def test_a_layer_the_factory_did_not_see_is_refused_not_computed_wrongly(
    layer_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from attention.helpers import Requests, forward_batch

    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128)  # no model: nothing to inspect at construction
    backend = AscendFIABackend(runner)
    reqs = Requests.create(runner.req_to_token_pool.req_to_token, 128, 8, 1)
    fb = forward_batch(ForwardMode.EXTEND, reqs, [3], reqs.extend(0, 3))
    backend.init_forward_metadata(fb)
    q = torch.randn(3, TINY.q_heads * TINY.head_dim)
    k = torch.randn(3, TINY.kv_heads, TINY.head_dim)
    with pytest.raises(UnsupportedConfiguration, match="the FIA backend would compute it wrongly"):
        backend.forward(q, k, k.clone(), make_layer(TINY, 0, **layer_kwargs), fb)


def test_doctor_shows_the_hand_off_rules_and_this_process_choice(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sglang_ascend_fia import cli

    with pytest.raises(UnsupportedConfiguration, match="needs torch_npu"):
        ascend_factory(_runner(monkeypatch, {"logit_cap": 30.0}))
    report = cli.collect()
    assert report["attention"]["hands_off"] == [rule.text for rule in RULES]
    assert report["attention"]["decisions"][-1] == {
        "backend": "sglang",
        "reason": "layer 1: logit_cap=30.0 (logit soft-capping) is not implemented by FIA",
        "sglang_mode": "FIA mode (ASCEND_USE_FIA=1): the mode its KV pool was built for",
    }
    assert cli.doctor(as_json=False) == 0
    printed = capsys.readouterr().out
    assert "chosen in this process: sglang's own: layer 1: logit_cap=30.0" in printed
    assert all(rule in printed for rule in (r.text for r in RULES))


@pytest.mark.parametrize("kernel", ["npu_fused_infer_attention_score", "npu_scatter_pa_kv_cache"])
def test_a_missing_fia_kernel_hands_off_at_start_up(
    ascend_factory: Any,
    kernel: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The kernel check (``ops.kernels``, tested against the stand-in in tests/ops) runs when
    the backend is built: a missing kernel hands the model off, naming the kernel and the
    torch_npu version, before any request."""
    from sglang_ascend_fia.ops import kernels

    def check(feature: str) -> kernels.FeatureCheck:
        problems = (kernels.KernelProblem(kernel, "missing"),) if feature == "attention" else ()
        return kernels.FeatureCheck(feature, "2.1.0", True, problems)

    monkeypatch.setattr(kernels, "check", check)
    assert_handed_to_sglang(
        ascend_factory,
        _runner(monkeypatch, {}),
        f"the FIA path's kernels: torch_npu 2.1.0 has no {kernel}",
        caplog,
    )


class DictHeldModel(torch.nn.Module):
    """Layers in a plain dict attribute, as sglang's Transformers backend keeps them
    (``models/transformers.py:651``): ``modules()`` never reaches them."""

    def __init__(self, **layer_kwargs: Any) -> None:
        super().__init__()
        self.attention_instances = {0: make_layer(TINY, 0), 1: make_layer(TINY, 1, **layer_kwargs)}


def test_layers_outside_the_module_tree_are_seen_by_the_decision(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = DictHeldModel(sliding_window_size=63)
    assert not any(m is model.attention_instances[1] for m in model.modules())
    assert handoff.attention_layers(model) == list(model.attention_instances.values())
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128, model=model)
    assert_handed_to_sglang(ascend_factory, runner, "layer 1: sliding window 63", caplog)


class _Holder:
    """A plain object (not a module, list or dict) holding a layer: out of the scan's reach."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer


class DeeplyHeldModel(torch.nn.Module):
    """Layer 1 held inside a plain object in a list: no scan of modules and their container
    attributes reaches it, so its window is unknown to the decision."""

    def __init__(self) -> None:
        super().__init__()
        self.first = make_layer(TINY, 0)
        self.hidden = [_Holder(make_layer(TINY, 1, sliding_window_size=63))]


def test_a_layer_id_no_found_layer_carries_hands_off_at_start_up(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before this rule the model got FIA, and the per-layer guard ended the scheduler at the
    first prefill that reached layer 1. Now the ids the runner owns (the pool's two) are checked
    against the layers found, and the model is handed off before any request."""
    model = DeeplyHeldModel()
    assert [layer.layer_id for layer in handoff.attention_layers(model)] == [0]
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128, model=model)
    assert runner.layer_info.num_effective_layers == 2
    assert_handed_to_sglang(
        ascend_factory,
        runner,
        "layer ids 1 (of the 2 this runner owns) have no RadixAttention the plugin can find",
        caplog,
    )


def test_every_owned_layer_found_keeps_fia(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check passes a model whose every owned id is found, from a nonzero start layer
    (a pipeline stage's range), and fails one id short of it."""
    model = TinyModel()
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    runner = make_runner(pool, TINY, 128, model=model)
    assert handoff.LAYER_COVERAGE.check(runner) is None
    runner.layer_info.start_layer = 1  # owns ids 1 and 2; the model holds 0 and 1
    assert handoff.LAYER_COVERAGE.check(runner) == (
        "layer ids 2 (of the 2 this runner owns) have no RadixAttention the plugin can find "
        "(the model keeps them where its start-up check cannot read them)"
    )
