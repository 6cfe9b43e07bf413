"""``make demo``, second part: the plugin beside sglang 0.5.23's in-tree Ascend backend.

The same workloads as the engine tests (plain prompts, radix prefix hits, a prompt longer than
``chunked_prefill_size``, a mixed batch) through one Engine per path; upstream runs on the
test-only torch_npu stand-in with the plugin turned off through ``SGLANG_PLUGINS``. Prints, per
path and workload, whether the tokens equal HF fp32's, the attention launches per layer seen in
the scheduler, and for a failure the upstream finding that explains it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from side_by_side import PathRun, attention_calls_per_layer, run_path
from testbed.oracle import hf_greedy
from upstream_findings import explains

# The engine tests' workloads (tests/e2e/fia_common.py), so the demo shows what they check.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from e2e.fia_common import ENGINE_ARGS, NEW_TOKENS, workloads

# (row label, side_by_side path, run name in upstream_findings, --enable-mixed-chunk, workloads)
RUNS: tuple[tuple[str, str, str, bool, tuple[str, ...] | None], ...] = (
    ("plugin", "plugin", "plugin", True, None),
    ("upstream ATB (ASCEND_USE_FIA unset)", "upstream", "upstream", True, None),
    ("upstream FIA (ASCEND_USE_FIA=1)", "upstream-fia", "upstream-fia", False, None),
    (
        "upstream FIA + --enable-mixed-chunk",
        "upstream-fia",
        "upstream-fia+mixed",
        True,
        ("prefix-seed", "mixed"),
    ),
)


def _launch_summary(run: PathRun) -> str:
    by_mode: dict[str, set[float]] = {}
    for forward in run.forwards:
        if not forward["error"]:
            by_mode.setdefault(forward["mode"], set()).add(attention_calls_per_layer(forward))
    return ", ".join(
        f"{mode} {'/'.join(f'{n:g}' for n in sorted(values))}"
        for mode, values in sorted(by_mode.items())
    )


def _head_dim(model: Path) -> int:
    """The model's attention head dim, which some upstream findings depend on."""
    import json

    config = json.loads((model / "config.json").read_text())
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def report(model: Path) -> tuple[str, bool]:
    """The side-by-side table; ``ok`` is False when the plugin differs from HF anywhere."""
    prompts = workloads(model)
    head_dim = _head_dim(model)
    hf = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in prompts.items()}
    lines = ["", "compared with sglang 0.5.23's in-tree Ascend backend (torch_npu stand-in):"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, run_name, mixed, names in RUNS:
            chosen = {n: b for n, b in prompts.items() if names is None or n in names}
            args: dict[str, Any] = {**ENGINE_ARGS, "enable_mixed_chunk": mixed}
            log = Path(tmp) / f"{len(lines)}.jsonl"
            run = run_path(path, model, chosen, NEW_TOKENS, log, **args)
            cells = []
            for name in chosen:
                if name in run.tokens:
                    same = run.tokens[name] == hf[name]
                    cells.append(f"{name} {'= HF' if same else 'DIFFERS'}")
                    ok = ok and (same or path != "plugin")
                else:
                    error = run.errors.get(name, run.start_error or "not run")
                    finding = explains(run_name, error, head_dim)
                    # The finding's first clause: where upstream goes wrong.
                    cause = "unexplained"
                    if finding:
                        cause = finding.cause.split(" reads ")[0].split(", while ")[0]
                    cells.append(f"{name} FAILED ({cause})")
                    ok = ok and path != "plugin"
            lines.append(f"  {label}: " + "; ".join(cells))
            lines.append(f"      attention launches per layer: {_launch_summary(run)}")
    return "\n".join(lines), ok
