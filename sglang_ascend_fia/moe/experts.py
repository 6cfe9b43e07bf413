"""sglang's unquantized routed experts through ``ops``: the NPU routed-expert chain.

sglang 0.5.23 on an NPU: ``AscendTPDispatcher.dispatch`` (``token_dispatcher/ascend_tp.py:97-126``)
-> ``npu_moe_init_routing_v2(quant_mode=-1, expert_tokens_num_type=1, active_num=T*K,
active_expert_range=[0, E])`` (``hardware_backend/npu/moe/init_routing.py:83-118``); the runner
(``moe_runner/ascend.py:207-278``) runs ``npu_grouped_matmul(split_item=2, group_type=0,
group_list_type=1, weight=[w.transpose(1, 2)])`` (``hardware_backend/npu/moe/matmul.py:23-50``)
for w13, ``npu_swiglu``, the same for w2; ``combine`` -> ``npu_moe_finalize_routing(
drop_pad_mode=2, scales=topk_weights, export_for_source_row=topk_ids)``
(``finalize_routing.py:34-54``). The three steps are :func:`init_routing`, :func:`expert_mlp`
and :func:`finalize_routing`; two hooks run them:

- ``UnquantizedFusedMoEMethod.forward_native`` (no platform kernel, e.g. CPU): the whole chain;
- ``UnquantizedFusedMoEMethod.forward_npu`` (what sglang dispatches to on an NPU): the expert
  MLP of the ``ascend_tp`` dispatcher's output; the dispatcher's own routing steps go through
  ``ops`` by :mod:`sglang_ascend_fia.moe.npu_routing`.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe.fallback import fall_back_once
from sglang_ascend_fia.moe.local_experts import (
    combinable_row_idx,
    expert_parallel,
    standard_local_ids,
    zero_uncomputed,
)

__sglang_patches__ = ("moe-routed-experts", "moe-routed-experts-npu")

_HOOK = "moe experts (UnquantizedFusedMoEMethod.forward_native)"
_NPU_HOOK = "moe experts (UnquantizedFusedMoEMethod.forward_npu)"


def unsupported_reason(layer: Any, config: Any) -> str | None:
    """Why this layer's experts cannot run the NPU chain, or None when they can."""
    if config.activation != "silu":
        return f"activation={config.activation!r} (the NPU chain runs swiglu: 'silu' only)"
    if not getattr(config, "is_gated", True):
        return "the experts are not gated (swiglu needs the gate and up halves of w13)"
    if config.apply_router_weight_on_input:
        return "apply_router_weight_on_input is set"
    if config.gemm1_alpha is not None or config.gemm1_clamp_limit is not None:
        return "a clamped/alpha SwiGLU (gemm1_alpha, gemm1_clamp_limit) is configured"
    for name in ("w13_weight_bias", "w2_weight_bias"):
        if getattr(layer, name, None) is not None:
            return f"the experts have a {name}"
    return None


def init_routing(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    active_expert_range: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x permuted by expert, expanded_row_idx, tokens per expert int64)``, as
    ``NPUMoEInitRouting_v2(quant_mode=-1)`` computes them; ``active_expert_range`` (default
    ``[0, num_experts]``) limits the routing to one EP rank's experts (``local_experts``)."""
    num_tokens, top_k = topk_ids.shape
    permuted, expanded_row_idx, expert_tokens, _ = ops.moe_init_routing_v2(
        x,
        topk_ids.to(torch.int32),
        active_num=num_tokens * top_k,
        expert_num=num_experts,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        active_expert_range=active_expert_range or [0, num_experts],
        quant_mode=-1,
    )
    return permuted, expanded_row_idx, expert_tokens.to(torch.int64)


def init_routing_int8(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    num_experts: int,
    active_expert_range: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(int8 x permuted by expert, expanded_row_idx, tokens per expert int64, per-row
    scale)``, as ``NPUMoEInitRouting_v2(quant_mode=1)`` computes them for W8A8 experts: the
    routing quantises each permuted row dynamically (init_routing.py:97-118)."""
    num_tokens, top_k = topk_ids.shape
    permuted, expanded_row_idx, expert_tokens, token_scale = ops.moe_init_routing_v2(
        x,
        topk_ids.to(torch.int32),
        active_num=num_tokens * top_k,
        expert_num=num_experts,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        active_expert_range=active_expert_range or [0, num_experts],
        quant_mode=1,
    )
    return permuted, expanded_row_idx, expert_tokens.to(torch.int64), token_scale


def expert_mlp(
    permuted: torch.Tensor,
    expert_tokens: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    group_list_type: int = 1,
) -> torch.Tensor:
    """``W2_e(swiglu(W13_e x))`` for each row of ``permuted``, ``e`` its expert group.

    ``w13`` is ``[E, 2I, H]`` (gate rows first), ``w2`` is ``[E, H, I]``: sglang's stored
    ``[E, out, in]`` layout, passed transposed exactly as ``NPUUnquantMoEMethod`` does. The
    outputs keep the input's dtype (sglang's runner asks for bf16 unless the input is fp16,
    ``moe_runner/ascend.py:218``: the same on a bf16 or fp16 model).
    """
    gate_up = ops.grouped_matmul(
        [permuted],
        [w13.transpose(1, 2)],
        split_item=2,
        group_type=0,
        group_list_type=group_list_type,
        group_list=expert_tokens,
        output_dtype=permuted.dtype,
    )[0]
    hidden = ops.swiglu(gate_up)
    return ops.grouped_matmul(
        [hidden],
        [w2.transpose(1, 2)],
        split_item=2,
        group_type=0,
        group_list_type=group_list_type,
        group_list=expert_tokens,
        output_dtype=permuted.dtype,
    )[0]


def finalize_routing(
    down: torch.Tensor,
    topk_weights: torch.Tensor,
    expanded_row_idx: torch.Tensor,
    topk_ids: torch.Tensor,
    drop_pad_mode: int = 2,
) -> torch.Tensor:
    """``out[t] = sum_k w[t, k] * down[row of (t, k)]``, as ``NPUFinalizeRouting`` combines."""
    return ops.moe_finalize_routing(
        down,
        None,
        None,
        None,
        topk_weights.to(down.dtype),
        expanded_row_idx,
        topk_ids.to(torch.int32),
        drop_pad_mode=drop_pad_mode,
    )


def routed_experts(
    x: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
) -> torch.Tensor:
    """``sum_k w[t, k] * W2_e(swiglu(W13_e x_t))`` for ``e = ids[t, k]``, via the NPU op chain.

    ``topk_ids`` are the StandardDispatcher's local ids: ``-1`` (another EP rank's expert, a
    masked DP-padding row) contributes nothing (:mod:`sglang_ascend_fia.moe.local_experts`)."""
    ids, expert_num, active = standard_local_ids(topk_ids, w13.shape[0])
    permuted, expanded_row_idx, expert_tokens = init_routing(x, ids, expert_num, active)
    down = zero_uncomputed(expert_mlp(permuted, expert_tokens, w13, w2), expert_tokens)
    row_idx = combinable_row_idx(expanded_row_idx, down.shape[0])
    return finalize_routing(down, topk_weights, row_idx, ids)


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


def npu_unsupported_reason(layer: Any, dispatch_output: Any, config: Any) -> str | None:
    """Why sglang's NPU runner must serve this call, or None when the plugin's chain can."""
    from sglang.srt.hardware_backend.npu.quantization.moe_methods import NPUUnquantMoEMethod

    reason = unsupported_reason(layer, config)
    if reason is not None:
        return reason
    if not dispatch_output.format.is_ascend_tp():
        return (
            f"the token dispatcher's output is {dispatch_output.format.value!r} (the plugin "
            "serves the ascend_tp dispatcher; DeepEP and the other all-to-all dispatchers "
            "exchange tokens through deep_ep's Buffer, token_dispatcher/deepep.py:52-54, not "
            "through a torch_npu op the plugin could run: they keep sglang's runner)"
        )
    kernels = [getattr(layer, name, None) for name in ("w13_kernel", "w2_kernel")]
    if any(type(kernel) is not NPUUnquantMoEMethod for kernel in kernels):
        names = [type(kernel).__name__ for kernel in kernels]
        return f"the expert kernels are {names} (the plugin runs NPUUnquantMoEMethod's only)"
    if dispatch_output.hidden_states_scale is not None:
        return "the dispatcher quantised the tokens (hidden_states_scale is set)"
    if getattr(config, "use_tp_all_gather_activation", False):
        return "the activation is all-gathered across TP ranks (GGUF)"
    if dispatch_output.hidden_states.shape[0] == 0:
        return "an empty batch"
    return None


def experts_forward_npu(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``UnquantizedFusedMoEMethod.forward_npu(layer, dispatch_output)``.

    The ``ascend_tp`` dispatcher has already permuted the tokens (``init_routing``) and combines
    the result (``finalize_routing``); this runs the expert MLP between them, as
    ``AscendRunnerCore.run`` does with ``NPUUnquantMoEMethod``'s grouped matmuls and ``NPUSwiglu``.
    """
    from sglang.srt.layers.moe.token_dispatcher.ascend_tp import AscendTPCombineInput

    layer = args[0] if args else kwargs["layer"]
    dispatch_output = args[1] if len(args) > 1 else kwargs["dispatch_output"]
    reason = npu_unsupported_reason(layer, dispatch_output, instance.moe_runner_config)
    if reason is not None:
        fall_back_once(_NPU_HOOK, reason)
        return zero_uncomputed_rows(wrapped(*args, **kwargs), dispatch_output)
    down = expert_mlp(
        dispatch_output.hidden_states,
        dispatch_output.expert_tokens,
        layer.w13_weight,
        layer.w2_weight,
        group_list_type=dispatch_output.group_list_type,
    )
    return zero_uncomputed_rows(AscendTPCombineInput(hidden_states=down), dispatch_output)


def zero_uncomputed_rows(combine_input: Any, dispatch_output: Any) -> Any:
    """With ``--ep-size`` > 1 the ``ascend_tp`` routing (``npu_routing``) keeps this rank's
    experts only; the expert rows past their total were never computed and become zeros before
    the combine reads them (:mod:`sglang_ascend_fia.moe.local_experts`)."""
    if expert_parallel()[1] == 1 or dispatch_output.hidden_states.shape[0] == 0:
        return combine_input
    down = zero_uncomputed(
        combine_input.hidden_states, dispatch_output.expert_tokens, dispatch_output.group_list_type
    )
    return combine_input._replace(hidden_states=down)
