"""HF transformers fp32 greedy decoding: the independent oracle for sglang's model code.

Answers are memoised per prompt on disk (``.cache/hf-oracle``), keyed by the model directory
(content-keyed by the builder, plus its build time) and the torch/transformers versions: many
engine tests ask HF the same prompts of the same tiny model, and a clean clone (CI) computes each
answer once per run instead of once per test module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from testbed.models import CACHE_DIR

MEMO_DIR = CACHE_DIR.parent / "hf-oracle"


def hf_greedy(model_dir: Path, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy tokens per prompt, one prompt at a time (no padding), EOS ignored like sglang's
    ``ignore_eos``; memoised per prompt (see the module doc)."""
    memo_file = _memo_file(Path(model_dir))
    memo = _read(memo_file)
    keys = [_prompt_key(p, max_new_tokens) for p in prompts]
    missing = [p for p, k in zip(prompts, keys, strict=True) if k not in memo]
    if missing:
        answers = _hf_greedy(Path(model_dir), missing, max_new_tokens)
        new = {_prompt_key(p, max_new_tokens): a for p, a in zip(missing, answers, strict=True)}
        memo = {**_read(memo_file), **new}  # merge with what a parallel worker wrote meanwhile
        _write(memo_file, memo)
        memo.update(new)
    return [list(memo[k]) for k in keys]


def _prompt_key(prompt: list[int], max_new_tokens: int) -> str:
    return f"{max_new_tokens}:{','.join(map(str, prompt))}"


def _memo_file(model_dir: Path) -> Path:
    import transformers

    built = (model_dir / "config.json").stat().st_mtime_ns
    versions = f"torch{torch.__version__}-tf{transformers.__version__}"
    return MEMO_DIR / f"{model_dir.name}-{built}-{versions}.json"


def _read(path: Path) -> dict[str, list[int]]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def _write(path: Path, memo: dict[str, list[int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo))
    tmp.replace(path)  # atomic: a parallel reader sees the old or the new memo, never half


@torch.no_grad()
def _hf_greedy(model_dir: Path, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """A plain argmax loop over HF's forward, not ``generate``, so no generation config can
    change the result."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    outputs: list[list[int]] = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        tokens: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(out.logits[0, -1].argmax())
            tokens.append(nxt)
            if len(tokens) == max_new_tokens:
                break
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
        outputs.append(tokens)
    return outputs


@torch.no_grad()
def hf_logprobs_along(
    model_dir: Path, prompts: list[list[int]], continuations: list[list[int]]
) -> list[torch.Tensor]:
    """HF fp32 log-probabilities ``[len(continuation), vocab]`` at each continuation position,
    teacher-forced on the given tokens (one forward per prompt), so another engine's choices
    can be scored even after it departs from HF's own greedy path."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    out: list[torch.Tensor] = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        ids = torch.tensor([prompt + continuation])
        logits = model(input_ids=ids).logits[0].double()
        start = len(prompt) - 1
        out.append(torch.log_softmax(logits[start : start + len(continuation)], dim=-1))
    return out
