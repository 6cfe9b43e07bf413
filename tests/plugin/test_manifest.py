"""The patch manifest: consistency with the code and sglang, parsing errors, and skips."""

from __future__ import annotations

import ast
import importlib
import logging
import pkgutil
import re
from pathlib import Path

import pytest

import sglang_ascend_fia
from sglang_ascend_fia import plugin
from sglang_ascend_fia.manifest import ManifestError, load_file, load_manifest
from sglang_ascend_fia.patcher import load_hook, resolve_container

ENTRIES = load_manifest()


def _package_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(sglang_ascend_fia.__path__, "sglang_ascend_fia.")
        if not m.name.endswith("__main__")
    ]


def test_manifest_is_not_empty_and_names_are_unique() -> None:
    assert ENTRIES
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_hook_exists_and_lives_in_the_plugin(entry) -> None:  # type: ignore[no-untyped-def]
    assert entry.hook_module.startswith("sglang_ascend_fia."), entry.hook
    assert callable(load_hook(entry))


def _by_manifest() -> dict[str, set[str]]:
    by_manifest: dict[str, set[str]] = {}
    for entry in ENTRIES:
        by_manifest.setdefault(entry.hook_module, set()).add(entry.name)
    return by_manifest


def test_every_hook_module_is_named_by_the_manifest() -> None:
    """A module declares the entries it serves in ``__sglang_patches__``; both sides must agree."""
    declared: dict[str, set[str]] = {}
    for name in _package_modules():
        module = importlib.import_module(name)
        names = getattr(module, "__sglang_patches__", None)
        if names is not None:
            declared[name] = set(names)
    assert declared == _by_manifest()


PACKAGE_DIR = Path(sglang_ascend_fia.__file__).resolve().parent
WRAPPER_ARGS = ["wrapped", "instance", "args", "kwargs"]
HOOK_REF = re.compile(r"\b(sglang_ascend_fia(?:\.\w+)+):\w+")


def _hook_like_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, list[str]]:
    """Modules that look like they hold hooks, read from the source without importing it:
    a function with wrapt's wrapper signature, or a ``sglang_ascend_fia.x:attr`` reference."""
    found: dict[str, list[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                params = [a.arg for a in node.args.posonlyargs + node.args.args]
                if params in (WRAPPER_ARGS, ["self", *WRAPPER_ARGS]):
                    found.setdefault(module, []).append(f"{path.name}: def {node.name}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in HOOK_REF.finditer(node.value):
                    found.setdefault(match[1], []).append(f"{path.name}: {match[0]!r}")
    return found


def test_no_hook_module_escapes_the_manifest() -> None:
    """A hook module that forgot ``__sglang_patches__`` is still caught by what it contains."""
    found = _hook_like_modules()
    # The scan must see the real hook, or it proves nothing.
    assert "sglang_ascend_fia.registry.factory" in found
    # The patcher's HookGuard is the one wrapper function every wrap entry is installed with; it
    # calls the entry's live hook (sglang_ascend_fia/patcher.py), so it is machinery, not a hook.
    assert found.pop("sglang_ascend_fia.patcher") == ["patcher.py: def __call__"]
    unlisted = {m: why for m, why in found.items() if m not in _by_manifest()}
    assert not unlisted, f"hook-like code outside the manifest's hook modules: {unlisted}"


def test_hook_scan_catches_undeclared_hooks(tmp_path: Path) -> None:
    """The scan itself, on a fixture package: a wrapper-shaped function and a hook reference in
    modules that declare nothing are both reported."""
    package = tmp_path / "sglang_ascend_fia"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "sneaky.py").write_text(
        "def sneaky(\n    wrapped, instance, args, kwargs\n):\n    return wrapped(*args)\n"
    )
    (package / "notes.py").write_text('HOOK = "sglang_ascend_fia.elsewhere:create"\n')
    (package / "plain.py").write_text("def call(wrapped, args):\n    return wrapped(*args)\n")
    found = _hook_like_modules(package)
    assert found == {
        "sglang_ascend_fia.sub.sneaky": ["sneaky.py: def sneaky"],
        "sglang_ascend_fia.elsewhere": ["notes.py: 'sglang_ascend_fia.elsewhere:create'"],
    }


def _top_level_names(module: str) -> set[str]:
    """Names a module defines, read from its source: works for modules that need torch_npu."""
    spec = importlib.util.find_spec(module.rpartition(".")[0])
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / f"{module.rpartition('.')[2]}.py"
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


# The only modules whose absence excuses an sglang module from importing on the CPU test bed.
NPU_ONLY_IMPORTS = {"torch_npu", "sgl_kernel_npu"}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_target_exists_in_installed_sglang(entry) -> None:  # type: ignore[no-untyped-def]
    assert plugin.module_file_exists(entry.module), entry.module
    assert entry.attr_path[0] in _top_level_names(entry.module)
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        # Only an NPU-only dependency may stop the import; anything else means the test bed
        # (or the entry) is broken, and must not pass on the source check alone.
        assert exc.name in NPU_ONLY_IMPORTS, f"{entry.module} should import here: {exc!r}"
        return  # the source check above is what a CPU host can do for this module
    resolve_container(entry, module)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_entry_explains_itself(entry) -> None:  # type: ignore[no-untyped-def]
    assert ".py:" in entry.why, "why must cite the upstream file:line"
    assert len(entry.remove_when) > 20
    assert entry.sglang.contains("0.5.23")


# --- parsing errors --------------------------------------------------------------------------

GOOD = """module = "sglang.version"

[[patch]]
name = "fixture-entry"
target = "__version__"
kind = "replace"
hook = "plugin.hook_fixtures:REPLACED_VERSION"
sglang = ">=0.5.23"
why = "fixture (version.py:1)"
remove_when = "never: a test fixture only"
"""


def _write(tmp_path: Path, text: str, name: str = "fixture.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'kind = "replace"',
            'kind = "monkey"',
            r"'kind' 'monkey' is not one of \['replace', 'wrap'\]",
        ),
        ('sglang = ">=0.5.23"', 'sglang = "newest"', r"'sglang' 'newest' is not a PEP 440 range"),
        (
            'target = "__version__"',
            'target = "a[b]"',
            r"'target' 'a\[b\]' must be an attribute path",
        ),
        (
            'hook = "plugin.hook_fixtures:REPLACED_VERSION"',
            'hook = "nocolon"',
            r"'hook' 'nocolon'",
        ),
        ('why = "fixture (version.py:1)"', 'why = ""', r"'why' must be a non-empty string"),
        ('remove_when = "never: a test fixture only"', "", r"'remove_when' must be a non-empty"),
        ('name = "fixture-entry"', 'name = "Fixture_Entry"', r"'name' must be kebab-case"),
        ('module = "sglang.version"', 'module = "os.path"', r"'os.path' is not an sglang module"),
        ("[[patch]]", "[[patch]]\nextra = 1", r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_malformed_entries_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ManifestError, match=message) as info:
        load_file(_write(tmp_path, GOOD.replace(old, new)))
    assert str(info.value).startswith("fixture.toml")


def test_duplicate_module_files_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, "a.toml")
    _write(tmp_path, GOOD.replace("fixture-entry", "other-entry"), "b.toml")
    expected = r"already patched by a\.toml; keep one file per module"
    with pytest.raises(ManifestError, match=expected):
        load_manifest(tmp_path)


# --- skips: out of range, module missing, target missing ----------------------------------


def _statuses() -> dict[str, plugin.PatchStatus]:
    return {s.entry.name: s for s in plugin.status()}


def test_fixture_entry_applies_and_restores(fixture_plugin: Path) -> None:
    import sglang.version

    original = sglang.version.__version__
    _write(fixture_plugin, GOOD)
    plugin.activate()
    assert _statuses()["fixture-entry"].state == "applied"
    assert sglang.version.__version__ == "0.0.0-patched-by-a-fixture"
    plugin.deactivate()
    assert sglang.version.__version__ is original


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (
            'module = "sglang.version"',
            'module = "sglang.srt.no_such_module"',
            "module sglang.srt.no_such_module is missing from the installed sglang 0.5.23",
        ),
        (
            'target = "__version__"',
            'target = "no_such_attribute"',
            "sglang.version has no attribute 'no_such_attribute'",
        ),
    ],
)
def test_unusable_entries_are_skipped_with_one_warning(
    fixture_plugin: Path, caplog: pytest.LogCaptureFixture, old: str, new: str, reason: str
) -> None:
    import sglang.version

    original = sglang.version.__version__
    _write(fixture_plugin, GOOD.replace(old, new))
    with caplog.at_level(logging.WARNING, logger="sglang_ascend_fia"):
        plugin.activate()
    status = _statuses()["fixture-entry"]
    assert (status.state, status.reason) == ("skipped", reason)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipping patch fixture-entry" in warnings[0] and reason in warnings[0]
    assert sglang.version.__version__ is original  # sglang keeps running stock


# A second module's entry that does cover the installed sglang 0.5.23.
IN_RANGE = (
    GOOD.replace('"sglang.version"', '"sglang.srt.constants"')
    .replace('"fixture-entry"', '"in-range-entry"')
    .replace('"__version__"', '"GIB_BYTES"')
)


def test_an_entry_outside_its_range_is_skipped_with_one_warning(
    fixture_plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sglang.version

    original = sglang.version.__version__
    _write(fixture_plugin, GOOD.replace('sglang = ">=0.5.23"', 'sglang = "<0.5"'))
    _write(fixture_plugin, IN_RANGE, "in_range.toml")
    with caplog.at_level(logging.WARNING, logger="sglang_ascend_fia"):
        plugin.activate()
    reason = "sglang 0.5.23 is outside this patch's range <0.5"
    assert (_statuses()["fixture-entry"].state, _statuses()["fixture-entry"].reason) == (
        "skipped",
        reason,
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipping patch fixture-entry" in warnings[0], warnings
    assert reason in warnings[0]
    assert sglang.version.__version__ is original


def test_an_sglang_no_entry_covers_is_refused_in_one_line(
    fixture_plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sglang.version

    original = sglang.version.__version__
    _write(fixture_plugin, GOOD.replace('sglang = ">=0.5.23"', 'sglang = "<0.5"'))
    _write(
        fixture_plugin,
        IN_RANGE.replace('sglang = ">=0.5.23"', 'sglang = ">=0.6,<0.7"'),
        "in_range.toml",
    )
    with (
        caplog.at_level(logging.WARNING, logger="sglang_ascend_fia"),
        pytest.raises(plugin.ActivationError) as info,
    ):
        plugin.activate()
    assert str(info.value) == (
        "sglang-ascend-fia: sglang 0.5.23 is not supported: this release patches sglang <0.5 or "
        "<0.7,>=0.6; install a supported sglang (pip install 'sglang-ascend-fia[sglang]'), "
        "or unset ASCEND_USE_FIA to run sglang without the plugin"
    )
    assert not caplog.records  # the refusal is the one line, no per-patch warnings before it
    assert not plugin.is_active()
    assert {s.entry.name: s.state for s in plugin.status()} == {
        "fixture-entry": "skipped",
        "in-range-entry": "skipped",
    }
    assert sglang.version.__version__ is original
