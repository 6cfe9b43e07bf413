"""Offline W8A8 conversion: a float HF checkpoint -> the checkpoint sglang's ``w8a8_int8`` loads.

sglang 0.5.23's ``W8A8Int8Config`` (``layers/quantization/w8a8_int8.py``) gives every
``LinearBase`` layer an int8 ``weight`` ``[out, in]`` with a float32 per-channel ``weight_scale``
``[out, 1]`` (``W8A8Int8LinearMethod.create_weights``), and every ``FusedMoE`` layer int8 expert
weights with per-channel scales (``W8A8Int8MoEMethod.create_weights``, loaded per expert from
``experts.<e>.<proj>.weight_scale``). Activations are quantised per token at run time, so the
checkpoint holds no activation scales. ``config.json`` gets ``"quantization_config":
{"quant_method": "w8a8_int8"}``, which ``ModelConfig._verify_quantization`` picks up.

Quantisation is symmetric per output channel: ``scale[o] = max_i |W[o, i]| / 127``, ``q =
round(W / scale)`` (half to even), the same row rule the reference ``dynamic_quant`` applies to
activations. ``dequantized`` also writes the float model the int8 one stands for (``q * scale``
in float32 in place of each quantised weight): the float reference for parity tests.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sglang_ascend_fia.ops.quant import dynamic_int8_rows

# Checkpoints whose linear layers all follow ``<module>_proj`` names, the rule below: every
# tensor sglang loads into a LinearBase / FusedMoE layer is quantised and nothing else is.
SUPPORTED_MODEL_TYPES = ("deepseek_v2", "deepseek_v3", "llama", "qwen2", "qwen3")
QUANT_METHOD = "w8a8_int8"
# Inside the decoder layers, a 2-D weight of a module whose name contains "_proj": attention
# (q_proj, q_a_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj, ...) and MLP / expert projections
# (gate_proj, up_proj, down_proj). Not the MoE router (mlp.gate), norms, embeddings or lm_head,
# which sglang keeps in float under w8a8_int8.
_QUANTISED = re.compile(r"^model\.layers\.\d+\..*\w*_proj\w*\.weight$")
_INDEX = "model.safetensors.index.json"


class ConversionError(ValueError):
    """A checkpoint the converter cannot turn into a w8a8_int8 one; the message says why."""


@dataclass
class ConversionReport:
    """What a conversion did: the quantised and the float-kept tensor names."""

    quantized: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    # max |W - q * scale| / scale over every quantised weight: at most 0.5 (rounding).
    max_error_in_steps: float = 0.0


def is_quantized_weight(name: str, tensor: torch.Tensor) -> bool:
    """Whether ``name`` is a weight sglang's w8a8_int8 layers load as int8."""
    return bool(_QUANTISED.match(name)) and tensor.dim() == 2 and tensor.is_floating_point()


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8 [out, in], scale float32 [out, 1])`` with ``weight ~= q * scale``."""
    q, scale = dynamic_int8_rows(weight.float())
    return q, scale.unsqueeze(-1)


def _read_config(src: Path) -> dict[str, object]:
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(f"src={str(src)!r}: no config.json; expected a HF model directory")
    config: dict[str, object] = json.loads(path.read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConversionError(
            f"model_type={model_type!r} (in {path}) is not supported; accepted: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (their linear layers are all named *_proj)"
        )
    if config.get("quantization_config") is not None:
        method = config["quantization_config"]
        raise ConversionError(
            f"quantization_config={method!r} (in {path}): the checkpoint is already quantised; "
            "accepted: a float checkpoint"
        )
    return config


def _prepare_dir(path: Path, setting: str) -> None:
    if path.exists() and any(path.iterdir()):
        raise ConversionError(f"{setting}={str(path)!r} is not empty; accepted: a new or empty dir")
    path.mkdir(parents=True, exist_ok=True)


def quantize_checkpoint(
    src: Path, dst: Path, *, dequantized: Path | None = None
) -> ConversionReport:
    """Write the w8a8_int8 form of the float checkpoint ``src`` to ``dst`` (and the float model
    it stands for to ``dequantized``). Shard files keep their names; other files are copied."""
    from safetensors.torch import load_file, save_file

    config = _read_config(src)
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ConversionError(
            f"src={str(src)!r} holds no *.safetensors file; accepted: a safetensors checkpoint"
        )
    from safetensors import safe_open

    names = [n for shard in shards for n in safe_open(shard, "pt").keys()]  # noqa: SIM118
    if not any(_QUANTISED.match(n) for n in names):
        raise ConversionError(
            f"src={str(src)!r}: no weight matches model.layers.<n>.*_proj*.weight; accepted: "
            "a checkpoint with HF Llama/Qwen2/DeepSeek weight names"
        )
    _prepare_dir(dst, "dst")
    if dequantized is not None:
        _prepare_dir(dequantized, "dequantized")
    report = ConversionReport()
    scale_shard: dict[str, str] = {}
    for shard in shards:
        tensors = load_file(shard)
        out: dict[str, torch.Tensor] = {}
        reference: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if not is_quantized_weight(name, tensor):
                out[name] = tensor
                reference[name] = tensor
                report.kept.append(name)
                continue
            q, scale = quantize_weight(tensor)
            restored = q.float() * scale
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            steps = float(((tensor.float() - restored).abs() / safe).max())
            report.max_error_in_steps = max(report.max_error_in_steps, steps)
            scale_name = name.removesuffix(".weight") + ".weight_scale"
            out[name] = q
            out[scale_name] = scale
            scale_shard[scale_name] = shard.name
            reference[name] = restored
            report.quantized.append(name)
        save_file(out, dst / shard.name, metadata={"format": "pt"})
        if dequantized is not None:
            save_file(reference, dequantized / shard.name, metadata={"format": "pt"})
    for other in src.iterdir():
        if other.suffix == ".safetensors" or other.name in ("config.json", _INDEX):
            continue
        for target in (dst, dequantized):
            if target is not None and other.is_file():
                shutil.copy2(other, target / other.name)
    if (src / _INDEX).is_file():
        index = json.loads((src / _INDEX).read_text())
        if dequantized is not None:
            (dequantized / _INDEX).write_text(json.dumps(index, indent=2))
        index["weight_map"].update(scale_shard)
        (dst / _INDEX).write_text(json.dumps(index, indent=2))
    if dequantized is not None:
        (dequantized / "config.json").write_text(json.dumps(config, indent=2))
    config["quantization_config"] = {"quant_method": QUANT_METHOD}
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return report
