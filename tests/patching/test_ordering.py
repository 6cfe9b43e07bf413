"""ddtrace-style ordering matrix: each ordering of import / activate / deactivate runs in a fresh
interpreter, against every real manifest entry whose sglang module imports on this machine."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sglang_ascend_fia import plugin
from sglang_ascend_fia.manifest import PatchEntry, load_manifest

TESTS_DIR = Path(__file__).resolve().parents[1]
ENTRIES = [e for e in load_manifest() if plugin.module_file_exists(e.module)]

# The object sglang itself puts at each target, named independently of the patcher, so "the
# original is back" is checked against sglang and not against what the patcher recorded.
STOCK: dict[str, dict[str, Any]] = {
    "ascend-fia-backend": {
        "type": "function",
        "module": "sglang.srt.layers.attention.attention_registry",
        "qualname": "create_ascend_backend",
    },
    "fia-mla-kv-pool": {
        "type": "ABCMeta",  # sglang's KV pools are abstract base classes
        "module": "sglang.srt.hardware_backend.npu.memory_pool_npu",
        "qualname": "NPUMLATokenToKVPool",
    },
    "fia-mla-deepseek-prepare": {
        "type": "function",
        "module": "sglang.srt.models.deepseek_v2",
        "qualname": "DeepseekV2AttentionMLA.forward_prepare",
    },
    "fia-mla-deepseek-core": {
        "type": "function",
        "module": "sglang.srt.models.deepseek_v2",
        "qualname": "DeepseekV2AttentionMLA.forward_core",
    },
    "moe-gating-top-k": {
        "type": "function",
        "module": "sglang.srt.layers.moe.topk",
        "qualname": "TopK.forward_native",
    },
    # sglang aliases forward_native = forward_cpu (unquant.py:1468).
    "moe-routed-experts": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.unquant",
        "qualname": "UnquantizedFusedMoEMethod.forward_cpu",
    },
    "w8a8-int8-methods": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.w8a8_int8",
        "qualname": "W8A8Int8Config.get_quant_method",
    },
    "moe-gating-top-k-npu": {
        "type": "function",
        "module": "sglang.srt.layers.moe.topk",
        "qualname": "TopK.forward_npu",
    },
    "moe-routed-experts-npu": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.unquant",
        "qualname": "UnquantizedFusedMoEMethod.forward_npu",
    },
    "moe-npu-init-routing": {
        "type": "function",
        "module": "sglang.srt.hardware_backend.npu.moe.init_routing",
        "qualname": "NPUMoEInitRouting_v2._init_routing",
    },
    "moe-npu-finalize-routing": {
        "type": "function",
        "module": "sglang.srt.hardware_backend.npu.moe.finalize_routing",
        "qualname": "NPUFinalizeRouting._finalize_routing",
    },
    "in-tree-mode-pool": {
        "type": "function",
        "module": "sglang.srt.model_executor.model_runner",
        "qualname": "ModelRunner.alloc_memory_pool",
    },
    "in-tree-mode-backends": {
        "type": "function",
        "module": "sglang.srt.model_executor.model_runner",
        "qualname": "ModelRunner.init_attention_backends",
    },
    "modelslim-w8a8-config": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.modelslim.modelslim",
        "qualname": "ModelSlimConfig.get_quant_method",
    },
    "modelslim-w8a8-moe-apply": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.modelslim.modelslim",
        "qualname": "ModelSlimFusedMoEMethod.apply",
    },
    "modelslim-w8a8-linear-weights": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.modelslim.schemes.modelslim_w8a8_int8",
        "qualname": "ModelSlimW8A8Int8.process_weights_after_loading",
    },
    "modelslim-w8a8-linear-apply": {
        "type": "function",
        "module": "sglang.srt.layers.quantization.modelslim.schemes.modelslim_w8a8_int8",
        "qualname": "ModelSlimW8A8Int8.apply_weights",
    },
    "npu-moe-dynamic-quant-init": {
        "type": "function",
        "module": "sglang.srt.hardware_backend.npu.moe.quant",
        "qualname": "HiddenStatesDynamicQuant.__init__",
    },
    "npu-moe-dynamic-quant-call": {
        "type": "function",
        "module": "sglang.srt.hardware_backend.npu.moe.quant",
        "qualname": "HiddenStatesDynamicQuant.__call__",
    },
    # The name memory_pool_npu imported (memory_pool_npu.py:17), defined in utils/common.py.
    "in-tree-flag-pool": {
        "type": "function",
        "module": "sglang.srt.utils.common",
        "qualname": "get_bool_env_var",
        "defined_in": "sglang/srt/utils/common.py",
    },
    "in-tree-flag-backend": {
        "type": "function",
        "module": "sglang.srt.utils.common",
        "qualname": "get_bool_env_var",
        "defined_in": "sglang/srt/utils/common.py",
    },
}
# Modules that must import on the CPU test bed: if one stops importing, the test bed is broken
# and the matrix must fail rather than skip itself away.
MUST_IMPORT = {
    "sglang.srt.layers.attention.attention_registry",
    "sglang.srt.layers.moe.topk",
    "sglang.srt.layers.quantization.unquant",
    "sglang.srt.layers.quantization.w8a8_int8",
    "sglang.srt.hardware_backend.npu.moe.init_routing",
    "sglang.srt.hardware_backend.npu.moe.finalize_routing",
    "sglang.srt.layers.quantization.modelslim.modelslim",
    "sglang.srt.layers.quantization.modelslim.schemes.modelslim_w8a8_int8",
    "sglang.srt.hardware_backend.npu.moe.quant",
}


@functools.cache
def _import_errors() -> dict[str, str]:
    """Which entry modules cannot import here (e.g. the in-tree ascend_backend imports torch_npu
    and cannot load on CPU), probed in one fresh interpreter, one module at a time."""
    modules = sorted({e.module for e in ENTRIES})
    probe = (
        "import importlib, json, sys, traceback\n"
        "errors = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException:\n"
        "        errors[name] = traceback.format_exc()[-2000:]\n"
        "print(json.dumps(errors))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *modules], capture_output=True, text=True, env=os.environ
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _importable() -> list[PatchEntry]:
    return [e for e in ENTRIES if e.module not in _import_errors()]


@functools.cache
def _run_all(steps: tuple[str, ...], toggle: str, remove: str = "") -> dict[str, Any]:
    """One fresh interpreter runs ``steps`` for every importable entry at once; ``remove``
    (``module:Owner.attr``) is deleted as sglang imports its module (the test bed's
    sitecustomize), as in an sglang that renamed it."""
    names = ",".join(e.name for e in _importable())
    env = {**os.environ, "ASCEND_USE_FIA": toggle}
    if remove:
        env["FIA_TESTBED_REMOVE_ATTRIBUTE"] = remove
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "patching.scenario", names, *steps],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(entry: PatchEntry, *steps: str, toggle: str = "1") -> dict[str, Any]:
    """``entry``'s part of the ordering's report, with what activation imported."""
    report = _run_all(steps, toggle)
    return {**report["entries"][entry.name], "imported_by_activate": report["imported_by_activate"]}


def _is_stock(entry: PatchEntry, target: dict[str, Any] | None, module_file: str) -> bool:
    """The target object is sglang's own: its name, and (for code) its defining file."""
    if target is None:
        return False
    expected = dict(STOCK[entry.name])
    # A name the module imported is defined in another file than the module's own.
    defined_in = expected.pop("defined_in", None)
    if {k: target[k] for k in expected} != expected:
        return False
    if defined_in is not None:
        return target["file"] is not None and target["file"].endswith(defined_in)
    return target["file"] is None or target["file"] == module_file


def assert_wrapped_once(entry: PatchEntry, report: dict[str, Any], check: dict[str, Any]) -> None:
    if entry.kind == "wrap":
        assert check["wrapped"] and check["wrapper_is_hook"], check
        assert not check["double_wrapped"], check
        assert _is_stock(entry, check["target"], report["module_file"]), check
    else:
        assert check["is_hook"], check


def assert_original(entry: PatchEntry, report: dict[str, Any], check: dict[str, Any]) -> None:
    assert not check["wrapped"] and not check["is_hook"], check
    assert _is_stock(entry, check["target"], report["module_file"]), check


@pytest.fixture(params=ENTRIES, ids=lambda e: e.name)
def entry(request: pytest.FixtureRequest) -> PatchEntry:
    error = _import_errors().get(request.param.module)
    if error is not None:
        if request.param.module in MUST_IMPORT:
            pytest.fail(f"{request.param.module} must import on the CPU test bed:\n{error}")
        pytest.skip(f"{request.param.module} cannot be imported on this machine")
    return request.param


def test_matrix_covers_a_real_patch() -> None:
    assert any(e.module in MUST_IMPORT for e in ENTRIES)


def test_every_entry_names_its_stock_object() -> None:
    assert set(STOCK) == {e.name for e in ENTRIES}


def test_import_then_activate(entry: PatchEntry) -> None:
    report = run(entry, "import", "check", "activate", "check")
    assert_original(entry, report, report["checks"][0])
    assert_wrapped_once(entry, report, report["checks"][1])


def test_activate_then_import_is_lazy(entry: PatchEntry) -> None:
    report = run(entry, "activate", "check", "import", "check")
    assert report["checks"][0] == {"module_imported": False}
    assert not [m for m in report["imported_by_activate"] if m.startswith("sglang.")]
    assert "torch_npu" not in report["imported_by_activate"]
    assert_wrapped_once(entry, report, report["checks"][1])


def test_activate_twice_never_double_wraps(entry: PatchEntry) -> None:
    lazy = run(entry, "activate", "activate", "import", "check", "activate", "check")
    assert_wrapped_once(entry, lazy, lazy["checks"][0])
    assert_wrapped_once(entry, lazy, lazy["checks"][1])
    eager = run(entry, "import", "activate", "activate", "check")
    assert_wrapped_once(entry, eager, eager["checks"][0])


def test_activate_deactivate_activate(entry: PatchEntry) -> None:
    report = run(entry, "import", "activate", "deactivate", "check", "activate", "check")
    assert_original(entry, report, report["checks"][0])
    assert_wrapped_once(entry, report, report["checks"][1])
    lazy = run(entry, "activate", "import", "deactivate", "check", "activate", "check")
    assert_original(entry, lazy, lazy["checks"][0])
    assert_wrapped_once(entry, lazy, lazy["checks"][1])


def test_deactivate_before_import_leaves_module_stock(entry: PatchEntry) -> None:
    """wrapt cannot unregister its post-import hook; once deactivated it must do nothing."""
    report = run(entry, "activate", "deactivate", "import", "check")
    assert_original(entry, report, report["checks"][0])


def test_toggle_off_patches_nothing(entry: PatchEntry) -> None:
    report = run(entry, "activate", "import", "check", toggle="0")
    assert_original(entry, report, report["checks"][0])


# --- the real entry point with the toggle off: nothing beyond the stdlib and two modules -----

PROBE = Path(__file__).resolve().parent / "entry_point_probe.py"
TOGGLE_OFF_MODULES = {"sglang_ascend_fia", "sglang_ascend_fia.config", "sglang_ascend_fia.plugin"}


def probe_entry_point(toggle: str | None) -> dict[str, Any]:
    # No test-bed PYTHONPATH: its sitecustomize imports torch at start-up, which would hide a
    # plugin that imports torch (or anything torch pulls in) from the before/after diff.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "ASCEND_USE_FIA"}}
    if toggle is not None:
        env["ASCEND_USE_FIA"] = toggle
    proc = subprocess.run(
        [sys.executable, str(PROBE)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _not_stdlib(modules: list[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names}


@pytest.mark.parametrize("toggle", [None, "0", "false", "FALSE"], ids=str)
def test_toggle_off_entry_point_imports_only_the_stdlib(toggle: str | None) -> None:
    report = probe_entry_point(toggle)
    assert report["value"] == "sglang_ascend_fia.plugin:activate"
    assert report["active"] is False
    assert _not_stdlib(report["new_modules"]) == TOGGLE_OFF_MODULES


def test_entry_point_probe_sees_what_activation_imports() -> None:
    """The control: with the toggle on, the same probe does see the patching machinery."""
    report = probe_entry_point("1")
    assert report["active"] is True
    extra = _not_stdlib(report["new_modules"]) - TOGGLE_OFF_MODULES
    assert {"wrapt", "packaging", "sglang_ascend_fia.manifest"} <= extra, extra


# --- groups: all or none, in either order --------------------------------------------------

REMOVED_CORE = "sglang.srt.models.deepseek_v2:DeepseekV2AttentionMLA.forward_core"


@pytest.mark.parametrize(
    "steps",
    [("import", "activate", "check"), ("activate", "import", "check")],
    ids=["eager", "lazy"],
)
def test_a_group_member_missing_at_import_leaves_every_member_stock(steps: tuple[str, ...]) -> None:
    """forward_core is gone from the imported module (its source still defines it, so only the
    import shows it): the deepseek-mla members, including those whose module was hooked first
    (the pool; forward_prepare, one entry before it), end stock; the other entries apply."""
    report = _run_all(steps, "1", REMOVED_CORE)
    by_name = {e.name: e for e in ENTRIES}
    for name, entry_report in report["entries"].items():
        check = entry_report["checks"][-1]
        if not check["module_imported"]:
            continue
        if by_name[name].group == "deepseek-mla":
            assert not check["wrapped"] and not check["is_hook"], (name, check)
        else:
            assert check["wrapped"] or check["is_hook"], (name, check)
    assert report["entries"]["fia-mla-kv-pool"]["checks"][-1]["module_imported"]
    assert report["entries"]["fia-mla-deepseek-prepare"]["checks"][-1]["module_imported"]
    assert report["entries"]["fia-mla-deepseek-core"]["checks"][-1]["target_missing"]
