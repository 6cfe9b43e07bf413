"""TEST-ONLY: ``sgl_kernel_npu.attention`` stand-in package (see ``sgl_kernel_npu``)."""
