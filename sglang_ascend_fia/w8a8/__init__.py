"""W8A8 dynamic int8 (sglang's ``w8a8_int8`` quantisation) through the ``ops`` facade.

- ``convert``: the offline converter, float HF checkpoint -> the int8 checkpoint (per-channel
  symmetric weights + scales, ``quantization_config``) sglang's ``W8A8Int8Config`` loads; also
  the ``sglang-ascend-fia quantize-w8a8`` command;
- ``linear``: hooks on ``W8A8Int8LinearMethod`` so dense layers run ``ops.dynamic_quant`` ->
  ``ops.quant_matmul`` on the layout ``NPUW8A8Int8DynamicLinearMethod`` uses;
- ``experts``: the W8A8 MoE chain (``dequant_swiglu_quant`` between the two int8 grouped
  matmuls), on the routing steps of :mod:`sglang_ascend_fia.moe`;
- ``methods``: the ``W8A8Int8Config.get_quant_method`` hook that hands both to sglang.
"""
