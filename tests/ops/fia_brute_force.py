"""The FIA reference tests' brute force and input packing (``test_fia_reference_*.py``).

The brute force shares no code with ``ops.fia``: it takes each request's logical Q/K/V
(``[len, heads, dim]``), builds the visibility rule from the documented sparse modes and computes
softmax attention in float64, one (request, head) pair at a time. The packing helpers turn the
same logical tensors into every FIA input form (layouts, dense or paged caches, shuffled block
ids, -1 padding); ``fia_cases`` draws such cases for the property tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

from sglang_ascend_fia import ops

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
# Drawn cases for the property tests, and the call that runs one
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
