"""``sglang-ascend-fia verify-ops``: every NPU op against its pure-PyTorch reference, on a real NPU.

Each case (see :data:`CASE_MODULES`) runs twice on the same seeded inputs: once on the NPU, where
the facade calls torch_npu, and once on the CPU, where it runs the reference. The outputs are
compared with per-dtype tolerances and printed as one table; the exit status is 0 when every case
is within tolerance, 1 otherwise, and 2 when there is no NPU to run on.

The cases cover every argument value each op documents and the reference implements, in fp16
and bf16 wherever the kernel takes both; ``tests/verify/test_verify_coverage.py`` holds the table
of required (op, argument, value) combinations and fails when a case change drops one.

To add cases, append to ``CASES`` in one of the modules in :mod:`.cases`, or add a module there
with a ``CASES`` list of :data:`.case.CaseFactory` functions and list it in :data:`CASE_MODULES`;
:mod:`.cases.common` has the shared helpers. The case modules import :mod:`.case` and the public
:mod:`sglang_ascend_fia.ops`; only this module imports the case modules.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from sglang_ascend_fia.verify.case import CaseFactory, Outputs, tolerance_for
from sglang_ascend_fia.verify.cases import (
    attention,
    attention_v2,
    gating,
    gmm,
    kv_helpers,
    mla,
    moe,
    quant,
)

# The order of the table verify-ops prints.
CASE_MODULES = (attention, attention_v2, mla, kv_helpers, gating, moe, gmm, quant)


@dataclass(frozen=True)
class Result:
    name: str
    dtype: torch.dtype
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""

    @property
    def tolerance(self) -> tuple[float, float]:
        return tolerance_for(self.dtype)


def all_cases() -> list[CaseFactory]:
    cases: list[CaseFactory] = []
    for module in CASE_MODULES:
        cases.extend(module.CASES)
    return cases


def compare(got: Outputs, want: Outputs, dtype: torch.dtype) -> tuple[float, float, bool, str]:
    """(max abs error, max relative error, within tolerance, what failed) over all outputs.

    Float outputs pass when every element has ``|got - want| <= atol + rtol * |want|``; the
    relative error is ``|got - want| / max(|want|, atol)``. Infinities must match exactly (an
    LSE of -inf for a row with no keys); NaN never passes. Integer outputs must be equal.
    """
    atol, rtol = tolerance_for(dtype)
    if len(got) != len(want):
        return math.inf, math.inf, False, f"{len(got)} outputs, expected {len(want)}"
    max_abs = max_rel = 0.0
    problems: list[str] = []
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.shape != w.shape:
            problems.append(f"output {i} shape {tuple(g.shape)} != {tuple(w.shape)}")
            max_abs = max_rel = math.inf
            continue
        if not (g.is_floating_point() or w.is_floating_point()):
            wrong = int((g.long() != w.long()).sum())
            if wrong:
                problems.append(f"output {i}: {wrong} integer mismatches")
                max_abs = max(max_abs, float((g.long() - w.long()).abs().max()))
                max_rel = math.inf
            continue
        g64, w64 = g.double(), w.double()
        if bool(torch.isnan(g64).any() | torch.isnan(w64).any()):
            problems.append(f"output {i}: NaN")
            max_abs = max_rel = math.inf
            continue
        same_inf = torch.isinf(g64) & torch.isinf(w64) & (g64 == w64)
        finite = torch.isfinite(g64) & torch.isfinite(w64)
        if bool((~(same_inf | finite)).any()):
            problems.append(f"output {i}: infinities differ")
            max_abs = max_rel = math.inf
            continue
        diff = torch.where(finite, (g64 - w64).abs(), torch.zeros_like(g64))
        scale = torch.where(finite, w64.abs(), torch.zeros_like(w64))
        if diff.numel():
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / scale.clamp_min(atol)).max()))
            over = int((diff > atol + rtol * scale).sum())
            if over:
                problems.append(f"output {i}: {over} elements over tolerance")
    return max_abs, max_rel, not problems, "; ".join(problems)


def verify(
    cases: Sequence[CaseFactory],
    device: str,
    *,
    reference_device: str = "cpu",
    perturb: Callable[[Outputs, torch.dtype], Outputs] | None = None,
) -> list[Result]:
    """Run every case on ``device`` and on ``reference_device`` and compare.

    ``perturb`` is applied to the device-side outputs before the comparison; the CPU self-test
    uses it to show that an error of a few tolerances is caught.
    """
    results = []
    for make in cases:
        name, run, dtype = make()
        try:
            got = run(device)
            want = run(reference_device)
        except Exception as exc:  # a failing case must not hide the others
            results.append(Result(name, dtype, math.inf, math.inf, False, f"raised {exc!r}"))
            continue
        if perturb is not None:
            got = perturb(got, dtype)
        max_abs, max_rel, ok, detail = compare(got, want, dtype)
        results.append(Result(name, dtype, max_abs, max_rel, ok, detail))
    return results


def format_table(results: Sequence[Result]) -> str:
    width = max([len(r.name) for r in results] + [4])
    lines = [
        f"{'case':<{width}}  {'dtype':<8}  {'max abs':>10}  {'max rel':>10}  {'atol/rtol':>9}  "
        "result"
    ]
    for r in results:
        atol, _ = r.tolerance
        status = "ok" if r.ok else f"FAIL {r.detail}"
        lines.append(
            f"{r.name:<{width}}  {str(r.dtype).removeprefix('torch.'):<8}  {r.max_abs:>10.3g}  "
            f"{r.max_rel:>10.3g}  {atol:>9.0e}  {status}"
        )
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed}/{len(results)} cases within tolerance")
    return "\n".join(lines)


def npu_device() -> tuple[str | None, str]:
    """``("npu:0", "")`` on a machine with a usable NPU, else ``(None, why not)``."""
    if importlib.util.find_spec("torch_npu") is None:
        return None, "torch_npu is not installed"
    try:
        import torch_npu  # noqa: F401 - registers torch.npu; only on a real NPU host
    except Exception as exc:
        return None, f"importing torch_npu failed: {exc!r}"
    npu = getattr(torch, "npu", None)
    if npu is None or not npu.is_available():
        return None, "torch.npu.is_available() is False"
    return "npu:0", ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sglang-ascend-fia verify-ops",
        description="Compare every NPU op the plugin calls (torch_npu) with its reference.",
    )
    parser.add_argument("-k", "--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if args.filter.lower() in c()[0].lower()]
    if args.list:
        for make in cases:
            print(make()[0])
        return 0
    device, why = npu_device()
    if device is None:
        print(f"verify-ops: no NPU available ({why}); nothing to compare")
        return 2
    if not cases:
        print(f"verify-ops: no case matches {args.filter!r}", file=sys.stderr)
        return 1
    results = verify(cases, device)
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
