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

   Remove when: no test sets ``FIA_TESTBED_REMOVE_ATTRIBUTE``.
"""

import os

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

    def remove(module: object) -> None:
        owner = module
        for part in owners:
            owner = getattr(owner, part)
        delattr(owner, name)

    wrapt.register_post_import_hook(remove, module_name)


if os.environ.get("FIA_TESTBED_REMOVE_ATTRIBUTE"):
    _remove_on_import(os.environ["FIA_TESTBED_REMOVE_ATTRIBUTE"])
