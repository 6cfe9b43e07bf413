"""TEST-ONLY interpreter start-up code for the CPU test bed (on the test ``PYTHONPATH`` only).

1. The torchvision fix. PyPI's torchvision is linked against CUDA torch; beside the CPU torch
   build its import fails with ``operator torchvision::nms does not exist``, and transformers'
   model imports fail with it. Declaring the two operator schemas before torchvision is imported
   lets the import succeed. It has to run in every process, spawned sglang schedulers and
   detokenizers included, which is what ``sitecustomize`` gives us.

   Remove when: the test bed's torchvision is a CPU build matching its torch (``import
   torchvision`` succeeds without this file), or nothing the test bed imports needs torchvision.

2. The missing-target fixture. When ``FIA_TESTBED_REMOVE_ATTRIBUTE`` is ``module:Owner.attr``,
   ``attr`` is deleted from ``module.Owner`` the moment sglang imports ``module``, in every
   process: a stand-in for an sglang release that renamed or dropped what a patch targets. It
   runs before the plugin's own import hook on that module because ``sitecustomize`` registers
   it first, before sglang loads any plugin (wrapt calls a module's hooks in registration order).
   A module-level name (``module:Name``, e.g. a class) is renamed rather than dropped: sglang's
   own code imports such a name itself (``from module import Name`` inside its functions), so
   deleting it would break stock sglang, not the plugin, as no real release that renamed it
   would. The name is gone from the module, and a module ``__getattr__`` still hands it to every
   caller outside ``sglang_ascend_fia`` (sglang's own imports of the new name), never to the
   plugin.

   Remove when: no test sets ``FIA_TESTBED_REMOVE_ATTRIBUTE``.
"""

import os
from types import ModuleType

try:
    import torch

    if not torch.cuda.is_available():
        _lib = torch.library.Library("torchvision", "DEF")  # kept alive for the process
        _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except Exception as exc:  # a start-up hook must never stop the interpreter, but say why
    import sys

    print(f"test-bed sitecustomize: torchvision schema fix not applied: {exc}", file=sys.stderr)


def _remove_on_import(spec: str) -> None:
    import wrapt

    module_name, _, path = spec.partition(":")
    *owners, name = path.split(".")

    def remove(module: ModuleType) -> None:
        owner = module
        for part in owners:
            owner = getattr(owner, part)
        renamed = getattr(owner, name)
        delattr(owner, name)
        if not owners:
            _keep_for_sglang(module, name, renamed)

    wrapt.register_post_import_hook(remove, module_name)


def _keep_for_sglang(module: ModuleType, name: str, value: object) -> None:
    """``module.name`` for every caller but the plugin, as if sglang had renamed it."""
    import sys

    def __getattr__(attr: str) -> object:  # PEP 562: reached only for names the module lacks
        # The frame that asked: for ``from module import name`` the importing function, for
        # the plugin's ``hasattr``/``getattr`` the plugin's own code.
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if attr == name and caller.partition(".")[0] != "sglang_ascend_fia":
            return value
        raise AttributeError(f"module {module.__name__!r} has no attribute {attr!r}")

    setattr(module, "__getattr__", __getattr__)  # noqa: B010  # a module attribute, not a method


if os.environ.get("FIA_TESTBED_REMOVE_ATTRIBUTE"):
    _remove_on_import(os.environ["FIA_TESTBED_REMOVE_ATTRIBUTE"])
