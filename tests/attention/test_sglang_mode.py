"""Which of sglang's own modes a handed-off model runs (``registry.sglang_mode``), and how its
``ASCEND_USE_FIA`` reads get that value: through the real patched ``get_bool_env_var`` name of
``memory_pool_npu``, scoped, with every other read passed through."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attention.helpers import TINY, make_layer, make_pool, make_runner
from sglang_ascend_fia.registry import sglang_mode


class TinyModel(torch.nn.Module):
    def __init__(self, **layer_kwargs: Any) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [make_layer(TINY, 0, **layer_kwargs), make_layer(TINY, 1)]
        )


def _runner(monkeypatch: pytest.MonkeyPatch, **layer_kwargs: Any) -> Any:
    pool = make_pool("npu-fia", TINY, 128, 8, monkeypatch)
    return make_runner(pool, TINY, 128, model=TinyModel(**layer_kwargs))


def test_the_pool_module_reads_the_scoped_value(ascend_factory: Any) -> None:
    from sglang.srt.hardware_backend.npu import memory_pool_npu

    read = memory_pool_npu.get_bool_env_var
    assert read("ASCEND_USE_FIA", "False") is True  # ascend_factory sets ASCEND_USE_FIA=1
    with sglang_mode.scoped(False):
        assert read("ASCEND_USE_FIA", "False") is False
        assert read("SGLANG_USE_FIA_NZ") is False  # another name: sglang's own reader
        with sglang_mode.scoped(True):
            assert read("ASCEND_USE_FIA") is True
        assert read("ASCEND_USE_FIA") is False
    assert read("ASCEND_USE_FIA", "False") is True
    assert sglang_mode.current() is None


def test_served_by_fia_keeps_the_fia_mode_pool(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sglang_mode.decide(_runner(monkeypatch)) is True


def test_a_hand_off_runs_sglangs_atb_mode(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sglang_mode.decide(_runner(monkeypatch, logit_cap=30.0)) is False


@pytest.mark.parametrize(
    ("parallel", "runner_attrs", "needle"),
    [
        ({"attn_cp_size": 2}, {}, "context parallel"),
        ({"dcp_enabled": True}, {}, "context parallel"),
        ({}, {"is_hybrid_swa": True}, "hybrid-SWA"),
    ],
    ids=["cp", "dcp", "hybrid-swa"],
)
def test_what_only_sglangs_fia_mode_serves_gets_it(
    ascend_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    parallel: dict[str, Any],
    runner_attrs: dict[str, Any],
    needle: str,
) -> None:
    from sglang.srt.runtime_context import get_parallel

    runner = _runner(monkeypatch)
    for name, value in runner_attrs.items():
        setattr(runner, name, value)
    with get_parallel().override(**parallel) if parallel else _nothing():
        assert needle in (sglang_mode.fia_mode_reason(runner) or "")
        assert sglang_mode.decide(runner) is True


def test_sinks_get_sglangs_fia_mode(ascend_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _runner(monkeypatch)
    runner.model_config.has_attention_sinks = True
    assert "learned sinks" in (sglang_mode.fia_mode_reason(runner) or "")
    assert sglang_mode.decide(runner) is True


def test_fia_mode_hand_off_checks_the_page_size(
    ascend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = _runner(monkeypatch)
    runner.page_size = 16
    refusal = sglang_mode.page_size_refusal(runner, fia_mode=True)
    assert refusal is not None and "--page-size=16 is not allowed" in refusal
    assert "handed to sglang's own backend in its FIA mode" in refusal
    assert sglang_mode.page_size_refusal(runner, fia_mode=False) is None  # ATB: a multiple of 16


@pytest.mark.parametrize(
    ("page", "head_dim", "mla", "needle"),
    [
        (16, 128, False, None),
        (8, 128, False, "a page size that is a multiple of 16"),
        (24, 64, False, "a page size that is a multiple of 16"),
        (512, 256, False, None),
        (128, 576, True, None),
        (256, 576, True, "at most 128 tokens per page for a head wider than 256"),
        (100, 576, True, "a page size that is a multiple of 16"),
    ],
    ids=["16", "8", "24", "512-d256", "mla-128", "mla-256", "mla-100"],
)
def test_atb_mode_hand_off_checks_the_page_size(
    page: int, head_dim: int, mla: bool, needle: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATB mode's page sizes: those CANN ATB's PagedAttention documents (sglang_mode)."""
    runner = _runner(monkeypatch)
    runner.page_size = page
    runner.use_mla_backend = mla
    if mla:
        runner.model_config.kv_lora_rank, runner.model_config.qk_rope_head_dim = 512, 64
    else:
        runner.model_config.head_dim = head_dim
    refusal = sglang_mode.page_size_refusal(runner, fia_mode=False)
    if needle is None:
        assert refusal is None
    else:
        assert refusal is not None and needle in refusal, refusal
        assert refusal.startswith(f"--page-size={page} is not allowed by sglang's ATB mode")
        assert refusal.endswith("(the model is handed to sglang's own backend in its ATB mode)")


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()
