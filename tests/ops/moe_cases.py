"""Helpers shared by the MoE op tests (``test_moe_*.py``, ``test_grouped_matmul.py``,
``test_swiglu.py``): seeded generators, top-k ids and the base arguments of the refusal tables.
"""

from __future__ import annotations

import torch
from hypothesis import settings

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
FP32 = {"rtol": 1e-5, "atol": 1e-5}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_topk_ids(tokens: int, experts: int, k: int, g: torch.Generator) -> torch.Tensor:
    # Distinct experts per token, as every router produces.
    return torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]).int()


_IDS = torch.tensor([[0, 1], [1, 2], [2, 3]], dtype=torch.int32)
_ROUTE = {"expert_num": 4, "expert_tokens_num_type": 1, "expert_tokens_num_flag": True}
