"""A broken manifest or a hook that raises stops sglang; it never lets sglang run stock.

sglang's ``load_plugins()`` logs and swallows any ``Exception`` from a plugin
(``sglang/srt/plugins/__init__.py:135-136``), so these errors must be ``SystemExit``s, and
``is_active()`` must only say True once loading succeeded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from plugin.helpers import (
    BROKEN_HOOK,
    BROKEN_HOOK_REASON,
    GOOD_HOOK,
    LAZY_MODULE,
    last_stderr_line,
    report_of,
    run_fixture_process,
    write_manifest,
)
from sglang_ascend_fia import plugin

MALFORMED = "fixture.toml[0] (fixture-entry): 'kind' 'monkey' is not one of ['replace', 'wrap']"


def _malformed(directory: Path) -> None:
    path = write_manifest(directory, "sglang.version", ("fixture-entry", "__version__", GOOD_HOOK))
    path.write_text(path.read_text().replace('kind = "replace"', 'kind = "monkey"'))


def _hook_failure(module: str, target: str) -> str:
    return (
        f"sglang-ascend-fia: patch fixture-broken (fixture.toml) failed on {module}:{target}: "
        f"{BROKEN_HOOK_REASON}"
    )


def test_activation_error_escapes_except_exception() -> None:
    assert issubclass(plugin.ActivationError, SystemExit)
    assert not issubclass(plugin.ActivationError, Exception)


# --- in process -------------------------------------------------------------------------------


def test_malformed_manifest_is_fatal_and_leaves_the_plugin_inactive(fixture_plugin: Path) -> None:
    _malformed(fixture_plugin)
    with pytest.raises(plugin.ActivationError) as info:
        plugin.activate()
    assert str(info.value) == (
        f"sglang-ascend-fia: cannot load the patch manifest in {fixture_plugin}: {MALFORMED}"
    )
    assert info.value.code == str(info.value)  # what the interpreter prints before exiting 1
    assert not plugin.is_active()


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda d: d / "missing", "patch manifest directory {d}/missing does not exist"),
        (lambda d: d, "patch manifest directory {d} holds no *.toml file"),
    ],
    ids=["missing-directory", "empty-directory"],
)
def test_missing_manifest_is_fatal(
    fixture_plugin: Path,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Path], Path],
    cause: str,
) -> None:
    directory = make(fixture_plugin)
    monkeypatch.setattr(plugin, "_manifest_dir", directory)
    with pytest.raises(plugin.ActivationError) as info:
        plugin.activate()
    expected = cause.format(d=fixture_plugin)
    assert str(info.value) == (
        f"sglang-ascend-fia: cannot load the patch manifest in {directory}: {expected}"
    )
    assert not plugin.is_active()


def test_hook_failing_inside_activate_is_fatal(fixture_plugin: Path) -> None:
    import sglang.version

    original = sglang.version.__version__
    write_manifest(fixture_plugin, "sglang.version", ("fixture-broken", "__version__", BROKEN_HOOK))
    with pytest.raises(plugin.ActivationError) as info:
        plugin.activate()
    assert str(info.value) == _hook_failure("sglang.version", "__version__")
    assert not plugin.is_active()
    (status,) = plugin.status()
    assert (status.state, status.reason) == ("failed", BROKEN_HOOK_REASON)
    assert sglang.version.__version__ is original


def test_failed_activation_can_be_undone_and_retried(fixture_plugin: Path) -> None:
    """In a process that catches the error (doctor, tests), deactivate() restores everything."""
    import sglang.version

    original = sglang.version.__version__
    write_manifest(
        fixture_plugin,
        "sglang.version",
        ("fixture-entry", "__version__", GOOD_HOOK),
        ("fixture-broken", "__name__", BROKEN_HOOK),
    )
    with pytest.raises(plugin.ActivationError):
        plugin.activate()
    states = {s.entry.name: s.state for s in plugin.status()}
    assert states == {"fixture-entry": "applied", "fixture-broken": "failed"}
    assert sglang.version.__version__ == "0.0.0-patched-by-a-fixture"
    plugin.deactivate()
    assert sglang.version.__version__ is original
    assert {s.state for s in plugin.status()} == {"inactive"}
    write_manifest(fixture_plugin, "sglang.version", ("fixture-entry", "__version__", GOOD_HOOK))
    plugin.activate()
    assert plugin.is_active()
    assert [s.state for s in plugin.status()] == ["applied"]


# --- through sglang's real load_plugins(), in a fresh interpreter ------------------------------


def test_load_plugins_stops_on_a_malformed_manifest(tmp_path: Path) -> None:
    _malformed(tmp_path)
    proc = run_fixture_process("--manifest", str(tmp_path), "load_plugins")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "@@report@@" not in proc.stdout  # load_plugins() never returned: sglang did not start
    assert last_stderr_line(proc) == (
        f"sglang-ascend-fia: cannot load the patch manifest in {tmp_path}: {MALFORMED}"
    )


def test_load_plugins_stops_on_a_hook_failing_for_an_imported_module(tmp_path: Path) -> None:
    write_manifest(tmp_path, "sglang.version", ("fixture-broken", "__version__", BROKEN_HOOK))
    proc = run_fixture_process(
        "--manifest", str(tmp_path), "--preimport", "sglang.version", "load_plugins"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "@@report@@" not in proc.stdout
    assert last_stderr_line(proc) == _hook_failure("sglang.version", "__version__")


def run_lazy(manifest: Path) -> subprocess.CompletedProcess[str]:
    return run_fixture_process(
        "--manifest", str(manifest), "--lazy-import", LAZY_MODULE, "load_plugins"
    )


def test_lazy_hook_failure_propagates_from_the_import(tmp_path: Path) -> None:
    """After a successful activation a failing hook raises from sglang's own import statement."""
    write_manifest(tmp_path, LAZY_MODULE, ("fixture-broken", "GIB_BYTES", BROKEN_HOOK))
    report = report_of(
        run_fixture_process(
            "--manifest", str(tmp_path), "--lazy-import", LAZY_MODULE, "load_plugins"
        )
    )
    assert report["active"] is True
    assert report["lazy_error"] == BROKEN_HOOK_REASON
    assert report["statuses"] == {
        "fixture-broken": {"state": "failed", "reason": BROKEN_HOOK_REASON}
    }


def test_load_plugins_with_a_good_manifest_activates(tmp_path: Path) -> None:
    """The control case for the two above: the same runner, nothing broken."""
    write_manifest(tmp_path, LAZY_MODULE, ("fixture-entry", "GIB_BYTES", GOOD_HOOK))
    report = report_of(
        run_fixture_process(
            "--manifest", str(tmp_path), "--lazy-import", LAZY_MODULE, "load_plugins"
        )
    )
    assert report["active"] is True and report["lazy_error"] is None
    assert report["statuses"] == {"fixture-entry": {"state": "applied", "reason": ""}}
