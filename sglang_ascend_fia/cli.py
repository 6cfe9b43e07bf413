"""``sglang-ascend-fia doctor | verify-ops | quantize-w8a8``."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

from sglang_ascend_fia import config, plugin
from sglang_ascend_fia.manifest import ManifestError


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _device() -> str:
    """The accelerator this process would run on, found without side effects on CPU hosts."""
    import torch

    try:
        import torch_npu  # noqa: F401 - registers torch.npu
    except ImportError:
        pass
    else:
        npu = getattr(torch, "npu", None)
        if npu is not None and npu.is_available():
            return f"npu ({npu.device_count()} x {npu.get_device_name(0)})"
        return "cpu (torch_npu is installed but no NPU is visible)"
    if torch.cuda.is_available():
        return (
            f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}; reference ops)"
        )
    return "cpu (reference ops)"


def _exercise_targets() -> None:
    """Import each patched module so its hooks fire, as sglang would, and record why not."""
    pending = dict.fromkeys(s.entry.module for s in plugin.status() if s.state == "pending")
    for module in pending:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            # e.g. a module that needs torch_npu on a CPU host: sglang would not load it either.
            plugin.mark_unimportable(module, f"cannot import here: {exc}")
        except Exception as exc:
            # sglang would crash on this import too (e.g. a broken torchvision); a hook that
            # raised has already recorded its own failure, which this leaves as it is.
            plugin.mark_import_failed(module, exc)


def _patch_rows(reason_if_inactive: str) -> list[dict[str, Any]]:
    return [
        {
            **_entry_fields(s.entry),
            "status": s.state,
            "reason": reason_if_inactive if s.state == "inactive" else s.reason,
        }
        for s in plugin.status()
    ]


def _attention_rows() -> dict[str, Any]:
    """When the FIA backend hands a model to sglang's own backend, and what this process chose."""
    from sglang_ascend_fia.attention.handoff import RULES
    from sglang_ascend_fia.fia_backend import handoff
    from sglang_ascend_fia.mla.handoff import RULES as MLA_RULES

    # The texts of the rules the registry checks: the same objects, never a copy.
    return {
        "hands_off": [rule.text for rule in RULES],
        "mla_hands_off": [rule.text for rule in MLA_RULES],
        "decisions": [
            {"backend": d.backend, "reason": d.reason, "sglang_mode": d.sglang_mode}
            for d in handoff.decisions()
        ],
    }


# doctor --json's schema: bump on any change of a key's name, meaning or type (an added key too),
# so a bug report's reader knows which fields to expect (tests/plugin/test_doctor.py pins it).
SCHEMA_VERSION = 1

# Where sglang 0.5.23's own Ascend code reads ASCEND_USE_FIA itself: a model the plugin hands
# to sglang's own backend runs the mode this value selects there.
IN_TREE_READS = (
    "hardware_backend/npu/attention/ascend_backend.py:383",
    "hardware_backend/npu/memory_pool_npu.py:109",
    "hardware_backend/npu/memory_pool_npu.py:512",
    "hardware_backend/npu/graph_runner/npu_graph_runner.py:128",
)


def collect() -> dict[str, Any]:
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "versions": {
            "sglang-ascend-fia": _version("sglang-ascend-fia"),
            "sglang": _version("sglang"),
            "torch": _version("torch"),
            "torch_npu": _version("torch-npu"),
        },
        "device": _device(),
    }
    report["attention"] = _attention_rows()
    try:
        settings = config.resolve()
    except config.ToggleError as exc:
        report["toggle"] = {
            "env": config.TOGGLE_ENV,
            "raw": exc.raw,
            "value": None,
            "error": exc.message,
        }
        reason = "invalid toggle"
    else:
        report["toggle"] = {
            "env": config.TOGGLE_ENV,
            "raw": settings.raw_toggle,
            "value": settings.use_fia,
        }
        reason = f"{config.TOGGLE_ENV} is off"
    try:
        if report["toggle"]["value"]:
            plugin.activate()
            _exercise_targets()
        report["patches"] = _patch_rows(reason)
        report["groups"] = _group_rows(report["patches"])
    except (plugin.ActivationError, ManifestError) as exc:
        # What sglang would stop on; report it instead of a traceback.
        report["error"] = str(exc)
        try:
            report["patches"] = _patch_rows(reason)
        except ManifestError:
            report["patches"] = []  # the manifest itself is what is broken
        report["groups"] = _group_rows(report["patches"])
    report["in_tree_toggle"] = {
        "env": config.TOGGLE_ENV,
        "value": report["toggle"]["value"],
        "read_by": [f"sglang/srt/{site}" for site in IN_TREE_READS],
    }
    report["kernels"] = _kernel_rows()
    return report


def _group_rows(patches: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each patch group: its members, and ``applied`` (all are), ``skipped`` (none applies, with
    why) or ``pending`` (not all are imported in this process yet)."""
    rows: dict[str, dict[str, Any]] = {}
    for p in patches:
        if p["group"] is not None:
            rows.setdefault(p["group"], {"members": [], "status": "applied", "reason": ""})
            rows[p["group"]]["members"].append(p["name"])
    for group, row in rows.items():
        states = {p["name"]: p for p in patches if p["group"] == group}
        skipped = plugin.group_skip_reason(group)
        if skipped is not None:
            row["status"], row["reason"] = "skipped", skipped
        elif any(p["status"] != "applied" for p in states.values()):
            waiting = [f"{n}: {p['reason']}" for n, p in states.items() if p["status"] != "applied"]
            row["status"], row["reason"] = "pending", "; ".join(waiting)
    return rows


def _kernel_rows() -> list[dict[str, Any]]:
    """The start-up kernel check of every feature (``ops.kernels``), as this host would run it."""
    from sglang_ascend_fia.ops import kernels

    rows = []
    for feature in kernels.FEATURE_KERNELS:
        result = kernels.check(feature)
        rows.append({**result.as_dict(), "reason": result.reason()})
    return rows


def _entry_fields(entry: Any) -> dict[str, str | None]:
    return {
        "name": entry.name,
        "group": entry.group,
        "target": entry.qualified_target,
        "sglang": str(entry.sglang),
        "why": entry.why,
        "remove_when": entry.remove_when,
    }


def _print_report(report: dict[str, Any]) -> None:
    print("sglang-ascend-fia doctor")
    for name, version in report["versions"].items():
        print(f"  {name:<18} {version}")
    print(f"  {'device':<18} {report['device']}")
    if "error" in report:
        print(f"  {'ERROR':<18} {report['error']}")
    toggle = report["toggle"]
    if "error" in toggle:
        print(f"  {'ASCEND_USE_FIA':<18} INVALID: {toggle['error']}")
    else:
        shown = "unset" if toggle["raw"] is None else repr(toggle["raw"])
        print(f"  {'ASCEND_USE_FIA':<18} {shown} -> {'on' if toggle['value'] else 'off'}")
    attention = report["attention"]
    print("\nattention: FIA serves causal MHA/GQA; sglang's own AscendAttnBackend serves")
    for rule in attention["hands_off"]:
        print(f"  - {rule}")
    print("attention: FIA MLA serves DeepSeek-V2/V3 MLA; sglang's own AscendAttnBackend serves")
    for rule in attention["mla_hands_off"]:
        print(f"  - {rule}")
    for d in attention["decisions"]:
        chosen = {"fia": "FIA", "fia-mla": "FIA MLA"}.get(
            d["backend"], f"sglang's own: {d['reason']}"
        )
        print(f"  chosen in this process: {chosen}")
    print("  (a server logs its choice once per model runner at start-up)")
    print(f"\npatches ({len(report['patches'])}):")
    width = max((len(p["name"]) for p in report["patches"]), default=4)
    for p in report["patches"]:
        line = f"  {p['name']:<{width}}  {p['status']:<8}  {p['target']}  [sglang {p['sglang']}]"
        print(line)
        if p["reason"]:
            print(f"  {'':<{width}}  reason: {p['reason']}")
    for group, row in report["groups"].items():
        print(f"  group {group}: {row['status']} ({', '.join(row['members'])})")
    print("\nkernels (checked where torch_npu is importable):")
    for k in report["kernels"]:
        state = "not checked" if not k["checked"] else ("ok" if not k["problems"] else "PROBLEM")
        print(f"  {k['feature']:<10} {state}" + (f": {k['reason']}" if k["reason"] else ""))
    tree = report["in_tree_toggle"]
    print(f"\nsglang's own Ascend code reads {tree['env']} too ({', '.join(tree['read_by'])})")


def doctor(as_json: bool) -> int:
    report = collect()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    bad = (
        "error" in report
        or "error" in report["toggle"]
        or any(p["status"] == "failed" for p in report["patches"])
    )
    return 1 if bad else 0


def quantize_w8a8(args: argparse.Namespace) -> int:
    # Imported on demand: doctor and verify-ops need neither torch nor safetensors here.
    from sglang_ascend_fia.w8a8.convert import ConversionError, quantize_checkpoint

    try:
        report = quantize_checkpoint(
            args.src,
            args.dst,
            dequantized=args.dequantized,
            fmt=args.format,
            static=args.static,
            floats=args.float,
            calibration_tokens=args.calibration_tokens,
            calibration_seqs=args.calibration_seqs,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except ConversionError as exc:
        print(f"sglang-ascend-fia quantize-w8a8: {exc}", file=sys.stderr)
        return 2
    static = f", {len(report.static)} layers W8A8 static" if report.static else ""
    print(
        f"{args.dst} ({report.format}, {report.shards} shard{'s' * (report.shards != 1)}): "
        f"{len(report.quantized)} weights "
        f"int8 (per-channel, max rounding error {report.max_error_in_steps:.3f} scale "
        f"steps{static}), {len(report.kept)} tensors kept float"
    )
    if args.dequantized is not None:
        print(f"{args.dequantized}: the dequantised float reference")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sglang-ascend-fia")
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser("doctor", help="versions, device, toggle and every patch's live status")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("verify-ops", help="compare every NPU op against its reference (needs an NPU)")
    quant = sub.add_parser(
        "quantize-w8a8",
        help="write the W8A8 checkpoint (int8 weights + per-channel scales) of a float one",
    )
    quant.add_argument("src", type=Path, help="float HF checkpoint directory (safetensors)")
    quant.add_argument("dst", type=Path, help="new directory for the W8A8 checkpoint")
    quant.add_argument(
        "--dequantized",
        type=Path,
        help="also write the float model the int8 one stands for (q * scale), for parity checks",
    )
    quant.add_argument(
        "--format",
        choices=("w8a8_int8", "modelslim"),
        default="w8a8_int8",
        help="w8a8_int8 (quantization_config in config.json) or modelslim "
        "(quant_model_description.json, what msModelSlim writes)",
    )
    quant.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="PATTERN",
        help="modelslim: make the linear layers whose module prefix matches (fnmatch) W8A8 "
        "static, calibrated on random tokens (loads the float model); repeatable",
    )
    quant.add_argument(
        "--float",
        action="append",
        default=[],
        metavar="PATTERN",
        help="modelslim: keep the matching linear layers FLOAT; repeatable",
    )
    quant.add_argument(
        "--calibration-tokens",
        type=int,
        default=64,
        help="tokens per calibration sequence for --static layers (default 64)",
    )
    quant.add_argument(
        "--calibration-seqs",
        type=int,
        default=4,
        help="seeded random calibration sequences for --static layers (default 4)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command in ("doctor", "quantize-w8a8") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "doctor":
        return doctor(args.json)
    if args.command == "quantize-w8a8":
        return quantize_w8a8(args)
    # Imported on demand: doctor needs none of the case modules.
    from sglang_ascend_fia import verify

    return verify.main(rest)


if __name__ == "__main__":
    sys.exit(main())
