"""TEST-ONLY: the MoE oracle, written from the models' definitions, token by token in float64.

HF ``DeepseekV2MoE``/``DeepseekV3MoE`` and ``Qwen2MoeSparseMoeBlock`` route and combine as below;
``dense_moe`` does it one token and one expert at a time, so it shares no code with sglang or
the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
    logits: torch.Tensor,
    bias: torch.Tensor | None,
    w13: torch.Tensor,
    w2: torch.Tensor,
    shared: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, list[int]]:
    """Output rows and tokens per expert, one token and one expert at a time (float64).

    ``logits`` are the router's ``[T, E]`` outputs. Experts are ranked by score (+ bias); with
    groups, a group scores by its best expert without a bias (DeepSeek-V2
    ``group_limited_greedy``) or by its best two with one (V3 ``noaux_tc``), and only the best
    ``topk_group`` groups stay eligible. The weights are the unbiased scores of the chosen
    experts, divided by their sum when ``norm_topk_prob``, times ``routed_scaling_factor``.
    """
    num_experts = logits.shape[-1]
    per_group = num_experts // routing.n_group
    inter = w2.shape[-1]
    tokens_per_expert = [0] * num_experts
    rows = []
    for token, token_logits in zip(x.double(), logits.double(), strict=True):
        if routing.scoring == "softmax":
            scores = torch.softmax(token_logits, dim=0).tolist()
        else:
            scores = torch.sigmoid(token_logits).tolist()
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
