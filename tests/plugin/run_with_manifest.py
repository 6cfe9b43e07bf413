"""Run sglang's real plugin loader, or ``doctor``, in a fresh interpreter with fixture settings.

``python -m plugin.run_with_manifest [OPTIONS] load_plugins | doctor [--json]``

- ``--manifest DIR``: point the plugin at fixture manifests instead of ``patches/``.
- ``--preimport MODULE``: import MODULE before the plugins load (the hook then runs inside
  ``activate()``).
- ``--lazy-import MODULE``: after ``load_plugins()``, import MODULE and report what it raised.
- ``--break MODULE``: make importing MODULE raise ``RuntimeError`` from its loader, the way a
  broken dependency does outside the test bed (``operator torchvision::nms does not exist``).

``load_plugins`` prints one ``@@report@@<json>`` line when sglang's loader returns; a fatal
plugin error ends the process first, with its message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

MARK = "@@report@@"
BROKEN_MESSAGE = "operator torchvision::nms does not exist"


class _BrokenLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        raise RuntimeError(BROKEN_MESSAGE)


class _BreakFinder(importlib.abc.MetaPathFinder):
    def __init__(self, module: str) -> None:
        self.module = module

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.module:
            return None
        return importlib.util.spec_from_loader(fullname, _BrokenLoader())


def _statuses() -> dict[str, dict[str, str]]:
    from sglang_ascend_fia import plugin

    return {s.entry.name: {"state": s.state, "reason": s.reason} for s in plugin.status()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run_with_manifest")
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--preimport", action="append", default=[])
    parser.add_argument("--lazy-import")
    parser.add_argument("--break", dest="broken", action="append", default=[])
    parser.add_argument("command", choices=["load_plugins", "doctor"])
    args, rest = parser.parse_known_args(argv)

    from sglang_ascend_fia import plugin

    plugin._manifest_dir = args.manifest
    for module in args.broken:
        sys.meta_path.insert(0, _BreakFinder(module))
    for module in args.preimport:
        importlib.import_module(module)
    if args.command == "doctor":
        from sglang_ascend_fia import cli

        return cli.main(["doctor", *rest])

    from sglang.srt.plugins import load_plugins

    load_plugins()
    report: dict[str, object] = {"active": plugin.is_active(), "lazy_error": None}
    if args.lazy_import:
        try:
            importlib.import_module(args.lazy_import)
        except Exception as exc:
            report["lazy_error"] = f"{type(exc).__name__}: {exc}"
        report["still_active"] = plugin.is_active()
    report["statuses"] = _statuses()
    print(MARK + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
