"""Workloads and checks shared by the FIA-backend engine tests (and ``make demo``).

Every workload is a list of token-id prompts generated greedily; the FIA backend's tokens must
equal HF transformers' and stock sglang ``torch_native``'s for each prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testbed.engine import EngineProcess, testbed_env
from testbed.models import encode_prompts, token_stream
from testbed.oracle import hf_greedy

NEW_TOKENS = 32
PAGE_SIZE = 128  # the smallest page size FIA accepts for MHA/GQA prompts
CHUNK = 256  # chunked_prefill_size: a multiple of the page size, with room for decode rows

# Shared by the plugin and the torch_native engine, so only the backend differs.
ENGINE_ARGS: dict[str, Any] = {
    "page_size": PAGE_SIZE,
    "chunked_prefill_size": CHUNK,
    "enable_mixed_chunk": True,  # a chunked prefill rides along with running decodes
    "max_running_requests": 16,
}


def workloads(model_dir: Path) -> dict[str, list[list[int]]]:
    """Named prompt sets; run in this order (``prefix-hits`` needs ``prefix-seed`` cached)."""
    prompts = encode_prompts(model_dir)
    shared = token_stream(model_dir, 2 * PAGE_SIZE + 40, offset=3)  # two full pages + change
    suffixes = [token_stream(model_dir, 5 + 3 * i, offset=50 + 17 * i) for i in range(6)]
    return {
        "parity": prompts,
        # Seeds the radix cache with the shared prefix (whole pages are what it caches).
        "prefix-seed": [shared + suffixes[0]],
        "prefix-hits": [shared + s for s in suffixes[1:4]],
        # Longer than chunked_prefill_size: prefilled in three chunks, each attending the last.
        "chunked": [token_stream(model_dir, 2 * CHUNK + 60, offset=11)],
        # One batch mixing a fresh chunked prompt, radix hits and short prompts.
        "mixed": [
            token_stream(model_dir, 2 * CHUNK + 30, offset=29),
            shared + suffixes[4],
            prompts[0],
            shared + suffixes[5],
            prompts[3],
        ],
    }


def read_launch_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fia_launches_per_layer(records: list[dict[str, Any]]) -> set[float]:
    """Distinct FIA launches per layer over every logged forward (ideally exactly ``{1.0}``)."""
    return {r["launches"].get("fused_infer_attention_score", 0) / r["num_layers"] for r in records}


def run_workloads(
    model: Path, prompts: dict[str, list[list[int]]], launch_log: Path
) -> dict[str, Any]:
    """Every workload, in order, through the plugin engine, the torch_native engine and HF."""
    runs: dict[str, Any] = {"fia": {}, "torch_native": {}, "meta": {}}
    fia_env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(launch_log))
    with EngineProcess(model, env=fia_env, attention_backend="ascend", **ENGINE_ARGS) as engine:
        for name, batch in prompts.items():
            out = engine.generate(batch, NEW_TOKENS)
            runs["fia"][name] = out["output_ids"]
            runs["meta"][name] = out["meta"]
    native_env = testbed_env(ASCEND_USE_FIA=None)
    with EngineProcess(
        model, env=native_env, attention_backend="torch_native", **ENGINE_ARGS
    ) as engine:
        for name, batch in prompts.items():
            runs["torch_native"][name] = engine.generate(batch, NEW_TOKENS)["output_ids"]
    runs["hf"] = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in prompts.items()}
    runs["launches"] = read_launch_log(launch_log)
    return runs


def assert_tokens_match(runs: dict[str, Any], workload: str) -> None:
    """The FIA backend's tokens for ``workload`` equal HF's and stock torch_native's."""
    fia = runs["fia"][workload]
    assert fia == runs["hf"][workload], f"{workload}: FIA backend differs from HF"
    assert fia == runs["torch_native"][workload], f"{workload}: FIA differs from torch_native"
    assert all(len(ids) == NEW_TOKENS for ids in fia)
