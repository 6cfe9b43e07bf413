"""W8A8 quantisation ops: dynamic per-token and static quantisation, int8 matmul, fused
dequant-SwiGLU-quant.

Each op mirrors ``torch_npu.npu_<name>`` (torch_npu 2.14 op-schema yaml for names and defaults,
``_op_plugin_docs.py`` for semantics). References compute in float32; int8 x int8 dot products
accumulate exactly in float64, which equals the NPU's int32 accumulator for every in-range input.

sglang 0.5.23 calls: ``dynamic_quant(x)`` and ``quant_matmul(q, W^T, weight_scale,
pertoken_scale=s, bias, output_dtype)`` in ``NPUW8A8Int8DynamicLinearMethod``;
``quantize(x, 1/input_scale, input_offset, torch.qint8, -1, False)`` then ``quant_matmul(x_q,
W^T, deq_scale, bias=quant_bias (int32), output_dtype)`` in the static
``NPUW8A8Int8LinearMethod``; ``dequant_swiglu_quant(h, quant_mode=1, activate_left=True)`` as the
W8A8 MoE activation (``hardware_backend/npu/moe/activation.py``).

Validators enforce only documented kernel constraints (they run before the NPU kernel too); what
the kernel supports but the reference does not is refused by the reference ("... is not
implemented by the reference"); both worded by ``ops._checks``.
"""

from sglang_ascend_fia.ops.quant.dynamic import INT8_MAX, dynamic_int8_rows, dynamic_quant
from sglang_ascend_fia.ops.quant.matmul import quant_matmul
from sglang_ascend_fia.ops.quant.quantize import quantize
from sglang_ascend_fia.ops.quant.swiglu import dequant_swiglu_quant

__all__ = [
    "INT8_MAX",
    "dequant_swiglu_quant",
    "dynamic_int8_rows",
    "dynamic_quant",
    "quant_matmul",
    "quantize",
]
