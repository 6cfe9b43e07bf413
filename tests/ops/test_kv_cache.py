"""KV-cache writes (``scatter_nd_update_``, ``scatter_pa_kv_cache``) against plain loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ascend_fia import ops

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def _random(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) < 0.5
    if not dtype.is_floating_point:
        return torch.randint(-100, 100, shape, generator=gen).to(dtype)
    return torch.randn(shape, generator=gen).to(dtype)


# ---------------------------------------------------------------------------------------------
# scatter_nd_update_
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    rows=st.integers(1, 40),
    heads=st.integers(1, 4),
    dim=st.sampled_from([1, 8, 64]),
    count=st.integers(0, 40),
    dtype=st.sampled_from(
        [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.int64, torch.bool]
    ),
    index_dtype=st.sampled_from([torch.int32, torch.int64]),
    seed=st.integers(0, 1000),
)
def test_scatter_nd_update_rows(
    rows: int,
    heads: int,
    dim: int,
    count: int,
    dtype: torch.dtype,
    index_dtype: torch.dtype,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    count = min(count, rows)
    target = _random((rows, heads, dim), dtype, gen)
    expected = target.clone()
    slots = torch.randperm(rows, generator=gen)[:count]
    updates = _random((count, heads, dim), dtype, gen)
    for n in range(count):  # the doc's definition, one row at a time
        expected[int(slots[n])] = updates[n]
    result = ops.scatter_nd_update_(target, slots.view(-1, 1).to(index_dtype), updates)
    assert result is target
    assert torch.equal(target, expected)


def test_scatter_nd_update_doc_example_depth_two() -> None:
    """Doc: input (4, 5, 6), indices (3, 2) -> updates (3, 6)."""
    target = torch.zeros(4, 5, 6)
    indices = torch.tensor([[0, 1], [3, 4], [2, 0]])
    updates = torch.arange(18.0).view(3, 6)
    ops.scatter_nd_update_(target, indices, updates)
    assert torch.equal(target[0, 1], updates[0])
    assert torch.equal(target[3, 4], updates[1])
    assert torch.equal(target[2, 0], updates[2])
    assert int((target != 0).sum()) == 17  # updates[0][0] is 0


def test_scatter_nd_update_takes_the_schema_keyword_self() -> None:
    """The schema names the target ``self``: a keyword call works as it would on an NPU."""
    target = torch.zeros(4, 2)
    out = ops.scatter_nd_update_(self=target, indices=torch.tensor([[2]]), updates=torch.ones(1, 2))
    assert out is target and target[2].eq(1).all() and int(target.sum()) == 2


def test_scatter_nd_update_writes_through_a_layer_view() -> None:
    """sglang scatters into ``k_buffer[layer].view(-1, H, D)``: the pool itself must change."""
    pool = torch.zeros(2, 16, 2, 4)  # [layers, slots, H, D]
    layer_view = pool[1].view(-1, 2, 4)
    ops.scatter_nd_update_(layer_view, torch.tensor([[3], [9]]), torch.ones(2, 2, 4))
    assert pool[1, 3].eq(1).all() and pool[1, 9].eq(1).all()
    assert int(pool.sum()) == 16 and not pool[0].any()


@pytest.mark.parametrize(
    ("target", "indices", "updates", "message"),
    [
        (
            torch.zeros(4, 2),
            torch.tensor([[4]]),
            torch.zeros(1, 2),
            r"indices=\[4\] .*out of bounds",
        ),
        (
            torch.zeros(4, 2),
            torch.tensor([[-1]]),
            torch.zeros(1, 2),
            r"indices=\[-1\] .*out of bounds",
        ),
        (
            torch.zeros(4, 2, dtype=torch.int32),
            torch.tensor([[0]]),
            torch.zeros(1, 2, dtype=torch.int32),
            r"self=torch.int32 .*dtype must be one of",
        ),
        (
            torch.zeros(4, 2),
            torch.tensor([[0]]),
            torch.zeros(1, 2).half(),
            r"updates=torch.float16 .*must equal self's torch.float32",
        ),
        (torch.zeros(4, 2), torch.tensor([0]), torch.zeros(1, 2), r"indices=\(1,\) .*at least 2-D"),
        (
            torch.zeros(4, 2),
            torch.tensor([[0]]).float(),
            torch.zeros(1, 2),
            r"indices=torch.float32 .*int32 or int64",
        ),
        (
            torch.zeros(4, 2),
            torch.tensor([[0]]),
            torch.zeros(1, 3),
            r"updates=\(1, 3\) .*indices.shape\[:-1\] \+ self.shape\[1:\] = \(1, 2\)",
        ),
        (
            torch.tensor(1.0),
            torch.tensor([[0]]),
            torch.zeros(1),
            r"self=\(\) .*must have 1 to 8 dimensions",
        ),
        (
            torch.zeros((1,) * 9),
            torch.tensor([[0]]),
            torch.zeros((1,) * 9),
            r"self=\(1, 1, 1, 1, 1, 1, 1, 1, 1\) .*must have 1 to 8 dimensions",
        ),
        (
            torch.zeros(4, 2),
            torch.tensor([[0, 0, 0]]),
            torch.zeros(1),
            r"indices=\(1, 3\) .*last dim <= self's rank 2",
        ),
    ],
)
def test_scatter_nd_update_rejects(
    target: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ops.scatter_nd_update_(target, indices, updates)


# ---------------------------------------------------------------------------------------------
# scatter_pa_kv_cache
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(
    blocks=st.integers(1, 6),
    block_size=st.sampled_from([16, 128]),
    heads=st.integers(1, 4),
    k_dim=st.sampled_from([16, 32]),
    v_dim=st.sampled_from([16, 48]),
    tokens=st.integers(0, 30),
    nz=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int8]),
    seed=st.integers(0, 1000),
)
def test_scatter_pa_kv_cache(
    blocks: int,
    block_size: int,
    heads: int,
    k_dim: int,
    v_dim: int,
    tokens: int,
    nz: bool,
    dtype: torch.dtype,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    tokens = min(tokens, blocks * block_size)
    slots = torch.randperm(blocks * block_size, generator=gen)[:tokens].int()
    key = _random((tokens, heads, k_dim), dtype, gen)
    value = _random((tokens, heads, v_dim), dtype, gen)
    last = 16
    if nz:
        k_cache = _random((blocks, heads * k_dim // last, block_size, last), dtype, gen)
        v_cache = _random((blocks, heads * v_dim // last, block_size, last), dtype, gen)
    else:
        k_cache = _random((blocks, block_size, heads, k_dim), dtype, gen)
        v_cache = _random((blocks, block_size, heads, v_dim), dtype, gen)
    k_want, v_want = k_cache.clone(), v_cache.clone()
    for t in range(tokens):
        block, offset = int(slots[t]) // block_size, int(slots[t]) % block_size
        for src, want in ((key, k_want), (value, v_want)):
            if nz:  # the token's H*D row, in [H*D/16, 16] tiles along dim 1
                flat = src[t].reshape(-1)
                for tile in range(want.size(1)):
                    want[block, tile, offset] = flat[tile * last : (tile + 1) * last]
            else:
                want[block, offset] = src[t]
    ops.scatter_pa_kv_cache(
        key, value, k_cache, v_cache, slots, cache_mode="PA_NZ" if nz else "Norm"
    )
    assert torch.equal(k_cache, k_want) and torch.equal(v_cache, v_want)


def test_scatter_pa_kv_cache_sglang_call_writes_the_pool() -> None:
    """memory_pool_npu.py:317-329: per-layer views of the pool, cache_mode='Norm'."""
    page, heads, dim = 128, 2, 8
    k_pool = torch.zeros(2, 3 * page, 1, heads, dim)  # [layers, (pages+1)*page, 1, H, D]
    v_pool = torch.zeros(2, 3 * page, 1, heads, dim)
    loc = torch.tensor([5, 130, 257])
    k = torch.randn(3, heads * dim)
    v = torch.randn(3, heads * dim)
    ops.scatter_pa_kv_cache(
        k.view(3, heads, dim),
        v.view(3, heads, dim),
        k_pool[1].view(-1, page, heads, dim),
        v_pool[1].view(-1, page, heads, dim),
        loc.to(torch.int32),
        cache_mode="Norm",
    )
    assert torch.equal(k_pool[1, loc, 0].reshape(3, -1), k)
    assert torch.equal(v_pool[1, loc, 0].reshape(3, -1), v)
    assert not k_pool[0].any()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"slot_mapping": torch.tensor([256], dtype=torch.int32)},
            r"slot_mapping=\[256\] .*slots must be in \[0, 256\)",
        ),
        (
            {"seq_lens": torch.tensor([1])},
            r"seq_lens=Tensor\(shape=\(1,\).* is not implemented by the reference .*scenario 3",
        ),
        ({"cache_mode": "NZ"}, r"cache_mode='NZ' .*None, 'Norm' or 'PA_NZ'"),
        ({"value": torch.zeros(1, 2, 8).half()}, r"value=torch.float16 .*must equal key's"),
        ({"key_cache": torch.zeros(2, 128, 2, 16)}, r"key_cache=\(2, 128, 2, 16\) .*'Norm' needs"),
        ({"slot_mapping": torch.tensor([[0]])}, r"slot_mapping=.*1-D int32/int64"),
        ({"key_cache": torch.zeros(2, 2, 128, 8).transpose(1, 2)}, r"key_cache=.*contiguous"),
        (
            {
                "key": torch.zeros(1, 2, 8, dtype=torch.int64),
                "value": torch.zeros(1, 2, 8, dtype=torch.int64),
            },
            r"key=torch.int64 .*dtype must be one of \(torch.float16, torch.float32",
        ),
        (
            {"key": torch.zeros(1, 16), "value": torch.zeros(1, 16)},
            r"key/value=\(\(1, 16\), \(1, 16\)\) .*must be 3-D \[tokens, heads, head_size\]",
        ),
        (
            {"value": torch.zeros(1, 3, 8)},
            r"key/value=\(\(1, 2, 8\), \(1, 3, 8\)\) .*share \[tokens, heads\] with one slot "
            r"per token \(1\)",
        ),
        (
            {"slot_mapping": torch.tensor([0, 1], dtype=torch.int32)},
            r"key/value=.*one slot per token \(2\)",
        ),
        (
            {"key_cache": torch.zeros(256, 2, 8)},
            r"key_cache/value_cache=\(\(256, 2, 8\), \(2, 128, 2, 8\)\) .*must be 4-D",
        ),
        (
            {"value_cache": torch.zeros(3, 128, 2, 8)},
            r"value_cache=\(3, 128, 2, 8\) .*must have key_cache's block count",
        ),
        (
            {"cache_mode": "PA_NZ"},
            r"key_cache=\(2, 128, 2, 8\) .*PA_NZ needs \[blocks, heads\*size//last, block_size, "
            r"last\] for heads=2, size=8",
        ),
        (
            {"value_cache": torch.zeros(2, 64, 2, 8)},
            r"value_cache=\(2, 64, 2, 8\) .*must have key_cache's block size",
        ),
    ],
)
def test_scatter_pa_kv_cache_rejects(change: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "key": torch.zeros(1, 2, 8),
        "value": torch.zeros(1, 2, 8),
        "key_cache": torch.zeros(2, 128, 2, 8),
        "value_cache": torch.zeros(2, 128, 2, 8),
        "slot_mapping": torch.tensor([0], dtype=torch.int32),
        "cache_mode": "Norm",
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        ops.scatter_pa_kv_cache(
            args.pop("key"),
            args.pop("value"),
            args.pop("key_cache"),
            args.pop("value_cache"),
            args.pop("slot_mapping"),
            **args,
        )
