"""sglang's ``w8a8_int8`` layers on the NPU W8A8 kernels, through ``ops``.

sglang 0.5.23's ``W8A8Int8Config.get_quant_method`` (``layers/quantization/w8a8_int8.py:103-120``)
hands out ``W8A8Int8LinearMethod`` and ``W8A8Int8MoEMethod``, which have no NPU branch: on a CPU
they pack for AMX (the linear method asserts without AMX or Arm64), elsewhere they call triton
and ``sgl_kernel`` CUDA kernels. The hook wraps ``get_quant_method`` and hands out the subclasses
below instead, which do what sglang's NPU W8A8 methods do (``NPUW8A8Int8DynamicLinearMethod``,
``NPUW8A8Int8MoEMethod``) through the ``ops`` facade. Ignored layers
(``UnquantizedLinearMethod``) and everything else stay as sglang made them.
"""

from __future__ import annotations

from typing import Any

import torch
from sglang.srt.layers.quantization.w8a8_int8 import W8A8Int8LinearMethod, W8A8Int8MoEMethod

from sglang_ascend_fia.ops import kernels
from sglang_ascend_fia.w8a8 import experts as experts_w8a8
from sglang_ascend_fia.w8a8 import linear

__sglang_patches__ = ("w8a8-int8-methods",)


class FIAW8A8Int8LinearMethod(W8A8Int8LinearMethod):
    """Dense layers: ``dynamic_quant`` -> ``quant_matmul`` on the NPU method's layout."""

    def process_weights_after_loading(self, layer: Any) -> None:
        linear.lay_out_weights(layer)

    def apply(self, layer: Any, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return linear.quant_linear(x, layer.weight, layer.weight_scale, bias)


class FIAW8A8Int8MoEMethod(W8A8Int8MoEMethod):
    """Routed experts: the NPU W8A8 chain (``w8a8.experts.routed_experts_w8a8``)."""

    def process_weights_after_loading(self, layer: Any) -> None:
        reason = experts_w8a8.stock_reason(layer, self.moe_runner_config)
        if reason is not None:
            # Decided once per layer at load: sglang's own method keeps its own layout.
            layer.fia_w8a8_stock_reason = reason
            super().process_weights_after_loading(layer)
            return
        experts_w8a8.lay_out_weights(layer)

    def apply(self, layer: Any, dispatch_output: Any) -> Any:
        from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput

        reason = getattr(layer, "fia_w8a8_stock_reason", None)
        if reason is not None:
            experts_w8a8.log_stock_fallback(reason)
            return super().apply(layer, dispatch_output)
        topk_weights, topk_ids, _ = dispatch_output.topk_output
        x = dispatch_output.hidden_states
        if x.shape[0] == 0:
            return StandardCombineInput(hidden_states=torch.zeros_like(x))
        out = experts_w8a8.routed_experts_w8a8(
            x,
            topk_weights,
            topk_ids,
            layer.w13_weight,
            layer.w13_weight_scale,
            layer.w2_weight,
            layer.w2_weight_scale,
        )
        return StandardCombineInput(hidden_states=out)


def _check_kernels() -> None:
    """At model load, before any request: the W8A8 kernels exist (``ops.kernels``). sglang's
    own w8a8_int8 methods have no NPU branch, so a missing kernel is a refusal, not a hand-off."""
    result = kernels.check("w8a8")
    if not result.ok:
        raise ValueError(
            f"sglang-ascend-fia: --quantization w8a8_int8 cannot run: {result.reason()}"
        )


def get_quant_method(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``W8A8Int8Config.get_quant_method(layer, prefix)``."""
    method = wrapped(*args, **kwargs)
    if type(method) in (W8A8Int8LinearMethod, W8A8Int8MoEMethod):
        _check_kernels()
    if type(method) is W8A8Int8LinearMethod:
        return FIAW8A8Int8LinearMethod(instance)
    if type(method) is W8A8Int8MoEMethod:
        return FIAW8A8Int8MoEMethod(instance)
    return method
