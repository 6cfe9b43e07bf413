"""Fixture manifests and the fresh-interpreter runner shared by the plugin tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]

GOOD_HOOK = "plugin.hook_fixtures:REPLACED_VERSION"
BROKEN_HOOK = "plugin.broken_hook:MESSAGE"
BROKEN_HOOK_REASON = "RuntimeError: fixture hook raised on purpose"
# Imports nothing and is imported by neither sglang's package nor its plugin loader, so a
# hook on it stays pending until a test imports it.
LAZY_MODULE = "sglang.srt.constants"
NPU_ONLY_MODULE = "sglang.srt.hardware_backend.npu.attention.ascend_backend"


def write_manifest(
    directory: Path, module: str, *entries: tuple[str, str, str], name: str = "fixture.toml"
) -> Path:
    """One manifest file for ``module``; each entry is ``(name, target, hook)``, kind replace."""
    text = f'module = "{module}"\n'
    for entry, target, hook in entries:
        text += (
            f'\n[[patch]]\nname = "{entry}"\ntarget = "{target}"\nkind = "replace"\n'
            f'hook = "{hook}"\nsglang = ">=0.5.23"\nwhy = "fixture (version.py:1)"\n'
            'remove_when = "never: a test fixture only"\n'
        )
    path = directory / name
    path.write_text(text)
    return path


def run_fixture_process(*args: str, toggle: str | None = "1") -> subprocess.CompletedProcess[str]:
    """``python -m plugin.run_with_manifest ARGS`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "ASCEND_USE_FIA"}
    if toggle is not None:
        env["ASCEND_USE_FIA"] = toggle
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "plugin.run_with_manifest", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The ``@@report@@`` line of a ``load_plugins`` run."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@report@@")]
    assert len(lines) == 1, proc.stdout[-3000:]
    return json.loads(lines[0][len("@@report@@") :])


def last_stderr_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines, "the process wrote nothing on stderr"
    return lines[-1]
