"""``UnquantizedFusedMoEMethod.forward_native`` through ``ops``: the NPU routed-expert chain.

sglang 0.5.23 on an NPU: ``AscendTPDispatcher.dispatch`` (``token_dispatcher/ascend_tp.py:96-126``)
-> ``npu_moe_init_routing_v2(quant_mode=-1, expert_tokens_num_type=1, active_num=T*K,
active_expert_range=[0, E])`` (``hardware_backend/npu/moe/init_routing.py:83-118``); the runner
(``moe_runner/ascend.py:207-279``) runs ``npu_grouped_matmul(split_item=2, group_type=0,
group_list_type=1, weight=[w.transpose(1, 2)])`` (``hardware_backend/npu/moe/matmul.py:23-50``)
for w13, ``npu_swiglu``, the same for w2; ``combine`` -> ``npu_moe_finalize_routing(
drop_pad_mode=2, scales=topk_weights, export_for_source_row=topk_ids)``
(``finalize_routing.py:123-143``). Here the same chain runs through ``ops`` on the native path.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe._fallback import fall_back_once

__sglang_patches__ = ("moe-routed-experts",)

_HOOK = "moe experts (UnquantizedFusedMoEMethod.forward_native)"


def unsupported_reason(layer: Any, config: Any) -> str | None:
    """Why this layer's experts cannot run the NPU chain, or None when they can."""
    if config.activation != "silu":
        return f"activation={config.activation!r} (the NPU chain runs swiglu: 'silu' only)"
    if config.apply_router_weight_on_input:
        return "apply_router_weight_on_input is set"
    if config.gemm1_alpha is not None or config.gemm1_clamp_limit is not None:
        return "a clamped/alpha SwiGLU (gemm1_alpha, gemm1_clamp_limit) is configured"
    for name in ("w13_weight_bias", "w2_weight_bias"):
        if getattr(layer, name, None) is not None:
            return f"the experts have a {name}"
    return None


def routed_experts(
    x: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
) -> torch.Tensor:
    """``sum_k w[t, k] * W2_e(swiglu(W13_e x_t))`` for ``e = ids[t, k]``, via the NPU op chain.

    ``w13`` is ``[E, 2I, H]`` (gate rows first), ``w2`` is ``[E, H, I]``: sglang's stored
    ``[E, out, in]`` layout, passed transposed exactly as ``NPUUnquantMoEMethod`` does.
    """
    num_tokens, top_k = topk_ids.shape
    num_experts = w13.shape[0]
    permuted, expanded_row_idx, expert_tokens, _ = ops.moe_init_routing_v2(
        x,
        topk_ids.to(torch.int32),
        active_num=num_tokens * top_k,
        expert_num=num_experts,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        active_expert_range=[0, num_experts],
        quant_mode=-1,
    )
    expert_tokens = expert_tokens.to(torch.int64)
    gate_up = ops.grouped_matmul(
        [permuted],
        [w13.transpose(1, 2)],
        split_item=2,
        group_type=0,
        group_list_type=1,
        group_list=expert_tokens,
        output_dtype=x.dtype,
    )[0]
    hidden = ops.swiglu(gate_up)
    down = ops.grouped_matmul(
        [hidden],
        [w2.transpose(1, 2)],
        split_item=2,
        group_type=0,
        group_list_type=1,
        group_list=expert_tokens,
        output_dtype=x.dtype,
    )[0]
    return ops.moe_finalize_routing(
        down,
        None,
        None,
        None,
        topk_weights.to(x.dtype),
        expanded_row_idx,
        topk_ids.to(torch.int32),
        drop_pad_mode=2,
    )


def experts_forward_native(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``UnquantizedFusedMoEMethod.forward_native(layer, dispatch_output)``."""
    from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput

    layer = args[0] if args else kwargs["layer"]
    dispatch_output = args[1] if len(args) > 1 else kwargs["dispatch_output"]
    reason = unsupported_reason(layer, instance.moe_runner_config)
    if reason is None and getattr(layer, "use_intel_amx_backend", False):
        reason = "the layer runs sgl_kernel's AMX fused_experts_cpu"
    if reason is not None:
        fall_back_once(_HOOK, reason)
        return wrapped(*args, **kwargs)
    topk_weights, topk_ids, _ = dispatch_output.topk_output
    x = dispatch_output.hidden_states
    if x.shape[0] == 0:
        return StandardCombineInput(hidden_states=torch.zeros_like(x))
    out = routed_experts(x, topk_weights, topk_ids, layer.w13_weight, layer.w2_weight)
    return StandardCombineInput(hidden_states=out)
