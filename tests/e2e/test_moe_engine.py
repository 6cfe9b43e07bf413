"""DeepSeek MoE through the NPU MoE op chain (issue 11), end to end in ``sglang.Engine``.

With ``ASCEND_USE_FIA=1`` every MoE layer's routed experts run gating top-k ->
``moe_init_routing_v2`` -> ``grouped_matmul`` (w13) -> ``swiglu`` -> ``grouped_matmul`` (w2) ->
``moe_finalize_routing`` through ``ops``; the greedy tokens must equal HF transformers' fp32
ones. Attention is sglang's own ``torch_native`` (the test bed registers its DeepSeek handler),
so only the MoE is ours. One engine per model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_deepseek_v2_lite_moe, build_deepseek_v3_moe, encode_prompts
from testbed.oracle import hf_greedy

pytestmark = pytest.mark.engine

NEW_TOKENS = 32
NUM_PROMPTS = 8
ROUTED_CHAIN = ("moe_init_routing_v2", "swiglu", "moe_finalize_routing")


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run(model: Path, tmp_path: Path, gating_op: str) -> None:
    config = json.loads((model / "config.json").read_text())
    moe_layers = config["num_hidden_layers"] - config["first_k_dense_replace"]
    prompts = encode_prompts(model)[:NUM_PROMPTS]
    assert len(prompts) == NUM_PROMPTS and len(set(map(tuple, prompts))) == NUM_PROMPTS
    expected = hf_greedy(model, prompts, NEW_TOKENS)

    forwards = tmp_path / "forwards.jsonl"
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(forwards))
    with EngineProcess(model, env=env, attention_backend="torch_native") as engine:
        out = engine.generate(prompts, NEW_TOKENS)
    assert out["output_ids"] == expected

    records = _records(forwards)
    assert {r["mode"] for r in records} >= {"EXTEND", "DECODE"}
    for record in records:
        mlps = [layer["mlp"] for layer in record["served_by"]["layers"]]
        assert mlps.count("DeepseekV2MoE") == moe_layers, mlps
        launches = record["launches"]
        # Exactly one launch of each chain op per MoE layer per forward, two grouped matmuls.
        for op in (gating_op, *ROUTED_CHAIN):
            assert launches.get(op) == moe_layers, (op, launches)
        assert launches.get("grouped_matmul") == 2 * moe_layers, launches


def test_v2_lite_style_softmax_moe_matches_hf(tmp_path: Path) -> None:
    """Softmax gating over 16 experts, top-4, 2 shared experts. sglang builds DeepSeek-V2's
    TopK as grouped (n_group=1), so the gating op is ``moe_gating_top_k`` with norm_type 0."""
    _run(build_deepseek_v2_lite_moe(), tmp_path, "moe_gating_top_k")


def test_v3_style_sigmoid_grouped_moe_matches_hf(tmp_path: Path) -> None:
    """Sigmoid, 4 groups keep 2, nonzero correction bias, norm_topk_prob, scaling 2.5."""
    _run(build_deepseek_v3_moe(), tmp_path, "moe_gating_top_k")
