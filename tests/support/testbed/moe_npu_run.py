"""TEST-ONLY child: sglang's ``DeepseekV2MoE`` on sglang's NPU dispatch, on CPU, as JSON.

Run as ``python -m testbed.moe_npu_run`` with ``tests/support/npu_standin`` on ``PYTHONPATH``
(the torch_npu stand-in must not enter the pytest process). :func:`npu_dispatch` makes sglang
take the branches it takes on an Ascend NPU for these layers, and nothing else:

- ``kernels/fused_op.py`` ``_platform_key()`` answers ``"npu"``, so every ``BaseFusedOp`` of the
  layer resolves its ``forward_npu`` (``TopK``, ``UnquantizedFusedMoEMethod``, the shared
  experts' ``SiluAndMul``) exactly as on an NPU;
- ``layers/quantization/unquant.py`` ``_is_npu`` (``create_moe_runner``: ``NPUUnquantMoEMethod``
  kernels and the ``ASCEND`` runner, ``unquant.py:1187-1191``) and ``fused_moe_triton/layer.py``
  ``is_npu`` (``create_moe_dispatcher``: ``AscendTPDispatcher``, ``layer.py:180-181``) are true;
- ``layers/moe/topk.py`` ``_is_npu`` is true (``select_experts``' NPU padding rules, reached by
  ``fused_topk_npu``'s fallback), and ``layers/activation.py`` gets the stand-in as the
  ``torch_npu`` it imports only on an NPU.

Each run builds one layer in one plugin state and dtype, with or without a
``num_token_non_padded`` bound in the forward context (sglang sets one with EP > 1, DP-attention
gather or a custom all-to-all, ``forward_batch_info.py:2271-2285``), and reports per batch the
largest error against ``testbed.moe_oracle.dense_moe``, the rows departing from it, the tokens
per expert, the plugin's ops launches and the stand-in's kernel calls.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import torch

from testbed.moe_layers import (
    DEAD,
    DEEPSEEK,
    build_deepseek_moe,
    fill_weights,
    moe_config,
    moe_inputs,
    plugin,
    sglang_context,
)
from testbed.moe_oracle import dense_moe

BATCHES = (1, 64)
TOLERANCE = {
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    # bf16 activations and weights, fp32 accumulation: a few bf16 ulps of the outputs (~0.3).
    "bfloat16": {"rtol": 2e-2, "atol": 2e-2},
}
# (case, plugin on, dtype, num_token_non_padded bound): sglang's NPU runner hard-codes bf16
# outputs (moe_runner/ascend.py:218), so stock runs in bf16 only.
RUNS = [
    *((case, True, dtype, True) for case in DEEPSEEK for dtype in ("float32", "bfloat16")),
    *((case, False, "bfloat16", True) for case in DEEPSEEK),
    ("v2-grouped-softmax", False, "bfloat16", False),
]


@contextmanager
def npu_dispatch() -> Iterator[None]:
    """sglang's NPU branches for MoE layers built and first called inside (module docstring)."""
    import torch_npu
    from sglang.kernels import fused_op
    from sglang.srt.layers import activation
    from sglang.srt.layers.moe import topk
    from sglang.srt.layers.moe.fused_moe_triton import layer
    from sglang.srt.layers.quantization import unquant

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(fused_op, "_platform_key", lambda: "npu"))
        stack.enter_context(mock.patch.object(unquant, "_is_npu", True))
        stack.enter_context(mock.patch.object(layer, "is_npu", lambda: True))
        stack.enter_context(mock.patch.object(topk, "_is_npu", True))
        stack.enter_context(mock.patch.object(activation, "torch_npu", torch_npu, create=True))
        yield


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextmanager
def token_bound(bound: bool, tokens: int) -> Iterator[None]:
    """A forward context whose MoE ``num_token_non_padded`` is ``tokens`` (no padded rows)."""
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context

    if not bound:
        yield
        return
    count = torch.tensor(tokens, dtype=torch.int32)
    with forward_context(ForwardContext(attn_backend=None, moe_num_token_non_padded=lambda: count)):
        yield


def run(case: str, plugin_on: bool, dtype_name: str, bound: bool) -> dict[str, Any]:
    import torch_npu

    from sglang_ascend_fia import ops

    overrides, routing = DEEPSEEK[case]
    dtype = getattr(torch, dtype_name)
    config = moe_config(**overrides)
    batches = {}
    with plugin(plugin_on), npu_dispatch(), torch.inference_mode():
        with default_dtype(dtype):  # as sglang's model loader builds a bf16 model
            layer = build_deepseek_moe(config)
        fill_weights(layer, DEAD)
        for batch in BATCHES:
            x = moe_inputs(batch, config.hidden_size).to(dtype)
            logits = layer.gate(x.clone())  # the router, not under test: the oracle's input
            ops.reset_launch_counts()
            torch_npu.reset_standin_call_counts()
            with token_bound(bound, batch):
                out = layer(x.clone())
            launches = ops.launch_counts()
            standin = torch_npu.standin_call_counts()
            shared = layer.shared_experts
            expected, tokens_per_expert = dense_moe(
                x,
                routing,
                logits,
                layer.gate.e_score_correction_bias,
                layer.experts.w13_weight,
                layer.experts.w2_weight,
                (shared.gate_up_proj.weight, shared.down_proj.weight),
            )
            tol = TOLERANCE[dtype_name]
            error = (out.double() - expected).abs()
            allowed = tol["atol"] + tol["rtol"] * expected.abs()
            batches[str(batch)] = {
                "max_error": float(error.max()),
                "departing_rows": int((error > allowed).any(dim=-1).sum()),
                "tokens_per_expert": tokens_per_expert,
                "launches": launches,
                "standin_calls": standin,
                "out_dtype": str(out.dtype),
            }
    # What served the layer: the methods sglang's dispatch resolved on the first call, and the
    # token dispatcher FusedMoE built.
    forward = {
        "topk": layer.topk._forward_method.__name__,
        "experts": layer.experts.quant_method._forward_method.__name__,
        "dispatcher": type(layer.experts.dispatcher).__name__,
    }
    return {
        "case": case,
        "plugin": plugin_on,
        "dtype": dtype_name,
        "bound": bound,
        "forward": forward,
        "batches": batches,
    }


def main() -> None:
    torch.set_num_threads(1)
    with sglang_context():
        results = [run(*spec) for spec in RUNS]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
