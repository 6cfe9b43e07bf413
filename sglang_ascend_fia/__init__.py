"""sglang-ascend-fia: FIA attention and NPU MoE kernels for stock SGLang on Ascend NPUs.

With ``ASCEND_USE_FIA=1`` it patches sglang at import time; one line per feature:

- MHA/GQA attention: sglang's ``"ascend"`` backend runs ``npu_fused_infer_attention_score``
  (:mod:`.attention`); what it does not implement goes to sglang's own backend, logged once.
- DeepSeek MLA: FIA over a split latent/rope KV pool (:mod:`.mla`).
- MoE: routed-expert gating and expert compute through the NPU MoE kernels (:mod:`.moe`).
- W8A8 int8: dense and MoE layers of sglang's ``w8a8_int8`` checkpoints, and the
  ``quantize-w8a8`` converter (:mod:`.w8a8`).

Every NPU kernel goes through :mod:`sglang_ascend_fia.ops`: ``torch_npu`` on an NPU tensor, a
pure-PyTorch reference anywhere else (``docs/ops-semantics.md``: each op's semantics and the
rules it checks).

Importing this package does nothing on its own; sglang calls
:func:`sglang_ascend_fia.plugin.activate` through the ``sglang.srt.plugins`` entry point.
"""

__version__ = "0.1.0"
