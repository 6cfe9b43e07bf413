"""Log-once helper for the MoE hooks' intended fallbacks to sglang's own code."""

from __future__ import annotations

import logging

logger = logging.getLogger("sglang_ascend_fia")
_logged: set[str] = set()


def fall_back_once(hook: str, reason: str) -> None:
    """One log line per (hook, reason) and process: the stock path serves this call."""
    key = f"{hook}: {reason}"
    if key in _logged:
        return
    _logged.add(key)
    logger.info("sglang-ascend-fia: %s falls back to sglang's own path: %s", hook, reason)
