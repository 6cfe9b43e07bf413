"""The offline converter: a float checkpoint -> the w8a8_int8 checkpoint sglang loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sglang_ascend_fia import cli
from sglang_ascend_fia.w8a8.convert import ConversionError, quantize_checkpoint, quantize_weight

QUANTISED = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
    "model.layers.0.mlp.experts.3.down_proj.weight",
    "model.layers.1.mlp.shared_experts.gate_proj.weight",
]
KEPT = [
    "model.embed_tokens.weight",
    "lm_head.weight",
    "model.norm.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_proj.bias",  # biases stay float: apply() adds them after dequant
    "model.layers.1.mlp.gate.weight",  # the MoE router is a plain parameter in sglang
]


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name in QUANTISED + KEPT:
        shape = (12, 16) if name.endswith(".weight") and "norm" not in name else (12,)
        out[name] = (torch.randn(shape, generator=gen) * 0.1).to(torch.bfloat16)
    out[QUANTISED[0]][3] = 0  # an all-zero output channel
    return out


def _checkpoint(tmp_path: Path, model_type: str = "qwen2", index: bool = False) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": model_type, "hidden_size": 16}))
    (src / "tokenizer.json").write_text("{}")
    tensors = _tensors()
    if index:
        names = sorted(tensors)
        half = len(names) // 2
        shards = {"a.safetensors": names[:half], "b.safetensors": names[half:]}
        weight_map = {}
        for shard, shard_names in shards.items():
            save_file({n: tensors[n] for n in shard_names}, src / shard)
            weight_map.update(dict.fromkeys(shard_names, shard))
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        save_file(tensors, src / "model.safetensors")
    return src


def _load_all(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in directory.glob("*.safetensors"):
        out.update(load_file(shard))
    return out


@pytest.mark.parametrize("index", [False, True], ids=["one-file", "sharded"])
def test_writes_int8_weights_scales_and_the_w8a8_config(tmp_path: Path, index: bool) -> None:
    src = _checkpoint(tmp_path, index=index)
    report = quantize_checkpoint(src, tmp_path / "q", dequantized=tmp_path / "d")
    assert sorted(report.quantized) == sorted(QUANTISED)
    assert sorted(report.kept) == sorted(KEPT)
    assert report.max_error_in_steps <= 0.5 + 1e-4
    original = _tensors()
    quantised = _load_all(tmp_path / "q")
    dequantised = _load_all(tmp_path / "d")
    for name in QUANTISED:
        q, scale = quantised[name], quantised[name.removesuffix("weight") + "weight_scale"]
        w = original[name].float()
        assert q.dtype == torch.int8 and q.shape == w.shape
        assert scale.dtype == torch.float32 and scale.shape == (w.shape[0], 1)
        # Symmetric per output channel: the largest |w| of each row maps to +-127.
        rowmax = w.abs().amax(dim=1, keepdim=True)
        torch.testing.assert_close(scale, rowmax / 127, rtol=1e-6, atol=0)
        nonzero = rowmax.squeeze(1) > 0
        assert (q[nonzero].abs().amax(dim=1) == 127).all()
        assert (q[~nonzero] == 0).all()
        assert ((w - q.float() * scale).abs() <= scale / 2 * (1 + 1e-5)).all()
        assert dequantised[name].dtype == torch.float32
        assert torch.equal(dequantised[name], q.float() * scale)
    for name in KEPT:
        assert torch.equal(quantised[name], original[name])
        assert torch.equal(dequantised[name], original[name])
    assert not any(n.endswith("weight_scale") for n in dequantised)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "w8a8_int8"}
    assert "quantization_config" not in json.loads((tmp_path / "d" / "config.json").read_text())
    for out in ("q", "d"):
        assert (tmp_path / out / "tokenizer.json").read_text() == "{}"
    if index:
        weight_map = json.loads((tmp_path / "q" / "model.safetensors.index.json").read_text())
        weight_map = weight_map["weight_map"]
        for name in QUANTISED:
            scale_name = name.removesuffix("weight") + "weight_scale"
            assert weight_map[scale_name] == weight_map[name]
            assert scale_name in load_file(tmp_path / "q" / weight_map[name])


def test_quantize_weight_rounds_half_to_even() -> None:
    w = torch.tensor([[127.0, 0.5, 1.5, -2.5, 2.4]])
    q, scale = quantize_weight(w)
    assert scale.item() == 1.0
    assert q.tolist() == [[127, 0, 2, -2, 2]]


def test_refuses_what_it_cannot_convert(tmp_path: Path) -> None:
    src = _checkpoint(tmp_path, model_type="gpt2")
    with pytest.raises(ConversionError, match=r"model_type='gpt2'.*accepted: deepseek_v2"):
        quantize_checkpoint(src, tmp_path / "q")
    config = {"model_type": "qwen2", "quantization_config": {"quant_method": "fp8"}}
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="already quantised"):
        quantize_checkpoint(src, tmp_path / "q")
    (src / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(ConversionError, match=r"dst='.*busy' is not empty"):
        quantize_checkpoint(src, busy)
    (src / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match=r"no \*\.safetensors"):
        quantize_checkpoint(src, tmp_path / "q")
    save_file({"model.embed_tokens.weight": torch.zeros(4, 4)}, src / "model.safetensors")
    with pytest.raises(ConversionError, match="no weight matches"):
        quantize_checkpoint(src, tmp_path / "q")
    assert not (tmp_path / "q").exists()  # refused before anything was written


def test_cli_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _checkpoint(tmp_path)
    assert cli.main(["quantize-w8a8", str(src), str(tmp_path / "q")]) == 0
    assert f"{len(QUANTISED)} weights int8" in capsys.readouterr().out
    assert cli.main(["quantize-w8a8", str(src), str(tmp_path / "q")]) == 2
    assert "is not empty" in capsys.readouterr().err
