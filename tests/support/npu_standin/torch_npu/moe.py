"""The MoE kernels of the TEST-ONLY torch_npu stand-in: handed to the plugin's ``ops`` unchanged.

sglang 0.5.23's NPU MoE path (``TopK.forward_npu`` -> ``fused_topk_npu``, ``AscendTPDispatcher``,
``AscendRunnerCore``) calls these through ``torch.ops.npu``; each goes to the ``ops`` op of the
same name (its validator runs on upstream's calls, and its reference models the kernel, e.g. the
sigmoid renormalisation of ``npu_moe_gating_top_k``). Zero-cost mode is not offered for them:
they refuse, so a timing run never mistakes them for free kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch_npu.standin import counted, zero_cost_enabled

# torch_npu name -> sglang_ascend_fia.ops name
KERNELS = {
    "npu_moe_gating_top_k": "moe_gating_top_k",
    "npu_moe_gating_top_k_softmax": "moe_gating_top_k_softmax",
    "npu_moe_init_routing_v2": "moe_init_routing_v2",
    "npu_grouped_matmul": "grouped_matmul",
    "npu_swiglu": "swiglu",
    "npu_moe_finalize_routing": "moe_finalize_routing",
}


def _handed_to_ops(npu_name: str, ops_name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if zero_cost_enabled():
            raise NotImplementedError(f"{npu_name}: the stand-in has no zero-cost MoE kernels")
        from sglang_ascend_fia import ops

        return getattr(ops, ops_name)(*args, **kwargs)

    call.__name__ = npu_name
    return counted(npu_name, call)


FUNCTIONS = {npu: _handed_to_ops(npu, name) for npu, name in KERNELS.items()}
