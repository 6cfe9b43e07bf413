"""Which tensor of a float checkpoint becomes what: the converter's per-layer plan.

A *linear layer* is a 2-D ``<module>.weight`` inside ``model.layers`` whose module name contains
``_proj``: attention (``q_proj``, ``q_a_proj``, ``q_b_proj``, ``kv_a_proj_with_mqa``,
``kv_b_proj``, ``o_proj``, ...), MLP and shared-expert projections, and the routed experts
``mlp.experts.<e>.{gate,up,down}_proj``. For the architectures below these are exactly the
weights sglang loads into a ``LinearBase`` or ``FusedMoE`` layer; embeddings, norms, ``lm_head``
and the MoE router ``mlp.gate`` (sglang's ``MoEGate`` is a plain parameter) stay float.

Each linear layer gets a scheme: ``W8A8_DYNAMIC`` (the default), ``W8A8`` (static, ``--static``)
or ``FLOAT`` (``--float``), the values ``quant_model_description.json`` holds. Two sglang rules
constrain the choice:

- fused layers take one scheme: on an NPU sglang maps ``qkv_proj`` -> ``q_proj, k_proj,
  v_proj``, ``gate_up_proj`` -> ``gate_proj, up_proj`` and ``fused_qkv_a_proj_with_mqa`` ->
  ``q_a_proj, kv_a_proj_with_mqa`` (``model_loader/loader.py:191-211``); ``get_quant_method``
  reads the fused layer's scheme from its first shard only and ``is_layer_skipped`` raises when
  some shards are FLOAT and some not (``layers/quantization/modelslim/modelslim.py:276-291``,
  ``:438-469``). So a choice that splits a group is refused;
- routed experts are ``W8A8_DYNAMIC`` only: ``get_moe_scheme`` knows no static W8A8 or FLOAT
  expert scheme (``modelslim.py:339-346``, ``:411-432``), and reads expert 0's entry for all.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DYNAMIC = "W8A8_DYNAMIC"
STATIC = "W8A8"
FLOAT = "FLOAT"
FORMATS = ("w8a8_int8", "modelslim")
SUPPORTED_MODEL_TYPES = ("deepseek_v2", "deepseek_v3", "llama", "qwen2", "qwen3")
SUPPORTED_ARCHITECTURES = (
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
_LINEAR = re.compile(r"^model\.layers\.\d+\..*\w*_proj\w*\.weight$")
_EXPERT = re.compile(r"\.mlp\.experts\.\d+\.")
# sglang's fused module -> its checkpoint shards (loader.py:191-211). Routed experts are fused
# by FusedMoE instead and never appear here.
FUSED_GROUPS: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "fused_qkv_a_proj_with_mqa": ("q_a_proj", "kv_a_proj_with_mqa"),
}


class ConversionError(ValueError):
    """A checkpoint or a setting the converter refuses; the message names it and what is
    accepted."""


def is_linear_weight(name: str) -> bool:
    """Whether ``name`` (by name alone) is the weight of a linear layer the converter quantises."""
    return bool(_LINEAR.match(name))


def is_expert(prefix: str) -> bool:
    return bool(_EXPERT.search(prefix))


def fused_group(prefix: str) -> tuple[str, str] | None:
    """``(fused module prefix, its name)`` of the sglang layer ``prefix`` is a shard of."""
    if is_expert(prefix):
        return None
    parent, _, leaf = prefix.rpartition(".")
    for fused, shards in FUSED_GROUPS.items():
        if leaf in shards:
            return f"{parent}.{fused}", fused
    return None


@dataclass
class Plan:
    """The scheme of every linear layer, by module prefix (``model.layers.0.self_attn.q_proj``)."""

    schemes: dict[str, str] = field(default_factory=dict)

    def static_prefixes(self) -> list[str]:
        return sorted(p for p, s in self.schemes.items() if s == STATIC)

    def groups(self) -> dict[str, list[str]]:
        """Fused module prefix -> the linear layers it is made of (those present)."""
        out: dict[str, list[str]] = {}
        for prefix in sorted(self.schemes):
            group = fused_group(prefix)
            if group is not None:
                out.setdefault(group[0], []).append(prefix)
        return out


def _matches(prefixes: Iterable[str], pattern: str) -> list[str]:
    return [p for p in prefixes if fnmatch.fnmatchcase(p, pattern)]


def make_plan(
    linear_prefixes: Iterable[str],
    *,
    fmt: str,
    static: Sequence[str] = (),
    floats: Sequence[str] = (),
) -> Plan:
    """Assign each linear layer its scheme from the ``--static`` / ``--float`` patterns (fnmatch
    on the module prefix), refusing what sglang could not load."""
    if fmt not in FORMATS:
        raise ConversionError(f"format={fmt!r} is not supported; accepted: {', '.join(FORMATS)}")
    prefixes = sorted(linear_prefixes)
    if fmt == "w8a8_int8" and (static or floats):
        setting = "--static" if static else "--float"
        raise ConversionError(
            f"{setting} {(static or floats)[0]!r} needs --format modelslim; w8a8_int8 has one "
            "scheme, dynamic per-token int8 on every linear layer (W8A8Int8Config)"
        )
    plan = Plan(dict.fromkeys(prefixes, DYNAMIC))
    chosen: dict[str, tuple[str, str]] = {}  # prefix -> (setting, pattern)
    for setting, scheme, patterns in (("--static", STATIC, static), ("--float", FLOAT, floats)):
        for pattern in patterns:
            hits = _matches(prefixes, pattern)
            if not hits:
                example = prefixes[0] if prefixes else "model.layers.0.self_attn.q_proj"
                raise ConversionError(
                    f"{setting} {pattern!r} matches no linear layer; accepted: an fnmatch "
                    f"pattern on module prefixes such as {example!r}"
                )
            experts = [p for p in hits if is_expert(p)]
            if experts:
                raise ConversionError(
                    f"{setting} {pattern!r} matches the routed expert {experts[0]!r}; "
                    "sglang's modelslim MoE schemes take W8A8_DYNAMIC int8 experts only "
                    "(modelslim.py:339-346); accepted: a pattern that leaves mlp.experts.* "
                    "out, e.g. 'model.layers.*.mlp.shared_experts.*'"
                )
            for prefix in hits:
                if prefix in chosen and chosen[prefix][0] != setting:
                    other = chosen[prefix]
                    raise ConversionError(
                        f"{setting} {pattern!r} and {other[0]} {other[1]!r} both match "
                        f"{prefix!r}; accepted: one scheme per layer"
                    )
                chosen[prefix] = (setting, pattern)
                plan.schemes[prefix] = scheme
    for fused, members in plan.groups().items():
        schemes = {plan.schemes[m] for m in members}
        if len(schemes) > 1:
            detail = ", ".join(f"{m.rsplit('.', 1)[1]}={plan.schemes[m]}" for m in members)
            raise ConversionError(
                f"the --static/--float patterns split the fused layer {fused!r} ({detail}); "
                "sglang builds it as one layer with one scheme (packed_modules_mapping, "
                "model_loader/loader.py:191-211; modelslim.py:276-291); accepted: patterns "
                "that give all of its shards the same scheme"
            )
    return plan
