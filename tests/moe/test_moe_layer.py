"""sglang's real MoE layers with routing forced unbalanced, against a dense per-token loop.

Each layer is built as sglang builds it (``DeepseekV2MoE`` as ``DeepseekV2DecoderLayer`` does;
``TopK`` + ``FusedMoE`` as ``Qwen2MoeSparseMoeBlock`` does) in this process, with the plugin's
patches on: gating top-k -> ``moe_init_routing_v2`` -> ``grouped_matmul`` -> ``swiglu`` ->
``grouped_matmul`` -> ``moe_finalize_routing`` through ``ops``. Seven of the 16 experts can never
be picked (``testbed.moe_layers.DEAD_GATE``), so they get zero tokens at batch 64, and most
experts do at batch 1. The oracle (``testbed.moe_oracle``) is written from the models'
definitions (HF ``DeepseekV2MoE``/``DeepseekV3MoE``, ``Qwen2MoeSparseMoeBlock``), token by token
and expert by expert in float64; the same layers with the plugin off (stock sglang) must equal it
too, which checks the oracle against sglang's own routing. ``test_moe_npu_dispatch.py`` runs the
same cases on sglang's NPU dispatch (``forward_npu``).
"""

from __future__ import annotations

import pytest
import torch
from testbed.moe_layers import (
    DEAD,
    DEEPSEEK,
    build_deepseek_moe,
    build_qwen2_style_moe,
    fill_weights,
    moe_config,
    moe_inputs,
    plugin,
)
from testbed.moe_oracle import Routing, dense_moe

from sglang_ascend_fia import ops

pytestmark = pytest.mark.usefixtures("sglang_layers")

BATCHES = (1, 64)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


CHAIN = {"moe_init_routing_v2": 1, "grouped_matmul": 2, "swiglu": 1, "moe_finalize_routing": 1}


def _check(
    out: torch.Tensor,
    expected: torch.Tensor,
    tokens_per_expert: list[int],
    batch: int,
) -> None:
    assert all(tokens_per_expert[e] == 0 for e in DEAD), tokens_per_expert
    assert sum(n > 0 for n in tokens_per_expert) >= (4 if batch == 1 else 6), tokens_per_expert
    torch.testing.assert_close(out.double(), expected, **TOLERANCE)


@pytest.mark.parametrize("plugin_on", [True, False], ids=["plugin", "stock"])
@pytest.mark.parametrize("name", list(DEEPSEEK))
def test_deepseek_moe_layer_equals_dense_loop(name: str, plugin_on: bool) -> None:
    overrides, routing = DEEPSEEK[name]
    config = moe_config(**overrides)
    with plugin(plugin_on), torch.inference_mode():
        layer = build_deepseek_moe(config)
        fill_weights(layer, DEAD)
        for batch in BATCHES:
            x = moe_inputs(batch, config.hidden_size)
            ops.reset_launch_counts()
            out = layer(x.clone())
            launches = ops.launch_counts()
            shared = layer.shared_experts
            expected, tokens_per_expert = dense_moe(
                x,
                routing,
                x.double() @ layer.gate.weight.double().T,
                layer.gate.e_score_correction_bias,
                layer.experts.w13_weight,
                layer.experts.w2_weight,
                (shared.gate_up_proj.weight, shared.down_proj.weight),
            )
            _check(out, expected, tokens_per_expert, batch)
            # One launch of each op of the chain per layer call, whatever the batch size;
            # sglang builds DeepSeek's TopK as grouped, so the gating op is moe_gating_top_k.
            assert launches == ({"moe_gating_top_k": 1, **CHAIN} if plugin_on else {}), launches


@pytest.mark.parametrize("renormalize", [True, False], ids=["renorm", "raw"])
def test_plain_softmax_topk_and_fused_moe_equal_dense_loop(renormalize: bool) -> None:
    """Ungrouped softmax without a bias: the ``moe_gating_top_k_softmax`` kernel choice."""
    hidden, top_k = 64, 4
    with plugin(True), torch.inference_mode():
        topk, fused, router = build_qwen2_style_moe(top_k, renormalize, hidden=hidden)
        for batch in BATCHES:
            x = moe_inputs(batch, hidden)
            ops.reset_launch_counts()
            out = fused(x.clone(), topk(x, x @ router.T))
            launches = ops.launch_counts()
            expected, tokens_per_expert = dense_moe(
                x,
                Routing("softmax", top_k, norm_topk_prob=renormalize),
                x.double() @ router.double().T,
                None,
                fused.w13_weight,
                fused.w2_weight,
                None,
            )
            _check(out, expected, tokens_per_expert, batch)
            assert launches == {"moe_gating_top_k_softmax": 1, **CHAIN}, launches


def test_layer_called_before_deactivate_runs_no_plugin_code_after() -> None:
    """sglang's ``TopK`` and MoE quant method keep the forward their first call resolved
    (``layers/kernels/fused_op.py``), so a layer first called with the plugin on holds the
    plugin's wrappers. After ``deactivate()`` those wrappers call the originals straight
    through: no ops launch, and the output is stock sglang's; a re-activation brings the chain
    back to the same layer."""
    config = moe_config(**DEEPSEEK["v3-sigmoid-grouped-bias"][0])
    x = moe_inputs(64, config.hidden_size)
    with torch.inference_mode():
        with plugin(True):
            layer = build_deepseek_moe(config)
            fill_weights(layer, DEAD)
            ops.reset_launch_counts()
            on = layer(x.clone())
            assert ops.launch_counts() == {"moe_gating_top_k": 1, **CHAIN}
        ops.reset_launch_counts()
        off = layer(x.clone())  # plugin() deactivated on exit
        assert ops.launch_counts() == {}
        with plugin(False):
            stock_layer = build_deepseek_moe(config)
            stock_layer.load_state_dict(layer.state_dict())
            stock = stock_layer(x.clone())
        torch.testing.assert_close(off, stock, rtol=0, atol=0)
        torch.testing.assert_close(on, stock, **TOLERANCE)
        with plugin(True):
            ops.reset_launch_counts()
            layer(x.clone())
            assert ops.launch_counts() == {"moe_gating_top_k": 1, **CHAIN}


def test_a_moe_model_is_refused_at_start_up_when_a_kernel_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attention backend is built after the model is loaded and before any request; a MoE
    model there whose expert kernels the installed torch_npu lacks is refused, since sglang's
    own NPU MoE path calls the same kernels."""
    from types import SimpleNamespace

    from sglang.srt.layers.attention import attention_registry

    from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration
    from sglang_ascend_fia.ops import kernels

    def check(feature: str) -> kernels.FeatureCheck:
        problems = (kernels.KernelProblem("npu_swiglu", "missing"),) if feature == "moe" else ()
        return kernels.FeatureCheck(feature, "2.1.0", True, problems)

    monkeypatch.setattr(kernels, "check", check)
    config = moe_config(**DEEPSEEK["v3-sigmoid-grouped-bias"][0])
    with plugin(True):
        runner = SimpleNamespace(model=build_deepseek_moe(config))
        with pytest.raises(UnsupportedConfiguration, match=r"torch_npu 2\.1\.0 has no npu_swiglu"):
            attention_registry.ATTENTION_BACKENDS["ascend"](runner)
