"""FIA page attention rules with their messages: block sizes, paged caches (3-D, 4-D, NZ), block
tables and the dtypes page attention takes; and the page-size helpers the attention backend
calls at construction.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import kv, meta, mla_decode, paged_decode, run, tnd_prefill

from sglang_ascend_fia import ops

# Block sizes (doc: page attention, both branches; MLA section).
CASES: list[tuple[str, dict[str, object], str]] = [
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
]


# Paged caches and tables.
CASES += [
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


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"


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
