"""The ``ascend_tp`` token dispatcher's routing steps through ``ops`` (sglang on an NPU).

On an NPU, sglang's ``FusedMoE`` permutes the tokens before the experts and combines them after,
in ``AscendTPDispatcher`` (``token_dispatcher/ascend_tp.py:97-143``), through two helper objects
that each call one torch_npu kernel: ``NPUMoEInitRouting_v2._init_routing``
(``hardware_backend/npu/moe/init_routing.py:83-118``) and ``NPUFinalizeRouting._finalize_routing``
(``finalize_routing.py:34-54``). The hooks below run the same calls through ``ops``
(:func:`sglang_ascend_fia.moe.experts.init_routing` / ``finalize_routing``), so with
``UnquantizedFusedMoEMethod.forward_npu`` and ``TopK.forward_npu`` hooked the whole MoE chain is
counted and validated like the CPU one. W8A8 dispatch (``quant_mode=1``, the int8 routing the
modelslim W8A8 experts ask for, ``moe_methods.py:679-680``) goes through ``ops`` too; MXFP8 (``3``)
and empty batches keep sglang's call, with one log line naming the reason. With ``--ep-size`` > 1
the routing keeps this rank's experts (``active_expert_range``) and the combine reads only the
rows computed for them (:mod:`sglang_ascend_fia.moe.local_experts`).
"""

from __future__ import annotations

from typing import Any

from sglang_ascend_fia.moe.experts import finalize_routing, init_routing, init_routing_int8
from sglang_ascend_fia.moe.fallback import fall_back_once
from sglang_ascend_fia.moe.local_experts import (
    ascend_tp_active_range,
    combinable_row_idx,
    expert_parallel,
)

__sglang_patches__ = ("moe-npu-init-routing", "moe-npu-finalize-routing")

_INIT_HOOK = "moe init routing (NPUMoEInitRouting_v2._init_routing)"
_FINALIZE_HOOK = "moe finalize routing (NPUFinalizeRouting._finalize_routing)"


def _argument(args: Any, kwargs: Any, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs[name]


def init_routing_v2(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``NPUMoEInitRouting_v2._init_routing(hidden_states, topk_ids,
    num_experts, top_k)`` -> ``(permuted, expanded_row_idx, expert_tokens int64, scale)``: the
    per-row scale of the int8 rows for ``quant_mode=1``, None for ``-1``."""
    hidden_states = _argument(args, kwargs, 0, "hidden_states")
    topk_ids = _argument(args, kwargs, 1, "topk_ids")
    num_experts = _argument(args, kwargs, 2, "num_experts")
    reason = None
    if instance.quant_mode not in (-1, 1):
        reason = (
            f"quant_mode={instance.quant_mode} (the plugin routes unquantised tokens, -1, and "
            "W8A8 int8 tokens, 1)"
        )
    elif hidden_states.shape[0] == 0:
        reason = "an empty batch"
    if reason is not None:
        fall_back_once(_INIT_HOOK, reason)
        return wrapped(*args, **kwargs)
    active = None
    ep_rank, ep_size = expert_parallel()
    if ep_size > 1:
        # Global ids, this rank's experts only: the counts then match its weights.
        active = ascend_tp_active_range(num_experts, ep_rank, ep_size)
    if instance.quant_mode == 1:
        return init_routing_int8(hidden_states, topk_ids, num_experts, active)
    permuted, expanded_row_idx, expert_tokens = init_routing(
        hidden_states, topk_ids, num_experts, active
    )
    return permuted, expanded_row_idx, expert_tokens, None


def finalize_routing_hook(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``NPUFinalizeRouting._finalize_routing(hidden_states, topk_weights,
    expanded_row_idx, topk_ids)``."""
    hidden_states = _argument(args, kwargs, 0, "hidden_states")
    if hidden_states.shape[0] == 0:
        fall_back_once(_FINALIZE_HOOK, "an empty batch")
        return wrapped(*args, **kwargs)
    expanded_row_idx = _argument(args, kwargs, 2, "expanded_row_idx")
    if expert_parallel()[1] > 1:
        # Pairs routed to another rank's experts: their index is undefined (local_experts).
        expanded_row_idx = combinable_row_idx(expanded_row_idx, hidden_states.shape[0])
    return finalize_routing(
        hidden_states,
        _argument(args, kwargs, 1, "topk_weights"),
        expanded_row_idx,
        _argument(args, kwargs, 3, "topk_ids"),
        drop_pad_mode=instance.drop_pad_mode,
    )
