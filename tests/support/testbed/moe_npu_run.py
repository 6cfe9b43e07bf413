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

Each run builds one layer (a ``DeepseekV2MoE`` case of ``testbed.moe_layers.DEEPSEEK``, or
Qwen2-style ``TopK`` + ``FusedMoE`` with plain renormalised softmax) in one plugin state and
dtype, with or without a ``num_token_non_padded`` bound in the forward context (sglang sets one
with EP > 1, DP-attention gather or a custom all-to-all, ``forward_batch_info.py:2271-2285``),
and reports per batch the largest error against ``testbed.moe_oracle.dense_moe``, the rows
departing from it, the tokens
per expert, the plugin's ops launches and the stand-in's kernel calls.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import torch

from testbed.moe_layers import (
    DEAD,
    DEEPSEEK,
    build_deepseek_moe,
    build_qwen2_style_moe,
    fill_weights,
    moe_config,
    moe_inputs,
    plugin,
    sglang_context,
)
from testbed.moe_oracle import Routing, dense_moe

BATCHES = (1, 64)
TOLERANCE = {
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    # bf16 activations and weights, fp32 accumulation: a few bf16 ulps of the outputs (~0.3).
    "bfloat16": {"rtol": 2e-2, "atol": 2e-2},
}
# (case, plugin on, dtype, num_token_non_padded bound): sglang's NPU runner hard-codes bf16
# outputs (moe_runner/ascend.py:218), so stock runs in bf16 only.
QWEN2 = "qwen2-softmax-renorm"  # plain softmax top-k, renormalised: the softmax gating kernel
CASES = (*DEEPSEEK, QWEN2)
RUNS = [
    *((case, True, dtype, True) for case in CASES for dtype in ("float32", "bfloat16")),
    *((case, False, "bfloat16", True) for case in CASES),
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


@dataclass
class Built:
    """One layer under test: its forward, and what the oracle needs."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    router_logits: Callable[[torch.Tensor], torch.Tensor]
    routing: Routing
    bias: torch.Tensor | None
    w13: torch.Tensor
    w2: torch.Tensor
    shared: tuple[torch.Tensor, torch.Tensor] | None
    topk: Any  # sglang's TopK
    experts: Any  # sglang's FusedMoE
    hidden: int


def build(case: str) -> Built:
    if case == QWEN2:  # TopK + FusedMoE as Qwen2MoeSparseMoeBlock builds them
        topk, fused, router = build_qwen2_style_moe(top_k=4, renormalize=True)
        return Built(
            forward=lambda x: fused(x, topk(x, x @ router.T)),
            router_logits=lambda x: x @ router.T,
            routing=Routing("softmax", 4, norm_topk_prob=True),
            bias=None,
            w13=fused.w13_weight,
            w2=fused.w2_weight,
            shared=None,
            topk=topk,
            experts=fused,
            hidden=router.shape[1],
        )
    overrides, routing = DEEPSEEK[case]
    config = moe_config(**overrides)
    layer = build_deepseek_moe(config)
    fill_weights(layer, DEAD)
    shared = layer.shared_experts
    return Built(
        forward=layer,
        router_logits=layer.gate,  # the router, not under test: the oracle's input
        routing=routing,
        bias=layer.gate.e_score_correction_bias,
        w13=layer.experts.w13_weight,
        w2=layer.experts.w2_weight,
        shared=(shared.gate_up_proj.weight, shared.down_proj.weight),
        topk=layer.topk,
        experts=layer.experts,
        hidden=config.hidden_size,
    )


def run(case: str, plugin_on: bool, dtype_name: str, bound: bool) -> dict[str, Any]:
    import torch_npu

    from sglang_ascend_fia import ops

    dtype = getattr(torch, dtype_name)
    batches = {}
    with plugin(plugin_on), npu_dispatch(), torch.inference_mode():
        with default_dtype(dtype):  # as sglang's model loader builds a bf16 model
            built = build(case)
        for batch in BATCHES:
            x = moe_inputs(batch, built.hidden).to(dtype)
            logits = built.router_logits(x.clone())
            ops.reset_launch_counts()
            torch_npu.reset_standin_call_counts()
            with token_bound(bound, batch):
                out = built.forward(x.clone())
            launches = ops.launch_counts()
            standin = torch_npu.standin_call_counts()
            expected, tokens_per_expert = dense_moe(
                x, built.routing, logits, built.bias, built.w13, built.w2, built.shared
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
        "topk": built.topk._forward_method.__name__,
        "experts": built.experts.quant_method._forward_method.__name__,
        "dispatcher": type(built.experts.dispatcher).__name__,
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
