"""The plugin against sglang 0.5.23's in-tree Ascend backend, measured in the same run.

Upstream runs on the test-only torch_npu stand-in (``tests/support/npu_standin``), the plugin
turned off through ``SGLANG_PLUGINS``; see ``tests/support/side_by_side.py``.

- ``e2e.qwen2_decode_ratio_vs_upstream_b{1,32}``: end-to-end decode tokens/s of the tiny Qwen2
  through ``sglang.Engine``, plugin divided by upstream's FIA mode (``ASCEND_USE_FIA=1``). Both
  engines stay up and the rounds alternate; best of ``ROUNDS``. Both FIA paths compute on the
  same ``ops`` references, so the ratio reflects the host work around them on this CPU.
- ``host.decode_us_per_layer_b{1,64}`` (plugin) and ``host.upstream_decode_us_per_layer_b{1,64}``
  (upstream FIA mode): host microseconds per layer per decode step of the attention backend
  alone, with zero-cost kernels that return preallocated outputs, on a 28-layer head-dim-128
  model (Qwen2.5-7B's depth and head dim). Only Python host work is timed: for the plugin its
  backend, its ``ops`` dispatch and the validator; for upstream its backend.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from side_by_side import path_env
from testbed.engine import EngineProcess
from testbed.models import build_qwen2

NEW_TOKENS = 128
BATCHES = (1, 32)
HOST_BATCHES = (1, 64)
ROUNDS = 3
ENGINE_ARGS: dict[str, Any] = {
    "page_size": 128,
    "chunked_prefill_size": 4096,
    "max_running_requests": 32,
    "max_total_tokens": 16384,
}
ENGINE_PATHS = ("plugin", "upstream-fia")


def _prompts(batch: int) -> list[list[int]]:
    # Distinct short prompts (ids below the tiny vocab), so no radix-cache sharing.
    return [[(13 * b + 7 * i) % 500 + 4 for i in range(16)] for b in range(batch)]


def decode_throughput(model: Path, logs: Path) -> dict[str, dict[int, float]]:
    """Generated tokens per second per path and batch size, best of ROUNDS alternating rounds."""
    figures: dict[str, dict[int, float]] = {path: {} for path in ENGINE_PATHS}
    engines = {
        path: EngineProcess(
            model,
            env=path_env(path, logs / f"{path}.jsonl", NPU_STANDIN_LOG=None),
            attention_backend="ascend",
            **ENGINE_ARGS,
        )
        for path in ENGINE_PATHS
    }
    try:
        for engine in engines.values():
            engine.generate(_prompts(2), 8)  # warm-up
        for batch in BATCHES:
            for _ in range(ROUNDS):
                for path, engine in engines.items():
                    out = engine.generate(_prompts(batch), NEW_TOKENS)
                    generated = sum(len(ids) for ids in out["output_ids"])
                    if generated != batch * NEW_TOKENS:
                        raise RuntimeError(f"{path}: {generated} tokens, not {batch * NEW_TOKENS}")
                    rate = generated / out["elapsed_s"]
                    figures[path][batch] = max(figures[path].get(batch, 0.0), rate)
    finally:
        for engine in engines.values():
            engine.close()
    return figures


def host_us_per_layer() -> dict[str, dict[str, float]]:
    import side_by_side_runner

    model = build_qwen2(
        hidden_size=256, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=28
    )
    args = {
        "scenario": "host_us",
        "model_path": str(model),
        "attention_backend": "ascend",
        "batch_sizes": list(HOST_BATCHES),
        "max_running_requests": max(HOST_BATCHES),
        # Room for every batch's pages (sglang's one-batch driver keeps the radix cache between
        # batches; 9216 tokens ran out at batch 64) while a 28-layer pool stays under 600 MB.
        "max_total_tokens": 20000,
    }
    return {
        path: side_by_side_runner.run(path, args, NPU_STANDIN_ZERO_COST="1")["decode_us_per_layer"]
        for path in ENGINE_PATHS
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        throughput = decode_throughput(build_qwen2(), Path(tmp))
    e2e: dict[str, Any] = {}
    for batch in BATCHES:
        plugin, upstream = throughput["plugin"][batch], throughput["upstream-fia"][batch]
        e2e[f"qwen2_decode_tok_s_upstream_fia_b{batch}"] = upstream
        e2e[f"qwen2_decode_ratio_vs_upstream_b{batch}"] = plugin / upstream
    host_us = host_us_per_layer()
    host: dict[str, Any] = {}
    for batch in HOST_BATCHES:
        host[f"decode_us_per_layer_b{batch}"] = host_us["plugin"][str(batch)]
        host[f"upstream_decode_us_per_layer_b{batch}"] = host_us["upstream-fia"][str(batch)]
    return {"e2e": e2e, "host": host}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
