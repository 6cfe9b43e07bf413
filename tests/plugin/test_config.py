"""ASCEND_USE_FIA: every accepted spelling, the refused ones with their messages, read-once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sglang_ascend_fia import config


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "tRuE"])
def test_on_spellings(raw: str) -> None:
    assert config.parse_toggle(raw) is True


@pytest.mark.parametrize("raw", [None, "0", "false", "FALSE", "False", "fAlSe"])
def test_off_spellings(raw: str | None) -> None:
    assert config.parse_toggle(raw) is False


BAD_VALUES = [
    ("ture", "did you mean 'true'?"),
    ("treu", "did you mean 'true'?"),
    ("flase", "did you mean 'false'?"),
    ("fasle", "did you mean 'false'?"),
    ("yes", "did you mean 'true'?"),
    ("on", "did you mean 'true'?"),
    ("no", "did you mean 'false'?"),
    ("off", "did you mean 'false'?"),
    ("2", None),
    ("-1", None),
    ("1.0", None),
    (" true", "did you mean 'true'?"),
    ("true ", "did you mean 'true'?"),
    ("enable_fia", None),
    ("'true'", "did you mean 'true'?"),
    # Empty or blank is refused, not read as off: unsetting the variable is the way to disable.
    ("", "unset it to disable"),
    (" ", "unset it to disable"),
    ("\t", "unset it to disable"),
]


@pytest.mark.parametrize(("raw", "hint"), BAD_VALUES)
def test_bad_values_are_refused_with_one_clear_line(raw: str, hint: str | None) -> None:
    with pytest.raises(config.ToggleError) as info:
        config.parse_toggle(raw)
    message = str(info.value)
    expected = f"ASCEND_USE_FIA={raw!r} is not a boolean; use 1/true or 0/false"
    assert message.startswith(expected)
    if hint is None:
        assert message == expected
    else:
        assert message == f"{expected} ({hint})"
    assert "\n" not in message
    assert info.value.raw == raw  # doctor reports the refused value


def test_documented_examples_verbatim() -> None:
    """The two messages users see in the docs, character for character."""
    with pytest.raises(config.ToggleError) as typo:
        config.parse_toggle("ture")
    assert str(typo.value) == (
        "ASCEND_USE_FIA='ture' is not a boolean; use 1/true or 0/false (did you mean 'true'?)"
    )
    with pytest.raises(config.ToggleError) as empty:
        config.parse_toggle("")
    assert str(empty.value) == (
        "ASCEND_USE_FIA='' is not a boolean; use 1/true or 0/false (unset it to disable)"
    )


def test_empty_toggle_stops_the_process() -> None:
    """``export ASCEND_USE_FIA=`` ends the process with status 1 and the one line."""
    code = "from sglang_ascend_fia import plugin\nplugin.activate()\nprint('RAN')\n"
    env = {**_env(), "ASCEND_USE_FIA": ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "RAN" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "ASCEND_USE_FIA='' is not a boolean; use 1/true or 0/false (unset it to disable)"
    )


def test_toggle_error_escapes_except_exception() -> None:
    """sglang's load_plugins() swallows Exception; the toggle error must not be one."""
    assert not issubclass(config.ToggleError, Exception)
    assert issubclass(config.ToggleError, SystemExit)
    with pytest.raises(SystemExit) as info:
        config.parse_toggle("ture")
    assert info.value.code == info.value.message  # printed by the interpreter, exit status 1


def test_read_once_per_process() -> None:
    code = (
        "import os\n"
        "from sglang_ascend_fia import config\n"
        "first = config.resolve()\n"
        "os.environ['ASCEND_USE_FIA'] = '0'\n"
        "assert config.resolve() is first and first.use_fia, first\n"
        "print(first.describe())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**_env(), "ASCEND_USE_FIA": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "ASCEND_USE_FIA='1' -> on"


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
