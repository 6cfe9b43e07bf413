"""The source checkpoint, read and checked before the converter writes anything.

``read_config`` refuses an unknown architecture or an already quantised model; ``scan`` reads
every shard's header (names, dtypes, shapes; no tensor data) and refuses an index naming a
shard or a tensor the shards do not hold; ``linear_weights`` refuses a linear weight that is
not a 2-D float tensor.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sglang_ascend_fia.w8a8.convert_plan import (
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    ConversionError,
    is_linear_weight,
)

DESCRIPTION = "quant_model_description.json"
INDEX = "model.safetensors.index.json"
# safetensors' dtype names of the float weights the converter quantises.
_FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
_STR_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def read_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(f"src={str(src)!r}: no config.json; expected a HF model directory")
    config: dict[str, Any] = json.loads(path.read_text())
    architectures = config.get("architectures") or []
    unknown = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
    if unknown:
        raise ConversionError(
            f"architectures={architectures!r} (in {path}) is not supported; accepted: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (their linear layers are all named *_proj)"
        )
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
    if (src / DESCRIPTION).is_file():
        raise ConversionError(
            f"src={str(src)!r} holds {DESCRIPTION}: the checkpoint is already quantised "
            "(msModelSlim); accepted: a float checkpoint"
        )
    return config


def serving_dtype(config: dict[str, Any]) -> torch.dtype:
    """The dtype sglang builds the model in with ``--dtype auto`` (``model_config.py:2284-2321``):
    the config's, and float16 for a float32 (or unnamed) one."""
    named = config.get("dtype") or config.get("torch_dtype")
    dtype = _STR_DTYPES.get(str(named), torch.float32)
    return torch.float16 if dtype == torch.float32 else dtype


@dataclass
class Source:
    shards: list[Path]
    index: dict[str, Any] | None
    where: dict[str, Path]  # tensor -> the shard holding it
    dtypes: dict[str, str]  # tensor -> safetensors dtype name
    shapes: dict[str, list[int]]


def scan(src: Path) -> Source:
    """Every shard's header (no tensor data): names, dtypes and shapes; refuses an index that
    names a file or a tensor the shards do not hold."""
    from safetensors import safe_open

    index = json.loads((src / INDEX).read_text()) if (src / INDEX).is_file() else None
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{src / INDEX}: no weight_map; accepted: a HF shard index")
        for name, shard_name in weight_map.items():
            if not (src / shard_name).is_file():
                raise ConversionError(
                    f"tensor {name!r}: {INDEX} puts it in {shard_name!r}, which does not "
                    f"exist in {src}; accepted: an index whose every shard is present"
                )
        shards = [src / s for s in sorted(set(weight_map.values()))]
    else:
        shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ConversionError(
            f"src={str(src)!r} holds no *.safetensors file; accepted: a safetensors checkpoint"
        )
    source = Source(shards, index, {}, {}, {})
    for shard in shards:
        with safe_open(shard, "pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is no mapping
                if name in source.where:
                    raise ConversionError(
                        f"tensor {name!r} is in both {source.where[name].name} and "
                        f"{shard.name}; accepted: each tensor in one shard"
                    )
                piece = f.get_slice(name)
                source.where[name] = shard
                source.dtypes[name] = piece.get_dtype()
                source.shapes[name] = list(piece.get_shape())
    if index is not None:
        for name, shard_name in index["weight_map"].items():
            if source.where.get(name) != src / shard_name:
                raise ConversionError(
                    f"tensor {name!r} is missing: {INDEX} puts it in {shard_name!r}, which "
                    "does not hold it; accepted: an index that matches its shards"
                )
    return source


def linear_weights(source: Source) -> list[str]:
    names = [n for n in source.where if is_linear_weight(n)]
    if not names:
        raise ConversionError(
            "no weight matches model.layers.<n>.*_proj*.weight; accepted: "
            "a checkpoint with HF Llama/Qwen2/DeepSeek weight names"
        )
    for name in names:
        if source.dtypes[name] not in _FLOAT_DTYPES:
            raise ConversionError(
                f"tensor {name!r} has dtype {source.dtypes[name]} in "
                f"{source.where[name].name}; accepted: a float weight "
                f"({', '.join(_FLOAT_DTYPES)})"
            )
        if len(source.shapes[name]) != 2:
            raise ConversionError(
                f"tensor {name!r} has shape {source.shapes[name]}; accepted: a 2-D "
                "[out, in] linear weight"
            )
    return names


def check_target(path: Path, setting: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConversionError(f"{setting}={str(path)!r} is not empty; accepted: a new or empty dir")


def staging(path: Path) -> Path:
    """A fresh hidden directory next to ``path``, renamed onto it when the output is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp
