"""The converter on real-shaped checkpoints: shard by shard, all or nothing, bad input refused.

Peak memory is measured here (the conversion runs in a child process whose own peak RSS is
read), but only reported: the figure and its goal live in ``make bench``
(``convert.peak_rss_over_largest_shard``), not in a test assertion.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from testbed.checkpoints import run_measured, write_qwen2_shards
from testbed.models import build_deepseek_v2_lite, build_qwen2

from sglang_ascend_fia.w8a8 import convert
from sglang_ascend_fia.w8a8.convert import ConversionError, quantize_checkpoint
from sglang_ascend_fia.w8a8.convert_tensors import unpack_deq_scale

INDEX = "model.safetensors.index.json"
DESCRIPTION = "quant_model_description.json"


def _nothing_left(parent: Path, *names: str) -> None:
    """No output and no staging directory of it next to where it would have gone."""
    for name in names:
        assert not (parent / name).exists(), name
    assert not [p.name for p in parent.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("fmt", ["w8a8_int8", "modelslim"])
def test_a_multi_shard_checkpoint_converts_shard_by_shard(tmp_path: Path, fmt: str) -> None:
    src = write_qwen2_shards(tmp_path / "src", hidden=128, intermediate=256, layers=3, shards=4)
    dst = tmp_path / "q"
    run = run_measured(
        "sglang_ascend_fia.cli", ["quantize-w8a8", str(src), str(dst), "--format", fmt]
    )
    assert run.returncode == 0, run.stderr
    largest = max(p.stat().st_size for p in src.glob("*.safetensors"))
    print(f"{fmt}: peak RSS {run.peak_rss_bytes / 2**20:.0f} MiB, largest shard {largest} B")
    assert run.peak_rss_bytes > 0
    # One progress line per shard, with its tensor counts.
    lines = [line for line in run.stderr.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert all("tensors written" in line and "weights int8" in line for line in lines)
    shard_names = sorted(p.name for p in src.glob("*.safetensors"))
    assert sorted(p.name for p in dst.glob("*.safetensors")) == shard_names
    index = json.loads((dst / INDEX).read_text())
    source_index = json.loads((src / INDEX).read_text())
    written = {}
    for shard in shard_names:
        tensors = load_file(dst / shard)
        assert all(index["weight_map"][n] == shard for n in tensors), shard
        written |= tensors
    assert set(index["weight_map"]) == set(written)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in written.values()
    )
    source = {}
    for shard in shard_names:
        source |= load_file(src / shard)
    quantised = [n for n in source if n.endswith("_proj.weight")]
    assert len(quantised) == 3 * 7
    for name in source:
        if name not in quantised:
            assert torch.equal(written[name], source[name]), name
            continue
        prefix = name.removesuffix(".weight")
        # Scales sit in their weight's shard.
        assert index["weight_map"][f"{prefix}.weight_scale"] == source_index["weight_map"][name]
        q, s = written[name], written[f"{prefix}.weight_scale"].double()
        assert q.dtype == torch.int8
        assert ((source[name].double() - q.double() * s).abs() <= s / 2 * (1 + 1e-5)).all()
    if fmt == "modelslim":
        description = json.loads((dst / DESCRIPTION).read_text())
        assert set(description) == set(written) | {"model_quant_type"}
        assert json.loads((dst / "config.json").read_text()) == json.loads(
            (src / "config.json").read_text()
        )
    else:
        config = json.loads((dst / "config.json").read_text())
        assert config["quantization_config"] == {"quant_method": "w8a8_int8"}
    assert (dst / "tokenizer_config.json").is_file()


def test_a_static_layer_whose_bias_is_in_another_shard(tmp_path: Path) -> None:
    """The fold reads the bias from wherever it is; the float twin, which HF loads, carries the
    folded bias next to its weight, once."""
    from transformers import AutoModelForCausalLM

    p = "model.layers.0.self_attn.q_proj"
    src = write_qwen2_shards(tmp_path / "src", shards=3, split_after={f"{p}.bias": 2})
    source_index = json.loads((src / INDEX).read_text())["weight_map"]
    assert source_index[f"{p}.bias"] != source_index[f"{p}.weight"]
    quantize_checkpoint(
        src,
        tmp_path / "q",
        dequantized=tmp_path / "d",
        fmt="modelslim",
        static=["model.layers.0.self_attn.*"],
    )
    q_index = json.loads((tmp_path / "q" / INDEX).read_text())["weight_map"]
    d_index = json.loads((tmp_path / "d" / INDEX).read_text())["weight_map"]
    for suffix in ("quant_bias", "deq_scale", "input_scale", "input_offset", "weight_scale"):
        assert q_index[f"{p}.{suffix}"] == source_index[f"{p}.weight"], suffix
    assert q_index[f"{p}.bias"] == source_index[f"{p}.bias"]
    assert d_index[f"{p}.bias"] == source_index[f"{p}.weight"]
    q_shard = load_file(tmp_path / "q" / q_index[f"{p}.weight"])
    bias = load_file(src / source_index[f"{p}.bias"])[f"{p}.bias"].double()
    deq = unpack_deq_scale(q_shard[f"{p}.deq_scale"]).double()
    assert q_shard[f"{p}.quant_bias"].abs().max() > 0
    assert ((q_shard[f"{p}.quant_bias"].double() * deq - bias).abs() <= deq / 2 + 1e-7).all()
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "d", local_files_only=True, dtype=torch.float32
    )
    twin_bias = load_file(tmp_path / "d" / d_index[f"{p}.bias"])[f"{p}.bias"]
    torch.testing.assert_close(model.get_submodule(p).bias.float(), twin_bias, rtol=0, atol=0)


# --------------------------------------------------------------------------- refusals
def _qwen2_copy(tmp_path: Path) -> Path:
    return write_qwen2_shards(tmp_path / "src", shards=2)


def _edit_config(src: Path, **changes: object) -> None:
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    (src / "config.json").write_text(json.dumps(config))


def test_refuses_an_unknown_architecture(tmp_path: Path) -> None:
    src = _qwen2_copy(tmp_path)
    _edit_config(src, architectures=["GPT2LMHeadModel"])
    with pytest.raises(
        ConversionError,
        match=r"architectures=\['GPT2LMHeadModel'\].*accepted: DeepseekV2ForCausalLM, "
        r"DeepseekV3ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM",
    ):
        quantize_checkpoint(src, tmp_path / "q", fmt="modelslim")
    _nothing_left(tmp_path, "q")


def test_refuses_a_missing_config(tmp_path: Path) -> None:
    src = _qwen2_copy(tmp_path)
    (src / "config.json").unlink()
    with pytest.raises(ConversionError, match=r"no config\.json"):
        quantize_checkpoint(src, tmp_path / "q", fmt="modelslim")
    _nothing_left(tmp_path, "q")


def test_refuses_a_tensor_the_index_names_but_no_shard_holds(tmp_path: Path) -> None:
    src = _qwen2_copy(tmp_path)
    index = json.loads((src / INDEX).read_text())
    index["weight_map"]["model.layers.0.self_attn.k_proj.weight"] = (
        "model-00001-of-00002.safetensors"
    )
    name = "model.layers.0.self_attn.k_proj.weight"
    shard = next(s for s in sorted(src.glob("*.safetensors")) if name in load_file(s))
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard)
    (src / INDEX).write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=rf"tensor '{name}' is missing: .*00001-of-00002"):
        quantize_checkpoint(src, tmp_path / "q")
    index["weight_map"][name] = "model-00009-of-00002.safetensors"
    (src / INDEX).write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=rf"tensor '{name}'.*00009-of-00002.*does not exist"):
        quantize_checkpoint(src, tmp_path / "q")
    _nothing_left(tmp_path, "q")


def test_refuses_a_non_float_weight(tmp_path: Path) -> None:
    src = _qwen2_copy(tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    shard = next(s for s in sorted(src.glob("*.safetensors")) if name in load_file(s))
    tensors = load_file(shard)
    tensors[name] = tensors[name].to(torch.int8)
    save_file(tensors, shard)
    with pytest.raises(ConversionError, match=rf"tensor '{name}' has dtype I8.*accepted: a float"):
        quantize_checkpoint(src, tmp_path / "q", fmt="modelslim")
    _nothing_left(tmp_path, "q")


@pytest.mark.parametrize("setting", ["--static", "--float"])
def test_refuses_experts_under_static_or_float(tmp_path: Path, setting: str) -> None:
    kwargs = {"static" if setting == "--static" else "floats": ["model.layers.1.mlp.*"]}
    with pytest.raises(
        ConversionError,
        match=rf"{setting} 'model\.layers\.1\.mlp\.\*' matches the routed expert "
        r"'model\.layers\.1\.mlp\.experts\.0\.down_proj'.*W8A8_DYNAMIC",
    ):
        quantize_checkpoint(build_deepseek_v2_lite(), tmp_path / "q", fmt="modelslim", **kwargs)
    _nothing_left(tmp_path, "q")


@pytest.mark.parametrize(
    ("static", "floats", "group"),
    [
        (["model.layers.0.self_attn.q_proj"], [], "model.layers.0.self_attn.qkv_proj"),
        ([], ["model.layers.1.mlp.up_proj"], "model.layers.1.mlp.gate_up_proj"),
        (["model.layers.0.self_attn.[qk]_proj"], ["model.layers.0.self_attn.v_proj"], "qkv_proj"),
    ],
)
def test_refuses_a_choice_that_splits_a_fused_layer(
    tmp_path: Path, static: list[str], floats: list[str], group: str
) -> None:
    with pytest.raises(ConversionError, match=rf"split the fused layer '[\w.]*{group}'"):
        quantize_checkpoint(
            build_qwen2(), tmp_path / "q", fmt="modelslim", static=static, floats=floats
        )
    _nothing_left(tmp_path, "q")


def test_refuses_bad_settings(tmp_path: Path) -> None:
    src = build_qwen2()
    attn = "model.layers.0.self_attn.*"
    cases = [
        ({"static": ["model.layers.9.*"]}, r"--static 'model\.layers\.9\.\*' matches no linear"),
        (
            {"static": [attn], "floats": [attn]},
            r"--float 'model\.layers\.0\.self_attn\.\*' and --static .* both match",
        ),
        ({"fmt": "w8a8_int8", "static": [attn]}, r"--static .* needs --format modelslim"),
        ({"fmt": "gguf"}, r"format='gguf' is not supported; accepted: w8a8_int8, modelslim"),
        ({"fmt": "modelslim", "calibration_seqs": 0}, r"--calibration-seqs=0; accepted"),
        ({"dequantized": tmp_path / "q"}, r"dequantized='.*q' is dst"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("fmt", "modelslim")
        with pytest.raises(ConversionError, match=message):
            quantize_checkpoint(src, tmp_path / "q", **kwargs)  # type: ignore[arg-type]
    _nothing_left(tmp_path, "q")


def test_a_failure_mid_conversion_leaves_no_partial_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_qwen2_shards(tmp_path / "src", shards=3)
    calls = []
    real = convert.modelslim_layer

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 9:  # well into the second shard
            raise RuntimeError("disk full")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(convert, "modelslim_layer", failing)
    (tmp_path / "d").mkdir()  # an empty target is fine, and stays as it was
    with pytest.raises(RuntimeError, match="disk full"):
        quantize_checkpoint(src, tmp_path / "q", dequantized=tmp_path / "d", fmt="modelslim")
    assert len(calls) == 9
    _nothing_left(tmp_path, "q")
    assert (tmp_path / "d").is_dir() and not any((tmp_path / "d").iterdir())
