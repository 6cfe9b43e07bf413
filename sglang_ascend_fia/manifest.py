"""The patch manifest: one TOML file per patched sglang module, under ``patches/``.

Each file names its sglang ``module`` and holds ``[[patch]]`` entries::

    module = "sglang.srt.layers.attention.attention_registry"

    [[patch]]
    name = "ascend-fia-backend"
    target = "ATTENTION_BACKENDS['ascend']"   # attribute path, optional final ['key']
    kind = "replace"                          # replace | wrap
    hook = "sglang_ascend_fia.registry.factory:create_ascend_fia_backend"
    sglang = ">=0.5.23,<0.5.24"
    why = "..."                               # the upstream behaviour, with file:line
    remove_when = "..."                       # the upstream change that makes it unnecessary
    group = "deepseek-mla"                    # optional: entries that only work together

Entries that share a ``group`` (possibly across files) are applied all or none: if any member's
target is missing, the plugin skips the whole group before any of it applies
(``plugin.activate``), and the feature hands off or runs stock.

``replace`` puts the hook object itself at the target; ``wrap`` puts
``wrapt.FunctionWrapper(original, hook)`` there, with ``hook(wrapped, instance, args, kwargs)``.
The manifest is data, so ``doctor`` and the tests can check it without importing sglang.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet

Kind = Literal["replace", "wrap"]
KINDS: tuple[Kind, ...] = ("replace", "wrap")

_ENTRY_KEYS = {"name", "target", "kind", "hook", "sglang", "why", "remove_when", "group"}
_TARGET_RE = re.compile(
    r"^(?P<attrs>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\[(?P<quote>['\"])(?P<key>[^'\"]+)(?P=quote)\])?$"
)
_HOOK_RE = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)*:[A-Za-z_]\w*$")
_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class ManifestError(ValueError):
    """A malformed manifest file; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class PatchEntry:
    name: str
    module: str
    target: str
    kind: Kind
    hook: str
    sglang: SpecifierSet
    why: str
    remove_when: str
    source: str  # the TOML file's name, for messages
    group: str | None = None  # entries that apply all or none

    @property
    def attr_path(self) -> tuple[str, ...]:
        match = _TARGET_RE.match(self.target)
        assert match is not None  # checked at load time
        return tuple(match["attrs"].split("."))

    @property
    def dict_key(self) -> str | None:
        match = _TARGET_RE.match(self.target)
        assert match is not None
        return match["key"]

    @property
    def hook_module(self) -> str:
        return self.hook.partition(":")[0]

    @property
    def hook_attr(self) -> str:
        return self.hook.partition(":")[2]

    @property
    def qualified_target(self) -> str:
        return f"{self.module}:{self.target}"


def default_directory() -> Path:
    """``patches/`` inside the installed wheel, or beside the package in a source checkout.

    The wheel maps the repository's top-level ``patches/`` to ``sglang_ascend_fia/patches``
    (pyproject ``force-include``); an editable install imports from the checkout instead.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "patches", package_dir.parent / "patches"):
        if candidate.is_dir():
            return candidate
    raise ManifestError(
        f"patch manifest not found: neither {package_dir / 'patches'} nor "
        f"{package_dir.parent / 'patches'} exists; the installation is incomplete"
    )


def _require_str(data: dict[str, object], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def _parse_entry(raw: object, module: str, where: str, source: str) -> PatchEntry:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: each [[patch]] must be a table, got {raw!r}")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise ManifestError(
            f"{where}: unknown key(s) {sorted(unknown)}; accepted: {sorted(_ENTRY_KEYS)}"
        )
    name = _require_str(raw, "name", where)
    where = f"{where} ({name})"
    if not _NAME_RE.match(name):
        raise ManifestError(f"{where}: 'name' must be kebab-case, got {name!r}")
    target = _require_str(raw, "target", where)
    if not _TARGET_RE.match(target):
        raise ManifestError(
            f"{where}: 'target' {target!r} must be an attribute path such as 'Cls.method' "
            "or 'DICT', optionally followed by ['key']"
        )
    kind = _require_str(raw, "kind", where)
    if kind not in KINDS:
        raise ManifestError(f"{where}: 'kind' {kind!r} is not one of {list(KINDS)}")
    hook = _require_str(raw, "hook", where)
    if not _HOOK_RE.match(hook):
        raise ManifestError(f"{where}: 'hook' {hook!r} must be '<dotted.module>:<attribute>'")
    spec_text = _require_str(raw, "sglang", where)
    try:
        spec = SpecifierSet(spec_text)
    except InvalidSpecifier as exc:
        raise ManifestError(f"{where}: 'sglang' {spec_text!r} is not a PEP 440 range") from exc
    group = raw.get("group")
    if group is not None:
        group = _require_str(raw, "group", where)
        if not _NAME_RE.match(group):
            raise ManifestError(f"{where}: 'group' must be kebab-case, got {group!r}")
    return PatchEntry(
        group=group,
        name=name,
        module=module,
        target=target,
        kind=kind,
        hook=hook,
        sglang=spec,
        why=_require_str(raw, "why", where),
        remove_when=_require_str(raw, "remove_when", where),
        source=source,
    )


def load_file(path: Path) -> list[PatchEntry]:
    with path.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(f"{path.name}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"module", "patch"}
    if unknown:
        raise ManifestError(
            f"{path.name}: unknown top-level key(s) {sorted(unknown)}; accepted: module, patch"
        )
    module = _require_str(data, "module", path.name)
    if not module.startswith("sglang."):
        raise ManifestError(f"{path.name}: 'module' {module!r} is not an sglang module")
    entries = data.get("patch")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path.name}: needs at least one [[patch]] entry")
    return [
        _parse_entry(raw, module, f"{path.name}[{i}]", path.name) for i, raw in enumerate(entries)
    ]


def load_manifest(directory: Path | None = None) -> list[PatchEntry]:
    """Every entry of every ``*.toml`` file in ``directory``, in file then entry order."""
    directory = directory if directory is not None else default_directory()
    if not directory.is_dir():
        raise ManifestError(f"patch manifest directory {directory} does not exist")
    paths = sorted(directory.glob("*.toml"))
    if not paths:
        # An empty manifest would "activate" and patch nothing: a broken install, not a choice.
        raise ManifestError(f"patch manifest directory {directory} holds no *.toml file")
    entries: list[PatchEntry] = []
    modules: dict[str, str] = {}
    for path in paths:
        file_entries = load_file(path)
        module = file_entries[0].module
        if module in modules:
            raise ManifestError(
                f"{path.name}: module {module!r} is already patched by {modules[module]}; "
                "keep one file per module"
            )
        modules[module] = path.name
        entries.extend(file_entries)
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.name in seen:
            raise ManifestError(
                f"{entry.source}: patch name {entry.name!r} is also used in {seen[entry.name]}"
            )
        seen[entry.name] = entry.source
    _check_groups(entries)
    return entries


def groups(entries: list[PatchEntry]) -> dict[str, list[PatchEntry]]:
    """Each group's members, in manifest order."""
    found: dict[str, list[PatchEntry]] = {}
    for entry in entries:
        if entry.group is not None:
            found.setdefault(entry.group, []).append(entry)
    return found


def _check_groups(entries: list[PatchEntry]) -> None:
    for group, members in groups(entries).items():
        if len(members) < 2:
            # A group of one couples nothing: most likely a misspelt group name.
            raise ManifestError(
                f"{members[0].source} ({members[0].name}): group {group!r} has no other member; "
                f"groups: {sorted(groups(entries))}"
            )
        ranges = {str(m.sglang) for m in members}
        if len(ranges) > 1:
            # Members outside the installed range would be skipped one by one otherwise.
            raise ManifestError(
                f"group {group!r}: its members must share one sglang range, got "
                + ", ".join(f"{m.name} {m.sglang}" for m in members)
            )
