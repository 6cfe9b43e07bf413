"""``W8A8Int8MoEMethod.apply`` through ``ops``: the NPU W8A8 routed-expert chain.

sglang 0.5.23 on an NPU, W8A8 experts (``NPUW8A8Int8MoEMethod``,
``hardware_backend/npu/quantization/moe_methods.py:616-714``): the dispatcher quantises while it
routes (``npu_moe_init_routing_v2(quant_mode=1)``, ``token_dispatcher/ascend_tp.py:76-87``), the
runner (``moe_runner/ascend.py:207-278``) runs ``npu_grouped_matmul`` on int8 with ``scale=[w13
scale]`` and ``per_token_scale=[routing scale]``, then ``npu_dequant_swiglu_quant(quant_mode=1,
activate_left=True)`` (``moe/activation.py:31-38``) re-quantises the SwiGLU output per token for
the w2 grouped matmul, and ``npu_moe_finalize_routing(drop_pad_mode=2)`` combines.
``lay_out_weights`` is that method's load-time layout. ``sglang_ascend_fia.w8a8.methods`` puts
both on sglang's ``W8A8Int8MoEMethod``.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe.experts import finalize_routing, init_routing_int8, unsupported_reason
from sglang_ascend_fia.moe.fallback import fall_back_once
from sglang_ascend_fia.moe.local_experts import (
    combinable_row_idx,
    standard_local_ids,
    zero_uncomputed,
)

_HOOK = "moe experts (w8a8_int8)"


def scale_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The per-channel scale dtype the int8 grouped matmul needs for a ``dtype`` output.

    The A2/A3 dtype table pairs a bfloat16 scale with bfloat16 output and a float32 scale with
    float16 output. ``NPUW8A8Int8MoEMethod`` always casts to bfloat16, a pair outside that table
    for a float16 model (inferred: not run on an NPU); this picks the table's pair for either.
    """
    if dtype == torch.bfloat16:
        return torch.bfloat16
    if dtype == torch.float16:
        return torch.float32
    raise ValueError(
        f"W8A8 MoE hidden_states dtype={dtype}; accepted: torch.bfloat16 or torch.float16 "
        "(the int8 grouped matmul's output dtypes; w8a8_int8 also runs only in these)"
    )


def stock_reason(layer: Any, config: Any) -> str | None:
    """Why this W8A8 layer keeps sglang's own method (the same limits as the BF16 chain)."""
    return unsupported_reason(layer, config)


def log_stock_fallback(reason: str) -> None:
    """One log line per reason and process: sglang's own W8A8 MoE method serves the layer."""
    fall_back_once(_HOOK, reason)


def lay_out_weights(layer: Any) -> None:
    """``NPUW8A8Int8MoEMethod.process_weights_after_loading`` (``moe_methods.py:647-686``):
    int8 ``w13`` ``[E, 2I, H]`` and ``w2`` ``[E, H, I]`` -> ``[E, in, out]`` contiguous, the
    grouped matmul's ``[E, K, N]``; scales ``[E, out, 1]`` -> ``[E, out]`` (kept float32 here;
    ``routed_experts_w8a8`` casts them to the dtype the output needs)."""
    for prefix in ("w13", "w2"):
        weight = getattr(layer, f"{prefix}_weight").data
        if weight.dtype != torch.int8 or weight.dim() != 3:
            raise ValueError(
                f"w8a8_int8 MoE {prefix}_weight has dtype {weight.dtype} and shape "
                f"{tuple(weight.shape)}; accepted: int8 [experts, out, in] as written by "
                "`sglang-ascend-fia quantize-w8a8`"
            )
        transposed = weight.transpose(1, 2).contiguous()
        setattr(layer, f"{prefix}_weight", torch.nn.Parameter(transposed, requires_grad=False))
        scale = getattr(layer, f"{prefix}_weight_scale").data.squeeze(-1)
        setattr(layer, f"{prefix}_weight_scale", torch.nn.Parameter(scale, requires_grad=False))


def expert_mlp_w8a8(
    permuted: torch.Tensor,
    token_scale: torch.Tensor,
    expert_tokens: torch.Tensor,
    w13: torch.Tensor,
    w13_scale: torch.Tensor,
    w2: torch.Tensor,
    w2_scale: torch.Tensor,
    output_dtype: torch.dtype,
    *,
    group_list_type: int = 1,
) -> torch.Tensor:
    """The expert MLP over int8 rows already permuted by expert (``token_scale`` their per-row
    scales, ``expert_tokens`` the rows per expert): int8 ``grouped_matmul`` (w13) ->
    ``dequant_swiglu_quant`` -> int8 ``grouped_matmul`` (w2), as ``AscendRunnerCore.run`` runs
    ``NPUW8A8Int8MoEMethod`` (``moe_methods.py:688-714``) between the dispatcher's routing steps."""
    scale_dtype = scale_dtype_for(output_dtype)

    def int8_grouped_matmul(
        rows: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, row_scale: torch.Tensor
    ) -> torch.Tensor:
        """One launch over every expert's rows: int8 x int8, dequantised by both scales."""
        return ops.grouped_matmul(
            [rows],
            [weight],
            scale=[scale.to(scale_dtype)],
            per_token_scale=[row_scale],
            split_item=2,
            group_type=0,
            group_list_type=group_list_type,
            group_list=expert_tokens,
            output_dtype=output_dtype,
        )[0]

    gate_up = int8_grouped_matmul(permuted, w13, w13_scale, token_scale)
    hidden, hidden_scale = ops.dequant_swiglu_quant(gate_up, quant_mode=1, activate_left=True)
    return int8_grouped_matmul(hidden, w2, w2_scale, hidden_scale)


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

    ``w13`` int8 ``[E, H, 2I]`` (gate columns first) and ``w2`` int8 ``[E, I, H]`` with
    per-channel scales ``[E, 2I]`` and ``[E, H]``: the layout ``lay_out_weights`` leaves.
    ``topk_ids`` are the StandardDispatcher's local ids (``-1``: not this rank's expert).
    """
    ids, expert_num, active = standard_local_ids(topk_ids, w13.shape[0])
    permuted, expanded_row_idx, expert_tokens, token_scale = init_routing_int8(
        x, ids, expert_num, active
    )
    down = expert_mlp_w8a8(
        permuted, token_scale, expert_tokens, w13, w13_scale, w2, w2_scale, x.dtype
    )
    down = zero_uncomputed(down, expert_tokens)
    row_idx = combinable_row_idx(expanded_row_idx, down.shape[0])
    return finalize_routing(down, topk_weights.to(x.dtype), row_idx, ids)
