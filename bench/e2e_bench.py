"""End-to-end decode throughput of the tiny Qwen2 on CPU: the FIA plugin against stock sglang.

Both engines run side by side in child processes of this one, with identical engine arguments
except the attention backend: ``ascend`` with ``ASCEND_USE_FIA=1`` (the plugin's FIA
backend on the reference ops) and stock ``torch_native``. Each measurement is greedy generation
of ``NEW_TOKENS`` tokens with ``ignore_eos``; decode throughput is generated tokens per second
of the generate call, best of ``ROUNDS`` alternating rounds (the prefill of 16-token prompts is a
small part of it).

Also measured, in a single-process ``ModelRunner``: the host time of the FIA backend's
``init_forward_metadata`` per decode step at batch 1, 64 and 256.
"""

from __future__ import annotations

from typing import Any

from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_qwen2

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


def _prompts(batch: int) -> list[list[int]]:
    # Distinct short prompts (ids below the tiny vocab), so no radix-cache sharing.
    return [[(11 * b + 5 * i) % 500 + 4 for i in range(16)] for b in range(batch)]


def _decode_throughput(model: str) -> dict[str, dict[int, float]]:
    """Generated tokens per second per backend and batch size, best of ROUNDS.

    Both engines stay up and the rounds alternate between them, so background load on a shared
    machine hits both alike instead of skewing the ratio.
    """
    figures: dict[str, dict[int, float]] = {"fia": {}, "torch_native": {}}
    with (
        EngineProcess(
            model, env=testbed_env(ASCEND_USE_FIA="1"), attention_backend="ascend", **ENGINE_ARGS
        ) as fia,
        EngineProcess(
            model,
            env=testbed_env(ASCEND_USE_FIA=None),
            attention_backend="torch_native",
            **ENGINE_ARGS,
        ) as native,
    ):
        engines = {"fia": fia, "torch_native": native}
        for engine in engines.values():
            engine.generate(_prompts(2), 8)  # warm-up
        for batch in BATCHES:
            for _ in range(ROUNDS):
                for name, engine in engines.items():
                    out = engine.generate(_prompts(batch), NEW_TOKENS)
                    generated = sum(len(ids) for ids in out["output_ids"])
                    assert generated == batch * NEW_TOKENS, generated
                    rate = generated / out["elapsed_s"]
                    figures[name][batch] = max(figures[name].get(batch, 0.0), rate)
    return figures


def run() -> dict[str, Any]:
    import fia_runner

    model = str(build_qwen2())
    figures = _decode_throughput(model)
    fia, native = figures["fia"], figures["torch_native"]
    e2e: dict[str, Any] = {}
    for batch in BATCHES:
        e2e[f"qwen2_decode_tok_s_fia_b{batch}"] = fia[batch]
        e2e[f"qwen2_decode_tok_s_torch_native_b{batch}"] = native[batch]
        e2e[f"qwen2_decode_ratio_b{batch}"] = fia[batch] / native[batch]
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
