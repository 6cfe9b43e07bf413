"""Hand-off rules as data, and the decisions made with them.

A FIA backend serves what it implements; anything else a model or server setting asks for is
served by sglang's own ``AscendAttnBackend``. Each reason is one :class:`HandoffRule`: the text
``doctor`` and the README list, what it reads, and the check. ``attention.handoff.RULES`` (MHA/GQA)
and ``mla.handoff.RULES`` hold each backend's rules, in the order they are checked; the
registry runs them once per ``ModelRunner`` and hands the verdict to the backend it builds.

Each decision is logged as one line and kept in :func:`decisions` for ``doctor``.
Importing this module imports nothing from sglang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger("sglang_ascend_fia.handoff")


@dataclass(frozen=True)
class HandoffRule:
    """One reason a FIA backend hands a model to sglang's own backend."""

    text: str  # what doctor and the README list
    reads: str  # the model property, server setting or environment variable it reads
    check: Callable[[Any], str | None]  # the runner -> why it hands off, or None
    # Reads the KV pool, so it runs only once the pool exists (not for the in-tree mode, which
    # is decided before the pool is built: registry.sglang_mode).
    needs_pool: bool = False


def first_reason(
    rules: Iterable[HandoffRule], runner: Any, *, before_pool: bool = False
) -> str | None:
    """The first rule's reason to hand ``runner`` off, or None: the backend serves it."""
    for rule in rules:
        if before_pool and rule.needs_pool:
            continue
        reason = rule.check(runner)
        if reason is not None:
            return reason
    return None


@dataclass(frozen=True)
class Verdict:
    """The registry's hand-off check for one runner, handed to the backend it builds, so the
    rules run once per start. ``reason`` None: the backend serves the model."""

    reason: str | None


@dataclass(frozen=True)
class Decision:
    """One attention-backend choice made in this process."""

    backend: str  # "fia", "fia-mla" or "sglang" (sglang's own AscendAttnBackend)
    reason: str  # why sglang's own backend was chosen; "" for fia
    sglang_mode: str = ""  # the mode sglang's own backend runs in, and why; "" for fia


_decisions: list[Decision] = []


def decisions() -> list[Decision]:
    """Every attention-backend choice made in this process, oldest first."""
    return list(_decisions)


def record(decision: Decision) -> None:
    _decisions.append(decision)
    if decision.backend == "sglang":
        logger.warning(
            "sglang-ascend-fia: attention runs on sglang's own AscendAttnBackend, not FIA: %s%s",
            decision.reason,
            f" (in its {decision.sglang_mode})" if decision.sglang_mode else "",
        )


# ----------------------------------------------------------------- rules both backends apply
def _speculative(runner: Any) -> str | None:
    if not runner.spec_algorithm.is_none() or runner.is_draft_worker:
        return (
            "speculative decoding (--speculative-algorithm) is not implemented by the FIA backend"
        )
    return None


def _context_parallel(runner: Any) -> str | None:
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    if parallel.attn_cp_size > 1 or parallel.dcp_enabled:
        return "context parallel attention is not implemented by the FIA backend"
    return None


SPECULATIVE = HandoffRule(
    "speculative decoding (target verify / draft workers)",
    "--speculative-algorithm, draft workers",
    _speculative,
)
CONTEXT_PARALLEL = HandoffRule(
    "context parallel attention",
    "--attn-cp-size, decode context parallel",
    _context_parallel,
)


def kernel_rule(feature: str) -> HandoffRule:
    """The installed torch_npu lacks a kernel ``feature``'s FIA calls use (``ops.kernels``):
    checked at start-up, so a missing kernel hands off instead of failing the first request."""

    def check(runner: Any) -> str | None:
        from sglang_ascend_fia.ops import kernels

        result = kernels.check(feature)
        return None if result.ok else f"the FIA path's kernels: {result.reason()}"

    return HandoffRule(
        f"a torch_npu without the kernels the {feature} path calls (or with other signatures)",
        "the installed torch_npu",
        check,
    )


def group_rule(group: str) -> HandoffRule:
    """The manifest patch group ``group`` is not applied whole (``plugin.group_unready_reason``):
    a backend fed by those patches serves nothing without all of them."""

    def check(runner: Any) -> str | None:
        from sglang_ascend_fia import plugin

        return plugin.group_unready_reason(group)

    return HandoffRule(
        f"a member of the {group} patch group missing in this sglang (the group is skipped)",
        f"patches/ group {group}",
        check,
    )


# ------------------------------------------------------------------------- the model's layers
def attention_layers(model: torch.nn.Module) -> list[Any]:
    """Every ``RadixAttention`` the model holds, submodule or not, each once, in module order.

    ``model.modules()`` walks registered submodules only. sglang's Transformers backend
    (``--model-impl transformers``) keeps its layers in a plain dict attribute
    (``models/transformers.py:651``, ``attention_instances``), which ``modules()`` never
    reaches; so every module's plain attributes are read too, and the lists, tuples and dicts
    among them (one level: where such a model keeps its layers)."""
    from sglang.srt.layers.radix_attention import RadixAttention

    found: dict[int, Any] = {}

    def add(value: object) -> None:
        if isinstance(value, RadixAttention):
            found.setdefault(id(value), value)

    for module in model.modules():
        add(module)
        for value in vars(module).values():
            if isinstance(value, dict):
                for item in value.values():
                    add(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    add(item)
            else:
                add(value)
    return list(found.values())


def _uncovered_layers(runner: Any) -> str | None:
    """Layer ids the runner owns that no ``RadixAttention`` found by :func:`attention_layers`
    carries. sglang sizes the KV pool and feeds the backend by layer id over the runner's own
    range (``ModelLayerInfo``, model_runner_components/layer_setup.py:129-132, resolved at
    model_runner.py:726 before the pool is built); a layer the scan cannot reach would first be
    met mid-request, where no hand-off is possible. So the decision covers every id, or the
    model is handed off at start-up."""
    model = getattr(runner, "model", None)
    info = getattr(runner, "layer_info", None)
    if model is None or info is None:
        return None
    owned = range(info.start_layer, info.start_layer + info.num_effective_layers)
    found = {layer.layer_id for layer in attention_layers(model)}
    missing = [i for i in owned if i not in found]
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
    return (
        f"layer ids {shown} (of the {len(owned)} this runner owns) have no RadixAttention the "
        "plugin can find (the model keeps them where its start-up check cannot read them)"
    )


LAYER_COVERAGE = HandoffRule(
    "a model whose attention layers the start-up check cannot all find (a layer id the model "
    "runner owns with no RadixAttention reachable from the model)",
    "ModelRunner.layer_info, every RadixAttention layer the model holds",
    _uncovered_layers,
)


def kv_dtype_reason(runner: Any, reads: str) -> str | None:
    """A KV cache in another dtype than the model: both backends read the model's float dtype."""
    kv_dtype = runner.kv_cache_dtype
    if kv_dtype != runner.dtype:
        return (
            f"--kv-cache-dtype {str(kv_dtype).removeprefix('torch.')} with a "
            f"{str(runner.dtype).removeprefix('torch.')} model: {reads} in the model's float "
            "dtype only"
        )
    return None
