"""Every documented FIA constraint the validator enforces, each with its message.

The validator runs through the dispatch decorator before either implementation, so these also
prove that a rejected call counts no launch.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch

from sglang_ascend_fia import ops

TEMPLATE = ~torch.tril(torch.ones(2048, 2048, dtype=torch.bool))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
        "query": torch.randn(7, 4, 16),
        "key": torch.randn(4, 128, 2 * 16),
        "value": torch.randn(4, 128, 2 * 16),
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
    kw: dict[str, object] = {
        "query": torch.randn(2, 1, 4, 32),
        "key": torch.randn(4, 128, 32),
        "value": torch.randn(4, 128, 32),
        "query_rope": torch.randn(2, 1, 4, 8),
        "key_rope": torch.randn(4, 128, 8),
        "num_heads": 4,
        "num_key_value_heads": 1,
        "input_layout": "BSND",
        "block_table": torch.tensor([[0, 1], [2, 3]], dtype=torch.int32),
        "block_size": 128,
        "actual_seq_lengths_kv": [10, 140],
    }
    kw.update(over)
    return kw


def run(kw: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:
    args = dict(kw)
    return ops.fused_infer_attention_score(
        args.pop("query"), args.pop("key"), args.pop("value"), **args
    )


@pytest.mark.parametrize("builder", [paged_decode, tnd_prefill, mla_decode])
def test_the_valid_baselines_run(builder: Callable[..., dict[str, object]]) -> None:
    out, _ = run(builder())
    assert torch.isfinite(out).all()


CASES: list[tuple[str, dict[str, object], str]] = [
    # block sizes (doc: page attention, both branches; MLA section)
    (
        "decode block not 16-aligned",
        paged_decode(
            key=torch.randn(6, 24, 32),
            value=torch.randn(6, 24, 32),
            block_size=24,
            block_table=torch.zeros(2, 20, dtype=torch.int32),
        ),
        r"block_size=24 .*multiple of 16 up to 512",
    ),
    (
        "decode block above 512",
        paged_decode(
            key=torch.randn(2, 528, 32),
            value=torch.randn(2, 528, 32),
            block_size=528,
            block_table=torch.zeros(2, 1, dtype=torch.int32),
        ),
        r"block_size=528 .*multiple of 16 up to 512",
    ),
    (
        "prefill block 64",
        tnd_prefill(
            key=torch.randn(8, 64, 32),
            value=torch.randn(8, 64, 32),
            block_size=64,
            block_table=torch.zeros(2, 4, dtype=torch.int32),
        ),
        r"block_size=64 .*prompt \(Q_S>1\).*multiple of 128 in \[128, 512\]",
    ),
    (
        "prefill block 640",
        tnd_prefill(
            key=torch.randn(1, 640, 32),
            value=torch.randn(1, 640, 32),
            block_size=640,
            block_table=torch.zeros(2, 1, dtype=torch.int32),
        ),
        r"block_size=640 .*multiple of 128 in \[128, 512\]",
    ),
    (
        "rope block 32",
        mla_decode(
            key=torch.randn(16, 32, 32),
            value=torch.randn(16, 32, 32),
            key_rope=torch.randn(16, 32, 8),
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
            key=torch.randn(6, 2, 64, 16),
            value=torch.randn(6, 2, 64, 16),
        ),
        r"key=\(6, 2, 64, 16\) .*\(blocks, KV_N=2, block_size=128, D\)",
    ),
    (
        "3-D cache H above 65535",
        paged_decode(
            query=torch.randn(1, 1, 2, 32768),
            key=torch.empty(1, 16, 2 * 32768),
            value=torch.empty(1, 16, 2 * 32768),
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
        r"sparse_mode=5 .*must be one of \(0, 1, 2, 3, 4\)",
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
        r"key_rope=\(4, 128, 16\) .*rope D must equal query_rope's \(8\)",
    ),
    (
        "rope sparse 2",
        mla_decode(sparse_mode=2, atten_mask=TEMPLATE),
        r"sparse_mode=2 .*with query_rope/key_rope only 0, 3 or 4",
    ),
    (
        "rope paged S > 16",
        mla_decode(
            query=torch.randn(2, 17, 4, 32),
            query_rope=torch.randn(2, 17, 4, 8),
            sparse_mode=3,
            atten_mask=TEMPLATE,
            actual_seq_lengths_kv=[20, 140],
        ),
        r"query_rope=\(2, 17, 4, 8\) .*MLA page attention supports query S 1-16, got 17",
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
        r"key=\(6, 2, 1, 128, 16\) is not supported by the reference; NZ caches",
    ),
    (
        "int8 query and cache",
        paged_decode(
            query=torch.zeros(2, 1, 8, 16, dtype=torch.int8),
            key=torch.zeros(6, 128, 32, dtype=torch.int8),
            value=torch.zeros(6, 128, 32, dtype=torch.int8),
        ),
        r"query/key dtype=\(torch.int8, torch.int8\) is not supported by the reference",
    ),
    (
        "int8 cache (antiquant)",
        paged_decode(
            key=torch.zeros(6, 128, 32, dtype=torch.int8),
            value=torch.zeros(6, 128, 32, dtype=torch.int8),
            antiquant_scale=torch.ones(2, 32),
        ),
        r"antiquant_scale=\(2, 32\) is not supported by the reference",
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
        tnd_prefill(sparse_mode=0, pre_tokens=5, atten_mask=torch.zeros(4, 130, dtype=torch.bool)),
        r"pre_tokens/next_tokens=\(5, 2147483647\) is not supported by the reference",
    ),
    (
        "pse_shift",
        paged_decode(pse_shift=torch.zeros(2, 8, 1, 384)),
        r"pse_shift=\(2, 8, 1, 384\) is not supported by the reference",
    ),
    (
        "antiquant_mode",
        paged_decode(antiquant_mode=1),
        r"antiquant_mode=1 is not supported by the reference",
    ),
    (
        "quant_scale2",
        paged_decode(quant_scale2=torch.ones(1)),
        r"quant_scale2=\(1,\) is not supported by the reference",
    ),
    (
        "shared prefix",
        paged_decode(actual_shared_prefix_len=[3]),
        r"actual_shared_prefix_len=\[3\] is not supported by the reference",
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
            r"_v2: dequant_scale_key=\(1,\) is not supported",
            True,
        ),
        ({"key_quant_mode": 1}, r"_v2: key_quant_mode=1 is not supported", True),
        ({"out_dtype": 1}, r"_v2: out_dtype=1 is not supported", True),
        ({"query_dtype": 27}, r"_v2: query_dtype=27 is not supported", True),
        ({"input_layout": "BSND_NBSD"}, r"input_layout='BSND_NBSD' is not supported", True),
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
