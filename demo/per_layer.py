"""``make demo``, third part: launches per layer, host syncs per decode step against the number
of layers, and ``--page-size 16``, for the plugin and sglang 0.5.23's in-tree Ascend backend in
both of its modes.

Measured through sglang's real ``ModelRunner``, one fresh runner per path and model
(``side_by_side_measures``, the same runs ``tests/upstream/test_runner_side_by_side.py`` asserts
on; one process per path imports sglang once and forks a runner per model); upstream on the
test-only torch_npu stand-in with the plugin turned off through ``SGLANG_PLUGINS``. The verdict
covers the plugin's claims: one attention and one KV-write launch per layer in every forward, no
device sync and no per-layer sync in a decode step, and page 16 refused at start-up with the
legal sizes. Upstream's figures are printed as measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from side_by_side_measures import (
    ATTENTION,
    BATCH_SIZES,
    HEAD_DIMS,
    KV_WRITE,
    LAYERS,
    PAGE_16,
    RUNNER_CONFIGS,
    Measured,
    SyncKey,
    decode_step_syncs,
    measure,
    per_layer,
    result_for,
)

from sglang_ascend_fia import ops

LABELS = {
    "plugin": "plugin",
    "upstream-fia": "upstream FIA (ASCEND_USE_FIA=1)",
    "upstream": "upstream ATB (ASCEND_USE_FIA unset)",
}
MARK = {True: "✓", False: "✗"}
MODES = {"EXTEND": "prefill", "DECODE": "decode", "MIXED": "mixed"}
WIDTH = max(len(label) for label in LABELS.values())


def _first_line(error: str) -> str:
    return error.splitlines()[0] if error else error


def _numbers(values: list[float]) -> str:
    return " / ".join(f"{v:g}" for v in values)


def render_launches(measured: Measured) -> tuple[str, bool]:
    """Attention and KV-write launches per layer in each forward, per path and head dim."""
    forwards = " / ".join(f"{m} b{b}" for b in BATCH_SIZES for m in ("prefill", "decode"))
    lines = [
        f"launches per layer per forward ({forwards}); head dim 16 is outside upstream's TND "
        "set {128, 192, 256}, 128 inside it:",
        f"  {'path':<{WIDTH}}  {'head dim':>8}  {'attention':<17}  KV writes",
    ]
    ok = True
    for head_dim in HEAD_DIMS:
        for path, label in LABELS.items():
            result = result_for(measured, path, "launches", head_dim=head_dim)
            if not result["ok"]:
                error = _first_line(result["error"])
                lines.append(f"  {label:<{WIDTH}}  {head_dim:>8}  failed: {error}")
                ok = ok and path != "plugin"
                continue
            attention = [n for _, _, n in per_layer(result, ATTENTION[path])]
            kv_writes = [n for _, _, n in per_layer(result, KV_WRITE[path])]
            line = (
                f"  {label:<{WIDTH}}  {head_dim:>8}  {_numbers(attention):<17}  "
                f"{_numbers(kv_writes)}"
            )
            if path == "plugin":
                one_each = len(attention) == 2 * len(BATCH_SIZES) and set(attention) == {1.0}
                one_each = one_each and set(kv_writes) == {1.0}
                line += f"  {MARK[one_each]}"
                ok = ok and one_each
            lines.append(line)
    return "\n".join(lines), ok


def _device_host(counts: Any) -> tuple[int, int]:
    device = sum(n for (_, where, _), n in counts.items() if where == "device")
    return device, sum(counts.values()) - device


def _sites(keys: Iterable[SyncKey]) -> str:
    """``file:line kind`` of each (kind, where, site) sync key, or ``-`` for none."""
    return ", ".join(sorted({f"{site} {kind}" for kind, _, site in keys})) or "-"


def render_syncs(measured: Measured) -> tuple[str, bool]:
    """Host syncs of one decode step at two depths: per step versus per layer, by where the
    tensor lived, and the sites of the device syncs and of the syncs that grow with depth."""
    few_layers, many_layers = LAYERS
    added = many_layers - few_layers
    lines = [
        "host syncs per decode step (.tolist/.item/.cpu/implicit __index__), device / host "
        f"tensor, at {few_layers} and {many_layers} layers (head dim 16):",
        f"  {'path':<{WIDTH}}  {f'{few_layers} layers':>8}  {f'{many_layers} layers':>8}  "
        "per added layer  device syncs at; grows per layer at",
    ]
    ok = True
    for path, label in LABELS.items():
        results = [result_for(measured, path, "syncs", layers=n) for n in LAYERS]
        failed = [r["error"] for r in results if not r["ok"]]
        if failed:
            lines.append(f"  {label:<{WIDTH}}  failed: {_first_line(failed[0])}")
            ok = ok and path != "plugin"
            continue
        few, many = (decode_step_syncs(r) for r in results)
        (few_device, few_host), (many_device, many_host) = _device_host(few), _device_host(many)
        per_device, per_host = (many_device - few_device) / added, (many_host - few_host) / added
        device_sites = _sites(key for key in many if key[1] == "device")
        grown = _sites(key for key, n in many.items() if n > few[key])
        line = (
            f"  {label:<{WIDTH}}  {f'{few_device} / {few_host}':>8}  "
            f"{f'{many_device} / {many_host}':>8}  {f'{per_device:g} / {per_host:g}':<15}  "
            f"{device_sites}; {grown}"
        )
        if path == "plugin":
            flat = many_device == few_device == 0 and many == few
            line += f"  {MARK[flat]}"
            ok = ok and flat
        lines.append(line)
    return "\n".join(lines), ok


def _page_16_outcome(path: str, result: dict[str, Any], tokens_at_128: list[Any]) -> str:
    if not result["ok"] and result["stage"] == "load":
        return f"refused at start-up: {_first_line(result['error'])}"
    if not result["ok"]:
        where = result["failed_forward"] or {}
        forward = (
            f"{MODES.get(where.get('mode', ''), where.get('mode'))} at batch "
            f"{where.get('batch_size')} (forward {where.get('index', -1) + 1})"
        )
        return f"starts; the {forward} fails: {_first_line(result['error'])}"
    attention = _numbers([n for _, _, n in per_layer(result, ATTENTION[path])])
    tokens = [f["tokens"] for f in result["launches"]["forwards"]]
    same = "=" if tokens == tokens_at_128 else "≠"
    return (
        f"starts and serves prefill and decode at batch {' and '.join(map(str, BATCH_SIZES))} "
        f"(attention launches per layer {attention}); next tokens {same} the plugin's at page 128"
    )


def render_page_16(measured: Measured) -> tuple[str, bool]:
    """What each path does at ``--page-size 16``: refused at start-up, fails a forward, or
    serves (with its next tokens against the plugin's at page 128)."""
    legal = ops.legal_page_sizes(mla=False)
    page = PAGE_16.page_size
    lines = [f"--page-size {page} (head dim 16; the plugin accepts {legal} for MHA/GQA):"]
    reference = result_for(measured, "plugin", "launches")
    tokens_at_128 = (
        [f["tokens"] for f in reference["launches"]["forwards"]] if reference["ok"] else []
    )
    ok = True
    for path, label in LABELS.items():
        result = result_for(measured, path, "launches", page_size=page)
        line = f"  {label}: {_page_16_outcome(path, result, tokens_at_128)}"
        if path == "plugin":
            refused = (
                not result["ok"]
                and result["stage"] == "load"
                and f"--page-size={page} is not allowed" in result["error"]
                and str(legal) in result["error"]
            )
            line += f"  {MARK[refused]}"
            ok = ok and refused
        lines.append(line)
    return "\n".join(lines), ok


def render(measured: Measured) -> tuple[str, bool]:
    """The three tables and whether every plugin claim held."""
    parts = [render_launches(measured), render_syncs(measured), render_page_16(measured)]
    return "\n\n".join(text for text, _ in parts), all(ok for _, ok in parts)


def report() -> tuple[str, bool]:
    """Measure (two runners at a time) and render."""
    return render(measure([*RUNNER_CONFIGS, PAGE_16], workers=2))
