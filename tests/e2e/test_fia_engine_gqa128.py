"""The FIA backend at a real model's attention shape: head_dim 128, GQA 7:1 (14 q / 2 kv heads,
Qwen2.5-7B's ratio per TP-2 rank), two layers, through a real ``sglang.Engine`` on CPU.

sglang 0.5.23 on CPU ignores ``config.head_dim`` for Qwen2 (``configs/update_config.py:232-236``
stamps ``original_num_attention_heads``, and ``models/qwen2.py:275-276`` then derives
``hidden_size // heads``), so the hidden size is 14 * 128 to get head_dim 128.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testbed.models import build_qwen2

from e2e.fia_common import (
    PAGE_SIZE,
    assert_tokens_match,
    fia_launches_per_layer,
    run_workloads,
    workloads,
)

pytestmark = pytest.mark.engine

Q_HEADS, KV_HEADS, HEAD_DIM = 14, 2, 128
WORKLOADS = ("parity", "prefix-seed", "prefix-hits")


@pytest.fixture(scope="module")
def qwen2_gqa() -> Path:
    return build_qwen2(
        hidden_size=Q_HEADS * HEAD_DIM,
        num_attention_heads=Q_HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=256,
        num_hidden_layers=2,
    )


@pytest.fixture(scope="module")
def runs(qwen2_gqa: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    prompts = {name: batch for name, batch in workloads(qwen2_gqa).items() if name in WORKLOADS}
    return run_workloads(qwen2_gqa, prompts, tmp_path_factory.mktemp("gqa") / "launches.jsonl")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_tokens_match_hf_and_torch_native(runs: dict[str, Any], workload: str) -> None:
    assert_tokens_match(runs, workload)


def test_engine_served_head_dim_128_gqa_7_on_fia(runs: dict[str, Any]) -> None:
    """What the engine built from the checkpoint, read from its own layers in every forward."""
    served = {json.dumps(r["served_by"]["attention"]) for r in runs["launches"]}
    assert served == {
        json.dumps({"q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": 128, "v_head_dim": 128})
    }
    assert {r["served_by"]["attn_backend"] for r in runs["launches"]} == {"AscendFIABackend"}
    outputs = runs["fia"]["parity"]
    assert len(outputs) >= 8 and len({tuple(ids) for ids in outputs}) >= 6, outputs


def test_prefix_hits_and_one_launch_per_layer(runs: dict[str, Any]) -> None:
    hits = [m["cached_tokens"] for m in runs["meta"]["prefix-hits"]]
    assert all(h >= 2 * PAGE_SIZE for h in hits), hits
    assert fia_launches_per_layer(runs["launches"]) == {1.0}
