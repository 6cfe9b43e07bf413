"""``W8A8Int8MoEMethod.apply`` through ``ops``: the NPU W8A8 routed-expert chain.

sglang 0.5.23 on an NPU, W8A8 experts (``NPUW8A8Int8MoEMethod``,
``hardware_backend/npu/quantization/moe_methods.py:616-714``): the dispatcher quantises while it
routes (``npu_moe_init_routing_v2(quant_mode=1)``, ``token_dispatcher/ascend_tp.py:76-87``), the
runner (``moe_runner/ascend.py:207-279``) runs ``npu_grouped_matmul`` on int8 with ``scale=[w13
scale]`` and ``per_token_scale=[routing scale]``, then ``npu_dequant_swiglu_quant(quant_mode=1,
activate_left=True)`` (``moe/activation.py:31-38``) re-quantises the SwiGLU output per token for
the w2 grouped matmul, and ``npu_moe_finalize_routing(drop_pad_mode=2)`` combines. The weights
are the per-channel int8 ``[E, out, in]`` ``W8A8Int8MoEMethod`` loads, passed transposed (the
NPU method transposes them once at load; a transposed view is the same operand).

sglang's stock ``apply`` runs the triton int8 MoE (CUDA only) or AMX's ``fused_experts_cpu``.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe._fallback import fall_back_once
from sglang_ascend_fia.moe.experts import unsupported_reason

__sglang_patches__ = ("moe-w8a8-routed-experts",)

_HOOK = "moe experts (W8A8Int8MoEMethod.apply)"


def scale_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The per-channel scale dtype the int8 grouped matmul needs for a ``dtype`` output.

    The A2/A3 dtype table pairs a bfloat16 scale with bfloat16 output and a float32 scale with
    float16 output. ``NPUW8A8Int8MoEMethod`` always casts to bfloat16 (so a float16 model would
    be refused there); this picks the legal pair for either model dtype.
    """
    if dtype == torch.bfloat16:
        return torch.bfloat16
    if dtype == torch.float16:
        return torch.float32
    raise ValueError(
        f"W8A8 MoE hidden_states dtype={dtype}; accepted: torch.bfloat16 or torch.float16 "
        "(the int8 grouped matmul's output dtypes; w8a8_int8 also runs only in these)"
    )


def routed_experts_w8a8(
    x: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w13: torch.Tensor,
    w13_scale: torch.Tensor,
    w2: torch.Tensor,
    w2_scale: torch.Tensor,
) -> torch.Tensor:
    """``sum_k w[t, k] * W2_e(swiglu(W13_e x_t))`` with int8 activations and weights.

    ``w13`` int8 ``[E, 2I, H]`` (gate rows first) and ``w2`` int8 ``[E, H, I]`` with per-channel
    scales ``[E, 2I(, 1)]`` and ``[E, H(, 1)]``: sglang's ``W8A8Int8MoEMethod`` parameters.
    """
    num_tokens, top_k = topk_ids.shape
    num_experts = w13.shape[0]
    scale_dtype = scale_dtype_for(x.dtype)
    ids = topk_ids.to(torch.int32)
    permuted, expanded_row_idx, expert_tokens, token_scale = ops.moe_init_routing_v2(
        x,
        ids,
        active_num=num_tokens * top_k,
        expert_num=num_experts,
        expert_tokens_num_type=1,
        expert_tokens_num_flag=True,
        active_expert_range=[0, num_experts],
        quant_mode=1,
    )
    expert_tokens = expert_tokens.to(torch.int64)
    gate_up = ops.grouped_matmul(
        [permuted],
        [w13.transpose(1, 2)],
        scale=[w13_scale.reshape(num_experts, -1).to(scale_dtype)],
        per_token_scale=[token_scale],
        split_item=2,
        group_type=0,
        group_list_type=1,
        group_list=expert_tokens,
        output_dtype=x.dtype,
    )[0]
    hidden, hidden_scale = ops.dequant_swiglu_quant(gate_up, quant_mode=1, activate_left=True)
    down = ops.grouped_matmul(
        [hidden],
        [w2.transpose(1, 2)],
        scale=[w2_scale.reshape(num_experts, -1).to(scale_dtype)],
        per_token_scale=[hidden_scale],
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
        ids,
        drop_pad_mode=2,
    )


def w8a8_experts_apply(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``W8A8Int8MoEMethod.apply(layer, dispatch_output)``."""
    from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput

    layer = args[0] if args else kwargs["layer"]
    dispatch_output = args[1] if len(args) > 1 else kwargs["dispatch_output"]
    reason = unsupported_reason(layer, instance.moe_runner_config)
    if reason is None and getattr(layer, "use_intel_amx_backend", False):
        reason = "the layer runs sgl_kernel's AMX fused_experts_cpu (weights VNNI-packed)"
    if reason is not None:
        fall_back_once(_HOOK, reason)
        return wrapped(*args, **kwargs)
    topk_weights, topk_ids, _ = dispatch_output.topk_output
    x = dispatch_output.hidden_states
    if x.shape[0] == 0:
        return StandardCombineInput(hidden_states=torch.zeros_like(x))
    out = routed_experts_w8a8(
        x,
        topk_weights,
        topk_ids,
        layer.w13_weight,
        layer.w13_weight_scale,
        layer.w2_weight,
        layer.w2_weight_scale,
    )
    return StandardCombineInput(hidden_states=out)
