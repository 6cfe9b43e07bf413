"""Every raise site under ``sglang_ascend_fia/ops/`` is made to raise by some test.

Runs ``trace_raise_sites.py`` (a stricter measure than line coverage: an exception must actually
propagate through the site) over the ops tests that exercise refusals, in a child process so the
tracer sees a fresh import of the package. About 50 s of one core; ``fia/reference.py`` is left
to its own tests (see the script), and so are the verify-ops and reference-accuracy modules,
which add minutes and reach no site the refusal tests miss.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFUSAL_TESTS = [
    "test_dequant_swiglu_quant.py",
    "test_dispatch.py",
    "test_dynamic_quant.py",
    "test_fia_accepted_forms.py",
    "test_fia_arguments.py",
    "test_fia_call_contract.py",
    "test_fia_dtype_policy.py",
    "test_fia_layouts.py",
    "test_fia_limits.py",
    "test_fia_masks.py",
    "test_fia_mla_rules.py",
    "test_fia_paged.py",
    "test_fia_reference_refusals.py",
    "test_fia_tnd_dense.py",
    "test_fia_v2_rules.py",
    "test_grouped_matmul.py",
    "test_kernel_check.py",
    "test_kv_cache.py",
    "test_moe_chain.py",
    "test_moe_finalize.py",
    "test_moe_gating.py",
    "test_moe_routing.py",
    "test_prepared_call.py",
    "test_quant_matmul.py",
    "test_quantize.py",
    "test_swiglu.py",
    "test_w8a8_moe_chain.py",
]


def test_every_raise_site_under_ops_is_reached() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "trace_raise_sites.py"),
            *(str(HERE / name) for name in REFUSAL_TESTS),
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=HERE.parents[1],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    report = [
        line for line in proc.stdout.splitlines() if "raise sites" in line or "UNREACHED" in line
    ]
    assert proc.returncode == 0, "\n".join(report) or proc.stdout[-3000:] + proc.stderr[-3000:]
