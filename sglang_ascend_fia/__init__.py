"""sglang-ascend-fia: FIA attention for stock SGLang on Ascend NPUs.

With ``ASCEND_USE_FIA=1``, sglang's ``"ascend"`` attention backend runs MHA/GQA models through
``npu_fused_infer_attention_score``; MLA models keep sglang's own backend. Every NPU kernel goes
through :mod:`sglang_ascend_fia.ops`: ``torch_npu`` on an NPU tensor, a pure-PyTorch reference
anywhere else (``docs/ops-semantics.md``: each op's semantics and the rules it checks).

Importing this package does nothing on its own; sglang calls
:func:`sglang_ascend_fia.plugin.activate` through the ``sglang.srt.plugins`` entry point.
"""

__version__ = "0.1.0"
