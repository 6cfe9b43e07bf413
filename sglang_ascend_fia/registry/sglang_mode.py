"""The mode of sglang's own ``AscendAttnBackend`` a handed-off model runs, scoped to its runner.

sglang 0.5.23 reads ``ASCEND_USE_FIA`` itself: its MHA pools (``memory_pool_npu.py:109``,
``:512``) and its backend (``ascend_backend.py:383``) choose their FIA mode from it. With the
plugin on, the variable is 1, so a model the plugin hands off would run sglang's FIA mode, which
this repository's side-by-side tests show crashing at page size 16 and on mixed chunked-prefill
batches (``block_size=1`` at ``ascend_backend.py:3517``). So each model runner gets the value of
the mode that is correct for it, decided once before its pool is built and kept for its backend:

- the plugin's own FIA backend: 1 (its pool is the FIA-mode pool, per-layer ``[P*ps, 1, H, D]``
  views, ``memory_pool_npu.py:175-189``, as with the plugin before);
- a hand-off that only sglang's FIA mode serves: 1. Context parallel attention exists only
  there (``ascend_backend.py:1864-1875``: the other mode raises ``NotImplementedError``), and
  hybrid-SWA windows and learned sinks are applied only on its branch (``:1728``);
- every other hand-off: 0, sglang's ATB mode, as with ``ASCEND_USE_FIA=0``.

Neither of sglang's modes serves a mixed chunked-prefill batch correctly (ATB mode's
``forward_mixed`` calls FIA TND with a block table at every head dim, ``:3482-3540``; FIA mode
fails at ``:3517``), so a handed-off model runs without mixed chunks, said once at start-up.

The value reaches sglang through its own reader: the hooks below wrap the ``get_bool_env_var``
name those two modules imported, and answer ``ASCEND_USE_FIA`` with the runner's value while its
pool or backend is built (all other names, and every call outside those scopes, go straight
through). Pool-only hand-off reasons (HND layout, a quantized cache) are known only once the pool
exists; such a model keeps the FIA mode its pool was built for, and its hand-off line says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sglang_ascend_fia.config import TOGGLE_ENV

logger = logging.getLogger("sglang_ascend_fia")

__sglang_patches__ = (
    "in-tree-mode-pool",
    "in-tree-mode-backends",
    "in-tree-flag-pool",
    "in-tree-flag-backend",
)

# The attribute a runner carries with the ASCEND_USE_FIA value its pool was built with.
RUNNER_FLAG = "sglang_ascend_fia_in_tree_fia"

_scope: list[bool] = []  # innermost last: the value sglang's reader answers while set


@contextmanager
def scoped(value: bool) -> Iterator[None]:
    _scope.append(value)
    try:
        yield
    finally:
        _scope.pop()


def current() -> bool | None:
    """The ``ASCEND_USE_FIA`` value sglang's own code reads now, or None outside a scope."""
    return _scope[-1] if _scope else None


def fia_mode_reason(runner: Any) -> str | None:
    """Why a handed-off ``runner`` needs sglang's FIA mode, or None for its ATB mode."""
    from sglang_ascend_fia.fia_backend.handoff import CONTEXT_PARALLEL

    if CONTEXT_PARALLEL.check(runner) is not None:
        return "context parallel attention runs only in sglang's FIA mode (ascend_backend.py:1864)"
    if runner.is_hybrid_swa:
        return "hybrid-SWA windows are applied only in sglang's FIA mode (ascend_backend.py:1728)"
    if getattr(runner.model_config, "has_attention_sinks", False):
        return "learned sinks are applied only in sglang's FIA mode (ascend_backend.py:1728)"
    return None


def _uses_ascend(runner: Any) -> bool:
    args = runner.server_args
    return "ascend" in (
        args.attention_backend,
        getattr(args, "prefill_attention_backend", None),
        getattr(args, "decode_attention_backend", None),
    )


def decide(runner: Any) -> bool:
    """The ``ASCEND_USE_FIA`` value for ``runner``'s pool and backend (see the module doc)."""
    from sglang_ascend_fia.fia_backend import handoff
    from sglang_ascend_fia.registry import rules_for

    # Before the pool exists: every rule but those reading the pool.
    reason = handoff.first_reason(rules_for(runner), runner, before_pool=True)
    if reason is None:
        return True
    return fia_mode_reason(runner) is not None


def alloc_memory_pool(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``ModelRunner.alloc_memory_pool``: decide the runner's mode, then build its
    pool with it."""
    if not _uses_ascend(instance):
        return wrapped(*args, **kwargs)
    value = decide(instance)
    setattr(instance, RUNNER_FLAG, value)
    with scoped(value):
        return wrapped(*args, **kwargs)


def init_attention_backends(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for ``ModelRunner.init_attention_backends``: the backend reads the value the
    runner's pool was built with."""
    value = getattr(instance, RUNNER_FLAG, None)
    if value is None:
        return wrapped(*args, **kwargs)
    with scoped(value):
        return wrapped(*args, **kwargs)


def get_bool_env_var(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt hook for the ``get_bool_env_var`` name ``memory_pool_npu`` and ``ascend_backend``
    imported (``utils/common.py:1424``): the scoped value for ``ASCEND_USE_FIA``."""
    name = args[0] if args else kwargs.get("name")
    value = current()
    if name == TOGGLE_ENV and value is not None:
        return value
    return wrapped(*args, **kwargs)


_mixed_logged: set[str] = set()


def keep_batches_sglang_can_run(reason: str) -> None:
    """A handed-off model runs without mixed chunked-prefill batches, which neither sglang
    mode serves correctly; one line when ``--enable-mixed-chunk`` was on. The scheduler reads
    the setting after building its backends (``managers/scheduler.py:1376``)."""
    from sglang.srt.runtime_context import get_context, get_schedule

    if not get_schedule().enable_mixed_chunk:
        return
    get_context().override("sglang-ascend-fia", enable_mixed_chunk=False)
    if reason not in _mixed_logged:
        _mixed_logged.add(reason)
        logger.warning(
            "sglang-ascend-fia: --enable-mixed-chunk is turned off for this model: it is "
            "handed to sglang's own AscendAttnBackend (%s), which serves no mixed "
            "chunked-prefill batch correctly in either mode (ascend_backend.py:3482-3540, "
            ":3517)",
            reason,
        )


# sglang's ATB mode pages its cache for CANN ATB's PagedAttention (``_npu_paged_attention``,
# ascend_backend.py:3310; ``_npu_paged_attention_mla`` for MLA, :3469) and reads the same block
# table in its prefill (``_npu_flash_attention_qlens``, :2033). The public ATB doc
# ("PagedAttentionOperation", CANN ascendtb API, restrictions) states: block_size % 16 == 0
# (hardware), and block_size <= 128 when a head (K or V) is wider than 256 (MLA's 576).
ATB_PAGE_ALIGN = 16
ATB_WIDE_HEAD = 256
ATB_WIDE_HEAD_MAX_PAGE = 128


def atb_page_size_problem(page_size: int, head_dim: int) -> str | None:
    """Why CANN ATB's PagedAttention cannot page a cache of ``head_dim``-wide heads in pages of
    ``page_size`` tokens, or None (the rules above)."""
    if page_size % ATB_PAGE_ALIGN:
        return (
            f"--page-size={page_size} is not allowed by sglang's ATB mode: its PagedAttention "
            f"kernel takes a page size that is a multiple of {ATB_PAGE_ALIGN}"
        )
    if head_dim > ATB_WIDE_HEAD and page_size > ATB_WIDE_HEAD_MAX_PAGE:
        return (
            f"--page-size={page_size} is not allowed by sglang's ATB mode for heads of "
            f"{head_dim}: its PagedAttention kernel takes at most {ATB_WIDE_HEAD_MAX_PAGE} "
            f"tokens per page for a head wider than {ATB_WIDE_HEAD}"
        )
    return None


def _cache_head_dim(runner: Any) -> int:
    """The width of one cached head: MLA's latent plus rope part, else the model's head dim."""
    config = runner.model_config
    if runner.use_mla_backend:
        return int(config.kv_lora_rank + config.qk_rope_head_dim)
    return int(config.head_dim)


def page_size_refusal(runner: Any, fia_mode: bool) -> str | None:
    """Why the sglang mode a handed-off ``runner`` runs cannot page its cache, or None. Its FIA
    mode's paged FIA calls take the page sizes the plugin's own backend does
    (``ops.check_page_size``); its ATB mode, those of ATB's PagedAttention
    (:func:`atb_page_size_problem`)."""
    from sglang_ascend_fia import ops

    if not fia_mode:
        problem = atb_page_size_problem(runner.page_size, _cache_head_dim(runner))
        if problem is None:
            return None
        return f"{problem} (the model is handed to sglang's own backend in its ATB mode)"
    try:
        ops.check_page_size(runner.page_size, mla=runner.use_mla_backend)
    except ValueError as exc:
        return f"{exc} (the model is handed to sglang's own backend in its FIA mode)"
    return None
