"""The FIA attention backend for MHA/GQA models (sglang's ``"ascend"`` backend when active).

Submodules are imported lazily by the manifest hooks; importing this package pulls in nothing
from sglang.
"""
