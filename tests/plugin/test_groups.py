"""Patch groups: entries that only work together apply all or none (``group`` in the manifest).

A group whose member cannot apply is skipped whole before any member applies, when the installed
files show it (a missing module, a target the source does not define); a target found missing
only at import (the source defines it, something removed it) skips the group then, and the
members applied so far are restored. One warning per group; ``plugin.group_skip_reason`` tells a
feature that needs the group (the registry's MLA branch) why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sglang_ascend_fia import plugin
from sglang_ascend_fia.manifest import ManifestError, load_manifest

GROUP = 'group = "fixture-group"\n'


def _entry(module: str, name: str, target: str, sglang: str = ">=0.5.23") -> str:
    return (
        f'module = "{module}"\n\n[[patch]]\nname = "{name}"\ntarget = "{target}"\n'
        'kind = "replace"\nhook = "plugin.hook_fixtures:REPLACED_VERSION"\n'
        f'sglang = "{sglang}"\nwhy = "fixture (version.py:1)"\n'
        f'remove_when = "never: a test fixture only"\n{GROUP}'
    )


def _write_group(directory: Path, version_target: str = "__version__", **kw: str) -> None:
    (directory / "a.toml").write_text(
        _entry("sglang.srt.constants", "constants-entry", "GIB_BYTES", **kw)
    )
    (directory / "b.toml").write_text(_entry("sglang.version", "version-entry", version_target))


def _states() -> dict[str, tuple[str, str]]:
    return {s.entry.name: (s.state, s.reason) for s in plugin.status()}


def test_a_group_applies_whole(fixture_plugin: Path) -> None:
    import sglang.srt.constants
    import sglang.version

    _write_group(fixture_plugin)
    plugin.activate()
    assert {n: s for n, (s, _) in _states().items()} == {
        "constants-entry": "applied",
        "version-entry": "applied",
    }
    assert sglang.version.__version__ == sglang.srt.constants.GIB_BYTES
    assert plugin.group_skip_reason("fixture-group") is None


def test_a_member_missing_from_the_source_skips_the_group_before_any_applies(
    fixture_plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sglang.srt.constants
    import sglang.version

    gib, version = sglang.srt.constants.GIB_BYTES, sglang.version.__version__
    _write_group(fixture_plugin, version_target="no_such_attribute")
    with caplog.at_level(logging.WARNING, logger="sglang_ascend_fia"):
        plugin.activate()
    reason = (
        "patch group fixture-group is skipped: version-entry: sglang.version has no attribute "
        "'no_such_attribute'"
    )
    assert _states() == {
        "constants-entry": ("skipped", reason),
        "version-entry": ("skipped", reason),
    }
    assert sglang.srt.constants.GIB_BYTES is gib and sglang.version.__version__ is version
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0], warnings
    assert "sglang.srt.constants:GIB_BYTES" in warnings[0]
    assert plugin.group_skip_reason("fixture-group") == reason


def test_a_member_found_missing_at_import_restores_the_members_already_applied(
    fixture_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source defines ``sglang.version.__version__``; deleting it makes it missing only in
    the imported module. ``sglang.srt.constants`` is hooked first (modules in name order), so
    its member has applied when the other is found missing."""
    import sglang.srt.constants
    import sglang.version

    gib = sglang.srt.constants.GIB_BYTES
    monkeypatch.delattr(sglang.version, "__version__")
    _write_group(fixture_plugin)
    plugin.activate()
    reason = (
        "patch group fixture-group is skipped: version-entry: sglang.version has no attribute "
        "'__version__'"
    )
    assert _states() == {
        "constants-entry": ("skipped", reason),
        "version-entry": ("skipped", reason),
    }
    assert sglang.srt.constants.GIB_BYTES is gib


def test_a_group_of_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(_entry("sglang.version", "version-entry", "__version__"))
    with pytest.raises(ManifestError, match="group 'fixture-group' has no other member"):
        load_manifest(tmp_path)


def test_a_group_spanning_sglang_ranges_is_refused(tmp_path: Path) -> None:
    _write_group(tmp_path, sglang=">=0.5.23,<0.5.24")
    with pytest.raises(ManifestError, match="must share one sglang range"):
        load_manifest(tmp_path)


def test_the_shipped_deepseek_mla_group() -> None:
    """The DeepSeek forward steps and the split pool, which the FIA MLA backend needs whole."""
    members = {e.name for e in load_manifest() if e.group == "deepseek-mla"}
    assert members == {"fia-mla-deepseek-prepare", "fia-mla-deepseek-core", "fia-mla-kv-pool"}
