"""What both FIA attention backends share: the backend base (per-batch host work, graph mode)
and the hand-off rule type with the rules both apply.

Below :mod:`sglang_ascend_fia.attention` (MHA/GQA) and :mod:`sglang_ascend_fia.mla`, which do
not import each other; :mod:`sglang_ascend_fia.registry` chooses between them. Importing this
package pulls in nothing from sglang.
"""
