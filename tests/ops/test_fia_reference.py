"""FIA v1/v2 references against a plain per-request, per-head dense attention written here.

The brute force below shares no code with ``ops.fia``: it takes each request's logical
Q/K/V (``[len, heads, dim]``), builds the visibility rule from the documented sparse modes and
computes softmax attention in float64, one (request, head) pair at a time. The test then packs the
same logical tensors into every FIA input form (layouts, dense or paged caches, shuffled block
ids, -1 padding) and compares.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ascend_fia import ops
from sglang_ascend_fia.ops.fia import reference

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
TEMPLATE = ~torch.tril(torch.ones(2048, 2048, dtype=torch.bool))
INT32_MAX = 2147483647


# ---------------------------------------------------------------------------------------------
# The brute force
# ---------------------------------------------------------------------------------------------


@dataclass
class Request:
    q: torch.Tensor  # [q_len, N, Dq]
    k: torch.Tensor  # [kv_len, Nkv, Dq]
    v: torch.Tensor  # [kv_len, Nkv, Dv]
    q_rope: torch.Tensor | None = None  # [q_len, N, Dr]
    k_rope: torch.Tensor | None = None  # [kv_len, Nkv, Dr]
    mask: torch.Tensor | None = None  # [q_len, kv_len] True = masked (explicit masks only)


@dataclass
class Rule:
    mode: str  # none | explicit | left_up | right_down | band
    pre: int = INT32_MAX
    next: int = INT32_MAX


def visible(rule: Rule, req: Request) -> torch.Tensor:
    """[q_len, kv_len] True where row i may attend key j, from the documented mode definitions."""
    q_len, kv_len = req.q.size(0), req.k.size(0)
    i = torch.arange(q_len)[:, None]
    j = torch.arange(kv_len)[None, :]
    if rule.mode == "none":
        return torch.ones(q_len, kv_len, dtype=torch.bool)
    if rule.mode == "explicit":
        assert req.mask is not None
        return ~req.mask
    if rule.mode == "left_up":
        return j <= i
    shift = kv_len - q_len
    if rule.mode == "right_down":
        return j <= i + shift
    assert rule.mode == "band"
    return (j >= i + shift - rule.pre) & (j <= i + shift + rule.next)


def brute_force(
    reqs: list[Request], rule: Rule, scale: float, sink: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per request: output [q_len, N, Dv] and LSE [q_len, N], float64."""
    outs, lses = [], []
    for req in reqs:
        q_len, n = req.q.size(0), req.q.size(1)
        nkv, dv = req.k.size(1), req.v.size(2)
        group = n // nkv
        keep = visible(rule, req)
        out = torch.zeros(q_len, n, dv, dtype=torch.float64)
        lse = torch.full((q_len, n), -math.inf, dtype=torch.float64)
        for h in range(n):
            kv_head = h // group
            scores = req.q[:, h].double() @ req.k[:, kv_head].double().T
            if req.q_rope is not None:
                assert req.k_rope is not None
                scores = scores + req.q_rope[:, h].double() @ req.k_rope[:, kv_head].double().T
            scores = scores * scale
            for i in range(q_len):
                row = scores[i][keep[i]]
                values = req.v[:, kv_head].double()[keep[i]]
                if sink is not None:
                    extra = torch.tensor([float(sink[h])], dtype=torch.float64)
                    total = torch.logsumexp(torch.cat([row, extra]), dim=0)
                elif row.numel() == 0:
                    continue  # nothing visible: output 0, LSE -inf
                else:
                    total = torch.logsumexp(row, dim=0)
                out[i, h] = torch.exp(row - total) @ values
                lse[i, h] = total
        outs.append(out)
        lses.append(lse)
    return outs, lses


# ---------------------------------------------------------------------------------------------
# Packing logical requests into FIA inputs
# ---------------------------------------------------------------------------------------------


@dataclass
class Packed:
    kwargs: dict[str, object] = field(default_factory=dict)
    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None


def pack_query(reqs: list[Request], layout: str, attr: str, gen: torch.Generator) -> torch.Tensor:
    parts = [getattr(r, attr) for r in reqs]
    if layout == "TND":
        return torch.cat(parts).contiguous()
    s = max(p.size(0) for p in parts)
    n, d = parts[0].size(1), parts[0].size(2)
    # Padding rows hold noise: the op must not let them leak anywhere.
    bsnd = torch.randn(len(parts), s, n, d, generator=gen).to(parts[0].dtype)
    for b, p in enumerate(parts):
        bsnd[b, : p.size(0)] = p
    if layout == "BSH":
        return bsnd.reshape(len(parts), s, n * d)
    if layout == "BSND":
        return bsnd
    return bsnd.transpose(1, 2).contiguous()  # BNSD, BNSD_BSND


def pack_dense_kv(
    reqs: list[Request], layout: str, attr: str, extra: int, gen: torch.Generator
) -> torch.Tensor:
    parts = [getattr(r, attr) for r in reqs]
    if layout == "TND":
        return torch.cat(parts).contiguous()
    s = max(p.size(0) for p in parts) + extra
    n, d = parts[0].size(1), parts[0].size(2)
    bsnd = torch.randn(len(parts), s, n, d, generator=gen).to(parts[0].dtype)
    for b, p in enumerate(parts):
        bsnd[b, : p.size(0)] = p
    if layout == "BSH":
        return bsnd.reshape(len(parts), s, n * d)
    if layout == "BSND":
        return bsnd
    return bsnd.transpose(1, 2).contiguous()


def make_block_table(
    kv_lens: list[int], block_size: int, shuffle: bool, spare: int, gen: torch.Generator
) -> tuple[torch.Tensor, list[list[int]], int]:
    needed = [-(-n // block_size) for n in kv_lens]
    num_blocks = sum(needed) + spare
    order = torch.randperm(num_blocks, generator=gen) if shuffle else torch.arange(num_blocks)
    width = max(max(needed), 1) + 1  # one extra column of -1 padding
    table = torch.full((len(kv_lens), width), -1, dtype=torch.int32)
    ids: list[list[int]] = []
    cursor = 0
    for b, count in enumerate(needed):
        mine = order[cursor : cursor + count].tolist()
        cursor += count
        table[b, :count] = torch.tensor(mine, dtype=torch.int32)
        ids.append(mine)
    return table, ids, num_blocks


def pack_paged(
    reqs: list[Request],
    attr: str,
    ids: list[list[int]],
    num_blocks: int,
    block_size: int,
    cache_4d: bool,
    gen: torch.Generator,
) -> torch.Tensor:
    first = getattr(reqs[0], attr)
    nkv, d = first.size(1), first.size(2)
    shape = (num_blocks, nkv, block_size, d) if cache_4d else (num_blocks, block_size, nkv * d)
    cache = torch.randn(*shape, generator=gen).to(first.dtype)  # stale data in unused slots
    for req, blocks in zip(reqs, ids, strict=True):
        rows = getattr(req, attr)
        for j in range(rows.size(0)):
            block, offset = blocks[j // block_size], j % block_size
            if cache_4d:
                cache[block, :, offset] = rows[j]
            else:
                cache[block, offset] = rows[j].reshape(nkv * d)
    return cache


def unpack_output(out: torch.Tensor, layout: str, q_lens: list[int], n: int) -> list[torch.Tensor]:
    """Output in the op's output layout -> per request [q_len, N, Dv]."""
    if layout == "TND":
        starts = [0, *torch.tensor(q_lens).cumsum(0).tolist()]
        return [out[starts[b] : starts[b + 1]] for b in range(len(q_lens))]
    if layout == "BSH":
        out = out.view(out.size(0), out.size(1), n, -1)
    elif layout == "BNSD":
        out = out.transpose(1, 2)
    return [out[b] for b in range(len(q_lens))]


def unpack_lse(lse: torch.Tensor, layout: str, q_lens: list[int]) -> list[torch.Tensor]:
    if layout == "TND":
        starts = [0, *torch.tensor(q_lens).cumsum(0).tolist()]
        return [lse[starts[b] : starts[b + 1], :, 0] for b in range(len(q_lens))]
    return [lse[b, :, :, 0].T for b in range(len(q_lens))]


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    tol = TOL[dtype]
    got64 = got.double()
    both_inf = torch.isinf(got64) & torch.isinf(want) & (got64.sign() == want.sign())
    diff = torch.where(both_inf, torch.zeros_like(got64), (got64 - want).abs())
    limit = tol + tol * want.abs().nan_to_num(posinf=0, neginf=0)
    assert not torch.isnan(diff).any(), f"{what}: nan"
    worst = float((diff - limit).max()) if diff.numel() else -1.0
    assert worst <= 0, f"{what}: max abs err {float(diff.max()):.3g} over tolerance {tol}"


# ---------------------------------------------------------------------------------------------
# The property test over layouts, caches, sparse modes and GQA
# ---------------------------------------------------------------------------------------------

LAYOUTS = ["BSH", "BSND", "BNSD", "BNSD_BSND", "TND"]


@st.composite
def fia_cases(draw: st.DrawFn) -> dict[str, object]:
    layout = draw(st.sampled_from(LAYOUTS))
    paged = draw(st.booleans())
    decode = layout != "BNSD_BSND" and draw(st.booleans())
    cache_4d = paged and layout in ("BNSD", "BNSD_BSND", "TND") and draw(st.booleans())
    batch = draw(st.integers(1, 4))
    # TND without page attention has its own documented limits: N in {8, ..., 128} with
    # Q_N = K_N = V_N, Q_D = K_D = 192, V_D in {128, 192}, sparse 0 (no mask), 3 or 4.
    tnd_dense = layout == "TND" and not paged
    if tnd_dense:
        nkv, group = draw(st.sampled_from([8, 16])), 1
        d, dv = 192, draw(st.sampled_from([128, 192]))
    elif layout == "TND":
        # TND with page attention: only the head dims sglang 0.5.23 runs it at.
        nkv = draw(st.sampled_from([1, 2]))
        group = draw(st.sampled_from([1, 2, 4]))
        d, dv = draw(st.sampled_from([(128, 128), (192, 128)]))
    else:
        nkv = draw(st.sampled_from([1, 2, 4]))
        group = draw(st.sampled_from([1, 2, 4, 8]))
        d = draw(st.sampled_from([16, 32]))
        dv = draw(st.sampled_from([d, 16]))
    block_size = 0
    if paged:
        block_size = draw(st.sampled_from([16, 32, 128])) if decode else 128
    if decode:
        q_lens = [1] * batch
    else:
        q_lens = draw(st.lists(st.integers(1, 12), min_size=batch, max_size=batch))
        q_lens[0] = max(q_lens[0], 2)  # a prompt call: Q_S > 1
    # KV lengths around page boundaries as well as arbitrary ones.
    bs = block_size or 16
    edge = st.sampled_from([1, bs - 1, bs, bs + 1, 2 * bs, 2 * bs + 1])
    prefix = draw(st.lists(st.one_of(st.integers(0, 40), edge), min_size=batch, max_size=batch))
    kv_lens = [p + (q if draw(st.booleans()) else 0) for p, q in zip(prefix, q_lens, strict=True)]
    if layout != "TND" and not paged:
        kv_lens = [max(n, 1) for n in kv_lens]
    if tnd_dense:
        sparse = draw(st.sampled_from(["none", 3, 4]))
        if sparse == 3:  # the doc requires each request's query length <= its KV length
            kv_lens = [max(k, q) for k, q in zip(kv_lens, q_lens, strict=True)]
    else:
        sparse = draw(st.sampled_from(["none", "explicit", "mode1", 2, 3, 4]))
    return {
        "layout": layout,
        "paged": paged,
        "cache_4d": cache_4d,
        "q_lens": q_lens,
        "kv_lens": kv_lens,
        "nkv": nkv,
        "n": nkv * group,
        "d": d,
        "dv": dv,
        "block_size": block_size,
        "sparse": sparse,
        "pre": draw(st.one_of(st.integers(0, 3), st.integers(0, 20))),
        "next": draw(st.one_of(st.integers(0, 3), st.integers(0, 20))),
        "dtype": draw(st.sampled_from([torch.float32, torch.float32, torch.bfloat16])),
        "scale": draw(st.floats(0.05, 0.5)),
        "shuffle": draw(st.booleans()),
        "mask_shape": draw(st.sampled_from(["4d", "3d", "2d"])),
        "seed": draw(st.integers(0, 2**16)),
        "v2": draw(st.booleans()),
    }


def build(case: dict[str, object]) -> tuple[list[Request], Rule, Packed, list[int]]:
    gen = torch.Generator().manual_seed(int(case["seed"]))  # type: ignore[arg-type]
    dtype: torch.dtype = case["dtype"]  # type: ignore[assignment]
    layout: str = case["layout"]  # type: ignore[assignment]
    q_lens: list[int] = case["q_lens"]  # type: ignore[assignment]
    kv_lens: list[int] = case["kv_lens"]  # type: ignore[assignment]
    n, nkv, d, dv = (int(case[k]) for k in ("n", "nkv", "d", "dv"))  # type: ignore[call-overload]
    reqs = [
        Request(
            q=torch.randn(ql, n, d, generator=gen).to(dtype),
            k=torch.randn(kl, nkv, d, generator=gen).to(dtype),
            v=torch.randn(kl, nkv, dv, generator=gen).to(dtype),
        )
        for ql, kl in zip(q_lens, kv_lens, strict=True)
    ]
    q_s = max(q_lens)
    prefill = q_s > 1
    sparse = case["sparse"]
    kw: dict[str, object] = {}
    rule = Rule("none")
    if sparse in (2, 3, 4):
        shape = {"4d": (1, 1, 2048, 2048), "3d": (1, 2048, 2048), "2d": (2048, 2048)}
        kw["atten_mask"] = TEMPLATE.view(shape[case["mask_shape"]])  # type: ignore[index]
        kw["sparse_mode"] = sparse
        if sparse == 4:
            kw["pre_tokens"], kw["next_tokens"] = case["pre"], case["next"]
        if prefill:  # Q_S=1 without rope ignores sparse_mode (doc)
            modes = {2: "left_up", 3: "right_down", 4: "band"}
            rule = Rule(modes[sparse], int(case["pre"]), int(case["next"]))  # type: ignore[call-overload]
    elif sparse in ("explicit", "mode1"):
        shape = str(case["mask_shape"])
        if shape == "2d" and (layout == "TND" or d != dv):
            # (Q_S, KV_S) / (B, KV_S) are documented for non-TND layouts with equal D only.
            shape = "3d" if prefill else "4d"
        per_batch = shape == "4d" or (shape == "2d" and not prefill)
        mask_kv = max(kv_lens) + 1
        if case["paged"]:
            # With page attention the mask spans at least the block table's width (doc).
            bs = int(case["block_size"])  # type: ignore[call-overload]
            mask_kv = max(mask_kv, (max(max(-(-k // bs) for k in kv_lens), 1) + 1) * bs)
        full = torch.rand(len(reqs) if per_batch else 1, q_s, mask_kv, generator=gen)
        full = full < 0.3
        for b, req in enumerate(reqs):
            req.mask = full[b if per_batch else 0, : q_lens[b], : kv_lens[b]]
        if shape == "4d":
            kw["atten_mask"] = full[:, None]  # (B, 1, Q_S, KV_S)
        elif shape == "3d":
            kw["atten_mask"] = full  # (1, Q_S, KV_S)
        elif prefill:
            kw["atten_mask"] = full[0]  # (Q_S, KV_S)
        else:
            kw["atten_mask"] = full[:, 0]  # (B, KV_S) when Q_S = 1
        kw["sparse_mode"] = 1 if sparse == "mode1" else 0
        rule = Rule("explicit")

    packed = Packed(kwargs=kw)
    packed.query = pack_query(reqs, layout, "q", gen)
    if layout == "TND":
        kw["actual_seq_lengths"] = torch.tensor(q_lens).cumsum(0).tolist()
    elif prefill and (len(set(q_lens)) > 1 or int(case["seed"]) % 2):
        kw["actual_seq_lengths"] = list(q_lens)
    if case["paged"]:
        bs = int(case["block_size"])  # type: ignore[call-overload]
        table, ids, num_blocks = make_block_table(
            kv_lens, bs, bool(case["shuffle"]), int(case["seed"]) % 3, gen
        )
        packed.key = pack_paged(reqs, "k", ids, num_blocks, bs, bool(case["cache_4d"]), gen)
        packed.value = pack_paged(reqs, "v", ids, num_blocks, bs, bool(case["cache_4d"]), gen)
        kw.update(block_table=table, block_size=bs, actual_seq_lengths_kv=list(kv_lens))
    else:
        extra = int(case["seed"]) % 3
        packed.key = pack_dense_kv(reqs, layout, "k", extra, gen)
        packed.value = pack_dense_kv(reqs, layout, "v", extra, gen)
        if layout == "TND":
            kw["actual_seq_lengths_kv"] = torch.tensor(kv_lens).cumsum(0).tolist()
        else:
            kw["actual_seq_lengths_kv"] = list(kv_lens)
    return reqs, rule, packed, q_lens


def call(packed: Packed, case: dict[str, object], lse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    kw = dict(packed.kwargs)
    common = {"input_layout": case["layout"], "num_key_value_heads": case["nkv"]}
    if case["v2"]:
        renames = {
            "actual_seq_lengths": "actual_seq_qlen",
            "actual_seq_lengths_kv": "actual_seq_kvlen",
        }
        kw = {renames.get(k, k): v for k, v in kw.items()}
        return ops.fused_infer_attention_score_v2(
            packed.query,
            packed.key,
            packed.value,
            num_query_heads=case["n"],
            softmax_scale=case["scale"],
            return_softmax_lse=lse,
            **common,
            **kw,
        )
    return ops.fused_infer_attention_score(
        packed.query,
        packed.key,
        packed.value,
        num_heads=case["n"],
        scale=case["scale"],
        softmax_lse_flag=lse,
        **common,
        **kw,
    )


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


# ---------------------------------------------------------------------------------------------
# Focused cases: the sglang 0.5.23 call shapes
# ---------------------------------------------------------------------------------------------


def _check(
    reqs: list[Request],
    rule: Rule,
    out_reqs: list[torch.Tensor],
    scale: float,
    dtype: torch.dtype,
    sink: torch.Tensor | None = None,
) -> None:
    want, _ = brute_force(reqs, rule, scale, sink)
    for b, (got, exp) in enumerate(zip(out_reqs, want, strict=True)):
        assert_close(got, exp, dtype, f"request {b}")


@pytest.mark.parametrize("layout", ["BSND", "TND"])
def test_shared_prefix_blocks_beyond_the_pool(layout: str) -> None:
    """sglang's radix cache: every request reads the same two prefix blocks, so the requests'
    blocks sum to 12 in a cache of 6 (the doc's "blocks >= sum" rule is not enforced)."""
    gen = torch.Generator().manual_seed(5)
    n, nkv, d, bs, batch = 4, 2, 128, 128, 4
    prefix_k = torch.randn(2 * bs, nkv, d, generator=gen)
    prefix_v = torch.randn(2 * bs, nkv, d, generator=gen)
    tails = [1 + 37 * b for b in range(batch)]
    q_lens = [1] * batch if layout == "BSND" else [1, 3, 2, 5]
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen),
            torch.cat([prefix_k, torch.randn(t, nkv, d, generator=gen)]),
            torch.cat([prefix_v, torch.randn(t, nkv, d, generator=gen)]),
        )
        for q, t in zip(q_lens, tails, strict=True)
    ]
    ids = [[4, 1, private] for private in (0, 2, 3, 5)]  # the prefix is blocks 4 and 1
    table = torch.tensor(ids, dtype=torch.int32)
    kv_lens = [r.k.size(0) for r in reqs]
    assert sum(-(-k // bs) for k in kv_lens) > 6
    kwargs: dict[str, object] = {}
    if layout == "BSND":
        query = torch.stack([r.q for r in reqs])
    else:
        query = torch.cat([r.q for r in reqs])
        kwargs = {
            "atten_mask": TEMPLATE,
            "actual_seq_lengths": torch.tensor(q_lens).cumsum(0).tolist(),
            "sparse_mode": 3,
        }
    out, _ = ops.fused_infer_attention_score(
        query,
        pack_paged(reqs, "k", ids, 6, bs, False, gen),
        pack_paged(reqs, "v", ids, 6, bs, False, gen),
        block_table=table,
        block_size=bs,
        input_layout=layout,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=nkv,
        scale=d**-0.5,
        **kwargs,  # type: ignore[arg-type]
    )
    got = unpack_output(out, layout, q_lens, n)
    _check(reqs, Rule("right_down"), got, d**-0.5, torch.float32)


def test_tnd_paged_prefill_with_cached_prefix() -> None:
    """0.5.23's one-launch GQA extend: TND query, paged cache, per-request kv, sparse_mode=3."""
    gen = torch.Generator().manual_seed(1)
    n, nkv, d, bs = 8, 2, 128, 128
    q_lens, prefix = [5, 1, 130], [0, 300, 127]
    kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
        )
        for q, k in zip(q_lens, kv_lens, strict=True)
    ]
    table, ids, blocks = make_block_table(kv_lens, bs, True, 2, gen)
    out, _ = ops.fused_infer_attention_score(
        torch.cat([r.q for r in reqs]),
        pack_paged(reqs, "k", ids, blocks, bs, False, gen),
        pack_paged(reqs, "v", ids, blocks, bs, False, gen),
        atten_mask=TEMPLATE,
        block_table=table,
        block_size=bs,
        input_layout="TND",
        actual_seq_lengths=torch.tensor(q_lens).cumsum(0).tolist(),
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=nkv,
        scale=d**-0.5,
        sparse_mode=3,
        next_tokens=0,
    )
    _check(reqs, Rule("right_down"), unpack_output(out, "TND", q_lens, n), d**-0.5, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sparse", [0, 3, 4])
def test_tnd_dense_prefill(dtype: torch.dtype, sparse: int) -> None:
    """TND without page attention at its documented shape: N 8, Q_D = K_D = 192, V_D 128."""
    gen = torch.Generator().manual_seed(12 + sparse)
    n, d, dv = 8, 192, 128
    q_lens, kv_lens = [5, 1, 9], [5, 4, 12]  # sparse 3 needs q_len <= kv_len per request
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen).to(dtype),
            torch.randn(k, n, d, generator=gen).to(dtype),
            torch.randn(k, n, dv, generator=gen).to(dtype),
        )
        for q, k in zip(q_lens, kv_lens, strict=True)
    ]
    extra: dict[str, object] = {}
    rule = Rule("none")
    if sparse:
        extra = {"sparse_mode": sparse, "atten_mask": TEMPLATE, "pre_tokens": 2, "next_tokens": 1}
        rule = Rule("right_down") if sparse == 3 else Rule("band", 2, 1)
    out, lse = ops.fused_infer_attention_score(
        torch.cat([r.q for r in reqs]),
        torch.cat([r.k for r in reqs]),
        torch.cat([r.v for r in reqs]),
        input_layout="TND",
        actual_seq_lengths=torch.tensor(q_lens).cumsum(0).tolist(),
        actual_seq_lengths_kv=torch.tensor(kv_lens).cumsum(0).tolist(),
        num_heads=n,
        scale=d**-0.5,
        softmax_lse_flag=True,
        **extra,
    )
    assert out.shape == (sum(q_lens), n, dv) and out.dtype == dtype
    _check(reqs, rule, unpack_output(out, "TND", q_lens, n), d**-0.5, dtype)
    _, want_lse = brute_force(reqs, rule, d**-0.5)
    for b, got in enumerate(unpack_lse(lse, "TND", q_lens)):
        assert_close(got, want_lse[b], torch.float32, f"request {b} lse")


def test_gqa_uses_contiguous_head_groups() -> None:
    """Head h reads KV head h // (N/Nkv); h % Nkv would fail this check."""
    n, nkv, d = 4, 2, 4
    q = torch.zeros(1, 1, n, d)
    q[..., 0] = 1.0
    k = torch.zeros(1, 2, nkv, d)
    k[0, 0, :, 0] = 5.0  # every query prefers token 0
    v = torch.zeros(1, 2, nkv, d)
    v[0, 0, 0, 0], v[0, 0, 1, 0] = 10.0, 20.0  # token 0 values identify the KV head
    out, _ = ops.fused_infer_attention_score(
        q, k, v, num_heads=n, num_key_value_heads=nkv, input_layout="BSND", scale=10.0
    )
    assert out[0, 0, :, 0].round().tolist() == [10.0, 10.0, 20.0, 20.0]


def test_decode_ignores_sparse_mode_but_prefill_does_not() -> None:
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, 2, 16, generator=gen)
    k = torch.randn(1, 6, 2, 16, generator=gen)
    v = torch.randn(1, 6, 2, 16, generator=gen)
    plain, _ = ops.fused_infer_attention_score(q, k, v, num_heads=2, input_layout="BSND")
    band, _ = ops.fused_infer_attention_score(
        q,
        k,
        v,
        num_heads=2,
        input_layout="BSND",
        sparse_mode=4,
        atten_mask=TEMPLATE,
        pre_tokens=1,
        next_tokens=0,
    )
    torch.testing.assert_close(plain, band)
    q2 = torch.randn(1, 2, 2, 16, generator=gen)
    plain2, _ = ops.fused_infer_attention_score(q2, k, v, num_heads=2, input_layout="BSND")
    band2, _ = ops.fused_infer_attention_score(
        q2,
        k,
        v,
        num_heads=2,
        input_layout="BSND",
        sparse_mode=4,
        atten_mask=TEMPLATE,
        pre_tokens=1,
        next_tokens=0,
    )
    assert not torch.allclose(plain2, band2)


def test_real_qwen_decode_shape_bf16() -> None:
    """Qwen2.5-7B TP2 shapes: 14 q heads, 2 kv heads, head_dim 128, page 128, bf16 cache."""
    gen = torch.Generator().manual_seed(4)
    n, nkv, d, bs = 14, 2, 128, 128
    kv_lens = [1, 129, 300, 256]
    reqs = [
        Request(
            torch.randn(1, n, d, generator=gen).bfloat16(),
            torch.randn(k, nkv, d, generator=gen).bfloat16(),
            torch.randn(k, nkv, d, generator=gen).bfloat16(),
        )
        for k in kv_lens
    ]
    table, ids, blocks = make_block_table(kv_lens, bs, True, 1, gen)
    out, _ = ops.fused_infer_attention_score(
        torch.stack([r.q for r in reqs]).view(4, 1, n * d),
        pack_paged(reqs, "k", ids, blocks, bs, False, gen),
        pack_paged(reqs, "v", ids, blocks, bs, False, gen),
        block_table=table,
        block_size=bs,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=nkv,
        scale=d**-0.5,
        input_layout="BSH",
    )
    _check(reqs, Rule("none"), unpack_output(out, "BSH", [1] * 4, n), d**-0.5, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# MLA: query_rope / key_rope
# ---------------------------------------------------------------------------------------------


def _mla_requests(
    q_lens: list[int],
    kv_lens: list[int],
    n: int,
    latent: int,
    rope: int,
    dtype: torch.dtype,
    gen: torch.Generator,
) -> list[Request]:
    reqs = []
    for q_len, kv_len in zip(q_lens, kv_lens, strict=True):
        latent_kv = torch.randn(kv_len, 1, latent, generator=gen).to(dtype)
        reqs.append(
            Request(
                q=torch.randn(q_len, n, latent, generator=gen).to(dtype),
                k=latent_kv,
                v=latent_kv,  # key = value = the compressed latent
                q_rope=torch.randn(q_len, n, rope, generator=gen).to(dtype),
                k_rope=torch.randn(kv_len, 1, rope, generator=gen).to(dtype),
            )
        )
    return reqs


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(
    batch=st.integers(1, 3),
    n=st.sampled_from([1, 4, 8, 16]),  # v1's "N 32/64/128" is not enforced (sglang uses 8-16)
    latent=st.just(512),  # the doc fixes MLA at latent D 512, rope D 64, one key head
    rope=st.just(64),
    block_size=st.sampled_from([16, 128]),
    q_s=st.sampled_from([1, 1, 2, 4]),
    layout=st.sampled_from(["BSND", "BNSD", "BSH"]),
    cache_4d=st.booleans(),
    kv=st.lists(st.sampled_from([1, 15, 16, 17, 127, 128, 129, 200]), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_mla_paged_decode_and_mtp(
    batch: int,
    n: int,
    latent: int,
    rope: int,
    block_size: int,
    q_s: int,
    layout: str,
    cache_4d: bool,
    kv: list[int],
    seed: int,
) -> None:
    """MLA decode (sparse 0) and multi-token verify (sparse 3) over a shared latent cache."""
    gen = torch.Generator().manual_seed(seed)
    cache_4d = cache_4d and layout == "BNSD"
    kv_lens = [max(k, q_s) for k in kv[:batch]]
    reqs = _mla_requests([q_s] * batch, kv_lens, n, latent, rope, torch.float32, gen)
    table, ids, blocks = make_block_table(kv_lens, block_size, True, 1, gen)
    latent_cache = pack_paged(reqs, "k", ids, blocks, block_size, cache_4d, gen)
    rope_cache = pack_paged(reqs, "k_rope", ids, blocks, block_size, cache_4d, gen)
    extra: dict[str, object] = {}
    if q_s > 1:
        extra = {"sparse_mode": 3, "atten_mask": TEMPLATE}
    out, lse = ops.fused_infer_attention_score(
        pack_query(reqs, layout, "q", gen),
        latent_cache,
        latent_cache,
        query_rope=pack_query(reqs, layout, "q_rope", gen),
        key_rope=rope_cache,
        block_table=table,
        block_size=block_size,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=1,
        scale=0.1,
        input_layout=layout,
        softmax_lse_flag=True,
        **extra,
    )
    rule = Rule("right_down") if q_s > 1 else Rule("none")
    _check(reqs, rule, unpack_output(out, layout, [q_s] * batch, n), 0.1, torch.float32)
    _, want_lse = brute_force(reqs, rule, 0.1)
    for b, got in enumerate(unpack_lse(lse, layout, [q_s] * batch)):
        assert_close(got, want_lse[b], torch.float32, "lse")


def test_mla_deepseek_v3_shape_decode() -> None:
    """The real DeepSeek-V3 MLA decode shape: kv_lora 512 + rope 64, 16 heads/rank, page 128."""
    gen = torch.Generator().manual_seed(7)
    n, latent, rope, bs = 16, 512, 64, 128
    kv_lens = [3, 200]
    reqs = _mla_requests([1, 1], kv_lens, n, latent, rope, torch.bfloat16, gen)
    table, ids, blocks = make_block_table(kv_lens, bs, True, 1, gen)
    latent_cache = pack_paged(reqs, "k", ids, blocks, bs, False, gen)
    out, _ = ops.fused_infer_attention_score(
        pack_query(reqs, "BSND", "q", gen),
        latent_cache,
        latent_cache,
        query_rope=pack_query(reqs, "BSND", "q_rope", gen),
        key_rope=pack_paged(reqs, "k_rope", ids, blocks, bs, False, gen),
        block_table=table,
        block_size=bs,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=1,
        scale=(128 + 64) ** -0.5,
        input_layout="BSND",
    )
    assert out.shape == (2, 1, n, latent)
    _check(reqs, Rule("none"), unpack_output(out, "BSND", [1, 1], n), (192) ** -0.5, torch.bfloat16)


def test_mla_tnd_extend_with_rope() -> None:
    """0.5.23 MLA extend: TND, dense q_nope/k_nope/v plus rope, cumulative lengths, sparse 3.

    The doc's TND-with-rope shape: Q_D = K_D = V_D = 128, rope D 64.
    """
    gen = torch.Generator().manual_seed(8)
    n, nope, rope, dv = 8, 128, 64, 128
    q_lens = [3, 7, 1]
    reqs = [
        Request(
            q=torch.randn(s, n, nope, generator=gen),
            k=torch.randn(s, n, nope, generator=gen),
            v=torch.randn(s, n, dv, generator=gen),
            q_rope=torch.randn(s, n, rope, generator=gen),
            k_rope=torch.randn(s, n, rope, generator=gen),
        )
        for s in q_lens
    ]
    cum = torch.tensor(q_lens).cumsum(0).tolist()
    out, lse = ops.fused_infer_attention_score_v2(
        torch.cat([r.q for r in reqs]),
        torch.cat([r.k for r in reqs]),
        torch.cat([r.v for r in reqs]),
        query_rope=torch.cat([r.q_rope for r in reqs]),  # type: ignore[misc]
        key_rope=torch.cat([r.k_rope for r in reqs]),  # type: ignore[misc]
        num_query_heads=n,
        input_layout="TND",
        actual_seq_qlen=cum,
        actual_seq_kvlen=cum,
        atten_mask=TEMPLATE,
        sparse_mode=3,
        next_tokens=0,
        softmax_scale=0.2,
        return_softmax_lse=True,
    )
    assert lse.shape == (sum(q_lens), n, 1)
    _check(reqs, Rule("right_down"), unpack_output(out, "TND", q_lens, n), 0.2, torch.float32)


# ---------------------------------------------------------------------------------------------
# v2 specifics
# ---------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(case=fia_cases())
def test_v2_equals_v1(case: dict[str, object]) -> None:
    _, _, packed, _ = build(case)
    v1 = call(packed, {**case, "v2": False}, lse=True)
    v2 = call(packed, {**case, "v2": True}, lse=True)
    torch.testing.assert_close(v1[0], v2[0], rtol=0, atol=0)
    torch.testing.assert_close(v1[1], v2[1], rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["TND", "BSND"])
def test_v2_learnable_sink(layout: str) -> None:
    gen = torch.Generator().manual_seed(11)
    n, nkv, d, bs = 4, 2, 128, 128
    q_lens = [3, 1] if layout == "TND" else [1, 1]
    kv_lens = [0, 140]
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
        )
        for q, k in zip(q_lens, kv_lens, strict=True)
    ]
    sink = torch.randn(n, generator=gen) * 2
    table, ids, blocks = make_block_table(kv_lens, bs, True, 0, gen)
    qlen_arg = torch.tensor(q_lens).cumsum(0).tolist() if layout == "TND" else [1, 1]
    out, lse = ops.fused_infer_attention_score_v2(
        pack_query(reqs, layout, "q", gen),
        pack_paged(reqs, "k", ids, blocks, bs, False, gen),
        pack_paged(reqs, "v", ids, blocks, bs, False, gen),
        block_table=table,
        block_size=bs,
        actual_seq_qlen=qlen_arg,
        actual_seq_kvlen=kv_lens,
        num_query_heads=n,
        num_key_value_heads=nkv,
        input_layout=layout,
        softmax_scale=0.3,
        learnable_sink=sink,
        return_softmax_lse=True,
    )
    _check(reqs, Rule("none"), unpack_output(out, layout, q_lens, n), 0.3, torch.float32, sink)
    _, want_lse = brute_force(reqs, Rule("none"), 0.3, sink)
    for b, got in enumerate(unpack_lse(lse, layout, q_lens)):
        assert_close(got[: q_lens[b]], want_lse[b], torch.float32, "lse with sink")


def test_empty_query_returns_empty() -> None:
    q = torch.zeros(0, 8, 192)
    k = torch.zeros(0, 8, 192)
    v = torch.zeros(0, 8, 128)
    out, lse = ops.fused_infer_attention_score(
        q,
        k,
        v,
        num_heads=8,
        input_layout="TND",
        actual_seq_lengths=[0],
        actual_seq_lengths_kv=[0],
    )
    assert out.shape == (0, 8, 128) and lse.shape == (1,)
