"""The NPU-op facade: every NPU kernel the plugin calls, with a faithful pure-PyTorch reference.

On an NPU tensor each op calls ``torch_npu``; anywhere else it runs the reference. Names drop the
``npu_`` prefix; parameters, defaults and return tuples follow torch_npu 2.14.
"""

from sglang_ascend_fia.ops._dispatch import launch_counts, npu_op, reset_launch_counts

__all__ = ["launch_counts", "npu_op", "reset_launch_counts"]
