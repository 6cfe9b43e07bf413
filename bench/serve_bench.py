"""Serving throughput of the tiny Qwen2 through the real ``sglang.launch_server`` and the
``openai`` client: the plugin against stock ``torch_native``, side by side in one run.

The ``make test`` load (``tests/e2e/test_serve_load.py``) at full size: 256 requests, 32 at a
time, chat and completion, streaming and not, shared prefixes, chunked prompts, long answers,
a 24-page KV pool under pressure (``testbed.load.LOAD_SERVER_ARGS``). Throughput is completion
tokens per wall second of the whole load, best of ``ROUNDS`` alternating rounds. Also written:
the errors (must be 0), the requests sglang retracted, and how many plugin answers differ from
the same request sent alone (must be 0) and from stock's.
"""

from __future__ import annotations

from typing import Any

from testbed.load_vs_stock import compare_with_stock
from testbed.models import build_qwen2

REQUESTS = 256
CONCURRENCY = 32
ROUNDS = 2


def run() -> dict[str, Any]:
    result = compare_with_stock(
        build_qwen2(),
        requests=REQUESTS,
        concurrency=CONCURRENCY,
        rounds=ROUNDS,
        one_at_a_time=True,
    )
    for line in (result.plugin.problems + result.stock.problems)[:10]:
        print(f"[bench.serve_bench] {line}", flush=True)
    return {
        "serve": {
            "qwen2_requests": result.requests,
            "qwen2_concurrency": result.concurrency,
            "qwen2_errors": result.errors,
            "qwen2_tok_s_fia": result.plugin.tokens_per_s,
            "qwen2_tok_s_torch_native": result.stock.tokens_per_s,
            "qwen2_throughput_ratio": result.throughput_ratio,
            "qwen2_retracted_requests_fia": result.plugin.retracted,
            "qwen2_differ_from_one_at_a_time": result.differ_from_one_at_a_time,
            "qwen2_differ_from_stock": result.differ_from_stock,
        }
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
