"""``activate()`` / ``deactivate()``: the plugin's lifecycle, called by sglang's plugin loader.

sglang 0.5.23 calls every ``sglang.srt.plugins`` entry point once in each process it starts
(main, each scheduler rank, the detokenizer; ``sglang/srt/plugins/__init__.py:103-141``).
``activate()`` reads ``ASCEND_USE_FIA``; when it is on, it registers one ``wrapt`` post-import
hook per patched module, so a target is patched the moment sglang imports it and nothing is
imported early. sglang's own ``HookRegistry`` is not used: it imports every target when hooks
are applied (the in-tree Ascend backend cannot even be imported without ``torch_npu``) and it
has no way to undo a patch.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from sglang_ascend_fia import config

# With the toggle off the plugin must import nothing beyond this module and ``config``; the
# patching machinery (wrapt, packaging, the manifest reader) is imported inside ``activate()``.
if TYPE_CHECKING:
    from packaging.version import Version

    from sglang_ascend_fia.manifest import PatchEntry
    from sglang_ascend_fia.patcher import AppliedPatch

logger = logging.getLogger("sglang_ascend_fia")

State = Literal["applied", "pending", "skipped", "failed", "inactive"]


@dataclass(frozen=True)
class PatchStatus:
    entry: PatchEntry
    state: State
    reason: str = ""


class ActivationError(config.StartupError):
    """The plugin cannot load: the manifest is missing or malformed, no entry covers the
    installed sglang, or a hook raised while ``activate()`` applied it to an already-imported
    module. Fatal, like an invalid toggle:
    sglang must not run stock when the user asked for FIA."""


_lock = threading.RLock()
_active = False  # True only once activate() has fully succeeded
_activating = False  # hooks may fire inside activate(), before _active is set
_manifest_dir: Path | None = None  # tests point this at fixture manifests
_entries: list[PatchEntry] = []
_applied: dict[str, AppliedPatch] = {}
_status: dict[str, PatchStatus] = {}
_hooked_modules: set[str] = set()
_skipped_groups: dict[str, str] = {}  # group -> why it is skipped in this process


def sglang_version() -> Version | None:
    import importlib.metadata

    from packaging.version import InvalidVersion, Version

    try:
        return Version(importlib.metadata.version("sglang"))
    except (importlib.metadata.PackageNotFoundError, InvalidVersion):
        return None


def module_file(module: str) -> Path | None:
    """``module``'s source file in the installed sglang, found on disk without importing it."""
    import importlib.util

    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        base = Path(root).joinpath(*rest.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def module_file_exists(module: str) -> bool:
    """Whether ``module`` exists in the installed sglang, found on disk without importing it."""
    return module_file(module) is not None


def _skip_reason(entry: PatchEntry, version: Version | None) -> str | None:
    if version is None:
        return "sglang is not installed"
    if not entry.sglang.contains(version, prereleases=True):
        return f"sglang {version} is outside this patch's range {entry.sglang}"
    if not module_file_exists(entry.module):
        return f"module {entry.module} is missing from the installed sglang {version}"
    return None


def _unsupported_version(entries: list[PatchEntry], version: Version | None) -> str | None:
    """The refusal when no entry of the manifest covers the installed sglang, else ``None``.

    One entry out of range is skipped (sglang runs that part stock), but with every entry out
    of range the user asked for FIA on an sglang this release knows nothing about: starting
    stock would silently ignore ``ASCEND_USE_FIA=1`` (and on an NPU run code the patches were
    written to replace), so sglang stops instead, like on an invalid toggle.
    """
    if version is None or not entries:
        return None
    if any(entry.sglang.contains(version, prereleases=True) for entry in entries):
        return None
    ranges = " or ".join(sorted({str(entry.sglang) for entry in entries}))
    return (
        f"sglang-ascend-fia: sglang {version} is not supported: this release patches sglang "
        f"{ranges}; install a supported sglang (pip install 'sglang-ascend-fia[sglang]'), "
        f"or unset {config.TOGGLE_ENV} to run sglang without the plugin"
    )


def _group_skip_reasons(version: Version | None) -> dict[str, str]:
    """Each group one of whose members cannot apply, with that member's reason: found before
    any member applies, from the installed files (a missing module, or a target its source does
    not define; ``patcher.static_target_missing``)."""
    from sglang_ascend_fia import patcher
    from sglang_ascend_fia.manifest import groups

    reasons: dict[str, str] = {}
    for group, members in groups(_entries).items():
        for entry in members:
            reason = _skip_reason(entry, version)
            if reason is None:
                path = module_file(entry.module)
                reason = patcher.static_target_missing(entry, path) if path else None
            if reason is not None:
                reasons[group] = f"patch group {group} is skipped: {entry.name}: {reason}"
                break
    return reasons


def _skip_group(group: str, reason: str) -> None:
    """Skip every member of ``group``, restoring any already applied (exactly: a restored wrap
    hook calls straight through), with one log line for the group."""
    members = [e for e in _entries if e.group == group]
    for entry in reversed(members):
        applied = _applied.pop(entry.name, None)
        if applied is not None:
            applied.restore()
    for entry in members:
        _status[entry.name] = PatchStatus(entry, "skipped", reason)
    _skipped_groups[group] = reason
    logger.warning(
        "sglang-ascend-fia: %s; sglang keeps its own %s",
        reason,
        ", ".join(e.qualified_target for e in members),
    )


def group_skip_reason(group: str) -> str | None:
    """Why ``group``'s patches are skipped in this process, or None while they apply (or wait
    for their modules). ``doctor`` shows it."""
    with _lock:
        return _skipped_groups.get(group)


def group_unready_reason(group: str) -> str | None:
    """Why a feature that needs all of ``group`` (the registry's MLA branch) cannot rely on it
    now, or None when every member is applied.

    Every member's module is imported first: a member whose target is missing only at run time
    is found when sglang imports its module (``memory_pool_npu`` is first imported while the
    pool is built), and a decision made before that (the in-tree mode, decided before the
    pool) must already see the group skipped."""
    import importlib

    from sglang_ascend_fia.manifest import groups

    if not _active:
        # Inactive (never activated, or deactivated): no member is applied, whatever an
        # earlier activation left in the manifest's entries.
        return f"patch group {group} is not applied: the plugin is not active"
    members = groups(_entries).get(group, [])
    problems: dict[str, str] = {}
    for entry in members:
        try:
            importlib.import_module(entry.module)
        except ImportError as exc:
            problems[entry.name] = f"its module {entry.module} cannot be imported here ({exc})"
    with _lock:
        if group in _skipped_groups:
            return _skipped_groups[group]
        for entry in members:
            status = _status.get(entry.name)
            if entry.name not in problems and (status is None or status.state != "applied"):
                state = status.state if status is not None else "not registered"
                reason = f" ({status.reason})" if status is not None and status.reason else ""
                problems[entry.name] = f"it is {state}{reason}"
    if problems:
        name, why = next(iter(problems.items()))
        return f"patch group {group} is not applied whole: {name}: {why}"
    return None


def _skip(entry: PatchEntry, reason: str) -> None:
    logger.warning(
        "sglang-ascend-fia: skipping patch %s (%s): %s; sglang keeps its own %s",
        entry.name,
        entry.qualified_target,
        reason,
        entry.target,
    )
    _status[entry.name] = PatchStatus(entry, "skipped", reason)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, for statuses and the fatal message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _on_import(module: ModuleType) -> None:
    """The post-import hook: patch every pending entry that targets ``module``."""
    from sglang_ascend_fia import patcher

    with _lock:
        if not (_active or _activating):
            # wrapt cannot unregister a post-import hook; after deactivate() it must do nothing.
            return
        for entry in _entries:
            if entry.module != module.__name__ or entry.name in _applied:
                continue
            if _status.get(entry.name, PatchStatus(entry, "pending")).state != "pending":
                continue
            try:
                _applied[entry.name] = patcher.apply(entry, module)
            except patcher.TargetMissing as exc:
                if entry.group is not None:
                    # Found only at import (the source defines it; something removed it):
                    # the members applied so far are restored.
                    _skip_group(
                        entry.group, f"patch group {entry.group} is skipped: {entry.name}: {exc}"
                    )
                else:
                    _skip(entry, str(exc))
                continue
            except Exception as exc:
                # A broken hook is our bug: fail loudly instead of running half-patched. On a
                # lazy import the error propagates from sglang's import statement; inside
                # activate() it becomes an ActivationError.
                _status[entry.name] = PatchStatus(entry, "failed", _one_line(exc))
                # wrapt has dropped its hook for this module once it fired, so a later
                # activate() must register it again.
                _hooked_modules.discard(module.__name__)
                logger.error("sglang-ascend-fia: patch %s failed: %s", entry.name, exc)
                raise
            _status[entry.name] = PatchStatus(entry, "applied")
            logger.debug("sglang-ascend-fia: applied %s", entry.name)


def activate() -> None:
    """Entry point for sglang's plugin loader. Idempotent.

    Raises :class:`config.ToggleError` on an invalid ``ASCEND_USE_FIA`` and
    :class:`ActivationError` when the manifest cannot be loaded, no entry covers the installed
    sglang, or a hook fails on an already-imported module; both are ``SystemExit``, so sglang
    stops instead of running stock.
    """
    global _active, _activating, _entries
    settings = config.resolve()
    with _lock:
        if not settings.use_fia or _active:
            return
        import wrapt

        _entries = _load_entries()
        version = sglang_version()
        _status.clear()
        _skipped_groups.clear()
        refusal = _unsupported_version(_entries, version)
        if refusal is not None:
            for entry in _entries:  # doctor lists each one with its reason
                _status[entry.name] = PatchStatus(
                    entry, "skipped", _skip_reason(entry, version) or ""
                )
            raise ActivationError(refusal)
        group_reasons = _group_skip_reasons(version)
        for entry in _entries:
            if entry.name in _applied:  # left installed by an activation that failed later
                _status[entry.name] = PatchStatus(entry, "applied")
                continue
            reason = _skip_reason(entry, version)
            if entry.group in group_reasons:
                continue  # the whole group is skipped below, with one line
            if reason is not None:
                _skip(entry, reason)
            else:
                _status[entry.name] = PatchStatus(entry, "pending")
        for group, reason in group_reasons.items():
            _skip_group(group, reason)
        modules = {e.module for e in _entries if _status[e.name].state == "pending"}
        _activating = True
        try:
            for module in sorted(modules):
                if module in _hooked_modules and module in sys.modules:
                    _on_import(sys.modules[module])  # re-activation: the hook already fired
                elif module not in _hooked_modules:
                    _hooked_modules.add(module)
                    # Runs _on_import at once if the module is already imported.
                    wrapt.register_post_import_hook(_on_import, module)
        except Exception as exc:
            raise ActivationError(_hook_failure_message(exc)) from exc
        finally:
            _activating = False
        _active = True
        registered = sum(1 for s in _status.values() if s.state != "skipped")
        logger.info(
            "sglang-ascend-fia: %s; %d of %d patch(es) registered for sglang %s",
            settings.describe(),
            registered,
            len(_entries),
            version,
        )


def _load_entries() -> list[PatchEntry]:
    from sglang_ascend_fia.manifest import ManifestError, default_directory, load_manifest

    def fatal(exc: Exception, where: str) -> ActivationError:
        cause = " ".join(str(exc).split())
        return ActivationError(f"sglang-ascend-fia: cannot load the patch manifest{where}: {cause}")

    try:
        directory = _manifest_dir if _manifest_dir is not None else default_directory()
    except ManifestError as exc:  # its message names both places it looked
        raise fatal(exc, "") from exc
    try:
        return load_manifest(directory)
    except (ManifestError, OSError, UnicodeDecodeError) as exc:
        # ManifestError names the file and key; the directory says which install it was.
        raise fatal(exc, f" in {directory}") from exc


def _hook_failure_message(exc: Exception) -> str:
    failed = [s for s in _status.values() if s.state == "failed"]
    if not failed:  # raised outside a hook (e.g. by wrapt itself)
        return f"sglang-ascend-fia: activation failed: {_one_line(exc)}"
    entry = failed[0].entry
    return (
        f"sglang-ascend-fia: patch {entry.name} ({entry.source}) failed on "
        f"{entry.qualified_target}: {failed[0].reason}"
    )


def deactivate() -> None:
    """Restore every patched original exactly, newest first. Safe to call when inactive."""
    global _active
    with _lock:
        for name in reversed(list(_applied)):
            _applied.pop(name).restore()
        _status.clear()
        _skipped_groups.clear()
        _active = False


def mark_unimportable(module: str, reason: str) -> None:
    """Record that ``module`` cannot be imported in this process (an ``ImportError``, e.g. it
    needs ``torch_npu``): its pending entries are ``skipped``. Used by ``doctor``."""
    _mark_pending(module, "skipped", reason)


def mark_import_failed(module: str, error: BaseException) -> None:
    """Record that importing ``module`` raised ``error`` (not an ``ImportError``): its pending
    entries are ``failed``, since sglang itself would fail the same way. Used by ``doctor``."""
    _mark_pending(module, "failed", _one_line(error))


def _mark_pending(module: str, state: State, reason: str) -> None:
    with _lock:
        mine = [e for e in _entries if e.module == module]
        hook_failed = next((e for e in mine if _status[e.name].state == "failed"), None)
        if hook_failed is not None:
            # The import failed because of that hook, not because of the others or of sglang.
            state, reason = "failed", f"not applied: patch {hook_failed.name} failed first"
        for entry in mine:
            if _status[entry.name].state == "pending":  # a failed hook keeps its own reason
                _status[entry.name] = PatchStatus(entry, state, reason)


def is_active() -> bool:
    return _active


def status() -> list[PatchStatus]:
    """Live status of every manifest entry in this process."""
    from sglang_ascend_fia.manifest import load_manifest

    with _lock:
        if _status:  # active, or an activation that failed part-way (see activate())
            return [_status[e.name] for e in _entries]
        entries = load_manifest(_manifest_dir)
        return [PatchStatus(e, "inactive", "plugin not active") for e in entries]
