"""``sglang-ascend-fia doctor``: versions, device, toggle and every entry's live status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from plugin.helpers import (
    BROKEN_HOOK,
    BROKEN_HOOK_REASON,
    GOOD_HOOK,
    LAZY_MODULE,
    NPU_ONLY_MODULE,
    run_fixture_process,
    write_manifest,
)
from sglang_ascend_fia.manifest import load_manifest


def doctor(*args: str, toggle: str | None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("sglang-ascend-fia", path=os.path.dirname(os.sys.executable))
    assert exe, "the console script is installed with the package"
    env = {k: v for k, v in os.environ.items() if k != "ASCEND_USE_FIA"}
    if toggle is not None:
        env["ASCEND_USE_FIA"] = toggle
    return subprocess.run([exe, "doctor", *args], capture_output=True, text=True, env=env)


def test_doctor_json_when_active() -> None:
    proc = doctor("--json", toggle="1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["versions"]["sglang"] == "0.5.23"
    assert report["versions"]["torch_npu"] == "absent"
    assert report["device"] == "cpu (reference ops)"
    assert report["toggle"] == {"env": "ASCEND_USE_FIA", "raw": "1", "value": True}
    statuses = {p["name"]: p for p in report["patches"]}
    assert set(statuses) == {e.name for e in load_manifest()}
    assert statuses["ascend-fia-backend"]["status"] == "applied"
    assert statuses["w8a8-int8-methods"]["status"] == "applied", statuses["w8a8-int8-methods"]
    for patch in report["patches"]:
        assert patch["status"] in {"applied", "skipped"}, patch
        assert patch["status"] == "applied" or patch["reason"]


def test_doctor_text_when_off() -> None:
    proc = doctor(toggle=None)
    assert proc.returncode == 0, proc.stderr
    assert "ASCEND_USE_FIA     unset -> off" in proc.stdout
    assert "torch_npu          absent" in proc.stdout
    for entry in load_manifest():
        assert f"{entry.name}" in proc.stdout
    assert "reason: ASCEND_USE_FIA is off" in proc.stdout


def test_doctor_reports_invalid_toggle() -> None:
    proc = doctor(toggle="ture")
    assert proc.returncode == 1
    assert "INVALID: ASCEND_USE_FIA='ture' is not a boolean" in proc.stdout


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (
            "ture",
            "ASCEND_USE_FIA='ture' is not a boolean; use 1/true or 0/false (did you mean 'true'?)",
        ),
        ("", "ASCEND_USE_FIA='' is not a boolean; use 1/true or 0/false (unset it to disable)"),
    ],
)
def test_doctor_json_keeps_one_toggle_schema_when_invalid(raw: str, error: str) -> None:
    proc = doctor("--json", toggle=raw)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["toggle"] == {"env": "ASCEND_USE_FIA", "raw": raw, "value": None, "error": error}
    assert {p["status"] for p in report["patches"]} == {"inactive"}
    assert {p["reason"] for p in report["patches"]} == {"invalid toggle"}


# --- fixture manifests, in a fresh interpreter -----------------------------------------------


def fixture_doctor(*args: str) -> tuple[int, dict[str, Any]]:
    proc = run_fixture_process(*args, "doctor", "--json")
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"doctor printed no JSON:\n{proc.stdout}\n{proc.stderr[-3000:]}"
        ) from None


def _statuses(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["status"], p["reason"]) for p in report["patches"]}


def test_doctor_fails_when_a_target_module_raises_on_import() -> None:
    """Outside the test bed importing the registry raises RuntimeError (torchvision::nms);
    doctor must say so and exit 1, not report the patch pending."""
    code, report = fixture_doctor("--break", "sglang.srt.layers.attention.attention_registry")
    assert code == 1
    assert _statuses(report)["ascend-fia-backend"] == (
        "failed",
        "RuntimeError: operator torchvision::nms does not exist",
    )


def test_doctor_fails_when_a_hook_raises(tmp_path: Path) -> None:
    write_manifest(
        tmp_path,
        LAZY_MODULE,
        ("fixture-broken", "GIB_BYTES", BROKEN_HOOK),
        ("fixture-sibling", "HEALTH_CHECK_RID_PREFIX", GOOD_HOOK),
    )
    code, report = fixture_doctor("--manifest", str(tmp_path))
    assert code == 1
    assert _statuses(report) == {
        "fixture-broken": ("failed", BROKEN_HOOK_REASON),  # the hook's own record
        "fixture-sibling": ("failed", "not applied: patch fixture-broken failed first"),
    }
    assert "error" not in report


def test_doctor_skips_a_module_that_needs_torch_npu(tmp_path: Path) -> None:
    """mark_unimportable: an ImportError is 'cannot run here', not a failure; exit 0."""
    write_manifest(
        tmp_path, NPU_ONLY_MODULE, ("fixture-npu", "AscendAttnBackend", GOOD_HOOK), name="a.toml"
    )
    write_manifest(tmp_path, LAZY_MODULE, ("fixture-entry", "GIB_BYTES", GOOD_HOOK), name="b.toml")
    code, report = fixture_doctor("--manifest", str(tmp_path))
    assert code == 0
    assert _statuses(report) == {
        "fixture-npu": ("skipped", "cannot import here: No module named 'torch_npu'"),
        "fixture-entry": ("applied", ""),
    }


def test_doctor_reports_a_malformed_manifest(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, LAZY_MODULE, ("fixture-entry", "GIB_BYTES", GOOD_HOOK))
    path.write_text(path.read_text().replace('sglang = ">=0.5.23"', 'sglang = "newest"'))
    code, report = fixture_doctor("--manifest", str(tmp_path))
    assert code == 1
    assert report["error"] == (
        f"sglang-ascend-fia: cannot load the patch manifest in {tmp_path}: fixture.toml[0] "
        "(fixture-entry): 'sglang' 'newest' is not a PEP 440 range"
    )
    assert report["patches"] == []


def test_doctor_reports_an_sglang_no_patch_covers(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, LAZY_MODULE, ("fixture-entry", "GIB_BYTES", GOOD_HOOK))
    path.write_text(path.read_text().replace('sglang = ">=0.5.23"', 'sglang = ">=0.6"'))
    code, report = fixture_doctor("--manifest", str(tmp_path))
    assert code == 1
    assert str(report["error"]).startswith(
        "sglang-ascend-fia: sglang 0.5.23 is not supported: this release patches sglang >=0.6;"
    )
    assert _statuses(report) == {
        "fixture-entry": ("skipped", "sglang 0.5.23 is outside this patch's range >=0.6")
    }


# doctor --json's schema, version 1: the keys at each level. A change here without a bump of
# cli.SCHEMA_VERSION breaks every reader of the bug reports it is pasted into.
SCHEMA_V1 = {
    "top": {
        "schema_version",
        "versions",
        "device",
        "attention",
        "toggle",
        "patches",
        "groups",
        "in_tree_toggle",
        "kernels",
    },
    "versions": {"sglang-ascend-fia", "sglang", "torch", "torch_npu"},
    "attention": {"hands_off", "mla_hands_off", "decisions"},
    "toggle": {"env", "raw", "value"},
    "patch": {"name", "group", "target", "sglang", "why", "remove_when", "status", "reason"},
    "group": {"members", "status", "reason"},
    "in_tree_toggle": {"env", "value", "read_by"},
    "kernel": {"feature", "torch_npu", "checked", "kernels", "problems", "reason"},
}


def test_doctor_json_schema_is_pinned() -> None:
    from sglang_ascend_fia import cli

    proc = doctor("--json", toggle="1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema_version"] == cli.SCHEMA_VERSION == 1
    assert set(report) == SCHEMA_V1["top"]
    for key in ("versions", "attention", "toggle", "in_tree_toggle"):
        assert set(report[key]) == SCHEMA_V1[key], key
    assert all(set(p) == SCHEMA_V1["patch"] for p in report["patches"])
    assert report["groups"]["deepseek-mla"] == {
        "members": ["fia-mla-deepseek-prepare", "fia-mla-deepseek-core", "fia-mla-kv-pool"],
        "status": "applied",
        "reason": "",
    }
    # sglang's own Ascend backend module imports torch_npu: not importable here, so the group
    # that scopes its flag waits for it (not skipped: nothing is missing).
    in_tree = report["groups"]["in-tree-mode"]
    assert in_tree["status"] == "pending", in_tree
    assert in_tree["reason"].startswith("in-tree-flag-backend: cannot import here"), in_tree
    assert all(
        set(d) == {"backend", "reason", "sglang_mode"} for d in report["attention"]["decisions"]
    )
    assert {k["feature"] for k in report["kernels"]} == {"attention", "mla", "moe", "w8a8"}
    for row in report["kernels"]:
        assert set(row) == SCHEMA_V1["kernel"]
        # No torch_npu on this host: nothing to check, the references run.
        assert (row["checked"], row["problems"], row["torch_npu"]) == (False, [], "not installed")
    assert report["in_tree_toggle"]["value"] is True
    assert (
        "sglang/srt/hardware_backend/npu/attention/ascend_backend.py:383"
        in (report["in_tree_toggle"]["read_by"])
    )


def test_doctor_json_shows_a_kernel_the_installed_torch_npu_lacks(tmp_path: Path) -> None:
    """With the torch_npu stand-in lacking FIA v2 on the path, the kernel rows name it."""
    env = {k: v for k, v in os.environ.items() if k != "ASCEND_USE_FIA"}
    standin = Path(__file__).resolve().parents[1] / "support" / "npu_standin"
    env |= {
        "ASCEND_USE_FIA": "1",
        "NPU_STANDIN_LACKS": "npu_fused_infer_attention_score_v2",
        "PYTHONPATH": os.pathsep.join([str(standin), env.get("PYTHONPATH", "")]),
    }
    exe = shutil.which("sglang-ascend-fia", path=os.path.dirname(os.sys.executable))
    assert exe
    proc = subprocess.run([exe, "doctor", "--json"], capture_output=True, text=True, env=env)
    report = json.loads(proc.stdout)
    rows = {k["feature"]: k for k in report["kernels"]}
    assert rows["mla"]["problems"] == [
        {"kernel": "npu_fused_infer_attention_score_v2", "problem": "missing"}
    ], rows["mla"]
    assert rows["attention"]["checked"] and rows["attention"]["problems"] == []
