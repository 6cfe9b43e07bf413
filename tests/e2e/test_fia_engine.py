"""The FIA backend through a real ``sglang.Engine`` on CPU: tiny Qwen2, fp32, page size 128.

One engine with the plugin active (``ASCEND_USE_FIA=1``, ``--attention-backend ascend``) and one
stock ``torch_native`` engine, started once for the module with the same arguments (chunked
prefill 256, mixed chunks on), run the same workloads; HF transformers is the independent oracle.
A test-only probe logs ``ops.launch_counts()`` per forward inside the plugin engine's scheduler.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from e2e.fia_common import (
    CHUNK,
    PAGE_SIZE,
    assert_tokens_match,
    fia_launches_per_layer,
    run_workloads,
    workloads,
)

pytestmark = pytest.mark.engine

WORKLOADS = ("parity", "prefix-seed", "prefix-hits", "chunked", "mixed")


@pytest.fixture(scope="module")
def prompts(qwen2: Path) -> dict[str, list[list[int]]]:
    return workloads(qwen2)


@pytest.fixture(scope="module")
def runs(
    qwen2: Path, prompts: dict[str, list[list[int]]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_workloads(qwen2, prompts, tmp_path_factory.mktemp("fia") / "launches.jsonl")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_tokens_match_hf_and_torch_native(runs: dict[str, Any], workload: str) -> None:
    assert_tokens_match(runs, workload)


def test_parity_outputs_are_many_and_distinct(runs: dict[str, Any]) -> None:
    """Parity proves little if the model says the same thing whatever the prompt."""
    outputs = runs["fia"]["parity"]
    assert len(outputs) >= 8
    assert len({tuple(ids) for ids in outputs}) >= 6, outputs


def test_prefix_workloads_hit_the_radix_cache(runs: dict[str, Any]) -> None:
    """The prefix prompts really were served from cached pages (so the prefix was attended
    from the paged cache, not recomputed)."""
    hits = [m["cached_tokens"] for m in runs["meta"]["prefix-hits"]]
    assert all(h >= 2 * PAGE_SIZE for h in hits), hits
    mixed = [m["cached_tokens"] for m in runs["meta"]["mixed"]]
    assert mixed[1] >= 2 * PAGE_SIZE and mixed[3] >= 2 * PAGE_SIZE, mixed
    assert mixed[0] == 0, "the long prompt of the mixed batch must be a fresh chunked prefill"
    # The long prompts really were cut into chunks: the scheduler ran full-chunk forwards, two
    # for each of the two long prompts at least.
    full_chunks = [r for r in runs["launches"] if r["num_tokens"] >= CHUNK]
    assert len(full_chunks) >= 4, [r["num_tokens"] for r in runs["launches"]]


def test_one_fia_launch_per_layer_per_forward(runs: dict[str, Any]) -> None:
    records = runs["launches"]
    assert records, "the launch probe logged no forward"
    assert fia_launches_per_layer(records) == {1.0}, [
        r for r in records if r["launches"].get("fused_infer_attention_score") != r["num_layers"]
    ][:5]
    # Every shape sglang sent: prefill, chunked prefill mixed with decodes, decode, at many
    # batch sizes; one launch per layer each time.
    modes = Counter(r["mode"] for r in records)
    assert {"EXTEND", "MIXED", "DECODE"} <= set(modes), modes
    decode_batches = {r["batch_size"] for r in records if r["mode"] == "DECODE"}
    assert max(decode_batches) >= 8 and len(decode_batches) >= 3, decode_batches
