"""Shared by the FIA MLA engine tests: run the FIA workloads through the plugin on a DeepSeek
model and through HF transformers (the independent oracle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testbed.engine import EngineProcess, testbed_env
from testbed.oracle import hf_greedy

from e2e.fia_common import ENGINE_ARGS, NEW_TOKENS, read_launch_log


def run_fia_and_hf(
    model: Path, prompts: dict[str, list[list[int]]], launch_log: Path
) -> dict[str, Any]:
    """Every workload, in order, through one plugin engine (``--attention-backend ascend``,
    page 128, chunked prefill 256, mixed chunks) and through HF."""
    runs: dict[str, Any] = {"fia": {}, "meta": {}}
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(launch_log))
    with EngineProcess(model, env=env, attention_backend="ascend", **ENGINE_ARGS) as engine:
        for name, batch in prompts.items():
            out = engine.generate(batch, NEW_TOKENS)
            runs["fia"][name] = out["output_ids"]
            runs["meta"][name] = out["meta"]
    runs["hf"] = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in prompts.items()}
    runs["launches"] = read_launch_log(launch_log)
    return runs


def served_by(records: list[dict[str, Any]]) -> set[str]:
    return {json.dumps(r["served_by"], sort_keys=True) for r in records}


def launches_per_layer(records: list[dict[str, Any]], op: str) -> set[float]:
    return {r["launches"].get(op, 0) / r["num_layers"] for r in records}


# Prefill runs on FIA v2 (TND up to 1M tokens), decode on v1 (BSND paged).
PREFILL_FIA, DECODE_FIA = "fused_infer_attention_score_v2", "fused_infer_attention_score"


def fia_launches_per_layer(records: list[dict[str, Any]]) -> dict[str, set[float]]:
    """FIA launches per layer, by mode: each mode's own op, and both ops together."""
    by_mode: dict[str, set[float]] = {}
    for r in records:
        op = DECODE_FIA if r["mode"] == "DECODE" else PREFILL_FIA
        total = sum(r["launches"].get(o, 0) for o in (PREFILL_FIA, DECODE_FIA))
        per_layer = by_mode.setdefault(r["mode"], set())
        per_layer.add(r["launches"].get(op, 0) / r["num_layers"])
        per_layer.add(total / r["num_layers"])
    return by_mode
