"""Apply and restore one manifest entry on an imported sglang module.

Kept apart from the lifecycle in :mod:`sglang_ascend_fia.plugin` so the exact-restore rules
live in one small place: a class attribute is read from the class ``__dict__`` (so
``staticmethod``/``classmethod`` descriptors survive a round trip), and an attribute or dict
key that was absent before the patch is deleted again on restore.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import wrapt

from sglang_ascend_fia.manifest import PatchEntry

_MISSING: Any = object()


class TargetMissing(LookupError):
    """The target does not exist in the installed sglang (it moved or was renamed)."""


@dataclass
class AppliedPatch:
    entry: PatchEntry
    container: Any  # the object holding the target: a module, a class or a dict
    key: str
    original: Any  # _MISSING if the attribute or key did not exist before
    installed: Any

    def restore(self) -> None:
        if isinstance(self.container, dict):
            if self.original is _MISSING:
                self.container.pop(self.key, None)
            else:
                self.container[self.key] = self.original
        elif self.original is _MISSING:
            delattr(self.container, self.key)
        else:
            setattr(self.container, self.key, self.original)


def _own_value(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key, _MISSING)
    if isinstance(container, type):
        # The raw descriptor, not the bound function getattr would give.
        return vars(container).get(key, _MISSING)
    return getattr(container, key, _MISSING)


def resolve_container(entry: PatchEntry, module: ModuleType) -> tuple[Any, str]:
    """The object that holds the target, and the target's name or key within it."""
    obj: Any = module
    path = entry.attr_path
    walk = path if entry.dict_key is not None else path[:-1]
    for i, name in enumerate(walk):
        if not hasattr(obj, name):
            missing = ".".join(path[: i + 1])
            raise TargetMissing(f"{entry.module} has no attribute {missing!r}")
        obj = getattr(obj, name)
    if entry.dict_key is not None:
        if not isinstance(obj, dict):
            raise TargetMissing(f"{entry.module}.{'.'.join(path)} is not a dict")
        if entry.dict_key not in obj:
            raise TargetMissing(f"{entry.module}.{'.'.join(path)} has no key {entry.dict_key!r}")
        return obj, entry.dict_key
    key = path[-1]
    if not hasattr(obj, key):
        raise TargetMissing(f"{entry.module} has no attribute {'.'.join(path)!r}")
    return obj, key


def load_hook(entry: PatchEntry) -> Any:
    return getattr(importlib.import_module(entry.hook_module), entry.hook_attr)


def apply(entry: PatchEntry, module: ModuleType) -> AppliedPatch:
    container, key = resolve_container(entry, module)
    original = _own_value(container, key)
    hook = load_hook(entry)
    if entry.kind == "wrap":
        current = original if original is not _MISSING else getattr(container, key)
        installed: Any = wrapt.FunctionWrapper(current, hook)
    else:
        installed = hook
    if isinstance(container, dict):
        container[key] = installed
    else:
        setattr(container, key, installed)
    return AppliedPatch(entry, container, key, original, installed)
