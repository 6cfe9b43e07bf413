"""HF transformers fp32 greedy decoding: the independent oracle for sglang's model code."""

from __future__ import annotations

from pathlib import Path

import torch


@torch.no_grad()
def hf_greedy(model_dir: Path, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy tokens per prompt, one prompt at a time (no padding), EOS ignored like sglang's
    ``ignore_eos``. A plain argmax loop over HF's forward, not ``generate``, so no generation
    config can change the result."""
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
