"""The in-process plugin pointed at a fixture manifest directory, with the toggle on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sglang_ascend_fia import config, plugin


@pytest.fixture
def fixture_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(plugin, "_manifest_dir", tmp_path)
    monkeypatch.setattr(config, "resolve", lambda: config.Settings(use_fia=True, raw_toggle="1"))
    yield tmp_path
    plugin.deactivate()
