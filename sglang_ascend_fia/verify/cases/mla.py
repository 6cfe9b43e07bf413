"""``verify-ops`` cases for FIA with ``query_rope``/``key_rope`` (MLA), v1 and v2.

Protocol and helpers: :mod:`.common`. The documented MLA rules these
cases keep to (torch_npu 2.14 doc, "query_rope和key_rope参数约束"):

- v1, and v2 with query D 512: latent D 512, rope D 64, key N 1, page attention with block size
  16 or 128; Q_S 1-16; Q_S=1 takes sparse 0 without a mask, Q_S>1 sparse 3 with the template.
  v1 lists query N 32/64/128 (v2: powers of two up to 128); sglang pads its heads to a power of
  two, so the v1 cases use 32.
- v1 sparse 4 (band) at either Q_S: query N 128 with key N 1, BSND, block size 64 or 128, each
  query S at most its key S. The general "num_heads/num_key_value_heads <= 64" and prompt
  "N*D < 65535" rules would forbid it; the validator exempts MLA from both (its MLA section is
  the specific rule).
- v2 with query D 128 (sglang's MLA prefill, ``ascend_backend.py`` 2192/2234): TND without
  paging, Q_D=K_D=V_D=128, bf16, sparse 0 without a mask or 3 with one (each request's query
  shorter than its keys). v1 documents no such call, so only v2 makes it here.

Shapes are tiny (D 512 makes every row costly on the CPU reference) but cover BSH, BSND and BNSD,
both paged cache layouts, fp16 and bf16, LSE on and off.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import (
    BF16,
    FP16,
    TEMPLATE,
    FiaOut,
    PagedKV,
    cpu,
    cumsum,
    fia_paged,
    fia_v2,
    fia_v2_paged,
    gen,
    paged_kv,
)

LATENT, ROPE = 512, 64
SCALE = 192**-0.5  # DeepSeek: 1/sqrt(qk_nope 128 + rope 64)


def _latent_cache(
    kv_lens: list[int], block: int, g: torch.Generator, dtype: torch.dtype, *, nd4: bool = False
) -> tuple[PagedKV, torch.Tensor]:
    """(latent cache as key and value, as sglang passes it; rope cache in the same layout)."""
    kv = paged_kv(kv_lens, 1, LATENT, block, g, dtype=dtype, nd4=nd4, value_is_key=True)
    rope_shape = (*kv.key.shape[:-1], ROPE)
    return kv, torch.randn(rope_shape, generator=g).to(dtype)


def _query(
    layout: str, batch: int, s: int, n: int, g: torch.Generator, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(query D 512, query rope D 64) in ``layout``, drawn in that order."""
    if layout == "BSH":
        shapes: list[tuple[int, ...]] = [(batch, s, n * d) for d in (LATENT, ROPE)]
    else:
        lead = (batch, s, n) if layout == "BSND" else (batch, n, s)
        shapes = [(*lead, d) for d in (LATENT, ROPE)]
    q, q_rope = (torch.randn(shape, generator=g).to(dtype) for shape in shapes)
    return q, q_rope


# ---- v1 --------------------------------------------------------------------------------------


def _fia_mla(
    device: str,
    kv: PagedKV,
    rope: torch.Tensor,
    layout: str,
    *,
    s: int,
    n: int,
    g: torch.Generator,
    **extra: object,
) -> FiaOut:
    """FIA v1 MLA on ``kv``: draws the query (Q_S ``s``, ``n`` heads, the cache's batch and dtype)
    and passes the latent/rope split with one key head and DeepSeek's scale."""
    q, q_rope = _query(layout, len(kv.kv_lens), s, n, g, kv.key.dtype)
    return fia_paged(
        device, q, kv, layout, n, scale=SCALE, query_rope=q_rope, key_rope=rope, **extra
    )


def fia_mla_paged_decode() -> Case:
    def run(device: str) -> Outputs:
        g = gen(301)
        kv, rope = _latent_cache([1, 129, 700], 128, g, BF16)
        return cpu(
            *_fia_mla(
                device, kv, rope, "BSND", s=1, n=32, g=g, sparse_mode=0, softmax_lse_flag=True
            )
        )

    return "FIA MLA BSND paged decode, latent 512 + rope 64, 32 heads, + LSE bf16", run, BF16


def fia_mla_paged_mtp() -> Case:
    def run(device: str) -> Outputs:
        g = gen(302)
        kv, rope = _latent_cache([40, 300], 128, g, BF16)
        out, _ = _fia_mla(
            device, kv, rope, "BSND", s=2, n=32, g=g, sparse_mode=3, atten_mask=TEMPLATE
        )
        return cpu(out)

    return "FIA MLA BSND paged multi-token verify (Q_S 2, sparse 3) bf16", run, BF16


def fia_mla_bnsd_decode_nd4() -> Case:
    def run(device: str) -> Outputs:
        g = gen(303)
        kv, rope = _latent_cache([1, 40, 17], 16, g, FP16, nd4=True)
        out, _ = _fia_mla(device, kv, rope, "BNSD", s=1, n=32, g=g)
        return cpu(out)

    return "FIA MLA BNSD paged decode, (blocks, 1, 16, 512) cache fp16", run, FP16


def fia_mla_bsh_mtp() -> Case:
    def run(device: str) -> Outputs:
        g = gen(304)
        kv, rope = _latent_cache([3, 50], 16, g, BF16)
        return cpu(
            *_fia_mla(
                device,
                kv,
                rope,
                "BSH",
                s=3,
                n=32,
                g=g,
                sparse_mode=3,
                atten_mask=TEMPLATE,
                softmax_lse_flag=True,
            )
        )

    return "FIA MLA BSH paged verify (Q_S 3, sparse 3), page 16, + LSE bf16", run, BF16


def fia_mla_band() -> Case:
    def run(device: str) -> Outputs:
        g = gen(305)
        # doc, MLA sparse 4: query N 128, BSND, block 64/128
        kv, rope = _latent_cache([300, 5], 64, g, BF16)
        outs = []
        for s in (1, 4):  # both branches take sparse 4; each query S <= its key S (doc)
            out, _ = _fia_mla(
                device,
                kv,
                rope,
                "BSND",
                s=s,
                n=128,
                g=g,
                sparse_mode=4,
                atten_mask=TEMPLATE,
                pre_tokens=100,
                next_tokens=0,
            )
            outs.append(out)
        return cpu(*outs)

    return (
        "FIA MLA BSND paged band (sparse 4, pre 100), 128 heads : 1, page 64, Q_S 1 and 4 bf16",
        run,
        BF16,
    )


# ---- v2 --------------------------------------------------------------------------------------


def fia_v2_mla_bnsd_verify() -> Case:
    def run(device: str) -> Outputs:
        g = gen(306)
        n, s = 16, 2
        kv, rope = _latent_cache([130, 2, 40], 128, g, FP16)
        q, q_rope = _query("BNSD", 3, s, n, g, FP16)
        out, _ = fia_v2_paged(
            device,
            q,
            kv,
            "BNSD",
            n,
            scale=SCALE,
            query_rope=q_rope,
            key_rope=rope,
            sparse_mode=3,
            atten_mask=TEMPLATE,
            actual_seq_qlen=[s] * 3,
            next_tokens=0,
        )
        return cpu(out)

    return "FIA v2 MLA BNSD paged verify (Q_S 2, sparse 3), 16 heads fp16", run, FP16


def _fia_v2_mla_tnd(
    device: str,
    q: tuple[torch.Tensor, torch.Tensor],
    k: tuple[torch.Tensor, torch.Tensor],
    v: torch.Tensor,
    q_lens: list[int],
    kv_lens: list[int],
    **extra: object,
) -> FiaOut:
    """FIA v2 MLA prefill as sglang calls it: TND, (nope D 128, rope D 64) query and key, MHA,
    cumulative lengths, with the LSE."""
    n = q[0].size(1)
    return fia_v2(
        device,
        q[0],
        k[0],
        v,
        query_rope=q[1],
        key_rope=k[1],
        num_query_heads=n,
        num_key_value_heads=n,
        input_layout="TND",
        softmax_scale=SCALE,
        actual_seq_qlen=cumsum(q_lens),
        actual_seq_kvlen=cumsum(kv_lens),
        return_softmax_lse=True,
        **extra,
    )


def fia_v2_mla_tnd_extend() -> Case:
    def run(device: str) -> Outputs:
        g = gen(307)
        q_lens, kv_lens, n = [6, 50], [9, 64], 16
        q = torch.randn(sum(q_lens), n, 128, generator=g).to(BF16)
        q_rope = torch.randn(sum(q_lens), n, ROPE, generator=g).to(BF16)
        k, v = (torch.randn(sum(kv_lens), n, 128, generator=g).to(BF16) for _ in range(2))
        k_rope = torch.randn(sum(kv_lens), n, ROPE, generator=g).to(BF16)
        return cpu(
            *_fia_v2_mla_tnd(
                device,
                (q, q_rope),
                (k, k_rope),
                v,
                q_lens,
                kv_lens,
                atten_mask=TEMPLATE,
                sparse_mode=3,
                next_tokens=0,
            )
        )

    return "FIA v2 MLA TND extend, nope 128 + rope 64, sparse 3, + LSE bf16", run, BF16


def fia_v2_mla_prefix_lse() -> Case:
    def run(device: str) -> Outputs:
        g = gen(308)
        q_lens, prefix, n = [4, 9], [130, 7], 16
        q = torch.randn(sum(q_lens), n, 128, generator=g).to(BF16)
        q_rope = torch.randn(sum(q_lens), n, ROPE, generator=g).to(BF16)
        k = torch.randn(sum(prefix), n, 128, generator=g).to(BF16)
        k_rope = torch.randn(sum(prefix), n, ROPE, generator=g).to(BF16)
        v = torch.randn(sum(prefix), n, 128, generator=g).to(BF16)
        return cpu(
            *_fia_v2_mla_tnd(device, (q, q_rope), (k, k_rope), v, q_lens, prefix, sparse_mode=0)
        )

    return "FIA v2 MLA prefix pass (TND, sparse 0, cumulative kv) + LSE bf16", run, BF16


CASES: list[CaseFactory] = [
    fia_mla_paged_decode,
    fia_mla_paged_mtp,
    fia_mla_bnsd_decode_nd4,
    fia_mla_bsh_mtp,
    fia_mla_band,
    fia_v2_mla_bnsd_verify,
    fia_v2_mla_tnd_extend,
    fia_v2_mla_prefix_lse,
]
