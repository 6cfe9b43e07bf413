"""msModelSlim W8A8 (``--quantization modelslim``, W8A8_DYNAMIC) end to end in ``sglang.Engine``.

The tiny DeepSeek-V2-Lite-style MoE of ``test_w8a8_engine`` is quantised by the plugin's
converter (per-channel symmetric int8, ``quantize-w8a8``), then laid out as msModelSlim writes
it: per layer ``weight`` int8 ``[out, in]``, ``weight_scale`` and ``weight_offset`` ``[out, 1]``
(the names ``ModelSlimW8A8Int8.create_weights`` and ``ModelSlimW8A8Int8MoE.create_weights``
register), no ``quantization_config`` in ``config.json`` and a ``quant_model_description.json``
naming every quantised weight ``W8A8_DYNAMIC``. Stock sglang cannot build this model off an NPU
(its W8A8 MoE scheme resolves ``torch.ops.npu.npu_dynamic_quant`` in its constructor, and its
fused layers find no scheme without the NPU-only packed-module map); with the plugin it loads and
runs, every dense layer on ``dynamic_quant`` -> ``quant_matmul`` and every MoE layer on the int8
chain, through ``ops``. The oracle is HF fp32 on the dequantised checkpoint, teacher-forced,
with ``test_w8a8_engine``'s bounds (the same int8 numerics).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from testbed.engine import EngineProcess, start_error, testbed_env
from testbed.models import build_deepseek_v2_lite_moe, encode_prompts
from testbed.oracle import hf_logprobs_along
from testbed.quantized import build_w8a8_pair

from e2e.test_w8a8_engine import (
    LOGPROB_TOL,
    MEAN_LOGPROB_TOL,
    MIN_ARGMAX_AGREEMENT,
    NEAR_TIE_TOL,
    W8A8_MOE_CHAIN,
)

pytestmark = pytest.mark.engine

NEW_TOKENS = 24
NUM_PROMPTS = 6


def _as_modelslim(w8a8: Path, dst: Path, scheme: str = "W8A8_DYNAMIC") -> Path:
    """The w8a8_int8 checkpoint re-laid as msModelSlim's W8A8_DYNAMIC format (module doc)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(w8a8, dst)
    config = json.loads((dst / "config.json").read_text())
    config.pop("quantization_config")
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    description: dict[str, str] = {"model_quant_type": scheme}
    for shard in dst.glob("*.safetensors"):
        tensors = load_file(shard)
        out = dict(tensors)
        for name, tensor in tensors.items():
            if name.endswith(".weight_scale"):
                out[name.replace(".weight_scale", ".weight_offset")] = torch.zeros_like(tensor)
                description[name.removesuffix("_scale")] = scheme
        for name in tensors:
            description.setdefault(name, "FLOAT")
        save_file(out, shard, metadata={"format": "pt"})
    (dst / "quant_model_description.json").write_text(json.dumps(description, indent=2))
    return dst


def test_modelslim_w8a8_dynamic_deepseek_tracks_the_dequantised_model(tmp_path: Path) -> None:
    src = build_deepseek_v2_lite_moe()
    quantised, dequantised = build_w8a8_pair(src)
    model = _as_modelslim(quantised, tmp_path / "modelslim")
    config = json.loads((model / "config.json").read_text())
    layers = config["num_hidden_layers"]
    moe_layers = layers - config["first_k_dense_replace"]
    prompts = encode_prompts(src)[:NUM_PROMPTS]

    forwards = tmp_path / "forwards.jsonl"
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(forwards))
    with EngineProcess(
        model, env=env, attention_backend="torch_native", dtype="bfloat16", quantization="modelslim"
    ) as engine:
        out = engine.generate(prompts, NEW_TOKENS, return_logprob=True)
    tokens: list[list[int]] = out["output_ids"]

    # As in test_w8a8_engine: q_a (fused with kv_a), q_b, o_proj, and the MLP's or shared
    # experts' gate_up and down per layer; the routed experts on the int8 chain.
    dense_linears = 5 * layers
    records = [json.loads(line) for line in forwards.read_text().splitlines() if line.strip()]
    assert {r["mode"] for r in records} >= {"EXTEND", "DECODE"}
    for record in records:
        launches = record["launches"]
        assert launches.get("dynamic_quant") == dense_linears, launches
        assert launches.get("quant_matmul") == dense_linears, launches
        for op in W8A8_MOE_CHAIN:
            assert launches.get(op) == moe_layers, (op, launches)
        assert launches.get("grouped_matmul") == 2 * moe_layers, launches

    hf = hf_logprobs_along(dequantised, prompts, tokens)
    errors: list[float] = []
    near_tie: list[float] = []
    agree = 0
    for scores, chosen, meta in zip(hf, tokens, out["meta"], strict=True):
        assert [entry[1] for entry in meta["output_token_logprobs"]] == chosen
        served = torch.tensor([entry[0] for entry in meta["output_token_logprobs"]])
        hf_lp = scores[torch.arange(len(chosen)), torch.tensor(chosen)]
        errors += (served.double() - hf_lp).abs().tolist()
        near_tie += (scores.max(dim=-1).values - hf_lp).tolist()
        agree += int((scores.argmax(dim=-1) == torch.tensor(chosen)).sum())
    agreement = agree / (NUM_PROMPTS * NEW_TOKENS)
    measured = (
        f"max |logprob err| {max(errors):.4f}, mean {sum(errors) / len(errors):.4f}; "
        f"max near-tie gap {max(near_tie):.4f}; argmax agreement {agreement:.3f}"
    )
    print(measured)
    assert max(errors) <= LOGPROB_TOL, measured
    assert sum(errors) / len(errors) <= MEAN_LOGPROB_TOL, measured
    assert max(near_tie) <= NEAR_TIE_TOL, measured
    assert agreement >= MIN_ARGMAX_AGREEMENT, measured


def test_a_scheme_the_plugin_does_not_implement_is_refused_off_an_npu(tmp_path: Path) -> None:
    quantised, _ = build_w8a8_pair(build_deepseek_v2_lite_moe())
    model = _as_modelslim(quantised, tmp_path / "modelslim")
    description = json.loads((model / "quant_model_description.json").read_text())
    key = "model.layers.0.mlp.down_proj.weight"
    description[key] = "W4A8_DYNAMIC"
    (model / "quant_model_description.json").write_text(json.dumps(description))
    error = start_error(
        model,
        env=testbed_env(ASCEND_USE_FIA="1"),
        attention_backend="torch_native",
        dtype="bfloat16",
        quantization="modelslim",
    )
    assert error is not None, "started with a scheme whose kernels exist only on an NPU"
    assert f"names scheme 'W4A8_DYNAMIC' ({key})" in error, error[-3000:]
    assert "the plugin implements W8A8_DYNAMIC, FLOAT off an NPU" in error
