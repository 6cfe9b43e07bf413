"""Child of ``test_kernel_check.py``: the kernel check against the torch_npu stand-in lacking
each kernel in turn (``NPU_STANDIN_LACKS``, re-read by reloading the stand-in). Prints one JSON
object: kernel -> feature -> the check's dict."""

from __future__ import annotations

import importlib
import json
import os
import sys

from sglang_ascend_fia.ops import kernels


def main(names: list[str]) -> None:
    import torch_npu

    report = {}
    for name in names:
        os.environ["NPU_STANDIN_LACKS"] = name
        importlib.reload(torch_npu)
        kernels.forget()
        report[name] = {
            f: {**kernels.check(f).as_dict(), "reason": kernels.check(f).reason()}
            for f in kernels.FEATURE_KERNELS
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
