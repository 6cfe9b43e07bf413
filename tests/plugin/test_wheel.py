"""The wheel ships the manifest and the entry point, and none of the test bed; installed with
plain ``pip install``, its entry point and manifest come from the installed copy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sglang_ascend_fia.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel build for the whole module."""
    outdir = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (built,) = outdir.glob("sglang_ascend_fia-*.whl")
    return built


def _dist_info(names: list[str]) -> str:
    (folder,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    return folder


def test_wheel_contents(wheel: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    # Every module ships, subpackages included (verify/cases/ sits two levels down).
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "sglang_ascend_fia").rglob("*.py")}
    assert "sglang_ascend_fia/verify/cases/attention.py" in modules
    assert sorted(modules - set(names)) == []

    shipped = {n.rpartition("/")[2] for n in names if n.startswith("sglang_ascend_fia/patches/")}
    in_repo = {p.name for p in (REPO / "patches").glob("*.toml")}
    assert in_repo and shipped == in_repo

    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[sglang.srt.plugins]\nascend_fia = sglang_ascend_fia.plugin:activate" in text
    assert "sglang-ascend-fia = sglang_ascend_fia.cli:main" in text

    # Test-only support never ships: an installed sgl_kernel or torch_npu stand-in would shadow
    # the real one on a user's machine.
    assert not [n for n in names if "sgl_kernel" in n or "sitecustomize" in n or "testbed" in n]
    for stand_in in ("torch_npu", "npu_standin", "sgl_kernel_npu"):
        assert not [n for n in names if stand_in in n], stand_in
    assert not [n for n in names if n.startswith("tests/")]
    # Nothing under tests/ ships under another name either: the wheel holds the package and its
    # metadata only, and no file in it has the content of a (non-empty) file under tests/.
    assert {n.split("/")[0] for n in names} == {"sglang_ascend_fia", _dist_info(names)}
    test_files = {
        hashlib.sha256(data).hexdigest(): path
        for path in (REPO / "tests").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and (data := path.read_bytes())
    }
    assert REPO / "tests/support/side_by_side_runner.py" in test_files.values()
    with zipfile.ZipFile(wheel) as archive:
        shipped_tests = [
            (n, test_files[digest])
            for n in names
            if (digest := hashlib.sha256(archive.read(n)).hexdigest()) in test_files
        ]
    assert not shipped_tests

    # The installed layout finds the shipped manifest.
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    assert len(load_manifest(unpacked / "sglang_ascend_fia" / "patches")) == len(load_manifest())


# Runs in the fresh interpreter: the installed copy first on sys.path, then the entry point
# exactly as sglang's loader finds it, and activate() with a spy on the manifest reader.
_INSTALLED_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from importlib.metadata import entry_points
(ep,) = [e for e in entry_points(group="sglang.srt.plugins") if e.name == "ascend_fia"]
activate = ep.load()
from sglang_ascend_fia import manifest, plugin
loaded_from = []
real = manifest.load_manifest
def spy(directory=None):
    loaded_from.append(str(directory))
    return real(directory)
manifest.load_manifest = spy
activate()
print(json.dumps({
    "value": ep.value,
    "dist_file": str(ep.dist.locate_file("sglang_ascend_fia/plugin.py")),
    "is_activate": activate is plugin.activate,
    "plugin_file": plugin.__file__,
    "loaded_from": loaded_from,
    "active": plugin.is_active(),
    "entries": [s.entry.name for s in plugin.status()],
}))
"""


def test_pip_installed_wheel_serves_entry_point_and_manifest(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["ASCEND_USE_FIA"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _INSTALLED_PROBE, str(target)],
        cwd=tmp_path,  # not the repository, whose checkout would otherwise be importable
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    installed = target / "sglang_ascend_fia"
    assert report["value"] == "sglang_ascend_fia.plugin:activate"
    assert report["dist_file"] == str(installed / "plugin.py")
    assert report["is_activate"] and report["plugin_file"] == str(installed / "plugin.py")
    assert report["loaded_from"] == [str(installed / "patches")]
    assert report["active"]
    assert report["entries"] == [e.name for e in load_manifest()]
