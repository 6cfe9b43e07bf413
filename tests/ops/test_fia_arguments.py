"""FIA argument-form and length rules with their messages: argument types and signs, and the
``actual_seq_lengths``/``actual_seq_lengths_kv`` forms and values.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import paged_decode, run, tnd_prefill

from sglang_ascend_fia import ops

# Lengths.
CASES: list[tuple[str, dict[str, object], str]] = [
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


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"
