"""Call the installed ``ascend_fia`` entry point the way sglang's loader does; report what it
imported. Run as a script in a fresh interpreter: only the stdlib is imported before the
snapshot, so every module the plugin pulls in shows up in ``new_modules``."""

import json
import sys

before = set(sys.modules)

from importlib.metadata import entry_points  # noqa: E402 - after the snapshot on purpose

(entry_point,) = [e for e in entry_points(group="sglang.srt.plugins") if e.name == "ascend_fia"]
entry_point.load()()
new_modules = sorted(set(sys.modules) - before)
plugin = sys.modules["sglang_ascend_fia.plugin"]
print(
    json.dumps(
        {
            "value": entry_point.value,
            "new_modules": new_modules,
            "active": plugin.is_active(),
        }
    )
)
