"""Dense W8A8 layers through ``ops``: per-token int8 activations times int8 weights.

On an NPU sglang reaches the W8A8 kernels through ``NPUW8A8Int8DynamicLinearMethod``
(``hardware_backend/npu/quantization/linear_method_npu.py:126-157``): the weight transposed once
to ``[in, out]``, the scale flattened, then per call ``npu_dynamic_quant(x)`` ->
``npu_quant_matmul(q, W, weight_scale, pertoken_scale=s.flatten(), bias,
output_dtype=x.dtype)``. ``lay_out_weights`` and ``quant_linear`` are those two halves.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops


def lay_out_weights(layer: Any) -> None:
    """The NPU dynamic method's load-time layout: ``weight`` int8 ``[out, in]`` -> ``[in, out]``
    contiguous, ``weight_scale`` ``[out, 1]`` -> ``[out]``."""
    weight = layer.weight.data
    if weight.dtype != torch.int8 or weight.dim() != 2:
        raise ValueError(
            f"w8a8_int8 layer weight has dtype {weight.dtype} and shape {tuple(weight.shape)}; "
            "accepted: int8 [out, in] as written by `sglang-ascend-fia quantize-w8a8`"
        )
    layer.weight = torch.nn.Parameter(weight.t().contiguous(), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(layer.weight_scale.data.flatten(), requires_grad=False)


def quant_linear(
    x: torch.Tensor,
    weight_in_out: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``x @ dequant(W) + bias`` as the NPU computes it: ``dynamic_quant`` then ``quant_matmul``.

    Leading axes of ``x`` are flattened into the token axis (``quant_matmul`` takes one
    per-token scale per row of a 2-D ``x1``) and restored on the output.
    """
    rows = x.reshape(-1, x.shape[-1])
    q, token_scale = ops.dynamic_quant(rows)
    out = ops.quant_matmul(
        q,
        weight_in_out,
        weight_scale,
        pertoken_scale=token_scale.flatten(),
        bias=bias,
        output_dtype=x.dtype,
    )
    return out.reshape(*x.shape[:-1], weight_in_out.shape[1])
