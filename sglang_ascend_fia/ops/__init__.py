"""The NPU-op facade: every NPU kernel the plugin calls, with a faithful pure-PyTorch reference.

On an NPU tensor each op calls ``torch_npu``; anywhere else it runs the reference. Names drop the
``npu_`` prefix; parameters, defaults and return tuples follow torch_npu 2.14.

Layout: ``fia/`` (FIA v1/v2: ``rules`` holds the public limits the attention backends import,
``plan`` the validator with the scenario rules of ``scenarios``, ``reference`` the computation),
``moe/`` (gating, routing, grouped matmul), ``kv_cache``, ``quant``; ``_dispatch`` (``npu_op``)
and ``_checks`` (the shared error wording and dtype policy) underneath. Semantics of every op,
rule by rule: ``docs/ops-semantics.md``.
"""

from sglang_ascend_fia.ops._dispatch import (
    PreparedCall,
    launch_counts,
    npu_op,
    reset_launch_counts,
    reset_validation_counts,
    validation_counts,
)
from sglang_ascend_fia.ops.fia import (
    fused_infer_attention_score,
    fused_infer_attention_score_v2,
)
from sglang_ascend_fia.ops.fia.rules import (
    check_block_size,
    check_page_size,
    legal_page_sizes,
    tnd_paged_supported,
)
from sglang_ascend_fia.ops.kv_cache import scatter_nd_update_, scatter_pa_kv_cache
from sglang_ascend_fia.ops.moe import (
    grouped_matmul,
    moe_finalize_routing,
    moe_gating_top_k,
    moe_gating_top_k_softmax,
    moe_init_routing_v2,
    swiglu,
)
from sglang_ascend_fia.ops.quant import (
    dequant_swiglu_quant,
    dynamic_quant,
    quant_matmul,
    quantize,
)

__all__ = [
    "PreparedCall",
    "check_block_size",
    "check_page_size",
    "dequant_swiglu_quant",
    "dynamic_quant",
    "fused_infer_attention_score",
    "fused_infer_attention_score_v2",
    "grouped_matmul",
    "launch_counts",
    "legal_page_sizes",
    "moe_finalize_routing",
    "moe_gating_top_k",
    "moe_gating_top_k_softmax",
    "moe_init_routing_v2",
    "npu_op",
    "quant_matmul",
    "quantize",
    "reset_launch_counts",
    "reset_validation_counts",
    "scatter_nd_update_",
    "scatter_pa_kv_cache",
    "swiglu",
    "tnd_paged_supported",
    "validation_counts",
]
