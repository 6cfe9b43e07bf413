"""Valid FIA v1 calls that the validation tests (``test_fia_*.py``) change one argument at a time,
and the helpers that run them.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia import ops

TEMPLATE = ~torch.tril(torch.ones(2048, 2048, dtype=torch.bool))


def kv(*shape: int, empty: bool = False) -> dict[str, torch.Tensor]:
    """A key and a value cache of one shape (most cases change both the same way)."""
    make = torch.empty if empty else torch.randn
    return {"key": make(*shape), "value": make(*shape)}


def paged_decode(**over: object) -> dict[str, object]:
    """A valid BSND paged GQA decode call; tests override one thing at a time."""
    kw: dict[str, object] = {
        "query": torch.randn(2, 1, 8, 16),
        "key": torch.randn(6, 128, 2 * 16),
        "value": torch.randn(6, 128, 2 * 16),
        "num_heads": 8,
        "num_key_value_heads": 2,
        "input_layout": "BSND",
        "block_table": torch.tensor([[0, 1, -1], [2, 3, 4]], dtype=torch.int32),
        "block_size": 128,
        "actual_seq_lengths_kv": [200, 300],
        "scale": 0.25,
    }
    kw.update(over)
    return kw


def tnd_prefill(**over: object) -> dict[str, object]:
    """A valid TND paged prefill (sglang 0.5.23's GQA extend)."""
    kw: dict[str, object] = {
        "query": torch.randn(7, 4, 128),
        "key": torch.randn(4, 128, 2 * 128),
        "value": torch.randn(4, 128, 2 * 128),
        "num_heads": 4,
        "num_key_value_heads": 2,
        "input_layout": "TND",
        "block_table": torch.tensor([[0, 1], [2, 3]], dtype=torch.int32),
        "block_size": 128,
        "actual_seq_lengths": [3, 7],
        "actual_seq_lengths_kv": [130, 4],
        "sparse_mode": 3,
        "atten_mask": TEMPLATE,
    }
    kw.update(over)
    return kw


def mla_decode(**over: object) -> dict[str, object]:
    """A valid MLA paged decode: latent D 512, rope 64, one key head (doc), 4 query heads."""
    kw: dict[str, object] = {
        "query": torch.randn(2, 1, 4, 512),
        "key": torch.randn(4, 128, 512),
        "value": torch.randn(4, 128, 512),
        "query_rope": torch.randn(2, 1, 4, 64),
        "key_rope": torch.randn(4, 128, 64),
        "num_heads": 4,
        "num_key_value_heads": 1,
        "input_layout": "BSND",
        "block_table": torch.tensor([[0, 1], [2, 3]], dtype=torch.int32),
        "block_size": 128,
        "actual_seq_lengths_kv": [10, 140],
    }
    kw.update(over)
    return kw


def mla_band(**over: object) -> dict[str, object]:
    """A valid MLA sparse_mode=4 decode: BSND, 128 query heads, dense key (doc)."""
    kw: dict[str, object] = {
        "query": torch.randn(1, 1, 128, 512),
        "key": torch.randn(1, 6, 1, 512),
        "value": torch.randn(1, 6, 1, 512),
        "query_rope": torch.randn(1, 1, 128, 64),
        "key_rope": torch.randn(1, 6, 1, 64),
        "num_heads": 128,
        "num_key_value_heads": 1,
        "input_layout": "BSND",
        "sparse_mode": 4,
        "atten_mask": TEMPLATE,
    }
    kw.update(over)
    return kw


def tnd_dense(**over: object) -> dict[str, object]:
    """A valid TND prefill without page attention: N 8, Q_D = K_D = 192, V_D 128 (doc)."""
    kw: dict[str, object] = {
        "query": torch.randn(7, 8, 192),
        "key": torch.randn(7, 8, 192),
        "value": torch.randn(7, 8, 128),
        "num_heads": 8,
        "input_layout": "TND",
        "actual_seq_lengths": [3, 7],
        "actual_seq_lengths_kv": [3, 7],
        "sparse_mode": 3,
        "atten_mask": TEMPLATE,
    }
    kw.update(over)
    return kw


def dense_prefill(**over: object) -> dict[str, object]:
    """A valid BSND dense prefill with an explicit (B,1,Q_S,KV_S) mask."""
    kw: dict[str, object] = {
        "query": torch.randn(2, 3, 4, 16),
        "key": torch.randn(2, 5, 4, 16),
        "value": torch.randn(2, 5, 4, 16),
        "num_heads": 4,
        "input_layout": "BSND",
        "atten_mask": torch.zeros(2, 1, 3, 5, dtype=torch.bool),
    }
    kw.update(over)
    return kw


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A shape-only tensor: the validator reads no data, so size limits cost no memory."""
    return torch.empty(*shape, dtype=dtype, device="meta")


def run(kw: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:
    args = dict(kw)
    return ops.fused_infer_attention_score(
        args.pop("query"), args.pop("key"), args.pop("value"), **args
    )


MLA_Q2 = {"query": torch.randn(2, 2, 4, 512), "query_rope": torch.randn(2, 2, 4, 64)}


def v2(**kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    base = paged_decode()
    renames = {
        "num_heads": "num_query_heads",
        "actual_seq_lengths_kv": "actual_seq_kvlen",
        "scale": "softmax_scale",
    }
    args = {renames.get(k, k): v for k, v in base.items()}
    args.update(kw)
    return ops.fused_infer_attention_score_v2(
        args.pop("query"), args.pop("key"), args.pop("value"), **args
    )
