"""Builders for the FIA MLA backend on the real split pool, without a model or a server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from attention.helpers import fake_runner

R, ROPE, NOPE, V = 512, 64, 128, 128
PAGE = 128


def make_pool(pages: int, layers: int = 2, dtype: torch.dtype = torch.float32) -> Any:
    from sglang_ascend_fia.mla.pool import FIAMLATokenToKVPool

    return FIAMLATokenToKVPool(
        pages * PAGE,
        page_size=PAGE,
        dtype=dtype,
        kv_lora_rank=R,
        qk_rope_head_dim=ROPE,
        layer_num=layers,
        device="cpu",
        enable_memory_saver=False,
    )


def make_runner(pool: Any, q_heads: int, max_reqs: int = 32, **overrides: Any) -> Any:
    model_fields = {
        "kv_lora_rank": R,
        "qk_rope_head_dim": ROPE,
        "qk_nope_head_dim": NOPE,
        "v_head_dim": V,
        "hf_config": SimpleNamespace(architectures=["DeepseekV2ForCausalLM"]),
    }
    overrides = {"page_size": PAGE, "use_mla_backend": True, **overrides}
    return fake_runner(pool, PAGE, q_heads, max_reqs, model_fields, **overrides)


class KvBProj(torch.nn.Module):
    """``kv_b_proj`` as sglang's linear layers return it: ``(out, bias)``."""

    def __init__(self, heads: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = torch.randn(R, heads * (NOPE + V), generator=generator) * R**-0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x @ self.weight, None


def make_layer(layer_id: int, heads: int, generator: torch.Generator) -> Any:
    return SimpleNamespace(
        layer_id=layer_id,
        tp_q_head_num=heads,
        scaling=(NOPE + ROPE) ** -0.5,
        kv_b_proj=KvBProj(heads, generator),
    )
