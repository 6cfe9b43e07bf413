"""``sglang-ascend-fia doctor``: versions, device, toggle and every entry's live status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

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
