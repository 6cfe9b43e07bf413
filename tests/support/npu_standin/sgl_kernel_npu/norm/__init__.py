"""TEST-ONLY: ``sgl_kernel_npu.norm`` stand-in package (see ``sgl_kernel_npu``)."""
