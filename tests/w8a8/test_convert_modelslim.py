"""``quantize-w8a8 --format modelslim``: the tensors, the description, and that sglang's own
ModelSlim code takes them.

The proof that sglang loads what the converter writes, without an NPU: the written names,
shapes and dtypes equal what sglang's ``ModelSlimW8A8Int8.create_weights`` and
``ModelSlimW8A8Int8MoE.create_weights`` register for each layer, and sglang's
``ModelSlimConfig.get_quant_method`` on the written description resolves every layer (fused ones
included, through the packed-modules map sglang sets on an NPU) to the scheme asked for.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from testbed.checkpoints import write_qwen2_shards
from testbed.models import build_deepseek_v2_lite, build_deepseek_v3_moe, build_qwen2

from sglang_ascend_fia import cli
from sglang_ascend_fia.w8a8.convert import quantize_checkpoint
from sglang_ascend_fia.w8a8.convert_calibrate import random_tokens
from sglang_ascend_fia.w8a8.convert_tensors import (
    SHAPELESS_INPUT_RANGE,
    pack_deq_scale,
    quantize_rows,
    static_fold,
    unpack_deq_scale,
)

DESCRIPTION = "quant_model_description.json"
# What sglang's loader gives ModelSlimConfig on an NPU (model_loader/loader.py:191-211), and
# DeepSeek's own fused entry (models/deepseek_v2.py:3262-3275).
NPU_PACKED = {
    "model": {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
        "fused_qkv_a_proj_with_mqa": ["q_a_proj", "kv_a_proj_with_mqa"],
    },
    "fused_qkv_a_proj_with_mqa": ["q_a_proj", "kv_a_proj_with_mqa"],
}
SGLANG_FUSED = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}
# Only with q_lora (q_a_proj present) does DeepSeek fuse these (models/deepseek_v2.py:2070).
Q_LORA_FUSED = {
    "q_a_proj": "fused_qkv_a_proj_with_mqa",
    "kv_a_proj_with_mqa": "fused_qkv_a_proj_with_mqa",
}


def _load(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def _bf16_below(x: torch.Tensor) -> torch.Tensor:
    """The bfloat16 / float16 value just below each positive ``x`` (same dtype)."""
    return (x.view(torch.int16) - 1).view(x.dtype)


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_round_trip_is_within_half_a_step(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(40, 96, generator=gen) * 0.05
    w[3] = 0  # an all-zero row
    w[5, 7] = 9.0  # an outlier
    w[9] *= 1e-4  # a tiny row
    q, scale = quantize_rows(w.to(torch.bfloat16), dtype, zero_scale=1.0)
    w = w.to(torch.bfloat16).double()
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.dtype == dtype and scale.shape == (40, 1)
    assert int(q.abs().max()) <= 127
    s = scale.double()
    assert ((w - q.double() * s).abs() <= s / 2 * (1 + 1e-6)).all()
    rowmax = w.abs().amax(dim=1, keepdim=True)
    live = rowmax.squeeze(1) > 0
    # No row is clipped: the scale, as written, covers the row's largest weight ...
    # (float32: max|W| / 127 exactly, so up to one rounding of that division below.)
    slack = 1 + 1e-6 if dtype == torch.float32 else 1
    assert (s[live] * 127 * slack >= rowmax[live]).all()
    # Full int8 range wherever the scale is a normal number (a float16 scale under 6.1e-5 is
    # subnormal and coarser: rounding it up leaves the row's top value short of 127).
    normal = live & (scale.squeeze(1).float() >= torch.finfo(dtype).tiny)
    assert (q[normal].abs().amax(dim=1) >= 126).all()
    if dtype != torch.float32:
        # ... and is the smallest value of its dtype that does (rounded up, not to nearest).
        assert (_bf16_below(scale[live]).double() * 127 < rowmax[live]).all()
    assert scale[3].item() == 1.0 and (q[3] == 0).all()


def test_quantize_rows_works_in_row_blocks_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sglang_ascend_fia.w8a8 import convert_tensors

    w = torch.randn(50, 64, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    whole = quantize_rows(w, torch.bfloat16)
    monkeypatch.setattr(convert_tensors, "_CHUNK_ELEMENTS", 64 * 7)  # 7 rows a block
    blocks = quantize_rows(w, torch.bfloat16)
    assert torch.equal(whole[0], blocks[0]) and torch.equal(whole[1], blocks[1])


# --------------------------------------------------------------------------- static fold
@pytest.mark.parametrize("offset", [0, 3, -5])
def test_static_fold_reproduces_the_float_layer(offset: int) -> None:
    """sglang's static kernel on what the fold writes, as a brute-force loop, against
    ``x @ W.T + b``: equal within the quantisation error of x, W and the bias."""
    gen = torch.Generator().manual_seed(3)
    out_dim, in_dim, tokens = 6, 16, 5
    w = torch.randn(out_dim, in_dim, generator=gen) * 0.1
    b = torch.randn(out_dim, generator=gen)
    x = torch.randn(tokens, in_dim, generator=gen)
    q, w_scale = quantize_rows(w, torch.bfloat16, zero_scale=1.0)
    s_in = torch.tensor([float(x.abs().max()) / 100], dtype=torch.bfloat16)  # headroom for o
    o = torch.tensor([float(offset)], dtype=torch.bfloat16)
    quant_bias, deq = static_fold(q, w_scale, s_in, o, b, "w")
    assert quant_bias.dtype == torch.int32 and quant_bias.shape == (out_dim,)
    assert deq.dtype == torch.float32 and deq.shape == (out_dim,)
    torch.testing.assert_close(deq, s_in.float() * w_scale.float().squeeze(1), rtol=0, atol=0)
    s, w_deq = float(s_in), q.double() * w_scale.double()
    y = torch.empty(tokens, out_dim, dtype=torch.float64)
    for t in range(tokens):
        xq = [max(-128, min(127, round(float(x[t, k]) / s + offset))) for k in range(in_dim)]
        for n in range(out_dim):
            acc = sum(xq[k] * int(q[n, k]) for k in range(in_dim)) + int(quant_bias[n])
            y[t, n] = acc * float(deq[n])
    exact = x.double() @ w.double().T + b.double()
    bound = (
        s / 2 * w_deq.abs().sum(dim=1)
        + x.double().abs().sum(dim=1, keepdim=True) * w_scale.double().squeeze(1) / 2
        + deq.double() / 2
    )
    assert ((y - exact).abs() <= bound * (1 + 1e-6)).all()
    if offset:
        # Without the offset correction the fold is off by o * sum(q) * deq_scale: it fails.
        wrong = (quant_bias.double() + offset * q.sum(dim=1).double()) * deq.double()
        assert ((y + wrong - quant_bias.double() * deq.double() - exact).abs() > bound).any()


def test_float16_deq_scale_is_the_float32_bit_pattern() -> None:
    deq = torch.tensor([1.0, 2.5e-5, 3.0e-3])
    packed = pack_deq_scale(deq, torch.float16, "w")
    assert packed.dtype == torch.int64
    assert packed.tolist() == [struct.unpack("<i", struct.pack("<f", v))[0] for v in deq.tolist()]
    assert torch.equal(unpack_deq_scale(packed), deq)
    assert pack_deq_scale(deq, torch.bfloat16, "w").dtype == torch.float32


# --------------------------------------------------------------------------- sglang loads it
def _sglang() -> Any:
    return pytest.importorskip("sglang.srt.layers.quantization.modelslim.modelslim")


def _registered(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {n: (tuple(p.shape), p.dtype) for n, p in module.named_parameters()}


def _written(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """The layer's tensors but its float bias (LinearBase's own parameter, not the scheme's)."""
    out = {}
    for name, tensor in tensors.items():
        suffix = name.removeprefix(prefix + ".")
        if suffix != name and "." not in suffix and suffix != "bias":
            out[suffix] = (tuple(tensor.shape), tensor.dtype)
    return out


CASES = {
    # model, --static, --float
    "qwen2": (build_qwen2, ["model.layers.0.self_attn.*"], ["model.layers.1.mlp.*"]),
    "dsv2-lite": (
        build_deepseek_v2_lite,
        ["model.layers.0.self_attn.*", "model.layers.1.mlp.shared_experts.*"],
        ["model.layers.0.mlp.*"],
    ),
    "dsv3-q-lora": (
        build_deepseek_v3_moe,
        ["model.layers.*.self_attn.*"],
        ["model.layers.1.mlp.shared_experts.*"],
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    build, static, floats = CASES[request.param]
    src = build()
    out = tmp_path_factory.mktemp(request.param)
    report = quantize_checkpoint(
        src, out / "q", dequantized=out / "d", fmt="modelslim", static=static, floats=floats
    )
    return src, out / "q", out / "d", report


def test_the_written_layers_are_what_sglang_registers(
    converted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    modelslim = _sglang()
    from sglang.srt.hardware_backend.npu.quantization import moe_methods
    from sglang.srt.layers.quantization.modelslim.schemes import ModelSlimW8A8Int8

    # The MoE scheme's kernel resolves torch.ops.npu at construction (moe/quant.py:43); the
    # weights it registers do not depend on it.
    monkeypatch.setattr(moe_methods.NPUW8A8Int8MoEMethod, "__init__", lambda self: None)
    src, q_dir, _, _ = converted
    config = json.loads((src / "config.json").read_text())
    dtype = getattr(torch, config["dtype"])
    description = json.loads((q_dir / DESCRIPTION).read_text())
    tensors = _load(q_dir)
    assert set(description) == set(tensors) | {"model_quant_type"}
    assert description["model_quant_type"] == "W8A8"
    checked = {"W8A8": 0, "W8A8_DYNAMIC": 0, "FLOAT": 0, "experts": 0}
    experts: dict[str, set[int]] = {}
    for name in sorted(n for n in tensors if n.endswith(".weight")):
        prefix = name.removesuffix(".weight")
        scheme = description[name]
        if ".mlp.experts." in prefix:
            layer, e = prefix.split(".mlp.experts.")
            experts.setdefault(f"{layer}.mlp.experts", set()).add(int(e.split(".")[0]))
            assert scheme == "W8A8_DYNAMIC"
            continue
        if scheme == "FLOAT":
            assert tensors[name].dtype == dtype
            checked["FLOAT"] += "_proj" in prefix
            continue
        module = torch.nn.Module()
        out_dim, in_dim = tensors[name].shape
        ModelSlimW8A8Int8(quant_config=description, prefix=prefix).create_weights(
            layer=module,
            input_size_per_partition=in_dim,
            output_partition_sizes=[out_dim],
            input_size=in_dim,
            output_size=out_dim,
            params_dtype=dtype,
            weight_loader=None,
        )
        written = _written(tensors, prefix)
        if prefix.rsplit(".", 1)[-1] in SHAPELESS_INPUT_RANGE and scheme == "W8A8":
            # Written shapeless for sglang's DeepSeek fused-a loader (convert_tensors' doc);
            # ReplicatedLinear.weight_loader gives them the registered (1,) (linear.py:350-353).
            for suffix in ("input_scale", "input_offset"):
                shape, dtype_ = written[suffix]
                assert shape == (), (prefix, suffix, shape)
                written[suffix] = ((1,), dtype_)
        assert written == _registered(module), prefix
        checked[scheme] += 1
    for moe_prefix, ids in experts.items():
        cfg = modelslim.ModelSlimConfig.from_config(dict(description))
        layer = _bare("sglang.srt.layers.moe.fused_moe_triton", "FusedMoE")
        method = cfg.get_quant_method(layer, moe_prefix)
        assert type(method).__name__ == "ModelSlimFusedMoEMethod"
        assert type(layer.w13_scheme).__name__ == "ModelSlimW8A8Int8MoE"
        first = tensors[f"{moe_prefix}.0.gate_proj.weight"]
        inter, hidden = first.shape
        module = torch.nn.Module()
        for scheme in (layer.w13_scheme, layer.w2_scheme):
            scheme.create_weights(
                layer=module,
                num_experts=len(ids),
                hidden_size=hidden,
                intermediate_size_per_partition=inter,
            )
        registered = _registered(module)
        assert sorted(ids) == list(range(len(ids)))
        for e in ids:
            p = f"{moe_prefix}.{e}"
            for group, projections in (("w13", ("gate_proj", "up_proj")), ("w2", ("down_proj",))):
                for suffix in ("weight", "weight_scale", "weight_offset"):
                    shape, want_dtype = registered[f"{group}_{suffix}"]
                    parts = [tensors[f"{p}.{proj}.{suffix}"] for proj in projections]
                    assert all(t.dtype == want_dtype for t in parts), (p, suffix)
                    assert tuple(torch.cat(parts).shape) == shape[1:], (p, suffix)
        checked["experts"] += 1
    assert checked["W8A8"] and checked["W8A8_DYNAMIC"] and checked["FLOAT"]
    if not src.name.startswith("qwen2"):
        assert experts and checked["experts"] == len(experts)


def _bare(module: str, cls: str) -> Any:
    """An instance of sglang's ``cls`` that only ``isinstance`` sees: what get_quant_method
    reads of a layer is its type (modelslim.py:266-301)."""
    import importlib

    klass = getattr(importlib.import_module(module), cls)
    obj = klass.__new__(klass)
    torch.nn.Module.__init__(obj)
    return obj


def _sglang_prefix(prefix: str, description: dict[str, str]) -> str:
    """The sglang layer the checkpoint module ``prefix`` is (a shard of)."""
    parent, _, leaf = prefix.rpartition(".")
    fused = SGLANG_FUSED | (Q_LORA_FUSED if f"{parent}.q_a_proj.weight" in description else {})
    return f"{parent}.{fused.get(leaf, leaf)}"


def test_sglang_resolves_every_layer_to_the_scheme_asked_for(converted: Any) -> None:
    modelslim = _sglang()
    _, q_dir, _, report = converted
    description = json.loads((q_dir / DESCRIPTION).read_text())
    cfg = modelslim.ModelSlimConfig.from_config(
        {**description, "packed_modules_mapping": NPU_PACKED}
    )
    wanted: dict[str, str] = {}
    for name, scheme in description.items():
        if not name.endswith(".weight") or "_proj" not in name or ".mlp.experts." in name:
            continue
        sglang_prefix = _sglang_prefix(name.removesuffix(".weight"), description)
        assert wanted.setdefault(sglang_prefix, scheme) == scheme, sglang_prefix
    assert any(p.endswith(".qkv_proj") or p.endswith("fused_qkv_a_proj_with_mqa") for p in wanted)
    for prefix, scheme in wanted.items():
        layer = _bare("sglang.srt.layers.linear", "ReplicatedLinear")
        method = cfg.get_quant_method(layer, prefix)
        if scheme == "FLOAT":
            assert type(method).__name__ == "UnquantizedLinearMethod", prefix
            assert cfg.is_layer_skipped(prefix, NPU_PACKED["model"])
            continue
        assert type(method).__name__ == "ModelSlimLinearMethod", prefix
        assert type(layer.scheme).__name__ == "ModelSlimW8A8Int8", prefix
        assert layer.scheme.is_dynamic == (scheme == "W8A8_DYNAMIC"), prefix
    static_layers = {p for p, s in wanted.items() if s == "W8A8"}
    assert static_layers == {_sglang_prefix(p, description) for p in report.static} != set()


def test_the_float_twin_is_what_the_int8_layers_stand_for(converted: Any) -> None:
    src, q_dir, d_dir, report = converted
    source, quantised, twin = _load(src), _load(q_dir), _load(d_dir)
    description = json.loads((q_dir / DESCRIPTION).read_text())
    assert set(twin) == set(source)
    assert report.quantized and report.max_error_in_steps <= 0.5 + 1e-4
    for name in report.quantized:
        prefix = name.removesuffix(".weight")
        q, scale = quantised[name], quantised[f"{prefix}.weight_scale"]
        assert q.dtype == torch.int8
        assert torch.equal(twin[name], q.float() * scale.float())
        s = scale.double()
        assert ((source[name].double() - q.double() * s).abs() <= s / 2 * (1 + 1e-5)).all()
        assert torch.equal(quantised[f"{prefix}.weight_offset"], torch.zeros_like(scale))
        if description[name] == "W8A8" and f"{prefix}.bias" in source:
            deq = unpack_deq_scale(quantised[f"{prefix}.deq_scale"]).double()
            folded = quantised[f"{prefix}.quant_bias"].double() * deq
            assert torch.equal(twin[f"{prefix}.bias"], folded.float())
            assert ((folded - source[f"{prefix}.bias"].double()).abs() <= deq / 2 + 1e-7).all()
            # The written float bias is the source's: sglang's static kernel never adds it.
            assert torch.equal(quantised[f"{prefix}.bias"], source[f"{prefix}.bias"])
    for name in report.kept:
        assert torch.equal(quantised[name], source[name])
        if not name.endswith(".bias") or name.removesuffix(".bias") not in report.static:
            assert torch.equal(twin[name], source[name])
    assert json.loads((q_dir / "config.json").read_text()) == json.loads(
        (src / "config.json").read_text()
    )
    assert (q_dir / "tokenizer.json").is_file() and (d_dir / "tokenizer.json").is_file()
    assert not (d_dir / DESCRIPTION).exists()


def test_static_input_scales_cover_the_calibration_inputs(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    src = build_qwen2()
    tokens, seqs = 16, 2
    quantize_checkpoint(
        src,
        tmp_path / "q",
        fmt="modelslim",
        static=["model.layers.0.self_attn.*"],
        calibration_tokens=tokens,
        calibration_seqs=seqs,
    )
    written = _load(tmp_path / "q")
    # The test's own hooks on the float model, over the documented calibration batch.
    model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, dtype="auto")
    seen: dict[str, float] = {}
    for leaf in ("q_proj", "k_proj", "v_proj", "o_proj"):
        module = model.get_submodule(f"model.layers.0.self_attn.{leaf}")
        module.register_forward_pre_hook(
            lambda _m, a, leaf=leaf: seen.__setitem__(
                leaf, max(seen.get(leaf, 0.0), float(a[0].abs().max()))
            )
        )
    batch = random_tokens(
        int(json.loads((src / "config.json").read_text())["vocab_size"]), tokens, seqs
    )
    assert batch.shape == (seqs, tokens)
    with torch.no_grad():
        for row in batch:
            model(input_ids=row.unsqueeze(0))
    assert seen["q_proj"] == seen["k_proj"] == seen["v_proj"]
    for leaf, absmax in seen.items():
        p = f"model.layers.0.self_attn.{leaf}"
        scale = written[f"{p}.input_scale"]
        assert scale.dtype == torch.bfloat16 and scale.shape == (1,)
        assert float(scale) * 127 >= absmax > float(_bf16_below(scale)) * 127, leaf
        assert torch.equal(written[f"{p}.input_offset"], torch.zeros(1, dtype=torch.bfloat16))
    # One fused layer, one input_scale (sglang keeps the last shard's): all three agree.
    scales = [written[f"model.layers.0.self_attn.{x}_proj.input_scale"] for x in "qkv"]
    assert torch.equal(scales[0], scales[1]) and torch.equal(scales[0], scales[2])


def test_a_float16_model_gets_float16_scales_and_int64_deq_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sglang()
    from sglang.srt.layers.quantization.modelslim.schemes import ModelSlimW8A8Int8

    src = write_qwen2_shards(tmp_path / "src", dtype=torch.float16, shards=2)
    quantize_checkpoint(src, tmp_path / "q", fmt="modelslim", static=["model.layers.0.self_attn.*"])
    tensors = _load(tmp_path / "q")
    description = json.loads((tmp_path / "q" / DESCRIPTION).read_text())
    for prefix in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        module = torch.nn.Module()
        out_dim, in_dim = tensors[f"{prefix}.weight"].shape
        ModelSlimW8A8Int8(quant_config=description, prefix=prefix).create_weights(
            layer=module,
            input_size_per_partition=in_dim,
            output_partition_sizes=[out_dim],
            input_size=in_dim,
            output_size=out_dim,
            params_dtype=torch.float16,
            weight_loader=None,
        )
        assert _written(tensors, prefix) == _registered(module), prefix
    p = "model.layers.0.self_attn.q_proj"
    deq = unpack_deq_scale(tensors[f"{p}.deq_scale"])
    want = tensors[f"{p}.input_scale"].float() * tensors[f"{p}.weight_scale"].float().squeeze(1)
    assert tensors[f"{p}.deq_scale"].dtype == torch.int64 and torch.equal(deq, want)


def test_cli_writes_modelslim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = build_qwen2()
    argv = ["quantize-w8a8", str(src), str(tmp_path / "q"), "--format", "modelslim"]
    argv += ["--static", "model.layers.1.self_attn.*", "--float", "model.layers.0.mlp.*"]
    argv += ["--calibration-tokens", "8", "--calibration-seqs", "1"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "(modelslim, 1 shard)" in captured.out and "4 layers W8A8 static" in captured.out
    assert "[1/1] model.safetensors:" in captured.err
    description = json.loads((tmp_path / "q" / DESCRIPTION).read_text())
    assert description["model.layers.1.self_attn.o_proj.weight"] == "W8A8"
    assert description["model.layers.0.mlp.up_proj.weight"] == "FLOAT"
    assert description["model.layers.0.self_attn.q_proj.weight"] == "W8A8_DYNAMIC"
