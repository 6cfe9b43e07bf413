"""DeepSeek-style MoE through the ``ops`` facade: routed-expert gating and expert compute.

Two hooks, both on sglang's native MoE paths (the ones a DeepSeek-V2/V3 model takes when sglang
runs without a platform kernel, e.g. on CPU; see ``patches/moe_*.toml``):

- ``gating``: ``TopK.forward_native`` -> ``ops.moe_gating_top_k_softmax`` (plain softmax) or
  ``ops.moe_gating_top_k`` (sigmoid, correction bias, grouped top-k), as sglang's
  ``fused_topk_npu`` picks them;
- ``experts``: ``UnquantizedFusedMoEMethod.forward_native`` -> ``ops.moe_init_routing_v2`` ->
  ``ops.grouped_matmul`` (w13) -> ``ops.swiglu`` -> ``ops.grouped_matmul`` (w2) ->
  ``ops.moe_finalize_routing``, as sglang's ``AscendTPDispatcher`` + ``NPUUnquantMoEMethod`` call
  them.

Shared experts and ``routed_scaling_factor`` stay where the model applies them
(``DeepseekV2MoE``), so they are added exactly as stock sglang adds them.
"""
