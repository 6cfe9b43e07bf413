"""DeepSeek (MLA) benchmarks: end-to-end decode of the tiny V2-Lite-style model, FIA plugin
against stock sglang, and the bytes the split latent/rope pool saves per decode step.

``e2e.dsv2_decode_ratio_b32``: generated tokens per second at batch 32, the plugin's FIA MLA
path (``ascend``, ``ASCEND_USE_FIA=1``) over stock ``torch_native`` on the same model and engine
arguments, best of ``ROUNDS`` alternating rounds (``bench.decode_driver``, as for Qwen2).

``mla.*_bytes_per_decode_step``: the KV-cache bytes one decode step moves over all layers, from
a real split pool's tensors and the batch's KV lengths. Split pool: the kernel reads each
request's latent and rope rows in place (``kv_len x (R + r)`` elements) and the step writes one
row per request. A single-buffer ``[slots, R + r]`` pool feeding the same kernel must first split
each layer into contiguous latent and rope tensors, reading and writing every slot of the layer
(what sglang 0.5.23's non-FIA MLA decode still does with ``torch.cat`` per layer,
``ascend_backend.py:3450-3480``), then the kernel reads the same rows. A model of the
traffic, not a timing.
"""

from __future__ import annotations

from typing import Any

import torch
from testbed.models import build_deepseek_v2_lite

from bench.decode_driver import decode_throughput, ratio_figures

NEW_TOKENS = 64
BATCH = 32
ROUNDS = 2
CONTEXT = 16 + NEW_TOKENS  # prompt + generated tokens per request at the last step

ENGINE_ARGS: dict[str, Any] = {
    "page_size": 128,
    "chunked_prefill_size": 4096,
    "max_running_requests": BATCH,
    "max_total_tokens": 16384,
}


def decode_ratio(model: str) -> dict[str, float]:
    figures = decode_throughput(model, ENGINE_ARGS, (BATCH,), NEW_TOKENS, ROUNDS, stride=13)
    return ratio_figures("dsv2", figures)


def split_pool_bytes(batch: int = BATCH, context: int = CONTEXT) -> dict[str, float]:
    """Bytes per decode step (all layers) with the split pool vs a single buffer split per
    layer, for a pool sized like the engine's (``max_total_tokens``) in bf16."""
    from sglang.srt.runtime_context import get_parallel

    from sglang_ascend_fia.mla.pool import FIAMLATokenToKVPool

    with get_parallel().override(
        attn_tp_size=1, attn_cp_size=1, dcp_enabled=False, attn_dcp_size=1, attn_dcp_rank=0
    ):
        pool = FIAMLATokenToKVPool(
            ENGINE_ARGS["max_total_tokens"],
            page_size=ENGINE_ARGS["page_size"],
            dtype=torch.bfloat16,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            layer_num=2,
            device="cpu",
            enable_memory_saver=False,
        )
    layers = pool.k_buffer.shape[0]
    row = pool.k_buffer[0, 0, 0].nbytes + pool.v_buffer[0, 0, 0].nbytes  # one token, R + r
    kernel_reads = batch * context * row
    writes = batch * row
    split = layers * (kernel_reads + writes)
    layer_bytes = int(pool.get_kv_size_bytes()) // layers
    # The per-layer split reads and writes the whole layer once.
    single = layers * (2 * layer_bytes + kernel_reads + writes)
    return {
        f"split_pool_bytes_per_decode_step_b{batch}": float(split),
        f"single_buffer_split_bytes_per_decode_step_b{batch}": float(single),
        f"split_pool_bytes_ratio_b{batch}": float(split / single),
    }


def run() -> dict[str, Any]:
    model = str(build_deepseek_v2_lite())
    return {"e2e": decode_ratio(model), "mla": split_pool_bytes()}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
