"""Run one import/activate/deactivate ordering in a fresh interpreter and report what it saw.

``python -m patching.scenario ENTRY STEP...``; each STEP is ``import``, ``activate``,
``deactivate`` or ``check``. Every ``check`` records the target's state; the report is one JSON
line on stdout. Kept as a real module (not a string) so it is linted and readable.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import wrapt

from sglang_ascend_fia import plugin
from sglang_ascend_fia.manifest import PatchEntry, load_manifest
from sglang_ascend_fia.patcher import load_hook, resolve_container


def read_target(entry: PatchEntry) -> Any:
    container, key = resolve_container(entry, sys.modules[entry.module])
    if isinstance(container, dict):
        return container[key]
    if isinstance(container, type):
        return vars(container)[key]
    return getattr(container, key)


def describe(entry: PatchEntry, value: Any, first_seen: Any) -> dict[str, Any]:
    hook = load_hook(entry)
    if entry.kind == "wrap":
        wrapped = isinstance(value, wrapt.FunctionWrapper)
        inner = value.__wrapped__ if wrapped else None
        return {
            "wrapped": wrapped,
            "double_wrapped": isinstance(inner, wrapt.FunctionWrapper),
            "wraps_original": wrapped and inner is first_seen,
            "is_original": value is first_seen,
        }
    return {
        "wrapped": value is hook,
        "double_wrapped": False,
        "wraps_original": value is hook,
        "is_original": value is first_seen,
    }


def main(name: str, steps: list[str]) -> None:
    entry = next(e for e in load_manifest(plugin._manifest_dir) if e.name == name)
    report: dict[str, Any] = {"checks": [], "imported_by_activate": []}
    first_seen: Any = None
    for step in steps:
        if step == "import":
            importlib.import_module(entry.module)
            if first_seen is None:
                applied = plugin._applied.get(entry.name)
                # Imported while active: the original is what the patcher recorded.
                first_seen = applied.original if applied else read_target(entry)
        elif step == "activate":
            before = set(sys.modules)
            plugin.activate()
            report["imported_by_activate"] += sorted(set(sys.modules) - before)
        elif step == "deactivate":
            plugin.deactivate()
        elif step == "check":
            state = {"module_imported": entry.module in sys.modules}
            if entry.module in sys.modules:
                state |= describe(entry, read_target(entry), first_seen)
            report["checks"].append(state)
        else:
            raise SystemExit(f"unknown step {step!r}")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
