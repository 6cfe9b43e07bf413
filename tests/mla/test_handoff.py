"""MLA hand-off through sglang's real ``ATTENTION_BACKENDS["ascend"]`` with the plugin active.

What the FIA MLA backend does not implement goes to sglang's own ``AscendAttnBackend`` (the
wrapped ``create_ascend_backend``) with one log line naming the reason, instead of refusing to
start. On CPU sglang's own backend cannot be built (its module imports ``torch_npu``), so
reaching that import is the evidence that the call went to sglang's own factory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from attention.helpers import assert_handed_to_sglang, count_rule_checks

from mla.helpers import make_pool, make_runner
from sglang_ascend_fia.fia_backend import handoff
from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration
from sglang_ascend_fia.mla.backend import AscendFIAMLABackend
from sglang_ascend_fia.mla.handoff import RULES


def _set(path: str, value: Any) -> Callable[[Any, pytest.MonkeyPatch], None]:
    def apply(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        owner = runner
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, name, value)

    return apply


def _env(name: str) -> Callable[[Any, pytest.MonkeyPatch], None]:
    def apply(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(name, "1")

    return apply


def _model(build: Callable[[], torch.nn.Module]) -> Callable[[Any, pytest.MonkeyPatch], None]:
    def apply(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        runner.model = build()  # built lazily: importing sglang's models belongs to the test

    return apply


def _speculative(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    runner.spec_algorithm = SpeculativeAlgorithm.EAGLE


def _dsa(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runner.model_config.hf_config = SimpleNamespace(
        architectures=["DeepseekV32ForCausalLM"], index_topk=2048
    )


def _nz_pool(runner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runner.token_to_kv_pool.use_fia_nz = True


def _mla_subclass_overriding_prepare() -> torch.nn.Module:
    from sglang.srt.models.deepseek_v2 import DeepseekV2AttentionMLA

    class OwnPrepare(DeepseekV2AttentionMLA):
        def forward_prepare(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("never called")

    # Only the class matters to the rule: skip DeepseekV2AttentionMLA's heavy __init__.
    attention = OwnPrepare.__new__(OwnPrepare)
    torch.nn.Module.__init__(attention)
    model = torch.nn.Module()
    model.self_attn = attention
    return model


def _radix_attention_outside_deepseek() -> torch.nn.Module:
    from attention.helpers import TINY, make_layer

    model = torch.nn.Module()
    model.attn = make_layer(TINY, 3)
    return model


CASES: list[tuple[str, Callable[[Any, pytest.MonkeyPatch], None], str]] = [
    ("eagle", _speculative, "speculative decoding"),
    ("draft", _set("is_draft_worker", True), "speculative decoding"),
    ("dsa", _dsa, "DeepSeek sparse attention (DSA)"),
    ("swa", _set("is_hybrid_swa", True), "sliding-window MLA"),
    (
        "llama4-scaling",
        _set("model_config.hf_config.llama_4_scaling", {"beta": 0.1}),
        "llama_4_scaling",
    ),
    ("kv-lora", _set("model_config.kv_lora_rank", 256), "kv_lora_rank / qk_rope_head_dim (256"),
    ("v-head", _set("model_config.v_head_dim", 192), "qk_nope_head_dim / v_head_dim (128, 192)"),
    ("heads", _set("model_config.get_num_attention_heads", lambda tp: 256), "256 query heads"),
    ("context", _set("model_config.context_len", 2 << 20), "context length 2097152 exceeds"),
    ("nz", _nz_pool, "NZ MLA cache (SGLANG_USE_FIA_NZ)"),
    ("fp8-kv", _set("kv_cache_dtype", torch.float8_e4m3fn), "--kv-cache-dtype float8_e4m3fn"),
    ("mlapo", _env("SGLANG_NPU_USE_MLAPO"), "SGLANG_NPU_USE_MLAPO"),
    ("ag-after-qlora", _env("SGLANG_USE_AG_AFTER_QLORA"), "SGLANG_USE_AG_AFTER_QLORA"),
    (
        "own-prepare",
        _model(_mla_subclass_overriding_prepare),
        "OwnPrepare overrides DeepseekV2AttentionMLA.forward_prepare",
    ),
    (
        "foreign-layer",
        _model(_radix_attention_outside_deepseek),
        "layer 3: MLA attention outside DeepseekV2AttentionMLA",
    ),
]


@pytest.mark.parametrize(("change", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_fia_mla_does_not_implement_goes_to_sglangs_own_backend(
    ascend_factory: Any,
    change: Callable[[Any, pytest.MonkeyPatch], None],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make_runner(make_pool(2), 16)
    change(runner, monkeypatch)
    assert_handed_to_sglang(ascend_factory, runner, needle, caplog)


def test_the_registry_runs_each_mla_rule_once_and_hands_the_verdict_to_the_backend(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sglang_ascend_fia.mla import handoff as mla_handoff

    calls = count_rule_checks(monkeypatch, mla_handoff, AscendFIAMLABackend)
    assert isinstance(ascend_factory(make_runner(make_pool(2), 16)), AscendFIAMLABackend)
    assert calls == {rule.text: 1 for rule in RULES}


def test_deepseek_mla_gets_the_fia_mla_backend_without_a_warning(
    ascend_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sglang_ascend_fia"):
        backend = ascend_factory(make_runner(make_pool(2), 16))
    assert isinstance(backend, AscendFIAMLABackend)
    assert handoff.decisions()[-1] == handoff.Decision("fia-mla", "")
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_an_illegal_mla_page_size_is_still_refused_through_the_factory(
    ascend_factory: Any,
) -> None:
    """FIA's MLA rules fix the page size at 128: no backend of the plugin serves 64."""
    runner = make_runner(make_pool(2), 16, page_size=64)
    with pytest.raises(UnsupportedConfiguration, match="--page-size=64 is not allowed"):
        ascend_factory(runner)


def test_doctor_lists_the_mla_hand_off_rules(
    ascend_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from sglang_ascend_fia import cli

    ascend_factory(make_runner(make_pool(2), 16))
    report = cli.collect()
    assert report["attention"]["mla_hands_off"] == [rule.text for rule in RULES]
    assert report["attention"]["decisions"][-1] == {
        "backend": "fia-mla",
        "reason": "",
        "sglang_mode": "",
    }
    assert cli.doctor(as_json=False) == 0
    printed = capsys.readouterr().out
    assert "chosen in this process: FIA MLA" in printed
    assert all(rule in printed for rule in (r.text for r in RULES))
