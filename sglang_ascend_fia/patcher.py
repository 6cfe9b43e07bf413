"""Apply and restore one manifest entry on an imported sglang module.

Kept apart from the lifecycle in :mod:`sglang_ascend_fia.plugin` so the exact-restore rules
live in one small place: a class attribute is read from the class ``__dict__`` (so
``staticmethod``/``classmethod`` descriptors survive a round trip), and an attribute or dict
key that was absent before the patch is deleted again on restore.

Restoring the attribute is not enough for a ``wrap`` hook: sglang keeps references to what it
resolved (``BaseFusedOp`` layers cache their forward on the first call,
``layers/kernels/fused_op.py``), so a wrapper installed once can outlive its patch. Every
wrapper therefore looks up the live patch of its entry on each call and, when there is none
(after ``restore()``), calls the original straight through; a later re-apply makes the same
old wrapper run the hook again.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import wrapt

from sglang_ascend_fia.manifest import PatchEntry

_MISSING: Any = object()

# Entry name -> the hook of its applied patch; an entry absent here is not applied, and every
# wrapper ever installed for it calls straight through.
_live_hooks: dict[str, Any] = {}


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
        _live_hooks.pop(self.entry.name, None)
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
    if isinstance(obj, type) and key not in vars(obj):
        inherited = getattr(obj, key)
        if getattr(inherited, "__isabstractmethod__", False):
            # A class that lost its override inherits the base's abstract stub: wrapping that
            # would report "applied" and hand the hook an original that returns nothing.
            raise TargetMissing(
                f"{entry.module}.{'.'.join(path)} is only the abstract method the class inherits"
            )
    return obj, key


def static_target_missing(entry: PatchEntry, source: Path) -> str | None:
    """Why ``entry``'s target is missing from ``source`` (its module's file), read without
    importing it, or None when it is there or the source cannot tell (a name made at run time,
    a dict key, an inherited attribute). Lets a patch group be skipped before any member
    applies; :func:`resolve_container` still checks the imported module."""
    tree = ast.parse(source.read_text(), filename=str(source))
    top: dict[str, ast.stmt | None] = {}
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            top[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            top.update((t.id, None) for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any(a.name == "*" for a in node.names):
                return None
            top.update(((a.asname or a.name).split(".")[0], None) for a in node.names)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            # Names bound under `if _is_npu:` or `try:` count as defined: only a name bound
            # nowhere is surely missing.
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    if "__getattr__" in top:
        return None
    path = entry.attr_path
    if path[0] not in top:
        return f"{entry.module} has no attribute {path[0]!r}"
    found = top[path[0]]
    if len(path) == 2 and entry.dict_key is None and isinstance(found, ast.ClassDef):
        defined = set()
        for item in found.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(item.name)
            elif isinstance(item, ast.Assign):
                defined.update(t.id for t in item.targets if isinstance(t, ast.Name))
        if path[1] not in defined and not found.bases:
            return f"{entry.module} has no attribute {'.'.join(path)!r}"
        if path[1] not in defined:
            return None  # maybe inherited
    return None


def load_hook(entry: PatchEntry) -> Any:
    return getattr(importlib.import_module(entry.hook_module), entry.hook_attr)


def live_hook(name: str) -> Any:
    """The hook of entry ``name`` while it is applied, else ``None``."""
    return _live_hooks.get(name)


class HookGuard:
    """The wrapper function of entry ``name``'s ``wrapt.FunctionWrapper``: the entry's live
    hook while it is applied, the original straight through otherwise."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        hook = _live_hooks.get(self.name)
        if hook is None:
            return wrapped(*args, **kwargs)
        return hook(wrapped, instance, args, kwargs)


def apply(entry: PatchEntry, module: ModuleType) -> AppliedPatch:
    container, key = resolve_container(entry, module)
    original = _own_value(container, key)
    hook = load_hook(entry)
    if entry.kind == "wrap":
        current = original if original is not _MISSING else getattr(container, key)
        installed: Any = wrapt.FunctionWrapper(current, HookGuard(entry.name))
    else:
        installed = hook
    _live_hooks[entry.name] = hook
    if isinstance(container, dict):
        container[key] = installed
    else:
        setattr(container, key, installed)
    return AppliedPatch(entry, container, key, original, installed)
