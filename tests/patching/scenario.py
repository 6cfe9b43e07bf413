"""Run one import/activate/deactivate ordering in a fresh interpreter and report what it saw.

``python -m patching.scenario ENTRY[,ENTRY...] STEP...``; each STEP is ``import``, ``activate``,
``deactivate`` or ``check`` and applies to every named entry (``import`` imports each entry's
module in turn). Every ``check`` records each target's state as plain facts (is it a wrapt
wrapper, is the wrapper our hook, and where the wrapped or installed object was defined); the
test compares those with the stock object it names itself, never with something the patcher
recorded. The report is one JSON line on stdout. The entries' patches are independent, so one
interpreter serves them all per ordering (a fresh interpreter per entry and ordering cost
minutes of sglang imports). Kept as a real module (not a string) so it is linted and readable.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import wrapt

from sglang_ascend_fia import plugin
from sglang_ascend_fia.manifest import PatchEntry, load_manifest
from sglang_ascend_fia.patcher import (
    HookGuard,
    TargetMissing,
    live_hook,
    load_hook,
    resolve_container,
)

# Every wrapt proxy: under wrapt 2 a FunctionWrapper is a BaseObjectProxy but not an ObjectProxy.
PROXY = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)


def read_target(entry: PatchEntry) -> Any:
    container, key = resolve_container(entry, sys.modules[entry.module])
    if isinstance(container, dict):
        return container[key]
    if isinstance(container, type):
        return vars(container)[key]
    return getattr(container, key)


def identity(obj: Any) -> dict[str, Any]:
    """Where ``obj`` comes from. Never called on a wrapt proxy, which forwards these names."""
    code = getattr(obj, "__code__", None)
    return {
        "type": type(obj).__name__,
        "module": getattr(obj, "__module__", None),
        "qualname": getattr(obj, "__qualname__", None),
        "file": code.co_filename if code is not None else None,
    }


def describe(entry: PatchEntry, value: Any) -> dict[str, Any]:
    hook = load_hook(entry)
    wrapped = isinstance(value, wrapt.FunctionWrapper)
    inner = value.__wrapped__ if wrapped else value
    return {
        "wrapped": wrapped,
        # The wrapper is the entry's guard, which calls the hook while the entry is applied.
        "wrapper_is_hook": wrapped
        and isinstance(value._self_wrapper, HookGuard)
        and value._self_wrapper.name == entry.name
        and live_hook(entry.name) is hook,
        "double_wrapped": isinstance(inner, PROXY),
        "is_hook": value is hook,
        "target": identity(inner) if not isinstance(inner, PROXY) else None,
    }


def main(names: list[str], steps: list[str]) -> None:
    by_name = {e.name: e for e in load_manifest()}
    entries = [by_name[name] for name in names]
    report: dict[str, Any] = {
        "imported_by_activate": [],
        "entries": {e.name: {"checks": []} for e in entries},
    }
    for step in steps:
        if step == "import":
            for entry in entries:
                module = importlib.import_module(entry.module)
                report["entries"][entry.name]["module_file"] = module.__file__
        elif step == "activate":
            before = set(sys.modules)
            plugin.activate()
            report["imported_by_activate"] += sorted(set(sys.modules) - before)
        elif step == "deactivate":
            plugin.deactivate()
        elif step == "check":
            for entry in entries:
                state: dict[str, Any] = {"module_imported": entry.module in sys.modules}
                if entry.module in sys.modules:
                    try:
                        value = read_target(entry)
                    except TargetMissing:  # removed on purpose (FIA_TESTBED_REMOVE_ATTRIBUTE)
                        state |= {"target_missing": True, "wrapped": False, "is_hook": False}
                    else:
                        state |= describe(entry, value)
                report["entries"][entry.name]["checks"].append(state)
        else:
            raise SystemExit(f"unknown step {step!r}")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1].split(","), sys.argv[2:])
