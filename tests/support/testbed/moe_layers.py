"""TEST-ONLY: sglang's real MoE layers built in this process (no engine), for tests and bench.

``sglang_context()`` publishes a one-rank CPU configuration in a private sglang runtime context
and builds the one-rank process groups, as a scheduler process has them when it loads a model;
``plugin(on)`` switches the plugin's patches on or off in this process (``activate`` /
``deactivate``, as sglang's plugin loader would). ``build_deepseek_moe`` then builds
``DeepseekV2MoE`` exactly as ``DeepseekV2DecoderLayer`` does, and ``fill_weights`` gives it
deterministic weights, with a set of *dead* experts that no token can pick (zero tokens).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from testbed.models import build_deepseek_v3_moe, deepseek_v3_moe_config
from testbed.moe_oracle import Routing

# The feature every test input holds at FEATURE_VALUE; a dead expert's gate row weighs it by
# DEAD_GATE, so its logit is about -36: softmax and sigmoid are ~0 and the router never picks it.
FEATURE = 0
FEATURE_VALUE = 3.0
DEAD_GATE = -12.0
# With a correction bias, ranking uses score + bias: a dead expert's bias keeps it below every
# live one (live biases are ~N(0, 0.05)).
DEAD_BIAS = -1.0
DEAD = (2, 3, 7, 10, 11, 14, 15)  # every group of 4 keeps >= 2 live experts

# name -> (config overrides, routing, the gating op sglang's NPU choice calls)
DEEPSEEK = {
    # V2-Lite: softmax top-k, no groups, no renormalisation, 2 shared experts.
    "v2-lite-softmax": (
        {"scoring_func": "softmax", "topk_method": "greedy", "n_group": 1, "topk_group": 1,
         "norm_topk_prob": False, "routed_scaling_factor": 1.0, "n_shared_experts": 2},
        Routing("softmax", 4),
    ),
    # V2: softmax, group_limited_greedy (a group scores by its max), renormalised, scaled.
    "v2-grouped-softmax": (
        {"scoring_func": "softmax", "topk_method": "group_limited_greedy", "n_group": 4,
         "topk_group": 2, "norm_topk_prob": True, "routed_scaling_factor": 1.5},
        Routing("softmax", 4, n_group=4, topk_group=2, norm_topk_prob=True, scaling=1.5),
    ),
    # V3: sigmoid, noaux_tc with a correction bias, renormalised, scaled by 2.5.
    "v3-sigmoid-grouped-bias": (
        {},
        Routing("sigmoid", 4, n_group=4, topk_group=2, norm_topk_prob=True, scaling=2.5),
    ),
    # V3 with norm_topk_prob=False: the NPU kernel renormalises sigmoid whatever renorm says.
    "v3-sigmoid-unnormalised": (
        {"norm_topk_prob": False},
        Routing("sigmoid", 4, n_group=4, topk_group=2, norm_topk_prob=False, scaling=2.5),
    ),
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sglang_context() -> Iterator[None]:
    """A one-rank CPU sglang configuration and process groups, undone on exit."""
    from sglang.srt.distributed import (
        destroy_distributed_environment,
        destroy_model_parallel,
        init_distributed_environment,
        initialize_model_parallel,
    )
    from sglang.srt.runtime_context import SpawnRanks, create_context, use_context
    from sglang.srt.server_args import ServerArgs

    # ServerArgs reads a model directory; the layers themselves are built from explicit configs.
    server_args = ServerArgs(
        model_path=str(build_deepseek_v3_moe()),
        device="cpu",
        dtype="float32",
        attention_backend="torch_native",
        disable_cuda_graph=True,
        random_seed=0,
        log_level="error",
    )
    server_args.resolve_once()
    context = create_context(
        server_args, role="scheduler", ranks=SpawnRanks(world_rank=0, gpu_id=0)
    )
    with use_context(context):
        init_distributed_environment(
            backend="gloo",
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{_free_port()}",
        )
        try:
            initialize_model_parallel(backend="gloo")
            yield
        finally:
            destroy_model_parallel()
            destroy_distributed_environment()


@contextmanager
def plugin(on: bool) -> Iterator[None]:
    """The plugin's patches applied (``on``) or not, in this process; the previous toggle and
    patch state come back on exit. sglang's ``BaseFusedOp`` layers (``TopK``, the MoE quant
    method) resolve their forward method on their first call and keep it
    (``kernels/fused_op.py``), so a layer runs the path of the state it was first called in."""
    from sglang_ascend_fia import config
    from sglang_ascend_fia import plugin as fia_plugin

    before = os.environ.get(config.TOGGLE_ENV)
    was_active = fia_plugin.is_active()

    def set_toggle(value: str | None) -> None:
        if value is None:
            os.environ.pop(config.TOGGLE_ENV, None)
        else:
            os.environ[config.TOGGLE_ENV] = value
        config.resolve.cache_clear()  # resolve() reads the toggle once per process

    fia_plugin.deactivate()
    set_toggle("1" if on else "0")
    try:
        fia_plugin.activate()
        yield
    finally:
        fia_plugin.deactivate()
        set_toggle(before)
        if was_active:
            fia_plugin.activate()


def moe_config(**overrides: Any) -> Any:
    """An HF-style config for one DeepSeek MoE layer: the test bed's V3 MoE unless overridden
    (``scoring_func``, ``topk_method``, ``n_group``, ``norm_topk_prob``, ...)."""
    from transformers import DeepseekV3Config

    values = deepseek_v3_moe_config(**overrides)
    config = DeepseekV3Config(**values)
    for name, value in values.items():  # keys transformers drops (scoring_func, n_group, ...)
        setattr(config, name, value)
    return config


def build_deepseek_moe(config: Any, layer_id: int = 1) -> Any:
    """``DeepseekV2MoE`` as ``DeepseekV2DecoderLayer`` builds it (no quantisation)."""
    from sglang.srt.models.deepseek_v2 import DeepseekV2MoE

    return DeepseekV2MoE(config=config, layer_id=layer_id, prefix=f"model.layers.{layer_id}.mlp")


def fill_weights(layer: Any, dead: Sequence[int], seed: int = 0) -> None:
    """Random weights (N(0, 0.1)); experts in ``dead`` can never be picked (see DEAD_GATE)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(layer.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        gate = layer.gate.weight
        gate[list(dead), FEATURE] = DEAD_GATE
        bias = layer.gate.e_score_correction_bias
        if bias is not None:
            bias.copy_(torch.randn(bias.shape, generator=generator) * 0.05)
            bias[list(dead)] = DEAD_BIAS


def moe_inputs(tokens: int, hidden: int, seed: int = 1) -> torch.Tensor:
    """Hidden states with the routing feature pinned (see FEATURE_VALUE)."""
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(seed))
    x[:, FEATURE] = FEATURE_VALUE
    return x


def build_qwen2_style_moe(
    top_k: int, renormalize: bool, experts: int = 16, hidden: int = 64, seed: int = 3
) -> tuple[Any, Any, torch.Tensor]:
    """``TopK`` + ``FusedMoE`` as ``Qwen2MoeSparseMoeBlock`` builds them (qwen2_moe.py), with
    random experts and a router ``[E, H]`` whose ``DEAD`` rows no token picks (plain softmax
    top-k without groups or bias: ``fused_topk_npu``'s ``moe_gating_top_k_softmax`` choice)."""
    from sglang.srt.layers.moe.ep_moe.layer import get_moe_impl_class
    from sglang.srt.layers.moe.topk import TopK

    topk = TopK(top_k=top_k, renormalize=renormalize, layer_id=1)
    fused = get_moe_impl_class(None)(
        layer_id=1,
        top_k=top_k,
        num_experts=experts,
        hidden_size=hidden,
        intermediate_size=32,
        quant_config=None,
        prefix="model.layers.1.mlp.experts",
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in fused.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    router = torch.randn(experts, hidden, generator=generator) * 0.1
    router[list(DEAD), FEATURE] = DEAD_GATE  # as fill_weights does: never picked
    return topk, fused, router.to(torch.get_default_dtype())
