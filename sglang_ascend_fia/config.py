"""The plugin's settings: ``ASCEND_USE_FIA``, read once per process into one frozen object.

sglang's own ``get_bool_env_var`` treats an unrecognised value as *false* with only a warning,
so the seed PR's ``export ASCEND_USE_FIA=ture`` silently ran without FIA. Here an unrecognised
value stops sglang from starting, with one line that names the variable, the value and the
accepted spellings.

The accepted spellings are exactly sglang's (``1``/``true``/``0``/``false``, any case), so the
plugin and any in-tree code that reads the same variable always agree on its meaning. An empty
value is refused too: sglang's reader also finds it unrecognised (it warns and reads false).
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass

TOGGLE_ENV = "ASCEND_USE_FIA"

_TRUE = ("1", "true")
_FALSE = ("0", "false")
# Common spellings people reach for; sglang does not accept them, so neither do we, but the
# error can say which accepted spelling was meant.
_SYNONYMS = {
    "yes": "true",
    "y": "true",
    "on": "true",
    "enable": "true",
    "enabled": "true",
    "t": "true",
    "no": "false",
    "n": "false",
    "off": "false",
    "disable": "false",
    "disabled": "false",
    "f": "false",
}


class StartupError(SystemExit):
    """A reason the plugin refuses to let sglang start, carried as one line of text.

    A ``SystemExit`` on purpose: sglang's ``load_plugins()`` logs and swallows every
    ``Exception`` a plugin raises (``sglang/srt/plugins/__init__.py:135-136``), which would let
    sglang start without the plugin the user asked for. Like argparse on a bad flag, this ends
    the process with the message and exit status 1, and ``Engine(...)`` never starts.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ToggleError(StartupError):
    """An invalid ``ASCEND_USE_FIA``."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw  # the refused value, for doctor's report


def _suggestion(lowered: str) -> str | None:
    if lowered in _SYNONYMS:
        return _SYNONYMS[lowered]
    close = difflib.get_close_matches(lowered, ["true", "false"], n=1, cutoff=0.6)
    return close[0] if close else None


def parse_toggle(raw: str | None) -> bool:
    """Parse a value of ``ASCEND_USE_FIA``; ``None`` (unset) means off.

    An empty (or blank) value is refused rather than read as off: ``ASCEND_USE_FIA=`` is as
    likely a half-written ``ASCEND_USE_FIA=1`` as a request to disable, and unsetting the
    variable says "off" unambiguously. Rejected alternative: treating ``""`` as unset, which
    silently runs stock sglang.
    """
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    message = f"{TOGGLE_ENV}={raw!r} is not a boolean; use 1/true or 0/false"
    if not lowered.strip():
        message += " (unset it to disable)"
    else:
        hint = _suggestion(lowered.strip())
        if hint is not None:
            message += f" (did you mean {hint!r}?)"
    raise ToggleError(message, raw)


@dataclass(frozen=True)
class Settings:
    """Everything the plugin decides from the environment, fixed for the process's lifetime."""

    use_fia: bool
    raw_toggle: str | None

    def describe(self) -> str:
        shown = "unset" if self.raw_toggle is None else repr(self.raw_toggle)
        return f"{TOGGLE_ENV}={shown} -> {'on' if self.use_fia else 'off'}"


@functools.cache
def resolve() -> Settings:
    """Read the environment once per process; raises :class:`ToggleError` on a bad value."""
    raw = os.environ.get(TOGGLE_ENV)
    return Settings(use_fia=parse_toggle(raw), raw_toggle=raw)
