"""DeepSeek MoE layer throughput on CPU: the plugin's NPU op chain against stock sglang.

One ``DeepseekV2MoE`` layer, built in this process as ``DeepseekV2DecoderLayer`` builds it (the
test bed's V3-style router: sigmoid, 4 groups keep 2, correction bias, top-4 of 16 experts, one
shared expert, hidden 64), twice with the same weights: once with the plugin on (gating top-k ->
``moe_init_routing_v2`` -> ``grouped_matmul`` -> ``swiglu`` -> ``grouped_matmul`` ->
``moe_finalize_routing`` through ``ops``, here their references) and once with it off (sglang's
``moe_forward_native``: a Python loop over the experts that got tokens, with a host sync).

``moe.layer_ratio_b64``: plugin over stock layer throughput at batch 64 (stock seconds per call
divided by plugin seconds per call, so > 1 means the plugin's path is faster), the fastest of
interleaved runs of each side in the same run, one intra-op thread.
``moe.launches_per_layer_b{1,64}``: ops launched by one MoE layer call with the plugin on (gating
1, init routing 1, grouped matmul 2, SwiGLU 1, finalize 1), counted by ``ops.launch_counts()``,
at both batch sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from testbed.moe_layers import (
    DEAD,
    build_deepseek_moe,
    fill_weights,
    moe_config,
    moe_inputs,
    plugin,
    sglang_context,
)

from sglang_ascend_fia import ops

BATCH = 64
CALLS = 20  # layer calls per timed run
REPEATS = 25


def _seconds_per_call(layer: Any, x: torch.Tensor) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        for _ in range(CALLS):
            layer(x)
        return (time.perf_counter() - start) / CALLS

    return timed


def layer_figures() -> dict[str, Any]:
    threads = torch.get_num_threads()
    # One intra-op thread for both sides: on these tiny tensors more threads only add OpenMP
    # spin-waits, which on a loaded 2-core host swing either side by several times.
    torch.set_num_threads(1)
    try:
        return _layer_figures()
    finally:
        torch.set_num_threads(threads)


def _layer_figures() -> dict[str, Any]:
    config = moe_config()
    figures: dict[str, Any] = {}
    with sglang_context(), torch.inference_mode():
        # sglang's fused ops keep the forward their first call resolved (kernels/fused_op.py),
        # but a plugin wrapper calls straight through while the plugin is off, so each side is
        # timed in its own state: the plugin's layer with the plugin on, the stock one off.
        with plugin(True):
            fia_layer = build_deepseek_moe(config)
            fill_weights(fia_layer, DEAD)
            for batch in (1, BATCH):
                ops.reset_launch_counts()
                fia_layer(moe_inputs(batch, config.hidden_size))
                figures[f"launches_per_layer_b{batch}"] = sum(ops.launch_counts().values())
        x = moe_inputs(BATCH, config.hidden_size)
        with plugin(False):
            stock_layer = build_deepseek_moe(config)
            fill_weights(stock_layer, DEAD)
            stock_out = stock_layer(x)
        with plugin(True):
            ops.reset_launch_counts()
            torch.testing.assert_close(fia_layer(x), stock_out, rtol=1e-4, atol=1e-5)
            assert sum(ops.launch_counts().values()) == figures[f"launches_per_layer_b{BATCH}"]
        fia, stock = _seconds_per_call(fia_layer, x), _seconds_per_call(stock_layer, x)
        fia_s = stock_s = float("inf")
        for _ in range(REPEATS + 1):  # interleaved, fastest of each (see bench.ops_bench)
            with plugin(True):
                fia_s = min(fia_s, fia())
            with plugin(False):
                stock_s = min(stock_s, stock())
    figures[f"layer_us_plugin_b{BATCH}"] = fia_s * 1e6
    figures[f"layer_us_stock_b{BATCH}"] = stock_s * 1e6
    figures[f"layer_ratio_b{BATCH}"] = stock_s / fia_s
    return figures


def run() -> dict[str, Any]:
    return {"moe": layer_figures()}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
