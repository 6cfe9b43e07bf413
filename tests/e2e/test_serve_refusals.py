"""``sglang.launch_server`` with the plugin refuses a setting it cannot run: it exits before
serving, and its log names the setting, the value and what is accepted (README, Troubleshooting).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import testbed_env
from testbed.models import build_qwen2
from testbed.server import start_refusal

pytestmark = pytest.mark.engine


def _refusal(
    tmp_path: Path, model: Path, toggle: str, env: dict[str, str] | None = None, **server_args: Any
) -> str:
    args = {"attention_backend": "ascend", "page_size": 128, **server_args}
    env = env if env is not None else testbed_env(ASCEND_USE_FIA=toggle)
    code, log = start_refusal(model, tmp_path / "server.log", env=env, **args)
    assert code is not None, f"the server started:\n{log[-3000:]}"
    assert code != 0, log[-3000:]
    assert "The server is fired up" not in log
    return log


def test_invalid_toggle_refuses_to_start(tmp_path: Path) -> None:
    log = _refusal(tmp_path, build_qwen2(), "ture")
    assert "ASCEND_USE_FIA='ture' is not a boolean; use 1/true or 0/false" in log


def test_illegal_page_size_refuses_to_start(tmp_path: Path) -> None:
    log = _refusal(tmp_path, build_qwen2(), "1", page_size=16, chunked_prefill_size=256)
    line = next(x for x in log.splitlines() if "attention backend cannot start" in x)
    assert "--page-size=16 is not allowed" in line, line


def test_head_ratio_fia_cannot_run_refuses_to_start(tmp_path: Path) -> None:
    # 6 query heads over 4 KV heads: not an integer GQA ratio.
    model = build_qwen2(hidden_size=6 * 16, num_attention_heads=6, num_key_value_heads=4)
    log = _refusal(tmp_path, model, "1")
    line = next(x for x in log.splitlines() if "attention backend cannot start" in x)
    assert "6 query heads over 4 KV heads is not a GQA ratio FIA takes" in line, line


def test_unsupported_sglang_version_refuses_to_start(tmp_path: Path) -> None:
    # What an installed sglang 0.6.0 looks like to importlib.metadata, which the plugin asks:
    # a dist-info ahead of the real one on the path. sglang's code is still 0.5.23's.
    fake = tmp_path / "site" / "sglang-0.6.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 0.6.0\n")
    env = testbed_env(ASCEND_USE_FIA="1")
    env["PYTHONPATH"] = f"{tmp_path / 'site'}{os.pathsep}{env['PYTHONPATH']}"
    log = _refusal(tmp_path, build_qwen2(), "1", env=env)
    lines = [x for x in log.splitlines() if "sglang 0.6.0 is not supported" in x]
    assert len(lines) == 1, log[-3000:]
    assert lines[0].endswith(
        "sglang-ascend-fia: sglang 0.6.0 is not supported: this release patches sglang "
        "<0.5.24,>=0.5.23; install a supported sglang (pip install 'sglang-ascend-fia[sglang]'), "
        "or unset ASCEND_USE_FIA to run sglang without the plugin"
    ), lines[0]
    assert "skipping patch" not in log  # the one line, not a warning per patch before it
