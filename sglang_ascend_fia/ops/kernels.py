"""Start-up check that the installed ``torch_npu`` has every kernel a feature's path calls.

The facade looks a kernel up when a launch first sees an NPU tensor (``_dispatch``), so a
``torch_npu`` without, say, ``npu_fused_infer_attention_score_v2`` would only fail at the first
DeepSeek prefill, mid-request. Each feature therefore checks its kernels once, when sglang builds
what uses them (the attention backend, a quant method): a missing kernel, or one whose schema
lacks a parameter the plugin passes, makes that feature hand off to sglang's own code or refuse
to start, naming the kernel.

The check runs wherever ``torch_npu`` is importable: that is the module an NPU launch would call.
Without it (a CPU or CUDA host) the references run and there is nothing to check.

What a kernel's signature can tell: ``torch_npu`` registers its kernels as dispatcher ops
(``torch.ops.npu.<name>``), whose schema names every argument; where a kernel is a plain Python
function its ``inspect`` signature does. The plugin's reference for each op has torch_npu 2.14's
parameters (``docs/ops-semantics.md``), so each parameter the reference has must exist in the
kernel's schema. A kernel whose parameters cannot be read is only checked for existence.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# The torch_npu release whose documentation every facade op follows (ops/__init__.py).
DOCUMENTED_IN = "torch_npu 2.14"

# The kernels each feature's path calls, by torch_npu name (the facade ops' ``npu_name``).
FEATURE_KERNELS: dict[str, tuple[str, ...]] = {
    "attention": ("npu_fused_infer_attention_score", "npu_scatter_pa_kv_cache"),
    "mla": (
        "npu_fused_infer_attention_score",
        "npu_fused_infer_attention_score_v2",
        "npu_scatter_nd_update_",
    ),
    "moe": (
        "npu_moe_gating_top_k",
        "npu_moe_gating_top_k_softmax",
        "npu_moe_init_routing_v2",
        "npu_grouped_matmul",
        "npu_swiglu",
        "npu_moe_finalize_routing",
    ),
    "w8a8": (
        "npu_dynamic_quant",
        "npu_quantize",
        "npu_quant_matmul",
        "npu_moe_init_routing_v2",
        "npu_grouped_matmul",
        "npu_dequant_swiglu_quant",
        "npu_moe_finalize_routing",
    ),
}


@dataclass(frozen=True)
class KernelProblem:
    """One kernel a feature needs that the installed torch_npu cannot run as called."""

    kernel: str
    problem: str  # "missing", or the parameters its schema lacks

    def describe(self, torch_npu_version: str) -> str:
        if self.problem == "missing":
            return (
                f"torch_npu {torch_npu_version} has no {self.kernel} (documented in "
                f"{DOCUMENTED_IN}; install a torch_npu that provides it)"
            )
        return (
            f"torch_npu {torch_npu_version}'s {self.kernel} {self.problem} (the plugin calls it "
            f"as {DOCUMENTED_IN} documents it)"
        )


@dataclass(frozen=True)
class FeatureCheck:
    feature: str
    torch_npu: str  # its version, or "not installed"
    checked: bool  # False where torch_npu is not importable (the references run)
    problems: tuple[KernelProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def reason(self) -> str:
        """One line naming every problem, for a hand-off or a refusal."""
        return "; ".join(p.describe(self.torch_npu) for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "torch_npu": self.torch_npu,
            "checked": self.checked,
            "kernels": list(FEATURE_KERNELS[self.feature]),
            "problems": [{"kernel": p.kernel, "problem": p.problem} for p in self.problems],
        }


_checks: dict[str, FeatureCheck] = {}


def _torch_npu() -> ModuleType | None:
    if importlib.util.find_spec("torch_npu") is None:
        return None
    import torch_npu

    return torch_npu


def _version(module: ModuleType) -> str:
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("torch-npu")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def kernel_parameters(module: ModuleType, name: str) -> frozenset[str] | None:
    """The parameter names of ``module.<name>``: the dispatcher schema's (every overload's),
    else its Python signature's; ``None`` when neither can be read."""
    import torch

    try:
        packet = getattr(torch.ops.npu, name)
        names = {
            arg.name
            for overload in packet.overloads()
            for arg in getattr(packet, overload)._schema.arguments
        }
        if names:
            return frozenset(names)
    except (AttributeError, RuntimeError):
        pass
    try:
        signature = inspect.signature(getattr(module, name))
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return None  # **kwargs: the names it takes are not written down
    return frozenset(signature.parameters)


def missing_in(module: ModuleType, kernels: Iterable[str]) -> tuple[KernelProblem, ...]:
    """What of ``kernels`` ``module`` lacks, or takes without a parameter the plugin passes."""
    problems: list[KernelProblem] = []
    for name in kernels:
        if not _has(module, name):
            problems.append(KernelProblem(name, "missing"))
            continue
        expected = _reference_parameters(name)
        found = kernel_parameters(module, name)
        if expected and found is not None:
            lacking = sorted(expected - found)
            if lacking:
                problems.append(KernelProblem(name, f"takes no parameter {', '.join(lacking)}"))
    return tuple(problems)


def _has(module: ModuleType, name: str) -> bool:
    try:
        getattr(module, name)
    except AttributeError:
        return False
    return True


@functools.cache
def _reference_parameters(npu_name: str) -> frozenset[str]:
    """The parameters of the facade op that calls ``npu_name`` (torch_npu 2.14's)."""
    from sglang_ascend_fia import ops

    for public in ops.__all__:
        op = getattr(ops, public)
        if getattr(op, "npu_name", None) == npu_name:
            return frozenset(inspect.signature(op.reference).parameters)
    return frozenset()


def check(feature: str) -> FeatureCheck:
    """The kernel check of ``feature`` (a key of :data:`FEATURE_KERNELS`), run once per process.
    The caller logs what it does about a problem (a hand-off line, a refusal)."""
    if feature not in FEATURE_KERNELS:
        raise ValueError(
            f"sglang-ascend-fia: unknown feature {feature!r}; accepted: {sorted(FEATURE_KERNELS)}"
        )
    found = _checks.get(feature)
    if found is not None:
        return found
    module = _torch_npu()
    if module is None:
        result = FeatureCheck(feature, "not installed", False, ())
    else:
        result = FeatureCheck(
            feature, _version(module), True, missing_in(module, FEATURE_KERNELS[feature])
        )
    _checks[feature] = result
    return result


def checks() -> list[FeatureCheck]:
    """Every kernel check made in this process, in feature order."""
    return [_checks[f] for f in FEATURE_KERNELS if f in _checks]


def forget() -> None:
    """Drop the remembered checks (tests change the installed torch_npu between them)."""
    _checks.clear()
