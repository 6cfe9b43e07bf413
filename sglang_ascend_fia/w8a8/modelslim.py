"""msModelSlim W8A8 checkpoints (``--quantization modelslim``) on the NPU W8A8 kernels via ``ops``.

sglang 0.5.23 builds ``ModelSlimConfig`` (``layers/quantization/modelslim/modelslim.py:91``) for
these checkpoints. Per layer, ``quant_model_description.json`` names a scheme: ``W8A8_DYNAMIC``
and ``W8A8`` dense layers get ``ModelSlimW8A8Int8`` (``schemes/modelslim_w8a8_int8.py``), whose
kernel is sglang's NPU ``NPUW8A8Int8DynamicLinearMethod`` / ``NPUW8A8Int8LinearMethod``
(``hardware_backend/npu/quantization/linear_method_npu.py:65-157``); ``W8A8_DYNAMIC`` experts get
``ModelSlimW8A8Int8MoE`` with ``NPUW8A8Int8MoEMethod`` (``moe_methods.py:616-714``), run by
``ModelSlimFusedMoEMethod.apply`` (``modelslim.py:586-605``) on sglang's Ascend MoE runner. All
of them call ``torch.ops.npu`` directly, so without these hooks the plugin's ops never run for
the seed's own W8A8 model, and off an NPU the model cannot be built at all (the MoE scheme
resolves ``torch.ops.npu.npu_dynamic_quant`` in its constructor, ``moe/quant.py:43``).

The hooks do what those NPU methods do, through ``ops``:

- dense ``W8A8_DYNAMIC``: ``dynamic_quant`` -> ``quant_matmul`` with per-token and per-channel
  scales (sglang's own load-time layout, which is device-neutral, is kept);
- dense ``W8A8`` (static): ``quantize`` with the per-tensor input scale and offset ->
  ``quant_matmul`` with the checkpoint's ``deq_scale`` and int32 ``quant_bias`` (sglang's
  load-time layout, made on the weight's device instead of ``"npu"``);
- ``W8A8_DYNAMIC`` experts: the int8 routed-expert chain of ``w8a8.experts`` (the whole chain on
  the standard dispatcher, the expert MLP between the ``ascend_tp`` dispatcher's routing steps);
- the MoE token quantiser sglang builds for those experts: resolved when called, int8 through
  ``ops``.

What sglang's own code keeps doing, as on an NPU: ``kv_b_proj`` absorption dequantises the int8
``kv_b_proj`` in bfloat16 before any of this (``deepseek_weight_loader.py:732-749``, from
``load_weights``, before ``process_weights_after_loading``); the MoE router (``MoEGate``) is a
float parameter no scheme touches; shared experts are plain linear layers and get the dense
scheme. A description may mix the schemes per layer; each layer gets its own. Schemes the plugin
does not implement (W4A8, W4A4, MXFP8, MXFP4, ...) keep sglang's code on an NPU, named once in
the log; off an NPU their kernels do not exist, so start-up is refused in one line. So is a
description with ``norm.bias`` entries (anti-outlier checkpoints) off an NPU: sglang applies that
bias only in its NPU RMSNorm (``modelslim.py:131-142``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe.experts import zero_uncomputed_rows
from sglang_ascend_fia.moe.fallback import fall_back_once
from sglang_ascend_fia.ops import kernels
from sglang_ascend_fia.w8a8 import experts as experts_w8a8
from sglang_ascend_fia.w8a8 import linear

__sglang_patches__ = (
    "modelslim-w8a8-config",
    "modelslim-w8a8-moe-apply",
    "modelslim-w8a8-linear-weights",
    "modelslim-w8a8-linear-apply",
    "npu-moe-dynamic-quant-init",
    "npu-moe-dynamic-quant-call",
)

logger = logging.getLogger("sglang_ascend_fia")

# The description's scheme names the plugin serves ("FLOAT": a layer left unquantised).
IMPLEMENTED_SCHEMES = ("W8A8_DYNAMIC", "W8A8", "FLOAT")
_CHECKED = "sglang_ascend_fia_checked"
_MOE_HOOK = "moe experts (modelslim W8A8_DYNAMIC)"
_LINEAR_HOOK = "dense W8A8 (modelslim)"
_logged_stock_schemes: set[str] = set()


def _on_npu() -> bool:
    from sglang.srt.utils import is_npu

    return bool(is_npu())


# --------------------------------------------------------------------- ModelSlimConfig
def check_description(description: dict[Any, Any], on_npu: bool) -> None:
    """Refuse off an NPU what only sglang's NPU code runs; on an NPU name it once.

    ``description`` is ``ModelSlimConfig.quant_description``: ``"<module>.weight": SCHEME``
    entries (``modelslim.py:322``) and, for anti-outlier checkpoints, ``norm.bias`` ones."""
    schemes: dict[str, str] = {}
    for key, value in description.items():
        if isinstance(key, str) and key.endswith(".weight") and isinstance(value, str):
            schemes.setdefault(value, key)
    others = {s: k for s, k in schemes.items() if s not in IMPLEMENTED_SCHEMES}
    norm_bias = next((k for k in description if isinstance(k, str) and "norm.bias" in k), None)
    if not on_npu:
        if others:
            scheme, key = next(iter(sorted(others.items())))
            raise ValueError(
                f"sglang-ascend-fia: quant_model_description.json names scheme {scheme!r} "
                f"({key}); the plugin implements {', '.join(IMPLEMENTED_SCHEMES)} off an NPU, "
                "and sglang's own kernels for the others exist only on an NPU"
            )
        if norm_bias is not None:
            raise ValueError(
                f"sglang-ascend-fia: quant_model_description.json has {norm_bias!r} (an "
                "anti-outlier RMSNorm bias), which sglang applies only in its NPU RMSNorm "
                "(modelslim.py:131-142); off an NPU the bias would be ignored, so this "
                "checkpoint runs on an NPU only"
            )
        return
    for scheme, key in sorted(others.items()):
        if scheme not in _logged_stock_schemes:
            _logged_stock_schemes.add(scheme)
            logger.warning(
                "sglang-ascend-fia: modelslim scheme %s (%s and others) is not implemented by "
                "the plugin; those layers run sglang's own NPU code",
                scheme,
                key,
            )


# The fused modules whose checkpoint names sglang maps to their first shard on an NPU
# (model_loader/loader.py:191-211, under _is_npu), so that a fused layer such as gate_up_proj
# finds its scheme under gate_proj.weight. Off an NPU sglang adds none, and every fused layer of
# a modelslim checkpoint would be built unquantised; the plugin adds the same language-model map.
NPU_PACKED_MODULES: dict[str, list[str]] = {
    "qkv_proj": ["q_proj", "k_proj", "v_proj"],
    "gate_up_proj": ["gate_proj", "up_proj"],
    "fused_qkv_a_proj_with_mqa": ["q_a_proj", "kv_a_proj_with_mqa"],
    "index_qkv_proj": ["index_q_proj", "index_k_proj"],
}


def add_npu_packed_modules(mapping: dict[str, Any]) -> None:
    """Give ``mapping`` (``ModelSlimConfig.packed_modules_mapping``) the ``"model"`` entries
    sglang gives it on an NPU, keeping any the checkpoint or the model already set."""
    model = mapping.setdefault("model", {})
    for fused, shards in NPU_PACKED_MODULES.items():
        model.setdefault(fused, list(shards))


def get_quant_method(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``ModelSlimConfig.get_quant_method(layer, prefix)``: the description is
    checked once per config, before its first layer gets a scheme; the W8A8 kernels too."""
    if not getattr(instance, _CHECKED, False):
        on_npu = _on_npu()
        check_description(instance.quant_description, on_npu)
        if not on_npu:
            add_npu_packed_modules(instance.packed_modules_mapping)
        result = kernels.check("w8a8")
        if not result.ok:
            raise ValueError(
                f"sglang-ascend-fia: --quantization modelslim cannot run: {result.reason()}"
            )
        setattr(instance, _CHECKED, True)
    return wrapped(*args, **kwargs)


# ------------------------------------------------------------------------- dense layers
def lay_out_static(layer: Any) -> None:
    """The NPU static method's load-time layout (``linear_method_npu.py:66-86``) on the weight's
    own device: ``weight`` ``[in, out]`` (NZ on an NPU), scales flattened, and the per-tensor
    input scale's reciprocal and offset repeated over the input width, the ``scales`` /
    ``zero_points`` ``npu_quantize`` takes along the last axis.

    sglang's method moves the last three to ``"npu"`` explicitly, which fails anywhere else; the
    weight's device is ``"npu"`` on an NPU, so there the result is the same. A float16 model's
    ``deq_scale`` is int64 (``modelslim_w8a8_int8.py:95-99``), the packed form only the NPU
    kernel decodes (docs/ops-semantics.md, ``npu_quant_matmul``): off an NPU such a layer is
    refused here, at load, rather than at its first forward."""
    from sglang.srt.hardware_backend.npu.utils import npu_format_cast

    weight = layer.weight.data
    if layer.deq_scale.dtype == torch.int64 and weight.device.type != "npu":
        raise ValueError(
            f"sglang-ascend-fia: modelslim W8A8 (static) layer with deq_scale dtype int64 "
            f"(a float16 model, modelslim_w8a8_int8.py:95-99) on {weight.device}; the packed "
            "int64 scale is decoded only by the NPU kernel; accepted off an NPU: --dtype "
            "bfloat16 (float32 deq_scale)"
        )
    layer.weight.data = npu_format_cast(weight.transpose(0, 1).contiguous())
    layer.weight_scale.data = layer.weight_scale.data.flatten()
    layer.weight_offset.data = layer.weight_offset.data.flatten()
    width = layer.weight.data.shape[0]
    scale = layer.input_scale.data.repeat(width)
    offset = layer.input_offset.data.repeat(width)
    layer.aclnn_input_scale = torch.nn.Parameter(scale, requires_grad=False)
    layer.aclnn_input_scale_reciprocal = torch.nn.Parameter(1 / scale, requires_grad=False)
    layer.aclnn_input_offset = torch.nn.Parameter(offset, requires_grad=False)


def linear_weights(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``ModelSlimW8A8Int8.process_weights_after_loading(layer)``.

    Dynamic: sglang's own layout (``linear_method_npu.py:127-134``: weight ``[in, out]``, NZ on
    an NPU, scales flattened), with the per-channel scale kept in float32, which
    ``quant_matmul`` takes for either output dtype with a per-token scale (its dtype table;
    sglang passes the model dtype, which that table lists for bfloat16 only). Static:
    ``lay_out_static``, sglang's layout on the weight's device."""
    layer = args[0] if args else kwargs["layer"]
    if not instance.is_dynamic:
        lay_out_static(layer)
        return None
    wrapped(*args, **kwargs)
    layer.weight_scale = torch.nn.Parameter(layer.weight_scale.data.float(), requires_grad=False)
    return None


def _static_bias(layer: Any) -> torch.Tensor | None:
    """``quant_bias``, except on a row-parallel layer's ranks above 0: their partial products
    are summed by the all-reduce, which must see the bias once
    (``linear_method_npu.py:105-114``)."""
    from sglang.srt.layers.linear import RowParallelLinear

    group = getattr(layer, "tp_group", None)
    if isinstance(layer, RowParallelLinear) and group is not None and group.rank_in_group > 0:
        return None
    return layer.quant_bias


def static_linear(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """``NPUW8A8Int8LinearMethod.apply`` (``linear_method_npu.py:89-120``) through ``ops``:
    ``npu_quantize(x, 1 / input_scale, input_offset, qint8, -1, div_mode=False)`` ->
    ``npu_quant_matmul(q, W, deq_scale, bias=quant_bias, output_dtype=x.dtype)``. The float
    ``bias`` sglang passes is not added, as there: the checkpoint folds it into ``quant_bias``.
    Leading axes of ``x`` are flattened into rows and restored on the output."""
    rows = x.reshape(-1, x.shape[-1])
    q = ops.quantize(
        rows,
        layer.aclnn_input_scale_reciprocal,
        layer.aclnn_input_offset,
        torch.qint8,
        -1,
        False,
    )
    out = ops.quant_matmul(
        q, layer.weight, layer.deq_scale, bias=_static_bias(layer), output_dtype=x.dtype
    )
    return out.reshape(*x.shape[:-1], layer.weight.shape[1])


def linear_apply(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``ModelSlimW8A8Int8.apply_weights(layer, x, bias)``."""
    layer = args[0] if args else kwargs["layer"]
    x = args[1] if len(args) > 1 else kwargs["x"]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if isinstance(x, tuple):
        # sglang's fused MLA prolog hands an (int8, scale) pair (linear_method_npu.py:142-145).
        fall_back_once(_LINEAR_HOOK, "the input is already quantised (a (tensor, scale) pair)")
        return wrapped(*args, **kwargs)
    if x.dtype == torch.int8:
        # sglang's static method then skips the quantiser and asks for int8 output
        # (linear_method_npu.py:96-104), which the reference does not implement.
        fall_back_once(_LINEAR_HOOK, "the input is already int8")
        return wrapped(*args, **kwargs)
    if not instance.is_dynamic:
        return static_linear(layer, x)
    return linear.quant_linear(x, layer.weight, layer.weight_scale, bias)


# ------------------------------------------------------------------------------ experts
def _w8a8_dynamic_experts(layer: Any) -> bool:
    from sglang.srt.layers.quantization.modelslim.schemes import ModelSlimW8A8Int8MoE

    return all(
        type(getattr(layer, name, None)) is ModelSlimW8A8Int8MoE
        for name in ("w13_scheme", "w2_scheme")
    )


def moe_apply(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``ModelSlimFusedMoEMethod.apply(layer, dispatch_output)``.

    ``W8A8_DYNAMIC`` experts run the int8 chain through ``ops``: from the standard dispatcher's
    output (tokens and top-k, as off an NPU) the whole chain; from the ``ascend_tp``
    dispatcher's (already routed, int8 with per-row scales, ``ascend_tp.py:97-126``) the
    expert MLP, as ``AscendRunnerCore.run`` runs ``NPUW8A8Int8MoEMethod``. Other schemes,
    dispatchers and the layers ``w8a8.experts.stock_reason`` names keep sglang's runner."""
    from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput
    from sglang.srt.layers.moe.token_dispatcher.ascend_tp import AscendTPCombineInput

    layer = args[0] if args else kwargs["layer"]
    dispatch_output = args[1] if len(args) > 1 else kwargs["dispatch_output"]
    if not _w8a8_dynamic_experts(layer):
        return wrapped(*args, **kwargs)  # a scheme check_description let through on an NPU
    reason = experts_w8a8.stock_reason(layer, instance.moe_runner_config)
    form = dispatch_output.format
    if reason is None and not (form.is_standard() or form.is_ascend_tp()):
        reason = f"the token dispatcher's output is {form.value!r}"
    if reason is not None:
        fall_back_once(_MOE_HOOK, reason)
        combine_input = wrapped(*args, **kwargs)
        if form.is_ascend_tp():
            return zero_uncomputed_rows(combine_input, dispatch_output)
        return combine_input
    x = dispatch_output.hidden_states
    if form.is_standard():
        if x.shape[0] == 0:
            return StandardCombineInput(hidden_states=torch.zeros_like(x))
        topk_weights, topk_ids, _ = dispatch_output.topk_output
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
    if x.shape[0] == 0:
        fall_back_once(_MOE_HOOK, "an empty batch")
        return wrapped(*args, **kwargs)
    scale = dispatch_output.hidden_states_scale
    if scale is None:  # a dispatcher that did not quantise: per token, as moe_methods.py:693-696
        x, scale = ops.dynamic_quant(x)
    out_dtype = dispatch_output.topk_weights.dtype
    down = experts_w8a8.expert_mlp_w8a8(
        x,
        scale,
        dispatch_output.expert_tokens,
        layer.w13_weight,
        layer.w13_weight_scale,
        layer.w2_weight,
        layer.w2_weight_scale,
        out_dtype,
        group_list_type=dispatch_output.group_list_type,
    )
    return zero_uncomputed_rows(AscendTPCombineInput(hidden_states=down), dispatch_output)


# -------------------------------------------------------- the MoE token quantiser sglang builds
def dynamic_quant_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``HiddenStatesDynamicQuant.__init__(quant_dtype, use_mx_quant=False)``:
    the int8 quantiser is resolved when called (through ``ops``), not when built."""
    quant_dtype = args[0] if args else kwargs["quant_dtype"]
    use_mx = args[1] if len(args) > 1 else kwargs.get("use_mx_quant", False)
    if quant_dtype is not torch.int8 or use_mx:
        return wrapped(*args, **kwargs)
    instance.quant_dtype = quant_dtype
    instance._op = None  # the attribute sglang's __call__ reads; None: ours runs instead
    return None


def dynamic_quant_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``HiddenStatesDynamicQuant.__call__(hidden_states)``: int8 per token
    through ``ops.dynamic_quant`` (what ``npu_dynamic_quant(x, dst_type=int8)`` computes)."""
    if getattr(instance, "_op", True) is not None:
        return wrapped(*args, **kwargs)
    hidden_states = args[0] if args else kwargs["hidden_states"]
    return ops.dynamic_quant(hidden_states)
