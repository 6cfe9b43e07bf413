"""The tensors the converter writes for one linear layer, in either format.

Weights are quantised symmetrically per output channel, ``q = round(W / scale)`` (half to even)
with ``scale >= max_i |W[o, i]| / 127``:

- ``w8a8_int8``: ``weight`` int8 ``[out, in]`` and ``weight_scale`` float32 ``[out, 1]``
  (``W8A8Int8LinearMethod.create_weights``, ``layers/quantization/w8a8_int8.py``), scale exactly
  ``max|W| / 127`` (0 for an all-zero row);
- ``modelslim`` (``ModelSlimW8A8Int8.create_weights``, ``schemes/modelslim_w8a8_int8.py:36-106``):
  ``weight`` int8, ``weight_scale`` and ``weight_offset`` (zeros) ``[out, 1]`` in the model's
  dtype. The scale is rounded *up* to that dtype before quantising, so ``|W| / scale <= 127`` and
  ``q * scale`` stays within half a step of ``W`` with the scale as written; an all-zero row gets
  scale 1 (``q`` is 0 either way) so a static fold never divides by zero. Routed experts
  (``ModelSlimW8A8Int8MoE.create_weights``, ``schemes/modelslim_w8a8_int8_moe.py:44-94``) get
  the same three tensors with float32 ``[out, 1]`` scale and offset.

Static ``W8A8`` layers add ``input_scale`` and ``input_offset`` ``[1]`` (model dtype),
``quant_bias`` int32 ``[out]`` and ``deq_scale`` ``[out]``. sglang's static kernel
(``hardware_backend/npu/quantization/linear_method_npu.py:65-123``) computes
``x_q = round(x * (1 / input_scale) + input_offset)`` (int8, saturating), ``y = (x_q @ q.T +
quant_bias) * deq_scale`` and never adds the float ``bias``. With ``x ~= (x_q - o) * s`` and
``W ~= q * w_s``: ``x @ W.T + b ~= ((x_q - o) @ q.T) * s * w_s + b``, so ``deq_scale = s * w_s``
and ``quant_bias = round(b / deq_scale) - o * sum_i q[:, i]`` (``o`` is an integer), the fold
msModelSlim's exporter writes too. ``deq_scale`` is float32 for a bfloat16 model; for float16
sglang creates it int64 and msModelSlim stores the float32 bit pattern read as int32, widened
(``deqscale2int64``): the same here. The float ``bias`` is written unchanged as well (msModelSlim
keeps it, ``FLOAT``); sglang's static kernel ignores it.

DeepSeek's ``q_a_proj`` and ``kv_a_proj_with_mqa`` get a shapeless ``input_scale`` and
``input_offset``: sglang's DeepSeek loader concatenates the two layers' tensors into the fused
``fused_qkv_a_proj_with_mqa`` (``models/deepseek_common/deepseek_weight_loader.py:463-478``),
whose one per-tensor scale would receive a ``[2]`` from two ``[1]`` and fail its size check;
two shapeless ones it takes as one (``:463-466``), and ``ReplicatedLinear.weight_loader`` gives
it its shape (``layers/linear.py:350-353``). Calibration gives the pair one range, so nothing is
lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sglang_ascend_fia.w8a8.convert_plan import ConversionError

INT8_MAX = 127
# Layers whose per-tensor input range is written shapeless (module doc: sglang's DeepSeek loader).
SHAPELESS_INPUT_RANGE = ("q_a_proj", "kv_a_proj_with_mqa")
_INT32 = 2**31 - 1
# Rows per quantisation step are chosen so one float32 working copy stays near this many
# elements: a large weight never needs several float32 copies of itself at once.
_CHUNK_ELEMENTS = 1 << 22


def round_up_to(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The smallest ``dtype`` values ``>=`` the positive float32 ``scale`` values."""
    out = scale.to(dtype)
    if dtype == torch.float32:
        return out
    low = out.float() < scale
    if bool(low.any()):
        # Positive finite floats are ordered like their bit patterns: +1 is the next value up.
        bumped = (out.view(torch.int16) + 1).view(dtype)
        out = torch.where(low, bumped, out)
    return out


def quantize_rows(
    weight: torch.Tensor, scale_dtype: torch.dtype = torch.float32, zero_scale: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8 [out, in], scale scale_dtype [out, 1])``, ``|W - q * scale| <= scale / 2``.

    ``zero_scale`` is the scale an all-zero row gets. Works a block of rows at a time."""
    rows, cols = weight.shape
    q = torch.empty((rows, cols), dtype=torch.int8)
    scale = torch.empty((rows, 1), dtype=scale_dtype)
    step = max(1, _CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        w = weight[start : start + step].float()
        absmax = w.abs().amax(dim=1, keepdim=True)
        s = round_up_to(absmax / INT8_MAX, scale_dtype)
        s = torch.where(absmax > 0, s, torch.full_like(s, zero_scale))
        safe = torch.where(s > 0, s.float(), torch.ones_like(absmax))
        q[start : start + step] = torch.round(w / safe).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        scale[start : start + step] = s
    return q, scale


def error_in_steps(weight: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> float:
    """``max |W - q * scale| / scale`` (rows with scale 0 hold only zeros)."""
    worst = 0.0
    step = max(1, _CHUNK_ELEMENTS // max(weight.shape[1], 1))
    for start in range(0, weight.shape[0], step):
        s = scale[start : start + step].float()
        err = (weight[start : start + step].float() - q[start : start + step].float() * s).abs()
        worst = max(worst, float((err / torch.where(s > 0, s, torch.ones_like(s))).max()))
    return worst


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight ``q * scale`` stands for."""
    return q.float() * scale.float()


def static_fold(
    q: torch.Tensor,
    weight_scale: torch.Tensor,
    input_scale: torch.Tensor,
    input_offset: torch.Tensor,
    bias: torch.Tensor | None,
    name: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(quant_bias int32 [out], deq_scale float32 [out])`` for sglang's static kernel.

    ``input_scale`` / ``input_offset`` are the per-tensor values as written (one element);
    ``name`` is the weight's, for the error message."""
    deq = input_scale.float().reshape(()) * weight_scale.float().reshape(-1)
    offset = float(input_offset.float().reshape(()))
    b = torch.zeros(q.shape[0], dtype=torch.float64) if bias is None else bias.double()
    correction = q.sum(dim=1, dtype=torch.int64).double() * offset
    folded = torch.round(b / deq.double() - correction)
    worst = float(folded.abs().max()) if folded.numel() else 0.0
    if worst > _INT32:
        raise ConversionError(
            f"{name}: the folded static bias round(bias / deq_scale) reaches {worst:.3g}, "
            f"beyond int32 (quant_bias); accepted: a layer whose |bias| / (input_scale * "
            "weight_scale) fits int32 (use --float or leave it dynamic)"
        )
    return folded.to(torch.int32), deq


def pack_deq_scale(deq: torch.Tensor, model_dtype: torch.dtype, name: str) -> torch.Tensor:
    """``deq_scale`` in the dtype ``ModelSlimW8A8Int8.create_weights`` gives it
    (``modelslim_w8a8_int8.py:95-100``)."""
    if model_dtype == torch.bfloat16:
        return deq.float()
    if model_dtype == torch.float16:
        return deq.float().contiguous().view(torch.int32).to(torch.int64)
    raise ConversionError(
        f"{name}: a static W8A8 layer in a {model_dtype} model; sglang's modelslim static "
        "scheme takes bfloat16 (float32 deq_scale) or float16 (int64 deq_scale) models only "
        "(modelslim_w8a8_int8.py:95-100); accepted: a config.json dtype of bfloat16 or float16"
    )


def unpack_deq_scale(deq: torch.Tensor) -> torch.Tensor:
    """float32 ``deq_scale`` from either stored form."""
    if deq.dtype == torch.int64:
        return deq.to(torch.int32).view(torch.float32)
    return deq.float()


@dataclass
class LayerOut:
    """What one linear layer contributes: quantised-checkpoint tensors, the float twin's
    tensors, description entries and the worst rounding error in steps."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    reference: dict[str, torch.Tensor] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)
    steps: float = 0.0


def w8a8_int8_layer(name: str, weight: torch.Tensor, *, reference: bool = True) -> LayerOut:
    """``reference``: also the float twin's tensors (a float32 copy of the weight)."""
    prefix = name.removesuffix(".weight")
    q, scale = quantize_rows(weight)
    out = LayerOut(steps=error_in_steps(weight, q, scale))
    out.tensors = {name: q, f"{prefix}.weight_scale": scale}
    if reference:
        out.reference = {name: dequantize(q, scale)}
    return out


def modelslim_layer(
    name: str,
    weight: torch.Tensor,
    *,
    scheme: str,
    model_dtype: torch.dtype,
    expert: bool,
    input_absmax: float | None = None,
    bias: torch.Tensor | None = None,
    reference: bool = True,
) -> LayerOut:
    """One ``W8A8_DYNAMIC`` or ``W8A8`` layer (``scheme``); ``input_absmax`` and ``bias`` only
    for ``W8A8``. The float twin of a static layer carries the bias the fold stands for; it is
    built only with ``reference``."""
    prefix = name.removesuffix(".weight")
    scale_dtype = torch.float32 if expert else model_dtype
    q, scale = quantize_rows(weight, scale_dtype, zero_scale=1.0)
    out = LayerOut(steps=error_in_steps(weight, q, scale))
    out.tensors = {
        name: q,
        f"{prefix}.weight_scale": scale,
        f"{prefix}.weight_offset": torch.zeros_like(scale),
    }
    if reference:
        out.reference = {name: dequantize(q, scale)}
    if scheme == "W8A8":
        if input_absmax is None:
            raise ConversionError(f"{name}: a static layer without a calibrated input range")
        # Symmetric: offset 0, and the scale rounded up so calibrated inputs do not saturate.
        floor = torch.tensor([max(input_absmax, 1e-12) / INT8_MAX], dtype=torch.float32)
        input_scale = round_up_to(floor, model_dtype)
        input_offset = torch.zeros(1, dtype=model_dtype)
        if prefix.rsplit(".", 1)[-1] in SHAPELESS_INPUT_RANGE:
            input_scale, input_offset = input_scale.reshape(()), input_offset.reshape(())
        quant_bias, deq = static_fold(q, scale, input_scale, input_offset, bias, name)
        out.tensors |= {
            f"{prefix}.input_scale": input_scale,
            f"{prefix}.input_offset": input_offset,
            f"{prefix}.quant_bias": quant_bias,
            f"{prefix}.deq_scale": pack_deq_scale(deq, model_dtype, name),
        }
        if bias is not None and reference:
            correction = q.sum(dim=1, dtype=torch.int64).double() * float(input_offset.float())
            out.reference[f"{prefix}.bias"] = ((quant_bias.double() + correction) * deq).float()
    out.description = dict.fromkeys(out.tensors, scheme)
    return out
