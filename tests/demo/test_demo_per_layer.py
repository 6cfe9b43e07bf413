"""``make demo``'s runner tables (``demo/per_layer.py``): each prints the figures it derives from
the runner results, and a plugin figure that breaks a claim fails the demo.

The results below have the shape ``side_by_side_measures.measure`` returns, with the figures
``tests/upstream/test_runner_side_by_side.py`` measures on the real runners.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from side_by_side_measures import LAYERS, PAGE_16, RUNNER_CONFIGS, Measured

import sglang_ascend_fia
from demo.per_layer import render, render_launches, render_page_16, render_syncs

ATTENTION = {
    "plugin": "fused_infer_attention_score",
    "upstream-fia": "npu_fused_infer_attention_score_v2",
    "upstream": "_npu_paged_attention",
}
KV_WRITE = {
    "plugin": "scatter_pa_kv_cache",
    "upstream-fia": "npu_scatter_nd_update_",
    "upstream": "_npu_reshape_and_cache",
}
SEQ_LENS_MAX = {"kind": "__index__", "where": "device", "site": "ascend_backend.py:569"}


def _launches(path: str, head_dim: int, layers: int = 2) -> dict[str, Any]:
    forwards = []
    for batch in (1, 8):
        for mode in ("EXTEND", "DECODE"):
            per_request = path == "upstream-fia" and head_dim == 16 and mode == "EXTEND"
            attention = layers * (batch if per_request else 1)
            kv = layers * (2 if path == "upstream-fia" else 1)
            calls = {ATTENTION[path]: attention, KV_WRITE[path]: kv}
            forwards.append({"mode": mode, "batch_size": batch, "calls": calls, "tokens": [batch]})
    return {"forwards": forwards, "num_layers": layers}


def _plugin_decode_sync() -> tuple[Path, int]:
    """Where the plugin's one decode sync is: the ``.tolist()`` of the batch's host length
    mirror in the FIA backends' ``_kv_lens``. Read from the source (without importing sglang),
    so moving the code cannot leave the site below stale."""
    sites = []
    for path in sorted(Path(sglang_ascend_fia.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "_kv_lens":
                sites += [
                    (path, call.lineno)
                    for call in ast.walk(node)
                    if isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "tolist"
                ]
    assert len(sites) == 1, f"expected one .tolist() in one _kv_lens, found {sites}"
    return sites[0]


def plugin_decode_sync_site() -> str:
    """The sync's ``file:line`` as ``host_syncs`` names it (file name only)."""
    path, line = _plugin_decode_sync()
    return f"{path.name}:{line}"


def test_the_plugin_sync_site_is_found_in_the_source() -> None:
    path, line = _plugin_decode_sync()
    assert "seq_lens_cpu.tolist()" in path.read_text().splitlines()[line - 1]


def _decode_syncs(path: str, layers: int) -> list[dict[str, str]]:
    if path == "plugin":
        return [{"kind": "tolist", "where": "host", "site": plugin_decode_sync_site()}]
    syncs = [SEQ_LENS_MAX]
    if path == "upstream-fia":
        for kind in ("cpu", "tolist"):
            site = {"kind": kind, "where": "host", "site": "ascend_backend.py:3240"}
            syncs += [site] * layers
    return syncs


def _syncs(path: str, layers: int) -> dict[str, Any]:
    decode = {"mode": "DECODE", "syncs": _decode_syncs(path, layers)}
    return {"forwards": [{"mode": "EXTEND", "syncs": []}, decode, decode]}


def measured() -> Measured:
    results: Measured = {}
    for path in ATTENTION:
        for config in RUNNER_CONFIGS:
            result: dict[str, Any] = {"ok": True}
            if "syncs" in config.scenarios:
                result["syncs"] = _syncs(path, config.layers)
            if "launches" in config.scenarios:
                result["launches"] = _launches(path, config.head_dim, config.layers)
            results[path, config] = result
    results["plugin", PAGE_16] = {
        "ok": False,
        "stage": "load",
        "failed_forward": None,
        "error": "UnsupportedConfiguration: --page-size=16 is not allowed: FIA page attention "
        "for MHA/GQA models accepts page sizes (128, 256, 384, 512) (...)\ntrace",
    }
    results["upstream-fia", PAGE_16] = {
        "ok": False,
        "stage": "scenario",
        "failed_forward": {"mode": "EXTEND", "batch_size": 1, "index": 0},
        "error": "ValueError: fused_infer_attention_score: block_size=16 is not allowed: x",
    }
    results["upstream", PAGE_16] = {"ok": True, "launches": _launches("upstream", 16)}
    return results


def _rows(text: str, first: int) -> list[str]:
    """The table's lines from ``first`` on, with runs of spaces made one."""
    return [" ".join(line.split()) for line in text.splitlines()[first:]]


def test_launch_table_prints_the_measured_launches_per_layer() -> None:
    text, ok = render_launches(measured())
    assert ok
    # head dim, then attention launches per layer in prefill b1 / decode b1 / prefill b8 /
    # decode b8, then KV-write launches per layer.
    assert _rows(text, 2) == [
        "plugin 16 1 / 1 / 1 / 1 1 / 1 / 1 / 1 ✓",
        "upstream FIA (ASCEND_USE_FIA=1) 16 1 / 1 / 8 / 1 2 / 2 / 2 / 2",
        "upstream ATB (ASCEND_USE_FIA unset) 16 1 / 1 / 1 / 1 1 / 1 / 1 / 1",
        "plugin 128 1 / 1 / 1 / 1 1 / 1 / 1 / 1 ✓",
        "upstream FIA (ASCEND_USE_FIA=1) 128 1 / 1 / 1 / 1 2 / 2 / 2 / 2",
        "upstream ATB (ASCEND_USE_FIA unset) 128 1 / 1 / 1 / 1 1 / 1 / 1 / 1",
    ]


@pytest.mark.parametrize("scenario", ["attention", "kv-write", "missing-forward"])
def test_plugin_launches_other_than_one_per_layer_fail(scenario: str) -> None:
    results = measured()
    plugin = results["plugin", RUNNER_CONFIGS[2]]["launches"]  # head dim 128
    if scenario == "missing-forward":
        plugin["forwards"].pop()
    else:
        name = ATTENTION["plugin"] if scenario == "attention" else KV_WRITE["plugin"]
        plugin["forwards"][2]["calls"][name] = 4  # prefill b8 on 2 layers
    text, ok = render_launches(results)
    assert not ok
    line = text.splitlines()[5]
    assert line.startswith("  plugin") and line.endswith("✗"), line
    if scenario == "attention":
        assert "1 / 1 / 2 / 1      1 / 1 / 1 / 1" in line


def test_sync_table_prints_syncs_per_step_against_depth() -> None:
    text, ok = render_syncs(measured())
    assert ok
    assert f"at {LAYERS[0]} and {LAYERS[1]} layers" in text.splitlines()[0]
    # device / host tensor syncs at 2 layers, at 6 layers, per added layer; the device-sync
    # sites; the sites that grow with depth.
    assert _rows(text, 2) == [
        "plugin 0 / 1 0 / 1 0 / 0 -; - ✓",
        "upstream FIA (ASCEND_USE_FIA=1) 1 / 4 1 / 12 0 / 2 ascend_backend.py:569 __index__; "
        "ascend_backend.py:3240 cpu, ascend_backend.py:3240 tolist",
        "upstream ATB (ASCEND_USE_FIA unset) 1 / 0 1 / 0 0 / 0 ascend_backend.py:569 __index__; -",
    ]


@pytest.mark.parametrize("regression", ["device-sync", "per-layer-sync"])
def test_plugin_decode_syncs_on_the_device_or_per_layer_fail(regression: str) -> None:
    results = measured()
    layers = LAYERS[1] if regression == "per-layer-sync" else LAYERS[0]
    (config,) = [c for c in RUNNER_CONFIGS if "syncs" in c.scenarios and c.layers == layers]
    decode = results["plugin", config]["syncs"]["forwards"][1]
    extra = (
        [SEQ_LENS_MAX]
        if regression == "device-sync"
        else [{"kind": "item", "where": "host", "site": "backend.py:9"}] * layers
    )
    decode["syncs"] = [*decode["syncs"], *extra]
    text, ok = render_syncs(results)
    assert not ok
    line = text.splitlines()[2]
    assert line.endswith("✗"), line
    expected = "1 / 1" if regression == "device-sync" else "0 / 7"
    assert expected in line


def test_page_16_table_says_what_each_path_did() -> None:
    text, ok = render_page_16(measured())
    assert ok
    lines = text.splitlines()
    assert "the plugin accepts (128, 256, 384, 512)" in lines[0]
    assert lines[1].startswith("  plugin: refused at start-up: UnsupportedConfiguration")
    assert lines[1].endswith("✓")
    assert "starts; the prefill at batch 1 (forward 1) fails: ValueError" in lines[2]
    assert "serves prefill and decode at batch 1 and 8" in lines[3]
    assert lines[3].endswith("next tokens = the plugin's at page 128")


def test_page_16_plugin_starting_or_failing_later_fails_the_demo() -> None:
    results = measured()
    results["plugin", PAGE_16] = {"ok": True, "launches": _launches("plugin", 16)}
    text, ok = render_page_16(results)
    assert not ok and text.splitlines()[1].endswith("✗")
    results["plugin", PAGE_16] = {**results["upstream-fia", PAGE_16]}
    text, ok = render_page_16(results)
    assert not ok and "starts; the prefill" in text.splitlines()[1]


def test_upstream_page_16_tokens_differing_are_shown() -> None:
    results = measured()
    results["upstream", PAGE_16]["launches"]["forwards"][0]["tokens"] = [99]
    text, ok = render_page_16(results)
    assert ok  # upstream's figures are shown, not judged
    assert text.splitlines()[3].endswith("next tokens ≠ the plugin's at page 128")


def test_a_failed_plugin_runner_fails_every_table() -> None:
    results = measured()
    failed = {"ok": False, "stage": "load", "failed_forward": None, "error": "OSError: x"}
    for config in RUNNER_CONFIGS:
        results["plugin", config] = failed
    text, ok = render(results)
    assert not ok
    assert text.count("failed: OSError: x") == 3  # both head dims and the sync table
