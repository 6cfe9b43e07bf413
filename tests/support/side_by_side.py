"""TEST-ONLY: the plugin and sglang 0.5.23's in-tree Ascend backend through the same Engine runs.

Three paths, all with ``--attention-backend ascend`` and the same engine arguments:

- ``plugin``: sglang-ascend-fia active (``ASCEND_USE_FIA=1``), its FIA backend on ``ops``;
- ``upstream-fia``: the plugin turned off through sglang's ``SGLANG_PLUGINS`` allow-list, sglang's
  own ``AscendAttnBackend`` with ``ASCEND_USE_FIA=1`` (its FIA path);
- ``upstream``: the same with ``ASCEND_USE_FIA`` unset (its ATB paged-attention path).

Upstream runs on the test-only torch_npu stand-in (``tests/support/npu_standin``), which is put
on ``PYTHONPATH`` by :func:`path_env` only. Every path runs with the NPU dispatch of mixed
batches (``NPU_STANDIN_MIXED_DISPATCH=1``), so a MIXED batch (``--enable-mixed-chunk``) reaches
``forward_mixed`` as on an NPU instead of becoming a plain extend as sglang does on CPU. The
stand-in's probe plugin logs each forward inside the scheduler: mode, kernel calls, backend and
pool classes, whether ``sglang_ascend_fia.plugin`` was ever imported, and the error of a forward
that raised (after which it ends the engine, ``NPU_STANDIN_KILL_ON_ERROR=1``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.engine import EngineError, EngineProcess, testbed_env

SUPPORT_DIR = Path(__file__).resolve().parent
STANDIN_DIR = SUPPORT_DIR / "npu_standin"
PATHS = ("plugin", "upstream-fia", "upstream")
# Upstream runs load only the test-bed plugins: sglang_ascend_fia's entry point is not listed.
UPSTREAM_PLUGINS = "fia_testbed,npu_standin_probe"
GENERATE_TIMEOUT_S = 240.0


def path_env(path: str, log: Path, **extra: str | None) -> dict[str, str]:
    """The environment of one path's engine (or single-process runner)."""
    if path not in PATHS:
        raise ValueError(f"path={path!r}: accepted values are {PATHS}")
    overrides: dict[str, str | None] = {
        "NPU_STANDIN_LOG": str(log),
        "NPU_STANDIN_MIXED_DISPATCH": "1",
        "NPU_STANDIN_KILL_ON_ERROR": "1",
        "ASCEND_USE_FIA": None if path == "upstream" else "1",
        "SGLANG_PLUGINS": None if path == "plugin" else UPSTREAM_PLUGINS,
        **extra,
    }
    env = testbed_env(**overrides)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN_DIR), env["PYTHONPATH"]])
    return env


def read_log(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@dataclass
class PathRun:
    """One path's results: tokens (or the error) per workload, and the probe's forward log."""

    path: str
    tokens: dict[str, list[list[int]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    start_error: str | None = None
    forwards: list[dict[str, Any]] = field(default_factory=list)


def run_path(
    path: str,
    model: Path,
    workloads: dict[str, list[list[int]]],
    new_tokens: int,
    log: Path,
    **engine_args: Any,
) -> PathRun:
    """Every workload in order through one engine; a failed workload restarts the engine.

    A scheduler that raises takes its engine down, so the workloads after it get a fresh engine
    (a radix-hit workload then finds a cold cache, which the probe log shows as EXTEND only).
    """
    run = PathRun(path)
    env = path_env(path, log)
    pending = list(workloads.items())
    while pending:
        try:
            engine = EngineProcess(model, env=env, attention_backend="ascend", **engine_args)
        except EngineError as exc:
            run.start_error = str(exc)
            break
        with engine:
            while pending:
                name, batch = pending.pop(0)
                seen = len(read_log(log))
                try:
                    reply = engine.generate(batch, new_tokens, timeout=GENERATE_TIMEOUT_S)
                    run.tokens[name] = reply["output_ids"]
                except EngineError as exc:
                    # The probe logged the forward that raised before ending the engine.
                    raised = [f["error"] for f in read_log(log)[seen:] if f["error"]]
                    run.errors[name] = "\n".join([*raised, str(exc)])
                    break
    run.forwards = read_log(log)
    return run


def served_by(run: PathRun) -> set[tuple[str, str, bool]]:
    """(attention backend, KV pool, plugin imported) over every forward the probe logged."""
    return {(f["attn_backend"], f["kv_pool"], f["plugin_imported"]) for f in run.forwards}


def kernel_calls(forward: dict[str, Any]) -> dict[str, int]:
    """Kernel launches of one logged forward: the plugin's through ``ops``, upstream's through
    the stand-in (whose FIA and scatter calls are the same ``ops`` calls underneath)."""
    return forward["standin_calls"] or forward["ops_launches"]


def attention_calls_per_layer(forward: dict[str, Any]) -> float:
    """Attention kernel launches (FIA v1/v2, ATB paged/qlens) per layer in one forward."""
    attention = (
        "npu_fused_infer_attention_score",
        "npu_fused_infer_attention_score_v2",
        "_npu_flash_attention_qlens",
        "_npu_paged_attention",
        "fused_infer_attention_score",
        "fused_infer_attention_score_v2",
    )
    calls = kernel_calls(forward)
    return sum(calls.get(name, 0) for name in attention) / forward["num_layers"]
