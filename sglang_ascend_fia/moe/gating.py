"""sglang's ``TopK`` through ``ops``: ``fused_topk_npu``'s choice of gating kernel.

Two hooks: ``TopK.forward_native`` (no platform kernel, e.g. CPU) and ``TopK.forward_npu`` (what
sglang dispatches to on an NPU, ``kernels/fused_op.py`` ``_platform_key``), both through
:func:`route`.

Mirrors ``hardware_backend/npu/moe/topk.py:19-122`` (sglang 0.5.23): plain softmax top-k without
groups or bias -> ``moe_gating_top_k_softmax`` (+ L1 renormalisation when ``renormalize``);
sigmoid, a correction bias or grouped top-k -> ``moe_gating_top_k``. Then
``_finalize_topk_npu`` (125-154): logical -> physical expert ids, padded rows' weights zeroed,
the expert-distribution recorder fed. Two arguments differ from ``fused_topk_npu`` where its
routing departs from the model's (sigmoid without renormalisation, grouped top-k without a
correction bias); :func:`gate` says how and why.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe.fallback import fall_back_once

__sglang_patches__ = ("moe-gating-top-k", "moe-gating-top-k-npu")

_HOOK = "moe gating (TopK.forward_native)"
_NPU_HOOK = "moe gating (TopK.forward_npu)"


def unsupported_reason(topk_config: Any, dynamic_expert_bias: Any) -> str | None:
    """Why this TopK call cannot go through the NPU gating ops, or None when it can."""
    if dynamic_expert_bias is not None:
        return "dynamic_expert_bias is set (sglang's fused_topk_npu also uses select_experts)"
    if topk_config.custom_routing_function is not None:
        return "a custom_routing_function is set"
    if topk_config.scoring_func not in ("softmax", "sigmoid"):
        return f"scoring_func={topk_config.scoring_func!r} (supported: 'softmax', 'sigmoid')"
    if topk_config.num_shared_topk_slots:
        return "fused shared-expert top-k slots are in use"
    return None


def gate(topk_config: Any, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights fp32 [T, K], expert ids int32 [T, K])`` with the model's routing semantics.

    The kernel choice is ``fused_topk_npu``'s; two of its arguments are not, because with them
    the NPU path departs from the model (HF) and from sglang's own ``select_experts``:

    - sigmoid without ``renormalize`` (``norm_topk_prob=False``): the kernel renormalises
      sigmoid weights whatever ``renorm`` says (``needRenorm = normType == 1 || renorm == 1``
      in ``moe_gating_top_k_generalized.h``; the CANN formula always divides by the sum), so
      the weights are taken from the op's ``norm_out`` (the unbiased sigmoid, written with
      ``out_flag``) at the chosen experts instead;
    - grouped top-k without a correction bias (DeepSeek-V2's ``group_limited_greedy``) scores
      a group by its max (``group_select_mode=0``), as HF and sglang's ``grouped_topk`` do;
      ``fused_topk_npu`` passes 1 (sum of the top two, the noaux_tc rule) for every grouped
      call. With a bias it is 1, as in ``biased_grouped_topk``.
    """
    top_k = topk_config.top_k
    grouped = bool(topk_config.use_grouped_topk)
    bias = topk_config.correction_bias
    if not grouped and bias is None and topk_config.scoring_func == "softmax":
        weights, ids, _ = ops.moe_gating_top_k_softmax(router_logits, k=top_k)
        if topk_config.renormalize:
            # sgl_kernel_npu's l1_norm: w / sum(w) over the top-k.
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(torch.float32), ids
    scaling = float(
        topk_config.routed_scaling_factor
        if topk_config.apply_routed_scaling_factor_on_output
        else 1.0
    )
    sigmoid = topk_config.scoring_func == "sigmoid"
    unnormalised_sigmoid = sigmoid and not topk_config.renormalize
    weights, ids, norm = ops.moe_gating_top_k(
        router_logits.to(torch.float32),
        top_k,
        bias=bias.to(torch.float32) if bias is not None else None,
        k_group=topk_config.topk_group if grouped else 1,
        group_count=topk_config.num_expert_group if grouped else 1,
        group_select_mode=1 if grouped and bias is not None else 0,
        renorm=int(bool(topk_config.renormalize)),
        norm_type=1 if sigmoid else 0,
        out_flag=unnormalised_sigmoid,
        routed_scaling_factor=scaling,
        eps=1e-20,
    )
    if unnormalised_sigmoid:
        weights = norm.gather(1, ids.long()) * scaling
    return weights.to(torch.float32), ids


def route(instance: Any, router_logits: torch.Tensor, kwargs: Any) -> Any:
    """``StandardTopKOutput`` of ``instance`` (a ``TopK``) through :func:`gate`, finished as
    ``_finalize_topk_npu`` does (``hardware_backend/npu/moe/topk.py:125-154``)."""
    from sglang.srt.eplb.expert_distribution import get_global_expert_distribution_recorder
    from sglang.srt.eplb.expert_location_dispatch import topk_ids_logical_to_physical
    from sglang.srt.layers.moe.topk import (
        StandardTopKOutput,
        capture_routed_experts_if_allowed,
        resolve_routing_inputs,
    )

    config = instance.topk_config
    num_token_non_padded, dispatch_info = resolve_routing_inputs(
        layer_id=instance.layer_id,
        is_draft=instance.is_draft,
        num_token_non_padded=kwargs.get("num_token_non_padded"),
        expert_location_dispatch_info=kwargs.get("expert_location_dispatch_info"),
    )
    weights, ids = gate(config, router_logits)
    capture_routed_experts_if_allowed(config, instance.layer_id, ids)
    ids = topk_ids_logical_to_physical(ids, dispatch_info)
    if num_token_non_padded is not None:
        rows = torch.arange(weights.shape[0], device=weights.device)
        padded = (rows >= num_token_non_padded)[:, None]
        weights = weights.masked_fill(padded, 0.0)
        get_global_expert_distribution_recorder().on_select_experts(
            topk_ids=ids.masked_fill(padded, -1)
        )
    else:
        get_global_expert_distribution_recorder().on_select_experts(topk_ids=ids)
    return StandardTopKOutput(weights, ids, router_logits)


def topk_forward_native(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``TopK.forward_native(hidden_states, router_logits, *, ...)``."""
    reason = unsupported_reason(instance.topk_config, kwargs.get("dynamic_expert_bias"))
    if reason is None and kwargs.get("router_logits_partials") is not None:
        reason = "router_logits_partials is set (ROCm split-K router)"
    if reason is None and getattr(instance, "waterfill_balancer", None) is not None:
        reason = "waterfill expert balancing is enabled"
    if reason is not None:
        fall_back_once(_HOOK, reason)
        return wrapped(*args, **kwargs)
    router_logits = args[1] if len(args) > 1 else kwargs["router_logits"]
    return route(instance, router_logits, kwargs)


def topk_forward_npu(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``TopK.forward_npu(hidden_states, router_logits, *, ...)``.

    Stock ``forward_npu`` applies no waterfill expansion (``layers/moe/topk.py:979-1014``), so
    neither does this; everything :func:`unsupported_reason` names (DeepSeek-V4's
    ``sqrtsoftplus`` among them) keeps sglang's ``forward_npu``.
    """
    reason = unsupported_reason(instance.topk_config, kwargs.get("dynamic_expert_bias"))
    if reason is not None:
        fall_back_once(_NPU_HOOK, reason)
        return wrapped(*args, **kwargs)
    router_logits = args[1] if len(args) > 1 else kwargs["router_logits"]
    return route(instance, router_logits, kwargs)
