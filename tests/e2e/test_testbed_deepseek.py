"""The DeepSeek-V2 test bed is sound: stock sglang (toggle off, ``torch_native``) serves the tiny
MLA + MoE model with HF transformers' fp32 greedy tokens.

This is the oracle every DeepSeek comparison leans on, so it is proved on its own: the tokens
match HF for several prompts, and the scheduler's own objects show that sglang ran MLA
attention over the latent KV cache and a real MoE block on layer 1 (not a dense fallback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_deepseek_v2, encode_prompts
from testbed.oracle import hf_greedy

pytestmark = pytest.mark.engine

NEW_TOKENS = 16
NUM_PROMPTS = 8


@pytest.fixture(scope="module")
def deepseek() -> Path:
    return build_deepseek_v2()


@pytest.fixture(scope="module")
def prompts(deepseek: Path) -> list[list[int]]:
    return encode_prompts(deepseek)[:NUM_PROMPTS]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_model_is_mla_with_moe_on_layer_one(deepseek: Path) -> None:
    """The checkpoint itself, read independently of sglang: MLA ranks, and MoE from layer 1."""
    config = json.loads((deepseek / "config.json").read_text())
    assert config["model_type"] == "deepseek_v2"
    assert config["kv_lora_rank"] > 0 and config["qk_rope_head_dim"] > 0
    assert config["first_k_dense_replace"] == 1 and config["num_hidden_layers"] == 2
    assert config["n_routed_experts"] > config["num_experts_per_tok"] >= 2


def test_stock_torch_native_matches_hf(
    deepseek: Path, prompts: list[list[int]], tmp_path: Path
) -> None:
    assert len(prompts) >= 4 and len(set(map(tuple, prompts))) == len(prompts)
    expected = hf_greedy(deepseek, prompts, NEW_TOKENS)

    forwards = tmp_path / "forwards.jsonl"
    processes = tmp_path / "processes.jsonl"
    env = testbed_env(
        ASCEND_USE_FIA=None,
        FIA_LAUNCH_LOG=str(forwards),
        FIA_TESTBED_PROCESS_LOG=str(processes),
    )
    with EngineProcess(deepseek, env=env, attention_backend="torch_native") as engine:
        out = engine.generate(prompts, NEW_TOKENS)

    assert [len(t) for t in out["output_ids"]] == [NEW_TOKENS] * len(prompts)
    assert out["output_ids"] == expected

    # Stock sglang: the plugin was loaded but inactive in every process, and launched nothing.
    assert not any(r["active"] for r in _records(processes))
    records = _records(forwards)
    assert {r["mode"] for r in records} >= {"EXTEND", "DECODE"}
    assert not any(r["launches"] for r in records)
    # What served every forward: DeepSeek-V2 with MLA attention on the latent KV cache, a dense
    # MLP on layer 0 and an MoE block on layer 1.
    served = {json.dumps(r["served_by"], sort_keys=True) for r in records}
    assert len(served) == 1, served
    assert json.loads(served.pop()) == {
        "model": "DeepseekV2ForCausalLM",
        "use_mla_backend": True,
        "attn_backend": "TorchNativeAttnBackend",
        "kv_pool": "MLATokenToKVPool",
        # Absorbed MLA: keys are kv_lora_rank 32 + qk_rope_head_dim 16, values the 32-wide
        # latent, one KV head shared by the 4 query heads.
        "attention": {"head_dim": 48, "kv_heads": 1, "q_heads": 4, "v_head_dim": 32},
        "layers": [
            {"attn": "DeepseekV2AttentionMLA", "mlp": "DeepseekV2MLP"},
            {"attn": "DeepseekV2AttentionMLA", "mlp": "DeepseekV2MoE"},
        ],
    }
