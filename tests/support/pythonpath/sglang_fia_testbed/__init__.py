"""TEST-ONLY sglang plugin: fixes stock sglang 0.5.23 quirks that only matter on the CPU test bed.

It is discovered through the ``sglang_fia_testbed-0.0.0.dist-info`` entry point beside it on the
test ``PYTHONPATH``, so sglang loads it in every process (main, schedulers, detokenizer), exactly
like the real plugin. Never shipped.

The fix: sglang 0.5.23 registers no DeepSeek attention handler for ``torch_native``, so the
"triton" handler is used; it picks the MHA path for fresh prefills while
``TorchNativeAttnBackend`` reads K/V from the MLA latent cache, and the first DeepSeek prefill
crashes (``Expected size for first two dimensions of batch2 tensor``). Registering the plain MLA
dispatcher for ``torch_native`` makes the stock backend a usable DeepSeek oracle. The hook is
lazy (``wrapt``), so this plugin imports no model module before sglang does.

It also records, when ``FIA_TESTBED_PROCESS_LOG`` names a file, one JSON line per sglang process
saying which sglang function loaded the plugins there and whether ``ascend_fia`` is active. It
does so from ``HookRegistry.apply_hooks``, which ``load_plugins()`` calls after *every* plugin has
run, so the order in which plugins are called does not matter.

Remove when: sglang registers a DeepSeek attention handler for ``torch_native`` itself, and no
test sets ``FIA_TESTBED_PROCESS_LOG`` (move that log elsewhere first if tests still need it).
"""

from __future__ import annotations

import inspect
import json
import os
from types import ModuleType
from typing import Any

import wrapt

_HANDLER_MODULE = "sglang.srt.models.deepseek_common.attention_backend_handler"


def _register_torch_native_handler(module: ModuleType) -> None:
    def handle_torch_native(attn, forward_batch):  # type: ignore[no-untyped-def]
        return module._dispatch_mla_subtype(attn, forward_batch)

    module.AttentionBackendRegistry.register("torch_native", handle_torch_native)


_LOADERS = ("run_scheduler_process", "run_detokenizer_process", "__init__", "launch_server")


def _record_process(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    path = os.environ.get("FIA_TESTBED_PROCESS_LOG")
    if path:
        from sglang_ascend_fia import plugin

        # The first frame, outside the plugin machinery, that called load_plugins().
        caller = next(
            (
                f"{os.path.basename(f.filename)}:{f.function}"
                for f in inspect.stack()[2:]
                if f.function in _LOADERS and "plugins" not in f.filename
            ),
            "unknown",
        )
        with open(path, "a") as fh:
            fh.write(
                json.dumps({"pid": os.getpid(), "caller": caller, "active": plugin.is_active()})
                + "\n"
            )
    return result


def register() -> None:
    wrapt.register_post_import_hook(_register_torch_native_handler, _HANDLER_MODULE)
    wrapt.wrap_function_wrapper(
        "sglang.srt.plugins.hook_registry", "HookRegistry.apply_hooks", _record_process
    )
