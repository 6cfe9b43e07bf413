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
"""

from __future__ import annotations

from types import ModuleType

import wrapt

_HANDLER_MODULE = "sglang.srt.models.deepseek_common.attention_backend_handler"


def _register_torch_native_handler(module: ModuleType) -> None:
    def handle_torch_native(attn, forward_batch):  # type: ignore[no-untyped-def]
        return module._dispatch_mla_subtype(attn, forward_batch)

    module.AttentionBackendRegistry.register("torch_native", handle_torch_native)


def register() -> None:
    wrapt.register_post_import_hook(_register_torch_native_handler, _HANDLER_MODULE)
