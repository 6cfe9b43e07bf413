"""End-to-end decode throughput of the tiny Qwen2 on CPU: the FIA plugin against stock sglang.

``bench.decode_driver`` runs both engines side by side: greedy generation of ``NEW_TOKENS``
tokens, best of ``ROUNDS`` alternating rounds (the prefill of 16-token prompts is a small part
of it).

Also measured, in a single-process ``ModelRunner``: the host time of the FIA backend's
``init_forward_metadata`` per decode step at batch 1, 64 and 256.
"""

from __future__ import annotations

from typing import Any

from testbed.engine import testbed_env
from testbed.models import build_qwen2

from bench.decode_driver import decode_throughput, ratio_figures

NEW_TOKENS = 128
BATCHES = (1, 32)
ROUNDS = 3
METADATA_BATCHES = (1, 64, 256)

ENGINE_ARGS: dict[str, Any] = {
    "page_size": 128,
    "chunked_prefill_size": 4096,
    "max_running_requests": 32,
    "max_total_tokens": 16384,
}


def run() -> dict[str, Any]:
    import fia_runner

    model = str(build_qwen2())
    figures = decode_throughput(model, ENGINE_ARGS, BATCHES, NEW_TOKENS, ROUNDS, stride=11)
    e2e: dict[str, Any] = ratio_figures("qwen2", figures)
    metadata = fia_runner.run(
        {
            "scenario": "metadata",
            "model_path": model,
            "attention_backend": "ascend",
            "batch_sizes": list(METADATA_BATCHES),
            "max_running_requests": max(METADATA_BATCHES),
            "max_total_tokens": 65536,
        },
        env=testbed_env(ASCEND_USE_FIA="1"),
    )
    for batch, micros in metadata["init_forward_metadata_us"].items():
        e2e[f"init_forward_metadata_us_b{batch}"] = micros
    return {"e2e": e2e}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
