"""``verify-ops`` cases for ``fused_infer_attention_score_v2`` without rope.

Protocol and helpers: :mod:`.common`; v2 MLA cases live in
:mod:`.mla`. v2 shares v1's kernel, so these
cases aim at what only v2 has: each renamed argument (``num_query_heads``, ``softmax_scale``,
``actual_seq_qlen`` cumulative and per request, ``actual_seq_kvlen``, ``return_softmax_lse``) and
``learnable_sink``, in fp16 and bf16, decode and prompt, both paged cache layouts. They are the
calls sglang 0.5.23 makes (``ascend_backend.py`` 1747, 1940, 2559, 3192).

``learnable_sink`` is bf16, shape ``(Q_N,)``; the 2.14 doc limits it to TND with value D <= 128,
but sglang 0.5.23 also passes it to BSND decode (3192), so one case makes that call: a failure
there settles on the device whether the kernel accepts it.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import (
    BF16,
    FP16,
    TEMPLATE,
    cpu,
    cumsum,
    fia_v2_paged,
    gen,
    paged_kv,
)


def fia_v2_tnd_paged_band() -> Case:
    def run(device: str) -> Outputs:
        g = gen(201)
        q_lens, prefix, n, nkv, d = [40, 3], [100, 500], 8, 1, 128
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        kv = paged_kv(kv_lens, nkv, d, 128, g)
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        out, _ = fia_v2_paged(
            device,
            q,
            kv,
            "TND",
            n,
            atten_mask=TEMPLATE,
            actual_seq_qlen=cumsum(q_lens),
            sparse_mode=4,
            pre_tokens=64,
            next_tokens=0,
        )
        return cpu(out)

    return "FIA v2 TND paged sliding window (sparse 4, pre 64, next 0) bf16", run, BF16


def fia_v2_tnd_paged_sink() -> Case:
    def run(device: str) -> Outputs:
        g = gen(202)
        q_lens, prefix, n, nkv, d = [9, 1], [20, 260], 8, 2, 128
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        kv = paged_kv(kv_lens, nkv, d, 128, g)
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        sink = torch.randn(n, generator=g).to(BF16)
        out, _ = fia_v2_paged(
            device,
            q,
            kv,
            "TND",
            n,
            atten_mask=TEMPLATE,
            actual_seq_qlen=cumsum(q_lens),
            sparse_mode=3,
            learnable_sink=sink,
        )
        return cpu(out)

    return "FIA v2 TND paged extend with learnable_sink bf16", run, BF16


def fia_v2_bsnd_paged_decode_sink() -> Case:
    def run(device: str) -> Outputs:
        g = gen(203)
        kv_lens, n, nkv, d = [33, 260, 1], 8, 2, 64
        kv = paged_kv(kv_lens, nkv, d, 128, g)
        q = torch.randn(3, 1, n, d, generator=g).to(BF16)
        sink = torch.randn(n, generator=g).to(BF16)
        return cpu(
            *fia_v2_paged(
                device,
                q,
                kv,
                "BSND",
                n,
                actual_seq_qlen=[1] * 3,  # what sglang passes; ignored at Q_S=1 (doc)
                learnable_sink=sink,
                return_softmax_lse=True,
            )
        )

    return (
        "FIA v2 BSND paged decode with learnable_sink (sglang's call; the 2.14 doc lists TND "
        "only) + LSE bf16",
        run,
        BF16,
    )


def fia_v2_bnsd_paged_decode_nd4() -> Case:
    def run(device: str) -> Outputs:
        g = gen(204)
        kv_lens, n, d, block = [5, 129, 64], 4, 128, 64
        kv = paged_kv(kv_lens, n, d, block, g, dtype=FP16, nd4=True)
        q = torch.randn(3, n, 1, d, generator=g).to(FP16)
        return cpu(
            *fia_v2_paged(device, q, kv, "BNSD", n, pass_kv_heads=False, return_softmax_lse=True)
        )

    return "FIA v2 BNSD paged decode MHA, (blocks, N, 64, D) cache, + LSE fp16", run, FP16


def fia_v2_bsnd_paged_prompt() -> Case:
    def run(device: str) -> Outputs:
        g = gen(205)
        q_len, prefix, n, nkv, d = 24, 150, 4, 2, 80
        kv = paged_kv([prefix + q_len], nkv, d, 128, g, dtype=FP16)
        q = torch.randn(1, q_len, n, d, generator=g).to(FP16)
        out, _ = fia_v2_paged(
            device,
            q,
            kv,
            "BSND",
            n,
            atten_mask=TEMPLATE,
            sparse_mode=3,
            actual_seq_qlen=[q_len],
        )
        return cpu(out)

    return (
        "FIA v2 BSND paged prefill, one request, D 80 (sglang's non-TND head-dim loop) fp16",
        run,
        FP16,
    )


CASES: list[CaseFactory] = [
    fia_v2_tnd_paged_band,
    fia_v2_tnd_paged_sink,
    fia_v2_bsnd_paged_decode_sink,
    fia_v2_bnsd_paged_decode_nd4,
    fia_v2_bsnd_paged_prompt,
]
