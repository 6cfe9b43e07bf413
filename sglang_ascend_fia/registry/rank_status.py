"""One start-up line per sglang rank: where it sits in the parallel layout, what serves its
attention, and the plugin's patch status in that process (``doctor``'s view, per rank).

Every sglang scheduler rank is its own process and loads the plugin through the
``sglang.srt.plugins`` entry point; with TP, data-parallel attention or expert parallel over one
or two nodes, each rank logs this line under sglang's own ``TPn``/``EPn``/``DPn`` prefix, so a
rank that did not patch, or handed off, is visible in the server log by its rank id.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger("sglang_ascend_fia")


def layout() -> str:
    """``tp 0/2, attn-dp 0/1, ep 0/2`` for this process's rank, as sglang published it
    (``runtime_context.py:114-154``)."""
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    group = parallel.tp_group  # the model's TP group spans every node's ranks
    parts = [f"tp {group.rank_in_group}/{group.world_size}"]
    for name in ("attn_dp", "moe_ep"):
        rank = getattr(parallel, f"{name}_rank")
        size = getattr(parallel, f"{name}_size")
        parts.append(f"{name.replace('_', '-').replace('moe-', '')} {rank}/{size}")
    return ", ".join(parts)


def patch_counts() -> str:
    """``41 applied, 4 skipped`` over this process's manifest entries."""
    from sglang_ascend_fia import plugin

    counts = Counter(s.state for s in plugin.status())
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def log_rank_status(served_by: str) -> None:
    """The one line: ``sglang-ascend-fia rank (tp 1/2, attn-dp 0/1, ep 1/2): attention FIA MLA
    backend; patches 41 applied, 4 skipped``."""
    logger.info(
        "sglang-ascend-fia rank (%s): attention %s; patches %s",
        layout(),
        served_by,
        patch_counts(),
    )
