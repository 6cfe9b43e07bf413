"""The ``verify-ops`` cases, one module per op family, each with a ``CASES`` list.

:mod:`.common` holds the helpers they share. The modules import only
:mod:`sglang_ascend_fia.verify.case` and the public :mod:`sglang_ascend_fia.ops`; the command
(:mod:`sglang_ascend_fia.verify`) imports them, and this package imports none of them itself.
"""
