"""ddtrace-style ordering matrix: each ordering of import / activate / deactivate runs in a fresh
interpreter, against every real manifest entry whose sglang module imports on this machine."""

from __future__ import annotations

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


def _importable_here(entry: PatchEntry) -> bool:
    """Modules such as the in-tree ascend_backend import torch_npu and cannot load on CPU."""
    probe = subprocess.run(
        [sys.executable, "-c", f"import {entry.module}"], capture_output=True, env=os.environ
    )
    return probe.returncode == 0


ENTRIES = [e for e in load_manifest() if plugin.module_file_exists(e.module)]


def run(entry: PatchEntry, *steps: str, toggle: str = "1") -> dict[str, Any]:
    env = {**os.environ, "ASCEND_USE_FIA": toggle}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "patching.scenario", entry.name, *steps],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


WRAPPED_ONCE = {"wrapped": True, "double_wrapped": False, "wraps_original": True}


def assert_wrapped_once(check: dict[str, Any]) -> None:
    assert {k: check[k] for k in WRAPPED_ONCE} == WRAPPED_ONCE, check


def assert_original(check: dict[str, Any]) -> None:
    assert check["is_original"] and not check["wrapped"], check


@pytest.fixture(params=ENTRIES, ids=lambda e: e.name)
def entry(request: pytest.FixtureRequest) -> PatchEntry:
    if not _importable_here(request.param):
        pytest.skip(f"{request.param.module} cannot be imported on this machine")
    return request.param


def test_matrix_covers_a_real_patch() -> None:
    assert any(e.module.endswith("attention_registry") for e in ENTRIES)


def test_import_then_activate(entry: PatchEntry) -> None:
    report = run(entry, "import", "check", "activate", "check")
    assert_original(report["checks"][0])
    assert_wrapped_once(report["checks"][1])


def test_activate_then_import_is_lazy(entry: PatchEntry) -> None:
    report = run(entry, "activate", "check", "import", "check")
    assert report["checks"][0] == {"module_imported": False}
    assert not [m for m in report["imported_by_activate"] if m.startswith("sglang.")]
    assert "torch_npu" not in report["imported_by_activate"]
    assert_wrapped_once(report["checks"][1])


def test_activate_twice_never_double_wraps(entry: PatchEntry) -> None:
    lazy = run(entry, "activate", "activate", "import", "check", "activate", "check")
    assert_wrapped_once(lazy["checks"][0])
    assert_wrapped_once(lazy["checks"][1])
    eager = run(entry, "import", "activate", "activate", "check")
    assert_wrapped_once(eager["checks"][0])


def test_activate_deactivate_activate(entry: PatchEntry) -> None:
    report = run(entry, "import", "activate", "deactivate", "check", "activate", "check")
    assert_original(report["checks"][0])
    assert_wrapped_once(report["checks"][1])
    lazy = run(entry, "activate", "import", "deactivate", "check", "activate", "check")
    assert_original(lazy["checks"][0])
    assert_wrapped_once(lazy["checks"][1])


def test_deactivate_before_import_leaves_module_stock(entry: PatchEntry) -> None:
    """wrapt cannot unregister its post-import hook; once deactivated it must do nothing."""
    report = run(entry, "activate", "deactivate", "import", "check")
    assert_original(report["checks"][0])


def test_toggle_off_patches_nothing_and_imports_nothing(entry: PatchEntry) -> None:
    report = run(entry, "activate", "import", "check", toggle="0")
    assert report["imported_by_activate"] == []
    assert_original(report["checks"][0])
