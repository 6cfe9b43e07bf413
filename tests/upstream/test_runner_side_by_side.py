"""Launches per layer and host syncs per forward, plugin against sglang's in-tree Ascend backend,
through sglang's real ``ModelRunner`` in one process (``side_by_side_runner``).

- Launches: a prefill at batch 1 and at batch 8, each followed by a decode step, at head dim
  128 (inside upstream's TND set) and 16 (outside it).
- Host syncs: one prefill and two decode steps on 2 and 6 layers; every ``.tolist()``,
  ``.item()``, ``.cpu()`` and implicit ``__index__``/``__int__``/``__bool__`` outside the kernels,
  split by whether the tensor was on the device (``host_syncs``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import side_by_side_runner
from side_by_side import PATHS
from testbed.models import build_qwen2

pytestmark = pytest.mark.engine

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
LAYERS = (2, 6)


def _model(head_dim: int, layers: int = 2) -> str:
    if head_dim == 16:
        return str(build_qwen2(num_hidden_layers=layers))
    return str(
        build_qwen2(
            hidden_size=2 * head_dim,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_hidden_layers=layers,
        )
    )


@pytest.fixture(scope="module")
def launches() -> dict[tuple[int, str], dict[str, Any]]:
    results = {}
    for head_dim in (16, 128):
        model = _model(head_dim)
        for path in PATHS:
            results[head_dim, path] = side_by_side_runner.run(
                path,
                {
                    "scenario": "launches",
                    "model_path": model,
                    "attention_backend": "ascend",
                    "batch_sizes": [1, 8],
                },
            )
    return results


def per_layer(result: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """(mode, batch, launches of ``names`` per layer) for each forward."""
    return [
        (
            f["mode"],
            f["batch_size"],
            sum(f["calls"].get(n, 0) for n in names) / result["num_layers"],
        )
        for f in result["forwards"]
    ]


@pytest.mark.parametrize("head_dim", [16, 128])
def test_plugin_one_attention_launch_per_layer_everywhere(launches, head_dim: int) -> None:  # type: ignore[no-untyped-def]
    result = launches[head_dim, "plugin"]
    assert result["backend"] == "AscendFIABackend" and result["plugin_imported"]
    rows = per_layer(result, ATTENTION["plugin"])
    assert [(m, b) for m, b, _ in rows] == [
        ("EXTEND", 1),
        ("DECODE", 1),
        ("EXTEND", 8),
        ("DECODE", 8),
    ]
    assert {n for _, _, n in rows} == {1.0}, rows


@pytest.mark.parametrize("path", ["upstream-fia", "upstream"])
@pytest.mark.parametrize("head_dim", [16, 128])
def test_upstream_launches_per_layer(launches, head_dim: int, path: str) -> None:  # type: ignore[no-untyped-def]
    result = launches[head_dim, path]
    assert result["backend"] == "AscendAttnBackend" and not result["plugin_imported"]
    rows = {(m, b): n for m, b, n in per_layer(result, ATTENTION[path])}
    # Outside {128, 192, 256} upstream's FIA prefill loops over the batch, one FIA v2 call per
    # request (_can_use_tnd, ascend_backend.py:459-464, loop at :1931); everything else is one.
    looping = path == "upstream-fia" and head_dim == 16
    assert rows == {
        ("EXTEND", 1): 1.0,
        ("DECODE", 1): 1.0,
        ("EXTEND", 8): 8.0 if looping else 1.0,
        ("DECODE", 8): 1.0,
    }


@pytest.mark.parametrize("head_dim", [16, 128])
def test_kv_write_launches_per_layer(launches, head_dim: int) -> None:  # type: ignore[no-untyped-def]
    # K and V: one scatter_pa_kv_cache per layer for the plugin; two scatters on upstream's FIA
    # path (memory_pool_npu.py:331-346, its scatter-PA form is opt-in); one ATB
    # reshape-and-cache on upstream's other path.
    for path, expected in (("plugin", 1.0), ("upstream-fia", 2.0), ("upstream", 1.0)):
        rows = per_layer(launches[head_dim, path], KV_WRITE[path])
        assert {n for _, _, n in rows} == {expected}, (path, rows)


@pytest.fixture(scope="module")
def syncs() -> dict[tuple[int, str], dict[str, Any]]:
    results = {}
    for layers in LAYERS:
        model = _model(16, layers)
        for path in PATHS:
            results[layers, path] = side_by_side_runner.run(
                path, {"scenario": "syncs", "model_path": model, "attention_backend": "ascend"}
            )
    return results


def decode_syncs(result: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    """(kind, where, site) counts of one decode step (the second; the first matches it)."""
    decodes = [f for f in result["forwards"] if f["mode"] == "DECODE"]
    assert len(decodes) == 2
    counts = [Counter((s["kind"], s["where"], s["site"]) for s in f["syncs"]) for f in decodes]
    assert counts[0] == counts[1]
    return counts[1]


def test_plugin_decode_has_no_device_sync_and_no_per_layer_sync(syncs) -> None:  # type: ignore[no-untyped-def]
    few, many = (decode_syncs(syncs[n, "plugin"]) for n in LAYERS)
    assert few == many, (few, many)
    assert not [s for s in many if s[1] == "device"], many
    assert sum(many.values()) == 1, many  # init_forward_metadata's seq_lens_cpu.tolist()


def test_upstream_decode_syncs(syncs) -> None:  # type: ignore[no-untyped-def]
    for path in ("upstream-fia", "upstream"):
        few, many = (decode_syncs(syncs[n, path]) for n in LAYERS)
        device = [s for s in many if s[1] == "device"]
        # init_forward_metadata slices req_to_token with seq_lens.max(), a device tensor
        # (ascend_backend.py:567-570): one device sync per decode step.
        assert device == [("__index__", "device", "ascend_backend.py:569")], many
        assert many[device[0]] == 1
        grown = {s: many[s] - few[s] for s in many if many[s] != few[s]}
        if path == "upstream-fia":
            # forward_decode converts the host lengths per layer (ascend_backend.py:3238-3240).
            layers_added = LAYERS[1] - LAYERS[0]
            assert grown == {
                ("cpu", "host", "ascend_backend.py:3240"): layers_added,
                ("tolist", "host", "ascend_backend.py:3240"): layers_added,
            }, grown
        else:
            assert grown == {}, grown


def test_upstream_fia_prefill_outside_tnd_syncs_the_device_per_layer(syncs) -> None:  # type: ignore[no-untyped-def]
    few, many = (
        Counter(
            (s["kind"], s["where"], s["site"])
            for s in syncs[n, "upstream-fia"]["forwards"][0]["syncs"]
        )
        for n in LAYERS
    )
    # The per-request loop reads forward_batch.seq_lens (device) in every layer (:1929).
    key = ("cpu", "device", "ascend_backend.py:1929")
    assert many[key] - few[key] == LAYERS[1] - LAYERS[0]
    plugin = [
        s for s in syncs[LAYERS[1], "plugin"]["forwards"][0]["syncs"] if s["where"] == "device"
    ]
    assert plugin == []
