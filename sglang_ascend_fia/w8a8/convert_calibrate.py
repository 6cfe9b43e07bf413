"""Input ranges for static W8A8 layers: the float model run on seeded random tokens.

Static layers quantise their input with one scale fixed in the checkpoint, so it has to be
measured. The float HF model (transformers, offline) runs ``seqs`` sequences of ``tokens``
token ids drawn uniformly from the vocabulary by ``torch.Generator().manual_seed(seed)``, and a
forward pre-hook on each static layer's ``nn.Linear`` records ``max |x|`` over every input it
sees. This loads the whole model in its checkpoint dtype: the one step of a conversion whose
memory is the model's, not one shard's, taken only when a ``--static`` pattern is given.
Random tokens give ranges, not a tuned calibration set; a layer whose real inputs exceed them
saturates at +-127 on an NPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from sglang_ascend_fia.w8a8.convert_plan import ConversionError, fused_group


def random_tokens(vocab_size: int, tokens: int, seqs: int, seed: int = 0) -> torch.Tensor:
    """The calibration batch: ``[seqs, tokens]`` ids in ``[0, vocab_size)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (seqs, tokens), generator=gen)


def input_absmax(
    src: Path, prefixes: Iterable[str], *, vocab_size: int, tokens: int, seqs: int
) -> dict[str, float]:
    """``max |input|`` of each linear layer in ``prefixes`` over the calibration batch; the
    shards of one fused layer get their common maximum (sglang's fused layer holds one
    ``input_scale``, each shard's copied over it in turn: ``layers/linear.py:885-895``,
    ``:1538-1549``)."""
    from transformers import AutoModelForCausalLM

    wanted = set(prefixes)
    model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, dtype="auto")
    model.eval()
    modules = {n: m for n, m in model.named_modules() if n in wanted}
    missing = sorted(wanted - modules.keys())
    if missing:
        raise ConversionError(
            f"--static layer {missing[0]!r} is no module of the HF model transformers builds "
            f"from {src}; accepted: layers that are nn.Linear modules there"
        )
    seen: dict[str, float] = dict.fromkeys(modules, 0.0)
    handles = []
    for name, module in modules.items():
        if not isinstance(module, torch.nn.Linear):
            raise ConversionError(
                f"--static layer {name!r} is a {type(module).__name__} in the HF model, not "
                "an nn.Linear; accepted: linear layers"
            )

        def hook(_: torch.nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            seen[name] = max(seen[name], float(args[0].detach().abs().max()))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for row in random_tokens(vocab_size, tokens, seqs):
                model(input_ids=row.unsqueeze(0))
    finally:
        for handle in handles:
            handle.remove()
        del model
    groups: dict[str, float] = {}
    for name, value in seen.items():
        key = (fused_group(name) or (name, ""))[0]
        groups[key] = max(groups.get(key, 0.0), value)
    return {name: groups[(fused_group(name) or (name, ""))[0]] for name in seen}
