"""Launches per layer and host syncs per forward, plugin against sglang's in-tree Ascend backend,
through sglang's real ``ModelRunner`` in one process (``side_by_side_runner``); the same
measurements ``make demo`` prints (``side_by_side_measures``).

- Launches: a prefill at batch 1 and at batch 8, each followed by a decode step, at head dim
  128 (inside upstream's TND set) and 16 (outside it).
- Host syncs: one prefill and two decode steps on 2 and 6 layers; every ``.tolist()``,
  ``.item()``, ``.cpu()`` and implicit ``__index__``/``__int__``/``__bool__`` outside the kernels,
  split by whether the tensor was on the device (``host_syncs``).
"""

from __future__ import annotations

from typing import Any

import pytest
from side_by_side_measures import (
    ATTENTION,
    KV_WRITE,
    LAYERS,
    RUNNER_CONFIGS,
    Measured,
    decode_step_syncs,
    measure,
    per_layer,
    result_for,
    sync_counts,
)

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def measured() -> Measured:
    results = measure(RUNNER_CONFIGS)
    failed = {key: r["error"] for key, r in results.items() if not r["ok"]}
    assert not failed, failed
    return results


def launches(measured: Measured, head_dim: int, path: str) -> dict[str, Any]:
    return result_for(measured, path, "launches", head_dim=head_dim)


def syncs(measured: Measured, layers: int, path: str) -> dict[str, Any]:
    return result_for(measured, path, "syncs", layers=layers)


@pytest.mark.parametrize("head_dim", [16, 128])
def test_plugin_one_attention_launch_per_layer_everywhere(measured, head_dim: int) -> None:  # type: ignore[no-untyped-def]
    result = launches(measured, head_dim, "plugin")
    assert result["launches"]["backend"] == "AscendFIABackend"
    assert result["launches"]["plugin_imported"]
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
def test_upstream_launches_per_layer(measured, head_dim: int, path: str) -> None:  # type: ignore[no-untyped-def]
    result = launches(measured, head_dim, path)
    assert result["launches"]["backend"] == "AscendAttnBackend"
    assert not result["launches"]["plugin_imported"]
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
def test_kv_write_launches_per_layer(measured, head_dim: int) -> None:  # type: ignore[no-untyped-def]
    # K and V: one scatter_pa_kv_cache per layer for the plugin; two scatters on upstream's FIA
    # path (memory_pool_npu.py:331-346, its scatter-PA form is opt-in); one ATB
    # reshape-and-cache on upstream's other path.
    for path, expected in (("plugin", 1.0), ("upstream-fia", 2.0), ("upstream", 1.0)):
        rows = per_layer(launches(measured, head_dim, path), KV_WRITE[path])
        assert {n for _, _, n in rows} == {expected}, (path, rows)


def test_every_path_greedy_tokens_agree(measured) -> None:  # type: ignore[no-untyped-def]
    # The same prompts give the same next tokens on every path (the engine tests compare HF).
    for head_dim in (16, 128):
        tokens = {
            path: [f["tokens"] for f in launches(measured, head_dim, path)["launches"]["forwards"]]
            for path in ("plugin", "upstream-fia", "upstream")
        }
        assert tokens["plugin"] == tokens["upstream-fia"] == tokens["upstream"], tokens


def test_plugin_decode_has_no_device_sync_and_no_per_layer_sync(measured) -> None:  # type: ignore[no-untyped-def]
    few, many = (decode_step_syncs(syncs(measured, n, "plugin")) for n in LAYERS)
    assert few == many, (few, many)
    assert not [s for s in many if s[1] == "device"], many
    assert sum(many.values()) == 1, many  # init_forward_metadata's seq_lens_cpu.tolist()


def test_upstream_decode_syncs(measured) -> None:  # type: ignore[no-untyped-def]
    for path in ("upstream-fia", "upstream"):
        few, many = (decode_step_syncs(syncs(measured, n, path)) for n in LAYERS)
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


def test_upstream_fia_prefill_outside_tnd_syncs_the_device_per_layer(measured) -> None:  # type: ignore[no-untyped-def]
    few, many = (
        sync_counts(syncs(measured, n, "upstream-fia")["syncs"]["forwards"][0]) for n in LAYERS
    )
    # The per-request loop reads forward_batch.seq_lens (device) in every layer (:1929).
    key = ("cpu", "device", "ascend_backend.py:1929")
    assert many[key] - few[key] == LAYERS[1] - LAYERS[0]
    plugin = [
        s
        for s in syncs(measured, LAYERS[1], "plugin")["syncs"]["forwards"][0]["syncs"]
        if s["where"] == "device"
    ]
    assert plugin == []
