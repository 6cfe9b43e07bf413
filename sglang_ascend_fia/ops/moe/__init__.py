"""MoE routing and expert-compute ops: gating top-k, init/finalize routing, grouped matmul, SwiGLU.

Each op mirrors ``torch_npu.npu_<name>`` (torch_npu 2.14: the op-schema yaml for names and
defaults, ``_op_plugin_docs.py`` for semantics). The references compute in float32 (int8 dot
products accumulate exactly in float64, as the NPU's int32 accumulator does) and cast to the
documented output dtype at the end.

Sources beyond the torch_npu docstrings are named where used: the CANN ops-transformer kernels
and golden-data generators (``moe_gating_top_k_generalized.h``, ``moe_init_routing_v3``
``gen_data.py``) and the CANN aclnn docs (``aclnnMoeFinalizeRoutingV2``,
``aclnnGroupedMatmulV4``). Anything that no document states is marked **(inferred)**.

Two kinds of rejection, both ``ValueError`` and both worded by ``ops._checks``: each op's
validator enforces the *documented* kernel constraints and runs before either implementation
(``_dispatch``), so it never refuses a call the NPU kernel accepts; arguments the kernel supports
but the reference does not implement are refused by the reference itself ("... is not
implemented by the reference"), so only CPU/CUDA runs see them.

How sglang 0.5.23 calls these (``hardware_backend/npu/moe``): ``AscendTPDispatcher`` routes with
``moe_init_routing_v2(quant_mode=-1|1, expert_tokens_num_type=1, expert_tokens_num_flag=True,
active_num=T*K, active_expert_range=[0, E])`` and combines with ``moe_finalize_routing(
drop_pad_mode=2)``; the runner calls ``grouped_matmul(split_item=2, group_type=0,
group_list_type=1)`` with ``weight=[w.transpose(1, 2)]`` for BF16 (stored ``[E, out, in]``) and
``weight=[w]`` for W8A8 (pre-transposed, stored ``[E, in, out]``).

Modules: ``gating`` (top-k gating), ``routing`` (init/finalize routing), ``gmm`` (grouped matmul,
SwiGLU).
"""

from sglang_ascend_fia.ops.moe.gating import moe_gating_top_k, moe_gating_top_k_softmax
from sglang_ascend_fia.ops.moe.gmm import grouped_matmul, swiglu
from sglang_ascend_fia.ops.moe.routing import moe_finalize_routing, moe_init_routing_v2

__all__ = [
    "grouped_matmul",
    "moe_finalize_routing",
    "moe_gating_top_k",
    "moe_gating_top_k_softmax",
    "moe_init_routing_v2",
    "swiglu",
]
