"""sglang-ascend-fia: FIA attention, a split K/V MLA pool and NPU MoE for stock SGLang on Ascend.

Importing this package does nothing on its own; sglang calls
:func:`sglang_ascend_fia.plugin.activate` through the ``sglang.srt.plugins`` entry point.
"""

__version__ = "0.1.0"
