"""The NPU MoE hooks hand what the plugin does not implement back to sglang, and say why.

The hooks are called directly (as wrapt calls them) with sglang's real helper objects where they
are cheap and stand-in arguments where sglang's need an NPU; the positive paths run through
sglang's NPU dispatch in ``test_moe_npu_dispatch.py``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sglang_ascend_fia import ops


@pytest.fixture(autouse=True)
def one_expert_parallel_rank() -> Any:
    """sglang writes every rank's place before a layer runs; the hooks read the EP size."""
    from sglang.srt.runtime_context import get_parallel

    with get_parallel().override(moe_ep_rank=0, moe_ep_size=1):
        yield


def _stock(*args: Any, **kwargs: Any) -> str:
    return "stock"


def _runner_config(**overrides: Any) -> SimpleNamespace:
    values = {
        "activation": "silu",
        "is_gated": True,
        "apply_router_weight_on_input": False,
        "gemm1_alpha": None,
        "gemm1_clamp_limit": None,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_init_routing_runs_ops_unquantised_and_int8_and_hands_back_mxfp8(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sglang.srt.hardware_backend.npu.moe.init_routing import NPUMoEInitRouting_v2

    from sglang_ascend_fia.moe.npu_routing import init_routing_v2

    x = torch.randn(3, 8)
    ids = torch.tensor([[0, 2], [2, 1], [0, 3]], dtype=torch.int32)
    ops.reset_launch_counts()
    permuted, _, expert_tokens, scale = init_routing_v2(
        _stock, NPUMoEInitRouting_v2(quant_mode=-1), (x, ids, 4, 2), {}
    )
    assert ops.launch_counts() == {"moe_init_routing_v2": 1}
    assert expert_tokens.tolist() == [2, 1, 2, 1] and expert_tokens.dtype == torch.int64
    assert scale is None and torch.equal(permuted, x[[0, 2, 1, 0, 1, 2]])
    # W8A8 dispatch (quant_mode=1): int8 rows and their per-row scales, through ops too.
    ops.reset_launch_counts()
    q, _, expert_tokens, scale = init_routing_v2(
        _stock, NPUMoEInitRouting_v2(quant_mode=1), (x, ids, 4, 2), {}
    )
    assert ops.launch_counts() == {"moe_init_routing_v2": 1}
    assert q.dtype == torch.int8 and scale is not None and scale.shape == (6,)
    assert torch.allclose(q.float() * scale.unsqueeze(-1), x[[0, 2, 1, 0, 1, 2]], atol=0.02)
    with caplog.at_level(logging.INFO, logger="sglang_ascend_fia"):
        assert init_routing_v2(_stock, NPUMoEInitRouting_v2(quant_mode=3), (x, ids, 4, 2), {})
    assert "quant_mode=3" in caplog.text


def test_experts_npu_hands_back_other_dispatchers_and_quantised_kernels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import sglang.srt.layers.quantization.unquant  # noqa: F401 - sglang's own import order
    from sglang.srt.hardware_backend.npu.quantization.moe_methods import NPUW8A8Int8MoEMethod
    from sglang.srt.layers.moe.token_dispatcher.base import DispatchOutputFormat

    from sglang_ascend_fia.moe.experts import experts_forward_npu

    instance = SimpleNamespace(moe_runner_config=_runner_config())
    x = torch.zeros(2, 8)
    deepep = SimpleNamespace(
        format=DispatchOutputFormat.DEEPEP_NORMAL, hidden_states=x, hidden_states_scale=None
    )
    ascend_tp = SimpleNamespace(
        format=DispatchOutputFormat.ASCEND_TP, hidden_states=x, hidden_states_scale=None
    )
    w8a8 = NPUW8A8Int8MoEMethod.__new__(NPUW8A8Int8MoEMethod)  # its type is what is checked
    quantised = SimpleNamespace(w13_kernel=w8a8, w2_kernel=w8a8)
    with caplog.at_level(logging.INFO, logger="sglang_ascend_fia"):
        assert experts_forward_npu(_stock, instance, (SimpleNamespace(), deepep), {}) == "stock"
        assert experts_forward_npu(_stock, instance, (quantised, ascend_tp), {}) == "stock"
    assert "'deepep_normal'" in caplog.text
    assert "NPUW8A8Int8MoEMethod" in caplog.text


def test_topk_npu_hands_back_sqrtsoftplus(caplog: pytest.LogCaptureFixture) -> None:
    from sglang_ascend_fia.moe.gating import topk_forward_npu

    config = SimpleNamespace(
        custom_routing_function=None, scoring_func="sqrtsoftplus", num_shared_topk_slots=0
    )
    instance = SimpleNamespace(topk_config=config)
    with caplog.at_level(logging.INFO, logger="sglang_ascend_fia"):
        assert topk_forward_npu(_stock, instance, (None, torch.zeros(1, 4)), {}) == "stock"
    assert "sqrtsoftplus" in caplog.text
