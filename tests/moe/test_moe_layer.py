"""sglang's real MoE layers with routing forced unbalanced, against a dense per-token loop.

Each layer is built as sglang builds it (``DeepseekV2MoE`` as ``DeepseekV2DecoderLayer`` does;
``TopK`` + ``FusedMoE`` as ``Qwen2MoeSparseMoeBlock`` does) in this process, with the plugin's
patches on: gating top-k -> ``moe_init_routing_v2`` -> ``grouped_matmul`` -> ``swiglu`` ->
``grouped_matmul`` -> ``moe_finalize_routing`` through ``ops``. Seven of the 16 experts can never
be picked (``testbed.moe_layers.DEAD_GATE``), so they get zero tokens at batch 64, and most
experts do at batch 1. The oracle below is written from the models' definitions (HF
``DeepseekV2MoE``/``DeepseekV3MoE``, ``Qwen2MoeSparseMoeBlock``), token by token and expert by
expert in float64; the same layers with the plugin off (stock sglang) must equal it too, which
checks the oracle against sglang's own routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from testbed.moe_layers import (
    DEAD_GATE,
    FEATURE,
    build_deepseek_moe,
    fill_weights,
    moe_config,
    moe_inputs,
    plugin,
)

from sglang_ascend_fia import ops

pytestmark = pytest.mark.usefixtures("sglang_layers")

DEAD = (2, 3, 7, 10, 11, 14, 15)  # every group of 4 keeps >= 2 live experts
BATCHES = (1, 64)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


@dataclass(frozen=True)
class Routing:
    """The routing a model defines, in the HF config's terms."""

    scoring: str  # "softmax" | "sigmoid"
    top_k: int
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = False
    scaling: float = 1.0


def dense_moe(
    x: torch.Tensor,
    routing: Routing,
    gate: torch.Tensor,
    bias: torch.Tensor | None,
    w13: torch.Tensor,
    w2: torch.Tensor,
    shared: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, list[int]]:
    """Output rows and tokens per expert, one token and one expert at a time (float64).

    Experts are ranked by score (+ bias); with groups, a group scores by its best expert
    without a bias (DeepSeek-V2 ``group_limited_greedy``) or by its best two with one (V3
    ``noaux_tc``), and only the best ``topk_group`` groups stay eligible. The weights are the
    unbiased scores of the chosen experts, divided by their sum when ``norm_topk_prob``, times
    ``routed_scaling_factor``.
    """
    num_experts = gate.shape[0]
    per_group = num_experts // routing.n_group
    inter = w2.shape[-1]
    tokens_per_expert = [0] * num_experts
    rows = []
    for token in x.double():
        logits = gate.double() @ token
        if routing.scoring == "softmax":
            scores = torch.softmax(logits, dim=0).tolist()
        else:
            scores = torch.sigmoid(logits).tolist()
        ranked = [s + (float(bias[e]) if bias is not None else 0.0) for e, s in enumerate(scores)]
        group_scores = []
        for group in range(routing.n_group):
            members = sorted(ranked[group * per_group : (group + 1) * per_group], reverse=True)
            group_scores.append(members[0] if bias is None else members[0] + members[1])
        keep = sorted(range(routing.n_group), key=lambda g: -group_scores[g])[: routing.topk_group]
        eligible = [e for e in range(num_experts) if e // per_group in keep]
        chosen = sorted(eligible, key=lambda e: -ranked[e])[: routing.top_k]
        weights = [scores[e] for e in chosen]
        if routing.norm_topk_prob:
            weights = [w / sum(weights) for w in weights]
        out = torch.zeros_like(token)
        for expert, weight in zip(chosen, weights, strict=True):
            tokens_per_expert[expert] += 1
            gate_up = w13[expert].double() @ token
            hidden = F.silu(gate_up[:inter]) * gate_up[inter:]
            out += weight * routing.scaling * (w2[expert].double() @ hidden)
        if shared is not None:
            gate_up = shared[0].double() @ token
            half = gate_up.shape[0] // 2
            out += shared[1].double() @ (F.silu(gate_up[:half]) * gate_up[half:])
        rows.append(out)
    return torch.stack(rows), tokens_per_expert


# name -> (config overrides, routing, the gating op sglang's NPU choice calls)
DEEPSEEK = {
    # V2-Lite: softmax top-k, no groups, no renormalisation, 2 shared experts.
    "v2-lite-softmax": (
        {"scoring_func": "softmax", "topk_method": "greedy", "n_group": 1, "topk_group": 1,
         "norm_topk_prob": False, "routed_scaling_factor": 1.0, "n_shared_experts": 2},
        Routing("softmax", 4),
    ),
    # V2: softmax, group_limited_greedy (a group scores by its max), renormalised, scaled.
    "v2-grouped-softmax": (
        {"scoring_func": "softmax", "topk_method": "group_limited_greedy", "n_group": 4,
         "topk_group": 2, "norm_topk_prob": True, "routed_scaling_factor": 1.5},
        Routing("softmax", 4, n_group=4, topk_group=2, norm_topk_prob=True, scaling=1.5),
    ),
    # V3: sigmoid, noaux_tc with a correction bias, renormalised, scaled by 2.5.
    "v3-sigmoid-grouped-bias": (
        {},
        Routing("sigmoid", 4, n_group=4, topk_group=2, norm_topk_prob=True, scaling=2.5),
    ),
    # V3 with norm_topk_prob=False: the NPU kernel renormalises sigmoid whatever renorm says.
    "v3-sigmoid-unnormalised": (
        {"norm_topk_prob": False},
        Routing("sigmoid", 4, n_group=4, topk_group=2, norm_topk_prob=False, scaling=2.5),
    ),
}  # fmt: skip

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
                layer.gate.weight,
                layer.gate.e_score_correction_bias,
                layer.experts.w13_weight,
                layer.experts.w2_weight,
                (shared.gate_up_proj.weight, shared.down_proj.weight),
            )
            _check(out, expected, tokens_per_expert, batch)
            # One launch of each op of the chain per layer call, whatever the batch size;
            # sglang builds DeepSeek's TopK as grouped, so the gating op is moe_gating_top_k.
            assert launches == ({"moe_gating_top_k": 1, **CHAIN} if plugin_on else {}), launches


def _build_qwen2_style(top_k: int, renormalize: bool, experts: int, hidden: int) -> Any:
    """``TopK`` + ``FusedMoE`` as ``Qwen2MoeSparseMoeBlock`` builds them (qwen2_moe.py)."""
    from sglang.srt.layers.moe.ep_moe.layer import get_moe_impl_class
    from sglang.srt.layers.moe.topk import TopK

    topk = TopK(top_k=top_k, renormalize=renormalize, layer_id=1)
    fused = get_moe_impl_class(None)(
        layer_id=1,
        top_k=top_k,
        num_experts=experts,
        hidden_size=hidden,
        intermediate_size=32,
        quant_config=None,
        prefix="model.layers.1.mlp.experts",
    )
    return topk, fused


@pytest.mark.parametrize("renormalize", [True, False], ids=["renorm", "raw"])
def test_plain_softmax_topk_and_fused_moe_equal_dense_loop(renormalize: bool) -> None:
    """Ungrouped softmax without a bias: the ``moe_gating_top_k_softmax`` kernel choice."""
    hidden, experts, top_k = 64, 16, 4
    generator = torch.Generator().manual_seed(3)
    with plugin(True), torch.inference_mode():
        topk, fused = _build_qwen2_style(top_k, renormalize, experts, hidden)
        for param in fused.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        router = torch.randn(experts, hidden, generator=generator) * 0.1
        router[list(DEAD), FEATURE] = DEAD_GATE  # as fill_weights does: never picked
        for batch in BATCHES:
            x = moe_inputs(batch, hidden)
            ops.reset_launch_counts()
            out = fused(x.clone(), topk(x, x @ router.T))
            launches = ops.launch_counts()
            expected, tokens_per_expert = dense_moe(
                x,
                Routing("softmax", top_k, norm_topk_prob=renormalize),
                router,
                None,
                fused.w13_weight,
                fused.w2_weight,
                None,
            )
            _check(out, expected, tokens_per_expert, batch)
            assert launches == {"moe_gating_top_k_softmax": 1, **CHAIN}, launches
