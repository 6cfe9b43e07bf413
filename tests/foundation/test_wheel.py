"""The wheel ships the manifest and the entry point, and none of the test bed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from sglang_ascend_fia.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sglang_ascend_fia-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    shipped = {n.rpartition("/")[2] for n in names if n.startswith("sglang_ascend_fia/patches/")}
    in_repo = {p.name for p in (REPO / "patches").glob("*.toml")}
    assert in_repo and shipped == in_repo

    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[sglang.srt.plugins]\nascend_fia = sglang_ascend_fia.plugin:activate" in text
    assert "sglang-ascend-fia = sglang_ascend_fia.cli:main" in text

    # Test-only support never ships: an installed sgl_kernel stand-in would shadow the real one.
    assert not [n for n in names if "sgl_kernel" in n or "sitecustomize" in n or "testbed" in n]
    assert not [n for n in names if n.startswith("tests/")]

    # The installed layout finds the shipped manifest.
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    assert len(load_manifest(unpacked / "sglang_ascend_fia" / "patches")) == len(load_manifest())
