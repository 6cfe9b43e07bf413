"""TEST-ONLY interpreter start-up fix for the CPU test bed (on the test ``PYTHONPATH`` only).

PyPI's torchvision is linked against CUDA torch; beside the CPU torch build its import fails with
``operator torchvision::nms does not exist``, and transformers' model imports fail with it.
Declaring the two operator schemas before torchvision is imported lets the import succeed. It
has to run in every process, spawned sglang schedulers and detokenizers included, which is what
``sitecustomize`` gives us.

Remove when: the test bed's torchvision is a CPU build matching its torch (``import torchvision``
succeeds without this file), or nothing the test bed imports needs torchvision.
"""

try:
    import torch

    if not torch.cuda.is_available():
        _lib = torch.library.Library("torchvision", "DEF")  # kept alive for the process
        _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except Exception as exc:  # a start-up hook must never stop the interpreter, but say why
    import sys

    print(f"test-bed sitecustomize: torchvision schema fix not applied: {exc}", file=sys.stderr)
