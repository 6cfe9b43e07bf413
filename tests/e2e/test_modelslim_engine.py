"""msModelSlim W8A8 (``--quantization modelslim``) end to end in ``sglang.Engine``.

The tiny DeepSeek-V2-Lite-style MoE of ``test_w8a8_engine`` is converted by the plugin's
converter, ``quantize-w8a8 --format modelslim``: per layer ``weight`` int8 ``[out, in]``,
``weight_scale`` and ``weight_offset`` (the names ``ModelSlimW8A8Int8.create_weights`` and
``ModelSlimW8A8Int8MoE.create_weights`` register), ``quant_model_description.json`` naming each
weight's scheme, no ``quantization_config``. Two descriptions are served: every layer
``W8A8_DYNAMIC``, and the mix msModelSlim writes for DeepSeek, attention ``W8A8`` static
(calibrated ``input_scale`` / ``input_offset``, ``deq_scale``, ``quant_bias``) with MLP, shared
and routed experts ``W8A8_DYNAMIC``. Stock sglang cannot build this model off an NPU (its W8A8
MoE scheme resolves ``torch.ops.npu.npu_dynamic_quant`` in its constructor, its fused layers find
no scheme without the NPU-only packed-module map, and its static layout moves scales to
``"npu"``); with the plugin it loads and runs, each layer on its own scheme's ops: dynamic
``dynamic_quant`` -> ``quant_matmul``, static ``quantize`` -> ``quant_matmul``, every MoE layer on
the int8 chain. The oracle is HF fp32 on the dequantised checkpoint, teacher-forced, with
``test_w8a8_engine``'s bounds (static activations are quantised per tensor, not per token).
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


# msModelSlim's DeepSeek W8A8 mix: attention projections static, MLP and experts dynamic.
STATIC_ATTENTION = ("model.layers.*.self_attn.*",)
# Per layer: q_a (fused with kv_a), q_b and o_proj in attention; the MLP's or shared experts'
# gate_up and down (kv_b_proj is absorbed into w_kc / w_vc and not run as a linear layer).
ATTENTION_LINEARS, MLP_LINEARS = 3, 2


@pytest.mark.parametrize("static", [(), STATIC_ATTENTION], ids=["dynamic", "static-attention"])
def test_modelslim_w8a8_deepseek_tracks_the_dequantised_model(
    tmp_path: Path, static: tuple[str, ...]
) -> None:
    src = build_deepseek_v2_lite_moe()
    model, dequantised = build_w8a8_pair(src, fmt="modelslim", static=static)
    config = json.loads((model / "config.json").read_text())
    assert "quantization_config" not in config
    description = json.loads((model / "quant_model_description.json").read_text())
    schemes = {v for k, v in description.items() if k.endswith("self_attn.o_proj.weight")}
    assert schemes == {"W8A8" if static else "W8A8_DYNAMIC"}, schemes
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

    static_linears = ATTENTION_LINEARS * layers if static else 0
    dense_linears = (ATTENTION_LINEARS + MLP_LINEARS) * layers
    records = [json.loads(line) for line in forwards.read_text().splitlines() if line.strip()]
    assert {r["mode"] for r in records} >= {"EXTEND", "DECODE"}
    for record in records:
        launches = record["launches"]
        assert launches.get("quantize", 0) == static_linears, launches
        assert launches.get("dynamic_quant") == dense_linears - static_linears, launches
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
    converted, _ = build_w8a8_pair(build_deepseek_v2_lite_moe(), fmt="modelslim")
    model = tmp_path / "modelslim"
    shutil.copytree(converted, model)
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
    assert "the plugin implements W8A8_DYNAMIC, W8A8, FLOAT off an NPU" in error
