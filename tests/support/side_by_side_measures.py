"""TEST-ONLY: the single-process side-by-side measurements that the tests and ``make demo`` share.

Each :class:`Config` is one ``side_by_side_runner`` runner per path (one model load) running one
or more scenarios; :func:`measure` runs a set of them and keeps each result, or the payload of
a runner that failed (a path that refuses a configuration is a measurement too). The readers
below turn results into the figures ``tests/upstream/test_runner_side_by_side.py`` asserts and
``demo/per_layer.py`` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import side_by_side_runner
from side_by_side import PATHS
from testbed.models import build_qwen2

# The attention and KV-write kernels each path launches, by the names its launches are counted
# under (the plugin's through ``ops``, upstream's through the torch_npu stand-in).
ATTENTION = {
    "plugin": ("fused_infer_attention_score",),
    "upstream-fia": ("npu_fused_infer_attention_score", "npu_fused_infer_attention_score_v2"),
    "upstream": ("_npu_flash_attention_qlens", "_npu_paged_attention"),
}
KV_WRITE = {
    "plugin": ("scatter_pa_kv_cache", "scatter_nd_update_"),
    "upstream-fia": ("npu_scatter_nd_update_",),
    "upstream": ("_npu_reshape_and_cache",),
}
# 16 is outside upstream's TND set {128, 192, 256} (ascend_backend.py:459-464), 128 inside it.
HEAD_DIMS = (16, 128)
LAYERS = (2, 6)  # host syncs are measured at two depths to tell per-step from per-layer syncs
BATCH_SIZES = [1, 8]


@dataclass(frozen=True)
class Config:
    """One runner per path: the model (head dim, layers), the page size and the scenarios."""

    head_dim: int
    layers: int
    scenarios: tuple[str, ...]
    page_size: int = 128


# Syncs run before launches on the shared runner, so they see the first forwards, as alone.
RUNNER_CONFIGS = (
    Config(16, LAYERS[0], ("syncs", "launches")),
    Config(16, LAYERS[1], ("syncs",)),
    Config(128, LAYERS[0], ("launches",)),
)
# What each path does at --page-size 16 (the engine-level proof is test_page_sizes_side_by_side).
PAGE_16 = Config(16, LAYERS[0], ("launches",), page_size=16)


def runner_model(head_dim: int, layers: int = 2) -> str:
    """The tiny Qwen2 at ``head_dim`` (16: the default test model; 128: 2 heads, 1 KV head)."""
    if head_dim == 16:
        return str(build_qwen2(num_hidden_layers=layers))
    # sglang derives Qwen2's head dim as hidden // heads on CPU (see test_fia_engine_gqa128).
    return str(
        build_qwen2(
            hidden_size=2 * head_dim,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_hidden_layers=layers,
        )
    )


Measured = dict[tuple[str, Config], dict[str, Any]]


def _args(config: Config) -> dict[str, Any]:
    return {
        "scenario": list(config.scenarios),
        "model_path": runner_model(config.head_dim, config.layers),
        "attention_backend": "ascend",
        "page_size": config.page_size,
        "batch_sizes": BATCH_SIZES,
    }


def _path_runs(path: str, configs: list[Config]) -> list[dict[str, Any]]:
    runs = side_by_side_runner.run_many(path, [_args(c) for c in configs])
    return [{"ok": True, **r["scenarios"]} if r["ok"] else r for r in runs]


def measure(configs: Iterable[Config], *, workers: int = 1) -> Measured:
    """Every path on every config: one child process per path (sglang imported once, one forked
    runner per config), ``workers`` of them at a time."""
    configs = list(configs)
    for config in configs:
        runner_model(config.head_dim, config.layers)  # build each model once, before the pool
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_path = dict(zip(PATHS, pool.map(lambda p: _path_runs(p, configs), PATHS), strict=True))
    return {(p, c): per_path[p][i] for p in PATHS for i, c in enumerate(configs)}


def result_for(
    measured: Measured,
    path: str,
    scenario: str,
    *,
    head_dim: int = 16,
    layers: int = LAYERS[0],
    page_size: int = 128,
) -> dict[str, Any]:
    """The result of ``path`` on the one measured config that ran ``scenario`` on that model."""
    (key,) = [
        (p, c)
        for p, c in measured
        if p == path
        and scenario in c.scenarios
        and (c.head_dim, c.layers, c.page_size) == (head_dim, layers, page_size)
    ]
    return measured[key]


def per_layer(result: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """(mode, batch, launches of ``names`` per layer) for each forward of a launches result."""
    return [
        (
            f["mode"],
            f["batch_size"],
            sum(f["calls"].get(n, 0) for n in names) / result["launches"]["num_layers"],
        )
        for f in result["launches"]["forwards"]
    ]


SyncKey = tuple[str, str, str]  # (kind, where: device or host, file:line)


def sync_counts(forward: dict[str, Any]) -> Counter[SyncKey]:
    """The host syncs of one forward of a syncs result, by (kind, where, site)."""
    return Counter((s["kind"], s["where"], s["site"]) for s in forward["syncs"])


def decode_step_syncs(result: dict[str, Any]) -> Counter[SyncKey]:
    """The host syncs of one decode step; raises unless both measured decode steps agree."""
    decodes = [f for f in result["syncs"]["forwards"] if f["mode"] == "DECODE"]
    counts = [sync_counts(f) for f in decodes]
    if len(counts) != 2 or counts[0] != counts[1]:
        raise ValueError(f"expected two identical decode steps, got {counts}")
    return counts[1]
