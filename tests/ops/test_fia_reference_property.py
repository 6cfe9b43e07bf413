"""The FIA v1 reference against the brute force (``fia_brute_force``) over drawn layouts, caches,
sparse modes and GQA, also through the chunked online-softmax path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from fia_brute_force import (
    assert_close,
    brute_force,
    build,
    call,
    fia_cases,
    unpack_lse,
    unpack_output,
)
from hypothesis import given, settings

from sglang_ascend_fia.ops.fia import reference

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)


# ---------------------------------------------------------------------------------------------
# The property test over layouts, caches, sparse modes and GQA
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(case=fia_cases())
def test_fia_matches_brute_force(case: dict[str, object]) -> None:
    check_against_brute_force(case)


@contextlib.contextmanager
def tiny_chunk_budgets() -> Iterator[list[int]]:
    """Shrink the reference's chunk budgets so that every call with more than one block (paged)
    or position (dense) of KV takes the online-softmax path over several KV chunks, and prefill
    runs row chunk by row chunk; yields a list that counts the online passes."""
    passes: list[int] = []
    online = reference.attend_online

    def counting(*args: object, **kwargs: object) -> object:
        passes.append(1)
        return online(*args, **kwargs)  # type: ignore[arg-type]

    saved = reference.KV_CHUNK_ELEMS, reference.SCORE_CHUNK_ELEMS, reference.attend_online
    reference.KV_CHUNK_ELEMS, reference.SCORE_CHUNK_ELEMS = 1, 1
    reference.attend_online = counting  # type: ignore[assignment]
    try:
        yield passes
    finally:
        reference.KV_CHUNK_ELEMS, reference.SCORE_CHUNK_ELEMS, reference.attend_online = saved


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(case=fia_cases())
def test_online_softmax_over_many_chunks_matches_brute_force(case: dict[str, object]) -> None:
    """The same property through the chunked path the big shapes take (benchmarks, long
    prompts): KV chunks of one block or one position, one query row at a time."""
    with tiny_chunk_budgets() as passes:
        check_against_brute_force(case)
    reqs, _, _, _ = build(case)
    if any(len(r.k) > int(case.get("block_size") or 1) for r in reqs):
        assert passes, "a multi-chunk call did not take the online path"


def check_against_brute_force(case: dict[str, object]) -> None:
    reqs, rule, packed, q_lens = build(case)
    out, lse = call(packed, case, lse=True)
    dtype: torch.dtype = case["dtype"]  # type: ignore[assignment]
    layout = str(case["layout"])
    n, dv = int(case["n"]), int(case["dv"])  # type: ignore[call-overload]
    assert out.dtype == dtype
    expect_shape = {
        "BSH": (len(reqs), max(q_lens), n * dv),
        "BSND": (len(reqs), max(q_lens), n, dv),
        "BNSD": (len(reqs), n, max(q_lens), dv),
        "BNSD_BSND": (len(reqs), max(q_lens), n, dv),
        "TND": (sum(q_lens), n, dv),
    }[layout]
    assert tuple(out.shape) == expect_shape
    want_out, want_lse = brute_force(reqs, rule, float(case["scale"]))  # type: ignore[arg-type]
    out_layout = "BSND" if layout == "BNSD_BSND" else layout
    got_out = unpack_output(out, out_layout, q_lens, n)
    got_lse = unpack_lse(lse, layout, q_lens)
    assert lse.dtype == torch.float32
    for b in range(len(reqs)):
        assert_close(got_out[b][: q_lens[b]], want_out[b], dtype, f"request {b} output")
        assert_close(got_lse[b][: q_lens[b]], want_lse[b], torch.float32, f"request {b} lse")
        if out_layout != "TND" and q_lens[b] < max(q_lens):  # right padding rows are zero
            assert not got_out[b][q_lens[b] :].any()


@SETTINGS
@given(case=fia_cases())
def test_no_lse_requested_gives_one_zero(case: dict[str, object]) -> None:
    _, _, packed, _ = build(case)
    _, lse = call(packed, case, lse=False)
    assert lse.shape == (1,) and lse.dtype == torch.float32 and not lse.any()
