"""DeepSeek MLA attention on FIA through a real ``sglang.Engine`` on CPU, fp32, page size 128.

The tiny DeepSeek-V2-Lite-style model (no q_lora, 16 query heads, kv_lora 512, rope 64, nope
128, v 128; layer 0 dense, layer 1 MoE, which runs stock) serves every FIA workload with the
plugin active (``ASCEND_USE_FIA=1``, ``--attention-backend ascend``): 8 prompts x 32 tokens, a
radix-cached shared prefix (several requests decoding on the same prefix pages), a prompt longer
than ``chunked_prefill_size`` and a batch mixing all three. HF transformers is the oracle. A
test-only probe logs ``ops.launch_counts()`` per forward in the scheduler.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import EngineProcess, start_error, testbed_env
from testbed.models import build_deepseek_v2_lite

from e2e.fia_common import CHUNK, ENGINE_ARGS, NEW_TOKENS, PAGE_SIZE, workloads
from e2e.mla_common import (
    DECODE_FIA,
    PREFILL_FIA,
    fia_launches_per_layer,
    launches_per_layer,
    run_fia_and_hf,
    served_by,
)
from sglang_ascend_fia import ops

pytestmark = pytest.mark.engine

WORKLOADS = ("parity", "prefix-seed", "prefix-hits", "chunked", "mixed")


@pytest.fixture(scope="module")
def model() -> Path:
    return build_deepseek_v2_lite()


@pytest.fixture(scope="module")
def prompts(model: Path) -> dict[str, list[list[int]]]:
    return workloads(model)


@pytest.fixture(scope="module")
def runs(
    model: Path, prompts: dict[str, list[list[int]]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_fia_and_hf(model, prompts, tmp_path_factory.mktemp("mla") / "launches.jsonl")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_tokens_match_hf(runs: dict[str, Any], workload: str) -> None:
    fia = runs["fia"][workload]
    assert fia == runs["hf"][workload], f"{workload}: FIA MLA differs from HF"
    assert all(len(ids) == NEW_TOKENS for ids in fia)


def test_parity_outputs_are_many_and_distinct(runs: dict[str, Any]) -> None:
    """Parity proves little if the model says the same thing whatever the prompt."""
    outputs = runs["fia"]["parity"]
    assert len(outputs) >= 8
    assert len({tuple(ids) for ids in outputs}) >= 6, outputs


def test_prefix_workloads_hit_the_radix_cache(runs: dict[str, Any]) -> None:
    """The prefix prompts were served from cached pages, decoding together on them."""
    hits = [m["cached_tokens"] for m in runs["meta"]["prefix-hits"]]
    assert len(hits) >= 3 and all(h >= 2 * PAGE_SIZE for h in hits), hits
    mixed = [m["cached_tokens"] for m in runs["meta"]["mixed"]]
    assert mixed[1] >= 2 * PAGE_SIZE and mixed[3] >= 2 * PAGE_SIZE, mixed
    assert mixed[0] == 0, "the long prompt of the mixed batch must be a fresh chunked prefill"
    # The long prompts really were cut into chunks: the scheduler ran full-chunk forwards, two
    # for each of the two long prompts at least.
    full_chunks = [r for r in runs["launches"] if r["num_tokens"] >= CHUNK]
    assert len(full_chunks) >= 4, [r["num_tokens"] for r in runs["launches"]]


def test_served_by_the_fia_mla_backend_and_split_pool(runs: dict[str, Any]) -> None:
    served = served_by(runs["launches"])
    assert len(served) == 1, served
    record = json.loads(served.pop())
    assert record["attn_backend"] == "AscendFIAMLABackend"
    assert record["kv_pool"] == "FIAMLATokenToKVPool"
    # What the engine built from the checkpoint: V2-Lite's 16 heads attending the absorbed
    # 512-wide latent plus the 64-wide rope part through one KV head.
    assert record["attention"] == {"q_heads": 16, "kv_heads": 1, "head_dim": 576, "v_head_dim": 512}
    assert [layer["mlp"] for layer in record["layers"]] == ["DeepseekV2MLP", "DeepseekV2MoE"]


# The NPU MoE chain (sglang_ascend_fia/moe) runs on the model's MoE layers when the toggle is on.
MOE_OPS = {
    "moe_gating_top_k",
    "moe_gating_top_k_softmax",
    "moe_init_routing_v2",
    "grouped_matmul",
    "swiglu",
    "moe_finalize_routing",
}


def test_one_fia_launch_per_layer_in_every_forward(runs: dict[str, Any]) -> None:
    """Prefill (with or without a prefix, chunked, mixed; FIA v2) and decode (FIA v1): exactly
    one FIA launch per layer, and two cache writes (latent, rope) per layer; no other attention
    op of the facade (the MoE layers' NPU MoE chain, patched separately, may launch its own
    ops)."""
    records = runs["launches"]
    assert records, "the launch probe logged no forward"
    # Prefill on FIA v2, decode on v1: one launch of the mode's own op and one in all.
    by_mode = fia_launches_per_layer(records)
    assert by_mode and all(per_layer == {1.0} for per_layer in by_mode.values()), by_mode
    assert launches_per_layer(records, "scatter_nd_update_") == {2.0}
    assert {op for r in records for op in r["launches"]} - MOE_OPS == {
        PREFILL_FIA,
        DECODE_FIA,
        "scatter_nd_update_",
    }
    modes = Counter(r["mode"] for r in records)
    assert {"EXTEND", "DECODE"} <= set(modes), modes
    # The same counts at many batch sizes: independent of the batch.
    decode_batches = {r["batch_size"] for r in records if r["mode"] == "DECODE"}
    extend_batches = {r["batch_size"] for r in records if r["mode"] != "DECODE"}
    assert max(decode_batches) >= 8 and len(decode_batches) >= 3, decode_batches
    assert max(extend_batches) >= 5, extend_batches


def test_toggle_off_runs_deepseek_stock(
    model: Path, prompts: dict[str, list[list[int]]], runs: dict[str, Any]
) -> None:
    """ASCEND_USE_FIA=0: the plugin patches nothing; stock torch_native serves the model with
    sglang's single-buffer MLA pool, with HF's tokens."""
    batch = prompts["parity"]
    env = testbed_env(ASCEND_USE_FIA="0")
    with EngineProcess(model, env=env, attention_backend="torch_native", **ENGINE_ARGS) as engine:
        out = engine.generate(batch, NEW_TOKENS)
    assert out["output_ids"] == runs["hf"]["parity"]  # HF's tokens for this batch


def test_page_size_other_than_128_fails_startup(model: Path) -> None:
    legal = ops.legal_page_sizes(mla=True)
    assert legal == (128,)
    error = start_error(
        model,
        env=testbed_env(ASCEND_USE_FIA="1"),
        attention_backend="ascend",
        page_size=256,
        chunked_prefill_size=256,
    )
    assert error is not None, "page_size=256 started"
    assert "the 'ascend' attention backend cannot start" in error, error[-2000:]
    assert f"accepts page sizes {legal}" in error
