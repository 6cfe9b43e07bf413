"""Every documented FIA constraint the validator enforces, each with its message.

The validator runs through the dispatch decorator before either implementation, so these also
prove that a rejected call counts no launch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from types import SimpleNamespace

import pytest
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


@pytest.mark.parametrize(
    "builder", [paged_decode, tnd_prefill, mla_decode, mla_band, tnd_dense, dense_prefill]
)
def test_the_valid_baselines_run(builder: Callable[..., dict[str, object]]) -> None:
    out, _ = run(builder())
    assert torch.isfinite(out).all()


CASES: list[tuple[str, dict[str, object], str]] = [
    # block sizes (doc: page attention, both branches; MLA section)
    (
        "decode block not 16-aligned",
        paged_decode(
            **kv(6, 24, 32),
            block_size=24,
            block_table=torch.zeros(2, 20, dtype=torch.int32),
        ),
        r"block_size=24 .*multiple of 16 up to 512",
    ),
    (
        "decode block above 512",
        paged_decode(
            **kv(2, 528, 32),
            block_size=528,
            block_table=torch.zeros(2, 1, dtype=torch.int32),
        ),
        r"block_size=528 .*multiple of 16 up to 512",
    ),
    (
        "prefill block 64",
        tnd_prefill(
            **kv(8, 64, 32),
            block_size=64,
            block_table=torch.zeros(2, 4, dtype=torch.int32),
        ),
        r"block_size=64 .*prompt \(Q_S>1\).*multiple of 128 in \[128, 512\]",
    ),
    (
        "prefill block 640",
        tnd_prefill(
            **kv(1, 640, 32),
            block_size=640,
            block_table=torch.zeros(2, 1, dtype=torch.int32),
        ),
        r"block_size=640 .*multiple of 128 in \[128, 512\]",
    ),
    (
        "rope block 32",
        mla_decode(
            **kv(16, 32, 512),
            key_rope=torch.randn(16, 32, 64),
            block_size=32,
            block_table=torch.zeros(2, 8, dtype=torch.int32),
        ),
        r"block_size=32 .*query_rope/key_rope.*\(16, 128\)",
    ),
    ("table without block_size", paged_decode(block_size=0), r"block_size=0 .*needs it > 0"),
    # heads
    (
        "heads not divisible",
        paged_decode(num_key_value_heads=3),
        r"num_key_value_heads=3 .*num_heads=8 must be divisible",
    ),
    (
        "ratio above 64",
        paged_decode(query=torch.randn(2, 1, 130, 16), num_heads=130, num_key_value_heads=2),
        r"num_key_value_heads=2 .*65 exceeds 64",
    ),
    (
        "num_heads vs query N",
        paged_decode(num_heads=4, num_key_value_heads=2),
        r"num_heads=4 .*must equal the query's N axis \(8\)",
    ),
    (
        "BSH H not divisible",
        paged_decode(query=torch.randn(2, 1, 100), input_layout="BSH"),
        r"num_heads=8 .*query H=100 must be divisible",
    ),
    # layouts and ranks
    (
        "unknown layout",
        paged_decode(input_layout="SBH"),
        r"input_layout='SBH' .*must be one of \('BSH', 'BSND', 'BNSD', 'BNSD_BSND', 'TND'\)",
    ),
    (
        "rank mismatch",
        paged_decode(input_layout="BSH"),
        r"query=\(2, 1, 8, 16\) .*input_layout=BSH needs a 3-D query",
    ),
    (
        "BNSD_BSND decode",
        paged_decode(query=torch.randn(2, 8, 1, 16), input_layout="BNSD_BSND"),
        r"input_layout='BNSD_BSND' .*only supported for Q_S > 1",
    ),
    (
        "4-D cache with BSND",
        paged_decode(key=torch.randn(6, 2, 128, 16), value=torch.randn(6, 2, 128, 16)),
        r"key=\(6, 2, 128, 16\) .*BSND query only takes the \(blocks, block_size, H\) cache",
    ),
    (
        "dense key rank",
        {
            **paged_decode(block_table=None, block_size=0, actual_seq_lengths_kv=None),
            "key": torch.randn(2, 5, 32),
            "value": torch.randn(2, 5, 32),
        },
        r"key=\(2, 5, 32\) .*dense BSND key must have the query's rank",
    ),
    # lengths
    (
        "TND without q lengths",
        tnd_prefill(actual_seq_lengths=None),
        r"actual_seq_lengths=None .*input_layout=TND requires cumulative query lengths",
    ),
    (
        "TND lengths decreasing",
        tnd_prefill(actual_seq_lengths=[5, 3]),
        r"actual_seq_lengths=\[5, 3\] .*cumulative and must be non-decreasing",
    ),
    (
        "TND lengths past T",
        tnd_prefill(actual_seq_lengths=[3, 9]),
        r"actual_seq_lengths=\[3, 9\] .*<= the token count 7",
    ),
    (
        "paged without kv lengths",
        paged_decode(actual_seq_lengths_kv=None),
        r"actual_seq_lengths_kv=None .*page attention requires per-request KV lengths",
    ),
    (
        "kv longer than the table",
        paged_decode(actual_seq_lengths_kv=[200, 400]),
        r"actual_seq_lengths_kv=\[200, 400\] .*each length must be <= 384",
    ),
    (
        "kv lengths count",
        paged_decode(actual_seq_lengths_kv=[]),
        r"actual_seq_lengths_kv=\[\] .*needs 1 or at least B=2 entries",
    ),
    # paged caches and tables
    (
        "3-D cache dim 1",
        paged_decode(key=torch.randn(6, 64, 32), value=torch.randn(6, 64, 32)),
        r"key=\(6, 64, 32\) .*dim 1 of a \(blocks, block_size, H\) cache must be 128",
    ),
    (
        "4-D cache dims",
        paged_decode(
            query=torch.randn(2, 8, 1, 16),
            input_layout="BNSD",
            **kv(6, 2, 64, 16),
        ),
        r"key=\(6, 2, 64, 16\) .*\(blocks, KV_N=2, block_size=128, D\)",
    ),
    (
        "3-D cache H above 65535",
        paged_decode(
            query=torch.randn(1, 1, 2, 32768),
            **kv(1, 16, 2 * 32768, empty=True),
            num_heads=2,
            num_key_value_heads=1,
            block_size=16,
            block_table=torch.zeros(1, 1, dtype=torch.int32),
            actual_seq_lengths_kv=[1],
        ),
        r"key=\(1, 16, 65536\) .*KV_N\*D <= 65535",
    ),
    (
        "table dtype",
        paged_decode(block_table=torch.tensor([[0, 1, -1], [2, 3, 4]])),
        r"block_table=\(torch.int64, \(2, 3\)\) .*2-D int32",
    ),
    (
        "table rows",
        paged_decode(block_table=torch.zeros(3, 3, dtype=torch.int32)),
        r"block_table=\(3, 3\) .*dim 0 must equal the batch B=2",
    ),
    (
        "key/value block counts",
        paged_decode(value=torch.randn(5, 128, 32)),
        r"value=\(5, 128, 32\) .*key's block count/layout",
    ),
    (
        "query/key D",
        paged_decode(key=torch.randn(6, 128, 2 * 8)),
        r"key=\(6, 128, 16\) .*its D \(8\) must equal the query's D \(16\)",
    ),
    # sparse modes and masks
    (
        "sparse mode 5",
        tnd_prefill(sparse_mode=5),
        r"sparse_mode=5 .*must be one of \(0, 1, 2, 3, 4, 9\) \(9 with query_rope/key_rope only\)",
    ),
    (
        "sparse 3 without template",
        tnd_prefill(atten_mask=None),
        r"atten_mask=None .*sparse_mode=3 needs the 2048x2048 lower-triangular template",
    ),
    (
        "sparse 3 with a small mask",
        tnd_prefill(atten_mask=torch.ones(7, 130, dtype=torch.bool)),
        r"atten_mask=\(7, 130\) .*2048x2048",
    ),
    (
        "sparse 1 without mask",
        tnd_prefill(sparse_mode=1, atten_mask=None),
        r"atten_mask=None .*sparse_mode=1 \(allMask\) needs a full mask",
    ),
    (
        "mask dtype",
        tnd_prefill(atten_mask=TEMPLATE.float()),
        r"atten_mask=torch.float32 .*dtype must be one of",
    ),
    (
        "explicit mask too small",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(1, 3, 130, dtype=torch.bool)),
        r"atten_mask=\(1, 3, 130\) .*must cover Q_S=4 query rows and KV_S=130",
    ),
    (
        "explicit mask shape",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(3, 4, 130, dtype=torch.bool)),
        r"atten_mask=\(3, 4, 130\) .*needs \(1,Q_S,KV_S\)",
    ),
    (
        "inner_precise range",
        paged_decode(inner_precise=4),
        r"inner_precise=4 .*must be 0, 1, 2 or 3",
    ),
    (
        "inner_precise at decode",
        paged_decode(inner_precise=2),
        r"inner_precise=2 .*Q_S=1 only supports 0 and 1",
    ),
    # MLA
    (
        "rope without key_rope",
        mla_decode(key_rope=None),
        r"query_rope/key_rope='only one given' .*both or neither",
    ),
    (
        "rope dims",
        mla_decode(key_rope=torch.randn(4, 128, 16)),
        r"key_rope=\(4, 128, 16\) .*rope D must equal query_rope's \(64\)",
    ),
    (
        "rope sparse 2",
        mla_decode(sparse_mode=2, atten_mask=TEMPLATE),
        r"sparse_mode=2 .*with query_rope/key_rope and Q_S=1 only \(0, 4, 9\)",
    ),
    (
        "rope paged S > 16",
        mla_decode(
            query=torch.randn(2, 17, 4, 512),
            query_rope=torch.randn(2, 17, 4, 64),
            sparse_mode=3,
            atten_mask=TEMPLATE,
            actual_seq_lengths_kv=[20, 140],
        ),
        r"query='S=17' .*MLA page attention supports query S 1-16",
    ),
    # tensors
    (
        "non-contiguous query",
        paged_decode(query=torch.randn(2, 1, 16, 8).transpose(2, 3)),
        r"query=\(2, 1, 8, 16\) .*non-contiguous",
    ),
    (
        "key dtype",
        paged_decode(key=torch.randn(6, 128, 32).bfloat16()),
        r"key=torch.bfloat16 .*dtype must be one of \(torch.float32, torch.int8, torch.int32\)",
    ),
    # unsupported arguments are rejected, never ignored
]

# Argument forms and lengths.
CASES += [
    ("key not a tensor", paged_decode(key=[1.0]), r"key='list' .*must be a tensor"),
    ("num_heads zero", paged_decode(num_heads=0), r"num_heads=0 .*must be positive"),
    (
        "num_key_value_heads negative",
        paged_decode(num_key_value_heads=-1),
        r"num_key_value_heads=-1 .*must be >= 0 \(0 means num_heads\)",
    ),
    (
        "TND without requests",
        tnd_prefill(actual_seq_lengths=[]),
        r"actual_seq_lengths=\[\] .*TND needs one cumulative length per request",
    ),
    (
        "lengths tensor 2-D",
        paged_decode(actual_seq_lengths_kv=torch.tensor([[200, 300]])),
        r"actual_seq_lengths_kv=\(torch.int64, \(1, 2\)\) .*a list of ints or a 1-D int tensor",
    ),
    (
        "lengths float tensor",
        paged_decode(actual_seq_lengths_kv=torch.tensor([200.0, 300.0])),
        r"actual_seq_lengths_kv=\(torch.float32, \(2,\)\) .*a list of ints or a 1-D int tensor",
    ),
    (
        "lengths not a list",
        paged_decode(actual_seq_lengths_kv=300),
        r"actual_seq_lengths_kv=300 .*must be a list of ints",
    ),
    (
        "lengths with a float",
        paged_decode(actual_seq_lengths_kv=[200, 2.5]),
        r"actual_seq_lengths_kv=\[200, 2.5\] .*must be a list of ints",
    ),
    (
        "negative length in a list",
        paged_decode(actual_seq_lengths_kv=[-1, 5]),
        r"actual_seq_lengths_kv=\[-1, 5\] .*lengths must be non-negative",
    ),
    (
        "negative length in a tensor",
        paged_decode(actual_seq_lengths_kv=torch.tensor([-1, 5])),
        r"actual_seq_lengths_kv=\[-1, 5\] .*lengths must be non-negative",
    ),
]

# Dense key/value geometry.
CASES += [
    (
        "dense BSH key H",
        dense_prefill(
            query=torch.randn(2, 3, 64),
            **kv(2, 5, 66),
            input_layout="BSH",
            atten_mask=None,
        ),
        r"key=\(2, 5, 66\) .*H must be divisible by num_key_value_heads=4",
    ),
    (
        "dense key N axis",
        dense_prefill(key=torch.randn(2, 5, 2, 16), value=torch.randn(2, 5, 2, 16)),
        r"key=\(2, 5, 2, 16\) .*its N axis must equal num_key_value_heads=4",
    ),
    (
        "dense key batch",
        dense_prefill(key=torch.randn(3, 5, 4, 16), value=torch.randn(3, 5, 4, 16)),
        r"key=\(3, 5, 4, 16\) .*its batch axis must equal the query's B=2",
    ),
    (
        "dense value S",
        dense_prefill(value=torch.randn(2, 6, 4, 16)),
        r"value=\(2, 6, 4, 16\) .*must match the key's shape \(2, 5, 4, 16\) but for D",
    ),
    (
        "dense key D",
        dense_prefill(key=torch.randn(2, 5, 4, 32)),
        r"key=\(2, 5, 4, 32\) .*its D \(32\) must equal the query's D \(16\)",
    ),
    (
        "dense TND without KV lengths",
        tnd_dense(actual_seq_lengths_kv=None),
        r"actual_seq_lengths_kv=None .*a dense TND key needs cumulative lengths",
    ),
    (
        "dense TND KV length count",
        tnd_dense(actual_seq_lengths_kv=[7]),
        r"actual_seq_lengths_kv=\[7\] .*needs one entry per request \(B=2",
    ),
]

# Page attention: caches, tables, dtypes.
CASES += [
    (
        "NZ cache dims",
        paged_decode(key=torch.randn(6, 2, 1, 64, 16), value=torch.randn(6, 2, 1, 64, 16)),
        r"key=\(6, 2, 1, 64, 16\) .*an NZ cache is \(blocks, KV_N=2, D/16, 128, 16\)",
    ),
    (
        "3-D cache H not divisible",
        paged_decode(key=torch.randn(6, 128, 33), value=torch.randn(6, 128, 33)),
        r"key=\(6, 128, 33\) .*H must be divisible by num_key_value_heads=2",
    ),
    (
        "2-D cache",
        paged_decode(key=torch.randn(6, 4096), value=torch.randn(6, 4096)),
        r"key=\(6, 4096\) .*page attention takes a 3-D, 4-D or 5-D \(NZ\) cache",
    ),
    (
        "TND paged at a head dim sglang does not run TND paged at",
        tnd_prefill(
            query=torch.randn(7, 4, 64),
            **kv(4, 128, 2 * 64),
        ),
        r"query/value D=\(64, 64\) .*TND with page attention is accepted only at \(D, V_D\) in "
        r"\(\(128, 128\), \(192, 192\), \(256, 256\), \(192, 128\)\)",
    ),
    (
        "cache above int32 elements",
        paged_decode(key=meta(524289, 128, 32), value=meta(524289, 128, 32)),
        r"key=\(524289, 128, 32\) .*at most 2\*\*31-1 elements",
    ),
    (
        "prompt page attention with an int8 query",
        tnd_prefill(
            query=torch.zeros(7, 4, 32, dtype=torch.int8),
            key=torch.zeros(4, 128, 64, dtype=torch.int8),
            value=torch.zeros(4, 128, 64, dtype=torch.int8),
        ),
        r"query=torch.int8 .*page attention with Q_S>1 does not take an int8 query",
    ),
    (
        "decode page attention with int4 (int32) KV",
        paged_decode(
            key=torch.zeros(6, 128, 32, dtype=torch.int32),
            value=torch.zeros(6, 128, 32, dtype=torch.int32),
        ),
        r"key=torch.int32 .*page attention with Q_S=1 does not take int4 \(int32\) KV",
    ),
    (
        "decode all int8",
        paged_decode(
            query=torch.zeros(2, 1, 8, 16, dtype=torch.int8),
            key=torch.zeros(6, 128, 32, dtype=torch.int8),
            value=torch.zeros(6, 128, 32, dtype=torch.int8),
        ),
        r"query/key/value dtype=torch.int8 .*Q_S=1 does not support all-int8 inputs",
    ),
    (
        "int8 KV decode block 16",
        paged_decode(
            key=torch.zeros(40, 16, 32, dtype=torch.int8),
            value=torch.zeros(40, 16, 32, dtype=torch.int8),
            block_size=16,
            block_table=torch.zeros(2, 20, dtype=torch.int32),
        ),
        r"block_size=16 .*non-zero multiple of 32 up to 512 \(int8 KV cache\)",
    ),
    (
        "MLA NZ cache block 16",
        mla_decode(
            **kv(16, 1, 32, 16, 16),
            key_rope=torch.randn(16, 1, 4, 16, 16),
            block_size=16,
            block_table=torch.zeros(2, 8, dtype=torch.int32),
        ),
        r"block_size=16 .*needs block_size in \(128,\) with an NZ cache",
    ),
    ("block_size not an int", paged_decode(block_size=128.0), r"block_size=128.0 .*must be an int"),
]

# Masks.
CASES += [
    (
        "2-D mask with TND",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(4, 256, dtype=torch.bool)),
        r"atten_mask=\(4, 256\) .*the 2-D \(Q_S,KV_S\)/\(B,KV_S\) form needs BSH/BSND/BNSD",
    ),
    (
        "paged decode mask narrower than the table",
        paged_decode(atten_mask=torch.zeros(2, 300, dtype=torch.bool)),
        r"atten_mask=\(2, 300\) .*page attention its last dim must be >= 3 blocks \* "
        r"block_size 128 = 384",
    ),
    (
        "paged prefill mask narrower than the longest request's blocks",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(1, 4, 200, dtype=torch.bool)),
        r"atten_mask=\(1, 4, 200\) .*last dim must be >= 2 blocks \* block_size 128 = 256",
    ),
    (
        "non-contiguous mask",
        dense_prefill(atten_mask=torch.zeros(2, 1, 5, 3, dtype=torch.bool).transpose(2, 3)),
        r"atten_mask=\(2, 1, 3, 5\) .*non-contiguous",
    ),
]

# Size limits of both branches; the prompt branch's head-dim rules.
CASES += [
    (
        "batch above 65536",
        dense_prefill(
            query=meta(65537, 1, 1, 16),
            key=meta(65537, 4, 1, 16),
            value=meta(65537, 4, 1, 16),
            num_heads=1,
            atten_mask=None,
        ),
        r"query='B=65537' .*the batch must be <= 65536",
    ),
    (
        "heads above 256",
        dense_prefill(
            query=torch.randn(1, 1, 257, 16),
            **kv(1, 4, 257, 16),
            num_heads=257,
            atten_mask=None,
        ),
        r"num_heads=257 .*must be <= 256",
    ),
    (
        "head dim above 512",
        dense_prefill(
            query=torch.randn(1, 1, 1, 528),
            **kv(1, 4, 1, 528),
            num_heads=1,
            atten_mask=None,
        ),
        r"query='D=528' .*the head dim must be <= 512",
    ),
    (
        "decode KV S above 262144",
        dense_prefill(
            query=torch.randn(1, 1, 1, 16),
            key=meta(1, 262145, 1, 16),
            value=meta(1, 262145, 1, 16),
            num_heads=1,
            atten_mask=None,
        ),
        r"actual_seq_lengths_kv='max 262145' .*Q_S=1 supports KV S <= 262144",
    ),
    (
        "prompt S above 20M",
        dense_prefill(
            query=meta(1, 20971521, 1, 16),
            key=meta(1, 4, 1, 16),
            value=meta(1, 4, 1, 16),
            num_heads=1,
            atten_mask=None,
        ),
        r"query='S=20971521' .*Q_S>1 supports S <= 20971520",
    ),
    (
        "prompt head dim not 16-aligned",
        dense_prefill(
            query=torch.randn(2, 3, 4, 24),
            **kv(2, 5, 4, 24),
        ),
        r"query='D=24' .*Q_S>1 needs the head dim 16-aligned",
    ),
    (
        "prompt value dim not 16-aligned",
        dense_prefill(value=torch.randn(2, 5, 4, 8)),
        r"value='D=8' .*Q_S>1 needs the head dim 16-aligned",
    ),
    (
        "int8 prompt head dim not 32-aligned",
        dense_prefill(
            query=torch.zeros(1, 2, 2, 16, dtype=torch.int8),
            key=torch.zeros(1, 4, 2, 16, dtype=torch.int8),
            value=torch.zeros(1, 4, 2, 16, dtype=torch.int8),
            num_heads=2,
            atten_mask=None,
        ),
        r"query='D=16' .*Q_S>1 needs the head dim 32-aligned",
    ),
    (
        "prompt BSND N*D",
        dense_prefill(
            query=torch.randn(1, 2, 128, 512),
            **kv(1, 2, 128, 512),
            num_heads=128,
            atten_mask=None,
        ),
        r"query='N\*D=65536' .*Q_S>1 with input_layout=BSND needs N\*D < 65535",
    ),
]

# TND without page attention (v1 doc).
CASES += [
    (
        "TND dense fp16",
        tnd_dense(
            query=torch.randn(7, 8, 192).half(),
            key=torch.randn(7, 8, 192).half(),
            value=torch.randn(7, 8, 128).half(),
        ),
        r"query=torch.float16 .*TND without page attention takes bfloat16 only",
    ),
    (
        "TND dense T above 65536",
        tnd_dense(
            query=meta(65537, 8, 192),
            key=meta(65537, 8, 192),
            value=meta(65537, 8, 128),
            actual_seq_lengths=[65537],
            actual_seq_lengths_kv=[65537],
        ),
        r"query='T=65537' .*TND without page attention needs T <= 65536",
    ),
    (
        "TND dense 4 heads",
        tnd_dense(
            query=torch.randn(7, 4, 192),
            key=torch.randn(7, 4, 192),
            value=torch.randn(7, 4, 128),
            num_heads=4,
        ),
        r"num_heads/num_key_value_heads=\(4, 4\) .*N in \(8, 16, 32, 64, 128\) with "
        r"Q_N = K_N = V_N",
    ),
    (
        "TND dense GQA",
        tnd_dense(key=torch.randn(7, 2, 192), value=torch.randn(7, 2, 128), num_key_value_heads=2),
        r"num_heads/num_key_value_heads=\(8, 2\) .*Q_N = K_N = V_N",
    ),
    (
        "TND dense D 128",
        tnd_dense(
            query=torch.randn(7, 8, 128), key=torch.randn(7, 8, 128), value=torch.randn(7, 8, 128)
        ),
        r"query/key/value D=\(128, 128, 128\) .*needs one of \[\(192, 192, 128\), "
        r"\(192, 192, 192\)\]",
    ),
    (
        "TND dense sparse 2",
        tnd_dense(sparse_mode=2),
        r"sparse_mode=2 .*TND without page attention takes 0, 3 or 4",
    ),
    (
        "TND dense sparse 0 with a mask",
        tnd_dense(sparse_mode=0),
        r"atten_mask=\(2048, 2048\) .*TND without page attention with sparse_mode=0 takes no mask",
    ),
    (
        "TND dense sparse 3 without a mask",
        tnd_dense(atten_mask=None),
        r"atten_mask=None .*TND without page attention with sparse_mode=3 needs a mask",
    ),
    (
        "TND dense sparse 3 query longer than KV",
        tnd_dense(
            key=torch.randn(6, 8, 192), value=torch.randn(6, 8, 128), actual_seq_lengths_kv=[2, 6]
        ),
        r"actual_seq_lengths='request 0: 3 > kv 2' .*sparse_mode=3 needs each request's query "
        r"length <= its KV",
    ),
    (
        "TND dense sparse 4 pre_tokens below -q_len",
        tnd_dense(sparse_mode=4, pre_tokens=-4, next_tokens=10),
        r"pre_tokens/next_tokens=\(-4, 10\) .*pre_tokens >= -q_len and next_tokens >= -kv_len",
    ),
    (
        "TND dense sparse 4 empty band",
        tnd_dense(sparse_mode=4, pre_tokens=-2, next_tokens=1),
        r"pre_tokens/next_tokens=\(-2, 1\) .*pre_tokens \+ next_tokens >= 0",
    ),
    (
        "TND MLA rope D",
        tnd_dense(
            query=torch.randn(7, 8, 128),
            **kv(7, 8, 128),
            query_rope=torch.randn(7, 8, 32),
            key_rope=torch.randn(7, 8, 32),
        ),
        r"query/key/value D, rope D=\(128, 128, 128, 32\) .*Q_D = K_D = V_D = 128 and rope D 64",
    ),
]

MLA_Q2 = {"query": torch.randn(2, 2, 4, 512), "query_rope": torch.randn(2, 2, 4, 64)}

# MLA (v1 doc); the query head count is deliberately not checked (mla_decode has 4 heads).
CASES += [
    (
        "MLA D 256",
        mla_decode(
            query=torch.randn(2, 1, 4, 256),
            **kv(4, 128, 256),
        ),
        r"query/query_rope D=\(256, 64\) .*MLA needs D=512 and rope D=64",
    ),
    (
        "MLA two key heads",
        mla_decode(
            **kv(4, 128, 1024),
            key_rope=torch.randn(4, 128, 128),
            num_key_value_heads=2,
        ),
        r"num_key_value_heads=2 .*MLA needs one key head",
    ),
    (
        "MLA sparse 3 at Q_S=1",
        mla_decode(sparse_mode=3, atten_mask=TEMPLATE),
        r"sparse_mode=3 .*Q_S=1 only \(0, 4, 9\)",
    ),
    ("MLA sparse 0 at Q_S>1", mla_decode(**MLA_Q2), r"sparse_mode=0 .*Q_S>1 only \(3, 4, 9\)"),
    (
        "MLA sparse 0 with a mask",
        mla_decode(atten_mask=torch.zeros(2, 256, dtype=torch.bool)),
        r"atten_mask=\(2, 256\) .*MLA with sparse_mode=0 takes no mask",
    ),
    (
        "MLA sparse 3 without a mask",
        mla_decode(**MLA_Q2, sparse_mode=3),
        r"atten_mask=None .*MLA with sparse_mode=3 needs a mask",
    ),
    (
        "MLA without page attention",
        mla_decode(
            **kv(2, 140, 1, 512),
            key_rope=torch.randn(2, 140, 1, 64),
            block_table=None,
            block_size=0,
        ),
        r"block_table=None .*MLA with sparse_mode=0 needs page attention",
    ),
    (
        "MLA BNSD_BSND",
        mla_decode(
            query=torch.randn(2, 4, 2, 512),
            query_rope=torch.randn(2, 4, 2, 64),
            input_layout="BNSD_BSND",
            sparse_mode=3,
            atten_mask=TEMPLATE,
        ),
        r"input_layout='BNSD_BSND' .*MLA takes \('BSH', 'BSND', 'BNSD'\)",
    ),
    (
        "MLA NZ cache with BNSD",
        mla_decode(
            query=torch.randn(2, 4, 1, 512),
            query_rope=torch.randn(2, 4, 1, 64),
            input_layout="BNSD",
            **kv(4, 1, 32, 128, 16),
            key_rope=torch.randn(4, 1, 4, 128, 16),
        ),
        r"input_layout='BNSD' .*not BNSD with an NZ cache",
    ),
    (
        "MLA band BNSD",
        mla_band(
            query=torch.randn(1, 128, 1, 512),
            query_rope=torch.randn(1, 128, 1, 64),
            **kv(1, 1, 6, 512),
            key_rope=torch.randn(1, 1, 6, 64),
            input_layout="BNSD",
        ),
        r"input_layout/num_heads=\('BNSD', 128\) .*sparse_mode=4 needs BSND and N=128",
    ),
    (
        "MLA band 64 heads",
        mla_band(
            query=torch.randn(1, 1, 64, 512), query_rope=torch.randn(1, 1, 64, 64), num_heads=64
        ),
        r"input_layout/num_heads=\('BSND', 64\) .*sparse_mode=4 needs BSND and N=128",
    ),
    (
        "MLA band NZ cache",
        mla_band(
            **kv(1, 1, 32, 64, 16),
            key_rope=torch.randn(1, 1, 4, 64, 16),
            block_table=torch.zeros(1, 1, dtype=torch.int32),
            block_size=64,
            actual_seq_lengths_kv=[6],
        ),
        r"key='NZ cache' .*MLA with sparse_mode=4 takes only ND caches",
    ),
    (
        "MLA band key S",
        mla_band(
            key=meta(1, 131089, 1, 512),
            value=meta(1, 131089, 1, 512),
            key_rope=meta(1, 131089, 1, 64),
        ),
        r"actual_seq_lengths_kv=131089 .*<= 131088 \(sparse 4\)",
    ),
    (
        "MLA band query longer than key",
        mla_band(
            query=torch.randn(1, 2, 128, 512),
            query_rope=torch.randn(1, 2, 128, 64),
            actual_seq_lengths_kv=[1],
        ),
        r"actual_seq_lengths='request 0: 2 > kv 1' .*sparse_mode=4 needs each query S <= its key",
    ),
    (
        "sparse 9 without rope",
        paged_decode(sparse_mode=9),
        r"sparse_mode=9 .*9 \(treeMask\) needs query_rope/key_rope \(MLA only\)",
    ),
    (
        "sparse 9 without a mask",
        mla_decode(sparse_mode=9),
        r"atten_mask=None .*MLA with sparse_mode=9 needs a mask",
    ),
    (
        "tree mask query longer than KV",
        mla_decode(
            **MLA_Q2,
            sparse_mode=9,
            atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool),
            actual_seq_lengths_kv=[1, 140],
        ),
        r"actual_seq_lengths='request 0: 2 > kv 1' .*sparse_mode=9 \(treeMask\) needs each",
    ),
    (
        "tree mask with pse_shift",
        mla_decode(
            **MLA_Q2,
            sparse_mode=9,
            atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool),
            pse_shift=torch.zeros(1),
        ),
        r"pse_shift=\(1,\) .*sparse_mode=9 \(treeMask\) takes no left padding, pse_shift",
    ),
    (
        "query_rope shape",
        mla_decode(query_rope=torch.randn(2, 1, 3, 64)),
        r"query_rope=\(2, 1, 3, 64\) .*must match the query \(2, 1, 4, 512\) but D",
    ),
    (
        "BSH query_rope width",
        mla_decode(
            query=torch.randn(2, 1, 2048),
            query_rope=torch.randn(2, 1, 250),
            input_layout="BSH",
        ),
        r"query_rope=\(2, 1, 250\) .*must be \(B, S, N\*rope_D\)",
    ),
    (
        "key_rope shape",
        mla_decode(key_rope=torch.randn(4, 64, 64)),
        r"key_rope=\(4, 64, 64\) .*must match the key \(4, 128, 512\) but D",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"


# What the kernel accepts but the reference does not model: the validator (which also runs in
# front of torch_npu) lets it through, and the reference refuses it by name.
REFERENCE_ONLY: list[tuple[str, dict[str, object], str]] = [
    (
        "NZ cache",
        paged_decode(key=torch.randn(6, 2, 1, 128, 16), value=torch.randn(6, 2, 1, 128, 16)),
        r"key=\(6, 2, 1, 128, 16\) is not implemented by the reference \(it supports ND caches",
    ),
    (
        "int8 query and key (prompt, dense)",
        dense_prefill(
            query=torch.zeros(1, 2, 2, 32, dtype=torch.int8),
            key=torch.zeros(1, 4, 2, 32, dtype=torch.int8),
            value=torch.zeros(1, 4, 2, 32, dtype=torch.int8),
            num_heads=2,
            atten_mask=None,
        ),
        r"query/key dtype=\(torch.int8, torch.int8\) is not implemented by the reference",
    ),
    (
        "int8 cache (antiquant)",
        paged_decode(
            key=torch.zeros(6, 128, 32, dtype=torch.int8),
            value=torch.zeros(6, 128, 32, dtype=torch.int8),
            antiquant_scale=torch.ones(2, 32),
        ),
        r"antiquant_scale=\(2, 32\) is not implemented by the reference",
    ),
    (
        "-1 inside a request",
        paged_decode(block_table=torch.tensor([[0, -1, -1], [2, 3, 4]], dtype=torch.int32)),
        r"block_table='\[0, 1\] = -1' .*request 0 needs block slot 1 for its 200 tokens",
    ),
    (
        "block id past the cache",
        paged_decode(block_table=torch.tensor([[0, 9, -1], [2, 3, 4]], dtype=torch.int32)),
        r"block_table='\[0, 1\] = 9' .*ids must be in \[0, 6\)",
    ),
    (
        "tokens with an explicit mask",
        tnd_prefill(
            sparse_mode=0, pre_tokens=5, atten_mask=torch.zeros(1, 4, 256, dtype=torch.bool)
        ),
        r"pre_tokens/next_tokens=\(5, 2147483647\) is not implemented by the reference",
    ),
    (
        "pse_shift",
        paged_decode(pse_shift=torch.zeros(2, 8, 1, 384)),
        r"pse_shift=\(2, 8, 1, 384\) is not implemented by the reference",
    ),
    (
        "antiquant_mode",
        paged_decode(antiquant_mode=1),
        r"antiquant_mode=1 is not implemented by the reference",
    ),
    (
        "quant_scale2",
        paged_decode(quant_scale2=torch.ones(1)),
        r"quant_scale2=\(1,\) is not implemented by the reference",
    ),
    (
        "shared prefix",
        paged_decode(actual_shared_prefix_len=[3]),
        r"actual_shared_prefix_len=\[3\] is not implemented by the reference",
    ),
    (
        "tree mask (sparse_mode 9, MLA)",
        mla_decode(**MLA_Q2, sparse_mode=9, atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool)),
        r"sparse_mode=9 is not implemented by the reference \(.* treeMask layout is undocumented",
    ),
]


@pytest.mark.parametrize(
    ("what", "kw", "message"), REFERENCE_ONLY, ids=[c[0] for c in REFERENCE_ONLY]
)
def test_reference_refuses_what_only_it_lacks(
    what: str, kw: dict[str, object], message: str
) -> None:
    args = dict(kw)
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    ops.fused_infer_attention_score.validate(q, k, v, **args)  # an NPU call would go through
    with pytest.raises(ValueError, match=message):
        run(kw)


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


@pytest.mark.parametrize(
    ("kw", "message", "kernel_accepts"),
    [
        (
            {"dequant_scale_key": torch.ones(1)},
            r"_v2: dequant_scale_key=\(1,\) is not implemented",
            True,
        ),
        ({"key_quant_mode": 1}, r"_v2: key_quant_mode=1 is not implemented", True),
        ({"out_dtype": 1}, r"_v2: out_dtype=1 is not implemented", True),
        ({"query_dtype": 27}, r"_v2: query_dtype=27 is not implemented", True),
        ({"input_layout": "BSND_NBSD"}, r"input_layout='BSND_NBSD' is not implemented", True),
        (
            {"learnable_sink": torch.zeros(3)},
            r"learnable_sink=\(3,\) .*shape \(num_query_heads,\) = \(8,\)",
            False,
        ),
        ({"num_query_heads": 3}, r"num_key_value_heads=2 .*num_heads=3 must be divisible", False),
        ({"block_size": 24}, r"block_size=24 .*multiple of 16", False),
    ],
)
def test_v2_validation(kw: dict[str, object], message: str, kernel_accepts: bool) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        v2(**kw)
    # Reference-only gaps pass the validator (and count the launch); kernel rules stop it first.
    assert ops.launch_counts() == ({"fused_infer_attention_score_v2": 1} if kernel_accepts else {})


def test_v2_valid_baseline_runs() -> None:
    out, lse = v2(return_softmax_lse=True, learnable_sink=torch.zeros(8))
    assert out.shape == (2, 1, 8, 16) and lse.shape == (2, 8, 1, 1)


def test_validator_sees_positional_and_keyword_calls_alike() -> None:
    kw = paged_decode(block_size=24)
    q, k, v = kw.pop("query"), kw.pop("key"), kw.pop("value")
    with pytest.raises(ValueError, match="block_size=24"):
        ops.fused_infer_attention_score(q, k, v, **kw)
    with pytest.raises(ValueError, match="block_size=24"):
        ops.fused_infer_attention_score(query=q, key=k, value=v, **kw)


# ---------------------------------------------------------------------------------------------
# Page sizes: the helper the attention backend calls at construction
# ---------------------------------------------------------------------------------------------


def test_legal_page_sizes() -> None:
    assert ops.legal_page_sizes(mla=False) == (128, 256, 384, 512)
    assert ops.legal_page_sizes(mla=True) == (128,)


@pytest.mark.parametrize(("size", "mla"), [(64, False), (16, True), (256, True), (1024, False)])
def test_check_page_size_rejects(size: int, mla: bool) -> None:
    with pytest.raises(
        ValueError, match=rf"--page-size={size} is not allowed: .*accepts page sizes"
    ):
        ops.check_page_size(size, mla=mla)


@pytest.mark.parametrize(
    ("size", "prefill", "rope", "sparse", "ok"),
    [
        (16, False, False, 0, True),
        (48, False, False, 0, True),
        (512, False, False, 0, True),
        (8, False, False, 0, False),
        (0, False, False, 0, False),
        (128, True, False, 0, True),
        (384, True, False, 0, True),
        (192, True, False, 0, False),
        (16, False, True, 0, True),
        (128, True, True, 0, True),
        (64, False, True, 0, False),
        (64, False, True, 4, True),
        (16, False, True, 4, False),
    ],
)
def test_check_block_size_table(
    size: int, prefill: bool, rope: bool, sparse: int, ok: bool
) -> None:
    if ok:
        ops.check_block_size(size, prefill=prefill, rope=rope, sparse_mode=sparse)
    else:
        with pytest.raises(ValueError, match=rf"block_size={size} is not allowed"):
            ops.check_block_size(size, prefill=prefill, rope=rope, sparse_mode=sparse)


def test_check_page_size_accepts_the_legal_ones() -> None:
    for size in (128, 256, 384, 512):
        ops.check_page_size(size, mla=False)
    ops.check_page_size(128, mla=True)


# ---------------------------------------------------------------------------------------------
# Launch counting and the import contract
# ---------------------------------------------------------------------------------------------


def test_one_call_counts_one_launch_and_reset_clears() -> None:
    ops.reset_launch_counts()
    run(paged_decode())
    assert ops.launch_counts() == {"fused_infer_attention_score": 1}
    v2()
    run(paged_decode())
    assert ops.launch_counts() == {
        "fused_infer_attention_score": 2,
        "fused_infer_attention_score_v2": 1,
    }
    ops.reset_launch_counts()
    assert ops.launch_counts() == {}


def test_importing_and_running_the_ops_never_imports_torch_npu() -> None:
    code = (
        "import sys, torch\n"
        "import sglang_ascend_fia.ops as ops\n"
        "q = torch.randn(1, 1, 2, 8); k = torch.randn(1, 4, 2, 8)\n"
        "ops.fused_infer_attention_score(q, k, k, num_heads=2, input_layout='BSND')\n"
        "ops.add_rms_norm(torch.randn(2, 4), torch.randn(2, 4), torch.ones(4))\n"
        "assert 'torch_npu' not in sys.modules, 'torch_npu was imported'\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


# ---------------------------------------------------------------------------------------------
# Documented forms the validator must let through (edges of the rules above)
# ---------------------------------------------------------------------------------------------

ACCEPTED: list[tuple[str, dict[str, object]]] = [
    # sglang's radix cache: requests share prefix blocks, so their blocks sum past the cache's
    # block count (5 > 4 here); the doc's "block count >= sum" rule is not enforced.
    (
        "shared prefix blocks beyond the block count",
        paged_decode(
            key=torch.randn(4, 128, 32),
            value=torch.randn(4, 128, 32),
            block_table=torch.tensor([[0, 1, -1], [0, 1, 3]], dtype=torch.int32),
        ),
    ),
    (
        "TND paged at D 256",
        tnd_prefill(
            query=torch.randn(7, 4, 256),
            key=torch.randn(4, 128, 2 * 256),
            value=torch.randn(4, 128, 2 * 256),
        ),
    ),
    # v1's "N为32、64、128" is a documentation gap sglang 0.5.23 relies on (8-16 heads).
    (
        "MLA decode with 8 query heads",
        mla_decode(
            query=torch.randn(2, 1, 8, 512), num_heads=8, query_rope=torch.randn(2, 1, 8, 64)
        ),
    ),
    # MLA takes one key head for up to 128 query heads: the GQA ratio limit is not applied.
    (
        "MLA decode with 128 query heads",
        mla_decode(
            query=torch.randn(1, 1, 128, 512),
            query_rope=torch.randn(1, 1, 128, 64),
            num_heads=128,
            block_table=torch.tensor([[0, 1]], dtype=torch.int32),
            actual_seq_lengths_kv=[140],
        ),
    ),
    ("MLA sparse 4 (band) decode, 128 heads", mla_band()),
    (
        "MLA NZ cache, BSND",
        mla_decode(
            **kv(4, 1, 32, 128, 16),
            key_rope=torch.randn(4, 1, 4, 128, 16),
        ),
    ),
    # sglang 0.5.23's MLA extend: TND, dense, nope 128 + rope 64, sparse 3, equal lengths.
    (
        "TND MLA extend",
        tnd_dense(
            query=torch.randn(7, 8, 128),
            **kv(7, 8, 128),
            query_rope=torch.randn(7, 8, 64),
            key_rope=torch.randn(7, 8, 64),
        ),
    ),
    (
        "TND dense bf16, V_D 192",
        tnd_dense(
            query=torch.randn(7, 8, 192).bfloat16(),
            key=torch.randn(7, 8, 192).bfloat16(),
            value=torch.randn(7, 8, 192).bfloat16(),
        ),
    ),
    (
        "TND dense sparse 4, band at its limits",
        tnd_dense(sparse_mode=4, pre_tokens=-3, next_tokens=3),
    ),
    ("TND dense sparse 0 without a mask", tnd_dense(sparse_mode=0, atten_mask=None)),
    # N*D < 65535 binds BSH/BSND only.
    (
        "BNSD prompt with N*D = 65536",
        dense_prefill(
            query=torch.randn(1, 128, 2, 512),
            **kv(1, 128, 2, 512),
            num_heads=128,
            input_layout="BNSD",
            atten_mask=None,
        ),
    ),
    (
        "int8 KV decode at block 32",
        paged_decode(
            key=torch.zeros(20, 32, 32, dtype=torch.int8),
            value=torch.zeros(20, 32, 32, dtype=torch.int8),
            block_size=32,
            block_table=torch.zeros(2, 10, dtype=torch.int32),
        ),
    ),
    (
        "paged decode mask as wide as the table",
        paged_decode(atten_mask=torch.zeros(2, 384, dtype=torch.bool)),
    ),
    ("lengths as an int tensor", paged_decode(actual_seq_lengths_kv=torch.tensor([200, 300]))),
]


@pytest.mark.parametrize(("what", "kw"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_validator_accepts_documented_forms(what: str, kw: dict[str, object]) -> None:
    args = dict(kw)
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    ops.fused_infer_attention_score.validate(q, k, v, **args)


# ---------------------------------------------------------------------------------------------
# v2: where its doc differs from v1's (MLA and TND sections)
# ---------------------------------------------------------------------------------------------

_V2_NAMES = {
    "num_heads": "num_query_heads",
    "actual_seq_lengths": "actual_seq_qlen",
    "actual_seq_lengths_kv": "actual_seq_kvlen",
    "scale": "softmax_scale",
}


def run_v2(kw: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:
    args = {_V2_NAMES.get(k, k): v for k, v in kw.items()}
    return ops.fused_infer_attention_score_v2(
        args.pop("query"), args.pop("key"), args.pop("value"), **args
    )


V2_CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "v2 TND dense D 160",
        tnd_dense(
            query=torch.randn(7, 8, 160), key=torch.randn(7, 8, 160), value=torch.randn(7, 8, 160)
        ),
        r"query/key/value D=\(160, 160, 160\) .*\(192, 192, 128\), \(192, 192, 192\), "
        r"\(128, 128, 128\)\]",
    ),
    (
        "v2 TND dense above 1M tokens",
        tnd_dense(
            query=meta(1048577, 8, 128),
            key=meta(1048577, 8, 128),
            value=meta(1048577, 8, 128),
            actual_seq_lengths=[1048577],
            actual_seq_lengths_kv=[1048577],
        ),
        r"query='T=1048577' .*TND without page attention needs T <= 1048576",
    ),
    (
        "v2 TND dense 4097 requests",
        tnd_dense(
            query=meta(4097, 8, 128),
            key=meta(4097, 8, 128),
            value=meta(4097, 8, 128),
            actual_seq_lengths=list(range(1, 4098)),
            actual_seq_lengths_kv=list(range(1, 4098)),
        ),
        r"actual_seq_qlen='4097 entries' .*at most 4096 \(v2\)",
    ),
    (
        "v2 MLA query D 128 with page attention",
        mla_decode(
            query=torch.randn(2, 1, 4, 128),
            **kv(4, 128, 128),
        ),
        r"query='D=128' .*MLA with a query D of 128 needs TND without page attention",
    ),
    ("v2 MLA sparse 4", mla_band(), r"sparse_mode=4 .*v2 MLA with Q_S=1 takes 0"),
    (
        "v2 MLA 3 heads",
        mla_decode(
            query=torch.randn(2, 1, 3, 512), query_rope=torch.randn(2, 1, 3, 64), num_heads=3
        ),
        r"num_heads=3 .*v2 MLA needs N in \(1, 2, 4, 8, 16, 32, 64, 128\)",
    ),
    (
        "v2 sparse 9",
        mla_decode(**MLA_Q2, sparse_mode=9, atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool)),
        r"sparse_mode=9 .*the v2 op takes one of \(0, 1, 2, 3, 4\)",
    ),
    (
        "v2-only layout, sparse 9",
        paged_decode(input_layout="BSND_NBSD", sparse_mode=9),
        r"sparse_mode=9 .*the v2 op takes one of \(0, 1, 2, 3, 4\)",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), V2_CASES, ids=[c[0] for c in V2_CASES])
def test_v2_doc_rules(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run_v2(kw)
    assert ops.launch_counts() == {}


def test_v2_accepts_tnd_gqa_d128_and_tnd_paged_mla() -> None:
    """v2 documents GQA and D 128 for TND without paging, and TND for paged MLA at D 512."""
    gqa = tnd_dense(
        query=torch.randn(7, 8, 128),
        **kv(7, 2, 128),
        num_key_value_heads=2,
    )
    out, _ = run_v2(gqa)
    assert out.shape == (7, 8, 128) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"num_heads/num_key_value_heads=\(8, 2\)"):
        run(gqa)  # v1's doc requires Q_N = K_N = V_N
    mla_tnd = mla_decode(
        query=torch.randn(2, 4, 512),
        query_rope=torch.randn(2, 4, 64),
        input_layout="TND",
        actual_seq_lengths=[1, 2],
    )
    out, _ = run_v2(mla_tnd)
    assert out.shape == (2, 4, 512)
    with pytest.raises(
        ValueError, match=r"input_layout='TND' .*MLA takes \('BSH', 'BSND', 'BNSD'\)"
    ):
        run(mla_tnd)


# ---------------------------------------------------------------------------------------------
# dtype policy: float32 is a CPU-reference extension, refused on an NPU tensor
# ---------------------------------------------------------------------------------------------

_NPU_PROBE = """
import json, torch
torch.utils.rename_privateuse1_backend("npu")


class FakeNPU(torch.Tensor):
    # Metadata only (shape, dtype, device "npu"): the validators read no data.
    @staticmethod
    def __new__(cls, *shape, dtype=torch.float32):
        return torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device="npu")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"FakeNPU holds no data ({func})")


from sglang_ascend_fia import ops

table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
out = {}


def attempt(name, fn):
    try:
        fn()
        out[name] = "accepted"
    except ValueError as exc:
        out[name] = str(exc)


def fia(dtype):
    q, k = FakeNPU(2, 1, 4, 16, dtype=dtype), FakeNPU(4, 128, 32, dtype=dtype)
    ops.fused_infer_attention_score.validate(
        q, k, k, num_heads=4, num_key_value_heads=2, input_layout="BSND", block_table=table,
        block_size=128, actual_seq_lengths_kv=[10, 140])


def fia_v2(dtype):
    q, k = FakeNPU(2, 1, 4, 16, dtype=dtype), FakeNPU(4, 128, 32, dtype=dtype)
    ops.fused_infer_attention_score_v2.validate(
        q, k, k, num_query_heads=4, num_key_value_heads=2, input_layout="BSND",
        block_table=table, block_size=128, actual_seq_kvlen=[10, 140])


def rope(dtype):
    x, c = FakeNPU(2, 4, 1, 64, dtype=dtype), FakeNPU(2, 1, 1, 64, dtype=dtype)
    ops.interleave_rope.validate(x, c, c)


for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for name, fn in (("fia", fia), ("fia_v2", fia_v2), ("interleave_rope", rope)):
        attempt(f"{name} {dtype}", lambda: fn(dtype))
print(json.dumps(out))
"""


def test_float32_is_refused_on_an_npu_tensor_only() -> None:
    """End to end with a real "npu" device type (a renamed PrivateUse1 backend, in a child)."""
    done = subprocess.run(
        [sys.executable, "-c", _NPU_PROBE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("fia", "fia_v2", "interleave_rope"):
        assert got[f"{name} torch.bfloat16"] == "accepted"
        assert got[f"{name} torch.float16"] == "accepted"
        refusal = got[f"{name} torch.float32"]
        assert "=torch.float32 is not allowed: on an NPU tensor" in refusal, refusal
        assert "float32 is accepted off the NPU only" in refusal
    assert got["fia torch.float32"].startswith("fused_infer_attention_score: query=")
    assert got["interleave_rope torch.float32"].startswith("interleave_rope: x=")
    # Off the NPU the same float32 calls pass (the CPU test bed runs in fp32).
    ops.fused_infer_attention_score.validate(**paged_decode())
    x, c = torch.randn(2, 4, 1, 64), torch.randn(2, 1, 1, 64)
    ops.interleave_rope.validate(x, c, c)


class _NpuLooking(torch.Tensor):
    """A CPU tensor whose ``device.type`` reads "npu" (the validators' only device check)."""

    @property
    def device(self) -> SimpleNamespace:  # type: ignore[override]
        return SimpleNamespace(type="npu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_policy_reads_the_device_type(dtype: torch.dtype) -> None:
    """The same policy in this process: fp32 refused when ``device.type == "npu"``."""
    kw = paged_decode()
    for name in ("query", "key", "value"):
        kw[name] = kw[name].to(dtype).as_subclass(_NpuLooking)  # type: ignore[attr-defined]
    args = dict(kw)
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    x = torch.zeros(2, 4, 1, 64, dtype=dtype).as_subclass(_NpuLooking)
    cos = torch.zeros(2, 1, 1, 64, dtype=dtype)
    if dtype == torch.bfloat16:
        ops.fused_infer_attention_score.validate(q, k, v, **args)
        ops.interleave_rope.validate(x, cos, cos)
        return
    with pytest.raises(ValueError, match=r"query=torch.float32 is not allowed: on an NPU tensor"):
        ops.fused_infer_attention_score.validate(q, k, v, **args)
    with pytest.raises(ValueError, match=r"interleave_rope: x=torch.float32 is not allowed: on an"):
        ops.interleave_rope.validate(x, cos, cos)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (3, {"bogus": 1}, "unexpected keyword argument 'bogus'"),
        (3, {"query": None}, "multiple values for argument 'query'"),
        (2, {}, "missing a required argument: 'value'"),
    ],
    ids=["unknown", "twice", "missing"],
)
def test_bad_call_signatures_raise_pythons_type_errors(
    args: int, kwargs: dict[str, object], message: str
) -> None:
    """The validator's fast argument binding still refuses what Python would."""
    q = torch.randn(1, 1, 4, 16)
    for op in (ops.fused_infer_attention_score, ops.fused_infer_attention_score_v2):
        with pytest.raises(TypeError, match=message):
            op(*[q] * args, **kwargs)
