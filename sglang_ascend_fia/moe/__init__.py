"""DeepSeek-style MoE through the ``ops`` facade: routed-expert gating and expert compute.

Hooks on sglang's native MoE paths (the ones a DeepSeek-V2/V3 model takes without a platform
kernel, e.g. on CPU) and on its NPU paths (``forward_npu``, what sglang dispatches to on an
Ascend NPU); see ``patches/moe_*.toml``:

- ``gating``: ``TopK.forward_native`` / ``TopK.forward_npu`` -> ``ops.moe_gating_top_k_softmax``
  (plain softmax) or ``ops.moe_gating_top_k`` (sigmoid, correction bias, grouped top-k), as
  sglang's ``fused_topk_npu`` picks them, with the model's routing where it departs;
- ``experts``: ``UnquantizedFusedMoEMethod.forward_native`` -> ``ops.moe_init_routing_v2`` ->
  ``ops.grouped_matmul`` (w13) -> ``ops.swiglu`` -> ``ops.grouped_matmul`` (w2) ->
  ``ops.moe_finalize_routing``, as sglang's ``AscendTPDispatcher`` + ``NPUUnquantMoEMethod`` call
  them; ``UnquantizedFusedMoEMethod.forward_npu`` -> the grouped matmuls and SwiGLU between
  the ``ascend_tp`` dispatcher's routing steps;
- ``npu_routing``: those dispatcher steps (``NPUMoEInitRouting_v2``, ``NPUFinalizeRouting``)
  -> ``ops.moe_init_routing_v2`` / ``ops.moe_finalize_routing``.

Shared experts and ``routed_scaling_factor`` stay where the model applies them
(``DeepseekV2MoE``), so they are added exactly as stock sglang adds them.
"""
