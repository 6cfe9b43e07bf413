"""``W8A8Int8LinearMethod`` through ``ops``: per-token int8 activations times int8 weights.

sglang 0.5.23's ``w8a8_int8`` linear method has no NPU branch: on CPU its
``process_weights_after_loading`` packs for AMX (or asserts without AMX/Arm64), elsewhere
``apply`` calls triton's ``per_token_quant_int8`` and ``sgl_kernel.int8_scaled_mm``
(``layers/quantization/w8a8_int8.py:160-234``). On an NPU sglang reaches the W8A8 kernels through
``NPUW8A8Int8DynamicLinearMethod`` (``hardware_backend/npu/quantization/linear_method_npu.py:
126-157``): the weight transposed once to ``[in, out]``, the scale flattened, then per call
``npu_dynamic_quant(x)`` -> ``npu_quant_matmul(q, W, weight_scale, pertoken_scale=s.flatten(),
bias, output_dtype=x.dtype)``. These hooks give ``W8A8Int8LinearMethod`` that layout and that
call pair through ``ops``.
"""

from __future__ import annotations

from typing import Any

import torch

from sglang_ascend_fia import ops

__sglang_patches__ = ("w8a8-linear-weights", "w8a8-linear-apply")

# Set on a layer whose weights the hook laid out; apply() refuses any other layer.
LAYOUT_MARK = "fia_w8a8_weight_in_out"


def process_weights_after_loading(self: Any, layer: Any) -> None:
    """Replaces ``W8A8Int8LinearMethod.process_weights_after_loading``.

    In place of the stock body (AMX packing, or an assert on other CPUs) with the NPU dynamic
    method's: ``weight`` int8 ``[out, in]`` -> ``[in, out]`` contiguous, ``weight_scale``
    ``[out, 1]`` -> ``[out]``. Runs once per layer: a second call (sglang's overlapped loader
    may call it again) leaves the layout alone.
    """
    del self
    if getattr(layer, LAYOUT_MARK, False):
        return
    weight = layer.weight.data
    if weight.dtype != torch.int8 or weight.dim() != 2:
        raise ValueError(
            f"w8a8_int8 layer weight has dtype {weight.dtype} and shape {tuple(weight.shape)}; "
            "accepted: int8 [out, in] as written by `sglang-ascend-fia quantize-w8a8`"
        )
    layer.weight = torch.nn.Parameter(weight.t().contiguous(), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(layer.weight_scale.data.flatten(), requires_grad=False)
    setattr(layer, LAYOUT_MARK, True)


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


def apply(self: Any, layer: Any, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Replaces ``W8A8Int8LinearMethod.apply(layer, x, bias=None)``."""
    del self
    if not getattr(layer, LAYOUT_MARK, False):
        # Only possible if the plugin was activated after the model loaded: the stock layout
        # (AMX-packed or [in, out] for CUDA) is not one this path can read.
        raise RuntimeError(
            "w8a8_int8 layer was loaded without the sglang-ascend-fia weight hook "
            "(ASCEND_USE_FIA was enabled after the model loaded); restart with ASCEND_USE_FIA=1"
        )
    return quant_linear(x, layer.weight, layer.weight_scale, bias)
