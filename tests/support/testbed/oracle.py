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
