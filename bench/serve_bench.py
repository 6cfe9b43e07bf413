"""Serving throughput of the tiny Qwen2 through the real ``sglang.launch_server`` and the
``openai`` client: the plugin against stock ``torch_native``, side by side in one run.

The ``make test`` load (``tests/e2e/test_serve_load.py``) at full size: 256 requests, 32 at a
time, chat and completion, streaming and not, shared prefixes, chunked prompts, a 24-page KV
pool (``testbed.load.LOAD_SERVER_ARGS`` and ``LOAD_SERVER_ENV``, the same for both servers).
Throughput is completion tokens per wall second of the whole load, best of ``ROUNDS``
alternating rounds. Also written: the errors (must be 0), the requests sglang retracted, and how
many plugin answers differ from the same request sent alone (must be 0) and from stock's.

The tiny DeepSeek-V2-Lite-style model (real 512/64 MLA dims, a dense and a MoE layer: the FIA MLA
backend and the NPU MoE chain on the reference ops) runs the first ``DSV2_REQUESTS`` of the same
load, one round, under ``serve.dsv2_*``. The tiny DeepSeek-V3-style model (32 heads, q_lora, the
V3 router) runs ``DSV3_TP2_REQUESTS`` of it at ``--tp-size 2`` on both servers (one core per
rank, gloo), alternating best of ``ROUNDS``, under ``serve.dsv3_tp2_*``: stock there is sglang's
own torch_native attention and MoE at the same TP.
"""

from __future__ import annotations

from typing import Any

from testbed.load_vs_stock import LoadComparison, compare_with_stock
from testbed.models import build_deepseek_v2_lite, build_deepseek_v3_style_moe, build_qwen2

REQUESTS = 256
CONCURRENCY = 32
ROUNDS = 2
# The MLA model decodes ~10x slower on the reference ops here: 256 requests took 11 minutes.
DSV2_REQUESTS = 128
DSV3_TP2_REQUESTS = 64


def _figures(name: str, result: LoadComparison) -> dict[str, Any]:
    for line in (result.plugin.problems + result.stock.problems)[:10]:
        print(f"[bench.serve_bench] {name}: {line}", flush=True)
    return {
        f"{name}_requests": result.requests,
        f"{name}_concurrency": result.concurrency,
        f"{name}_errors": result.errors,
        f"{name}_tok_s_fia": result.plugin.tokens_per_s,
        f"{name}_tok_s_torch_native": result.stock.tokens_per_s,
        f"{name}_throughput_ratio": result.throughput_ratio,
        f"{name}_retracted_requests_fia": result.plugin.retracted,
        f"{name}_differ_from_one_at_a_time": result.differ_from_one_at_a_time,
        f"{name}_differ_from_stock": result.differ_from_stock,
    }


def run() -> dict[str, Any]:
    qwen2 = compare_with_stock(
        build_qwen2(),
        requests=REQUESTS,
        concurrency=CONCURRENCY,
        rounds=ROUNDS,
        one_at_a_time=True,
    )
    dsv2 = compare_with_stock(
        build_deepseek_v2_lite(),
        requests=DSV2_REQUESTS,
        concurrency=CONCURRENCY,
        rounds=1,
        one_at_a_time=False,
    )
    dsv3_tp2 = compare_with_stock(
        build_deepseek_v3_style_moe(),
        requests=DSV3_TP2_REQUESTS,
        concurrency=16,
        rounds=ROUNDS,
        one_at_a_time=False,
        parallel={"tp_size": 2},
    )
    figures = {**_figures("qwen2", qwen2), **_figures("dsv2", dsv2)}
    return {"serve": {**figures, **_figures("dsv3_tp2", dsv3_tp2)}}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
