"""The tiny DeepSeek-V3-style model on the FIA MLA path through a real ``sglang.Engine``.

V3's attention features on this path: q_lora (``q_a_proj -> q_a_layernorm -> q_b_proj``), 32
query heads, kv_lora 512 / rope 64, and yarn rope scaling with V3's factor 40 and mscale 1.0
(rope cos/sin and the softmax scale both carry it). 8 prompts x 32 tokens, then a batch mixing a
fresh chunked prompt, radix hits on a cached prefix and short prompts; HF is the oracle. MoE runs
stock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testbed.models import build_deepseek_v3_style

from e2e.fia_common import NEW_TOKENS, PAGE_SIZE, workloads
from e2e.mla_common import fia_launches_per_layer, run_fia_and_hf, served_by

pytestmark = pytest.mark.engine

WORKLOADS = ("parity", "prefix-seed", "mixed")


@pytest.fixture(scope="module")
def model() -> Path:
    return build_deepseek_v3_style()


@pytest.fixture(scope="module")
def runs(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    prompts = {name: batch for name, batch in workloads(model).items() if name in WORKLOADS}
    return run_fia_and_hf(model, prompts, tmp_path_factory.mktemp("mla-v3") / "launches.jsonl")


def test_model_has_the_v3_attention_features(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    assert config["q_lora_rank"] and config["num_attention_heads"] >= 32
    assert (config["kv_lora_rank"], config["qk_rope_head_dim"]) == (512, 64)
    scaling = config.get("rope_scaling") or config["rope_parameters"]
    assert scaling["rope_type"] == "yarn" and scaling["factor"] == 40.0
    assert scaling["mscale"] == scaling["mscale_all_dim"] == 1.0


@pytest.mark.parametrize("workload", WORKLOADS)
def test_tokens_match_hf(runs: dict[str, Any], workload: str) -> None:
    fia = runs["fia"][workload]
    assert fia == runs["hf"][workload], f"{workload}: FIA MLA differs from HF"
    assert all(len(ids) == NEW_TOKENS for ids in fia)
    assert len(runs["fia"]["parity"]) >= 8


def test_mixed_batch_hit_the_radix_cache(runs: dict[str, Any]) -> None:
    cached = [m["cached_tokens"] for m in runs["meta"]["mixed"]]
    assert cached[0] == 0 and cached[1] >= 2 * PAGE_SIZE and cached[3] >= 2 * PAGE_SIZE, cached


def test_fia_mla_served_with_one_launch_per_layer(runs: dict[str, Any]) -> None:
    records = runs["launches"]
    (record,) = (json.loads(s) for s in served_by(records))
    assert (record["attn_backend"], record["kv_pool"]) == (
        "AscendFIAMLABackend",
        "FIAMLATokenToKVPool",
    )
    by_mode = fia_launches_per_layer(records)
    assert by_mode and all(per_layer == {1.0} for per_layer in by_mode.values()), by_mode
    assert {r["mode"] for r in records} >= {"EXTEND", "DECODE"}
