"""Offline W8A8 conversion: a float HF checkpoint -> one sglang loads as ``w8a8_int8`` or
``modelslim``.

``w8a8_int8`` (the default): sglang 0.5.23's ``W8A8Int8Config`` (``layers/quantization/
w8a8_int8.py``) gives every ``LinearBase`` layer an int8 ``weight`` ``[out, in]`` with a float32
per-channel ``weight_scale`` ``[out, 1]`` (``W8A8Int8LinearMethod.create_weights``), and every
``FusedMoE`` layer int8 expert weights with per-channel scales (``W8A8Int8MoEMethod``, loaded per
expert from ``experts.<e>.<proj>.weight_scale``). Activations are quantised per token at run
time, so the checkpoint holds no activation scales. ``config.json`` gets ``"quantization_config":
{"quant_method": "w8a8_int8"}``, which ``ModelConfig._verify_quantization`` picks up.

``modelslim``: what msModelSlim writes and sglang's ``ModelSlimConfig`` loads (tensors:
``convert_tensors``; per-layer schemes: ``convert_plan``), plus ``quant_model_description.json``
with one entry per tensor (``"<name>": "W8A8_DYNAMIC" | "W8A8" | "FLOAT"``) and
``"model_quant_type"``. ``config.json`` is unchanged: sglang finds the description file in the
model directory and sets ``quant_method = "modelslim"`` itself (``configs/model_config.py:
1824-1836``; ``model_loader/weight_utils.py`` ``get_quant_config`` reads it). The scales are in the
dtype sglang serves the model in with ``--dtype auto`` (the config's dtype; float16 for a
float32 one, ``model_config.py:2284-2321``): serve it in that dtype.

Streaming: shards are read one tensor at a time (``safe_open``) and written one output shard per
input shard, under the same names, with ``model.safetensors.index.json`` when the source has one,
so memory stays about one shard (plus, with ``dequantized``, its float32 twin). Only static
layers need more: their calibration loads the float model (``convert_calibrate``). Every check
runs before anything is written, and the output is built in a hidden directory next to ``dst``
and renamed into place at the end, so a failed conversion leaves no partial checkpoint.

``dequantized`` also writes the float model the int8 one stands for (``q * scale`` in float32
in place of each quantised weight, and a static layer's folded bias): the float reference for
parity tests, in both formats.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sglang_ascend_fia.w8a8.convert_plan import (
    DYNAMIC,
    FLOAT,
    FORMATS,
    STATIC,
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    ConversionError,
    Plan,
    is_expert,
    is_linear_weight,
    make_plan,
)
from sglang_ascend_fia.w8a8.convert_source import (
    DESCRIPTION,
    INDEX,
    Source,
    check_target,
    linear_weights,
    read_config,
    scan,
    serving_dtype,
    staging,
)
from sglang_ascend_fia.w8a8.convert_tensors import (
    LayerOut,
    modelslim_layer,
    quantize_rows,
    w8a8_int8_layer,
)

__all__ = [
    "FORMATS",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_MODEL_TYPES",
    "ConversionError",
    "ConversionReport",
    "is_quantized_weight",
    "quantize_checkpoint",
    "quantize_weight",
]

QUANT_METHOD = "w8a8_int8"
logger = logging.getLogger("sglang_ascend_fia")


@dataclass
class ConversionReport:
    """What a conversion did: the quantised and the float-kept tensor names."""

    format: str = QUANT_METHOD
    quantized: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)  # module prefixes of W8A8 static layers
    shards: int = 0
    # max |W - q * scale| / scale over every quantised weight: at most 0.5 (rounding).
    max_error_in_steps: float = 0.0


def is_quantized_weight(name: str, tensor: torch.Tensor) -> bool:
    """Whether ``name`` is a weight sglang's W8A8 layers load as int8."""
    return is_linear_weight(name) and tensor.dim() == 2 and tensor.is_floating_point()


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8 [out, in], scale float32 [out, 1])`` with ``weight ~= q * scale``."""
    return quantize_rows(weight)


def quantize_checkpoint(
    src: Path,
    dst: Path,
    *,
    dequantized: Path | None = None,
    fmt: str = QUANT_METHOD,
    static: Sequence[str] = (),
    floats: Sequence[str] = (),
    calibration_tokens: int = 64,
    calibration_seqs: int = 4,
    progress: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Write the ``fmt`` form of the float checkpoint ``src`` to ``dst`` (and the float model
    it stands for to ``dequantized``). ``static`` / ``floats``: fnmatch patterns on module
    prefixes of the layers made W8A8 static or kept FLOAT (``modelslim`` only). Shard files keep
    their names; other files are copied."""
    config = read_config(src)
    source = scan(src)
    linear = linear_weights(source)
    plan = make_plan(
        (n.removesuffix(".weight") for n in linear), fmt=fmt, static=static, floats=floats
    )
    model_dtype = serving_dtype(config)
    static_layers = plan.static_prefixes()
    for setting, value in (
        ("--calibration-tokens", calibration_tokens),
        ("--calibration-seqs", calibration_seqs),
    ):
        if value < 1:
            raise ConversionError(f"{setting}={value}; accepted: a positive integer")
    check_target(dst, "dst")
    if dequantized is not None:
        check_target(dequantized, "dequantized")
        if dequantized.resolve() == dst.resolve():
            raise ConversionError(
                f"dequantized={str(dequantized)!r} is dst; accepted: another directory"
            )
    if static_layers and not isinstance(config.get("vocab_size"), int):
        raise ConversionError(
            f"--static needs config.json's vocab_size for calibration tokens; it is "
            f"{config.get('vocab_size')!r}; accepted: an integer"
        )
    absmax: dict[str, float] = {}
    if static_layers:
        from sglang_ascend_fia.w8a8.convert_calibrate import input_absmax

        say = progress or logger.info
        say(f"calibrating {len(static_layers)} static layers (loads the float model)")
        absmax = input_absmax(
            src,
            static_layers,
            vocab_size=int(config["vocab_size"]),
            tokens=calibration_tokens,
            seqs=calibration_seqs,
        )
    targets = [dst] + ([dequantized] if dequantized is not None else [])
    staged = [staging(t) for t in targets]
    try:
        report = _write(src, source, config, plan, fmt, model_dtype, absmax, staged, progress)
        for tmp, target in zip(staged, targets, strict=True):
            if target.exists():
                target.rmdir()  # empty, checked above
            tmp.rename(target)
    except BaseException:
        for tmp in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _write(
    src: Path,
    source: Source,
    config: dict[str, Any],
    plan: Plan,
    fmt: str,
    model_dtype: torch.dtype,
    absmax: dict[str, float],
    staged: list[Path],
    progress: Callable[[str], None] | None,
) -> ConversionReport:
    from safetensors.torch import save_file

    dst, ref_dir = staged[0], (staged[1] if len(staged) > 1 else None)
    say = progress or logger.info
    report = ConversionReport(format=fmt, static=plan.static_prefixes(), shards=len(source.shards))
    description: dict[str, str] = {"model_quant_type": STATIC if report.static else DYNAMIC}
    maps: list[dict[str, str]] = [{}, {}]
    sizes = [0, 0]
    # A static layer's bias goes into the float twin folded, next to its weight.
    folded = {f"{p}.bias" for p in report.static if f"{p}.bias" in source.where}
    for number, shard in enumerate(source.shards, 1):
        started = time.perf_counter()
        out: dict[str, torch.Tensor] = {}
        ref: dict[str, torch.Tensor] = {}
        quantised = 0
        for name in [n for n, where in source.where.items() if where == shard]:
            tensor = _read(shard, name)
            prefix = name.removesuffix(".weight")
            scheme = plan.schemes.get(prefix) if name.endswith(".weight") else None
            if scheme is None or scheme == FLOAT:
                out[name] = tensor
                if name not in folded:
                    ref[name] = tensor
                description[name] = FLOAT
                report.kept.append(name)
                continue
            layer = _layer(
                name, tensor, scheme, fmt, model_dtype, absmax, source, ref_dir is not None
            )
            out |= layer.tensors
            ref |= layer.reference
            description |= layer.description
            report.max_error_in_steps = max(report.max_error_in_steps, layer.steps)
            report.quantized.append(name)
            quantised += 1
            del tensor, layer
            _release_freed_memory()
        for slot, (directory, tensors) in enumerate(((dst, out), (ref_dir, ref))):
            if directory is None:
                continue
            save_file(tensors, directory / shard.name, metadata={"format": "pt"})
            maps[slot].update(dict.fromkeys(tensors, shard.name))
            sizes[slot] += sum(t.numel() * t.element_size() for t in tensors.values())
        say(
            f"[{number}/{len(source.shards)}] {shard.name}: {len(out)} tensors written, "
            f"{quantised} weights int8 ({time.perf_counter() - started:.1f}s)"
        )
        del out, ref
    _finish(src, source, config, fmt, description, dst, ref_dir, maps, sizes)
    return report


def _read(shard: Path, name: str) -> torch.Tensor:
    """One tensor, its file opened just for it: safe_open maps the whole shard, and every page
    read stays resident until the file is closed, so one open file per shard would hold the
    shard in memory on top of the output."""
    from safetensors import safe_open

    with safe_open(shard, "pt") as f:
        return f.get_tensor(name)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc). The float32 temporaries of quantising one
    weight are freed, but with torch's worker threads the heap fragments and a shard's
    conversion was measured holding 2-3x the shard more without this."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _layer(
    name: str,
    tensor: torch.Tensor,
    scheme: str,
    fmt: str,
    model_dtype: torch.dtype,
    absmax: dict[str, float],
    source: Source,
    reference: bool,
) -> LayerOut:
    if fmt == QUANT_METHOD:
        return w8a8_int8_layer(name, tensor, reference=reference)
    prefix = name.removesuffix(".weight")
    bias = None
    if scheme == STATIC and f"{prefix}.bias" in source.where:
        # The bias may sit in another shard than its weight.
        bias = _read(source.where[f"{prefix}.bias"], f"{prefix}.bias")
    return modelslim_layer(
        name,
        tensor,
        scheme=scheme,
        model_dtype=model_dtype,
        expert=is_expert(prefix),
        input_absmax=absmax.get(prefix),
        bias=bias,
        reference=reference,
    )


def _finish(
    src: Path,
    source: Source,
    config: dict[str, Any],
    fmt: str,
    description: dict[str, str],
    dst: Path,
    ref_dir: Path | None,
    maps: list[dict[str, str]],
    sizes: list[int],
) -> None:
    """Index, config, description and the other files of each output."""
    for other in src.iterdir():
        if other.suffix == ".safetensors" or other.name in ("config.json", INDEX):
            continue
        for target in (dst, ref_dir):
            if target is not None and other.is_file():
                shutil.copy2(other, target / other.name)
    for slot, target in enumerate((dst, ref_dir)):
        if target is None:
            continue
        if source.index is not None:
            index = dict(source.index)
            index["metadata"] = {**index.get("metadata", {}), "total_size": sizes[slot]}
            index["weight_map"] = maps[slot]
            (target / INDEX).write_text(json.dumps(index, indent=2))
        target_config = dict(config)
        if target is dst and fmt == QUANT_METHOD:
            target_config["quantization_config"] = {"quant_method": QUANT_METHOD}
        (target / "config.json").write_text(json.dumps(target_config, indent=2))
    if fmt == "modelslim":
        (dst / DESCRIPTION).write_text(json.dumps(description, indent=2))
