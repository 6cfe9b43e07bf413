"""``verify-ops`` cases for ``fused_infer_attention_score`` (FIA v1), MHA/GQA without rope.

Protocol and helpers: :mod:`.common`. MLA (rope) cases live in
:mod:`.mla`, FIA v2 in :mod:`.attention_v2`.

Together the cases cover each documented value of each argument at least once (enforced by
``tests/verify/test_verify_coverage.py``): fp16 and bf16; every layout in its legal phases (Q_S=1
decode, Q_S>1 prompt); dense KV, paged ``(blocks, block_size, H)`` and ``(blocks, Nkv,
block_size, D)`` caches; sparse_mode 0-4; every explicit-mask shape and dtype and every template
shape; GQA and MHA in dense and paged calls; inner_precise 0-3; LSE on and off; decode block
sizes 16/128/512 and prompt block sizes 128/256/512. The first cases are sglang 0.5.23's own calls
(``ascend_backend.py``). Shapes stay inside the documented kernel constraints: head dim
16-aligned, TND without paging at N in {8..128}, Q_D=K_D=192, V_D 128/192, bf16, sparse 0 with
no mask or 3 with a mask and each request's query shorter than its keys; a paged explicit mask at
least block_table width x block_size wide. Every query row sees at least one key.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia.verify.case import Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.common import (
    BF16,
    FP16,
    TEMPLATE,
    PagedKV,
    cpu,
    cumsum,
    fia,
    fia_paged,
    gen,
    paged_kv,
    rows_within,
    visible_mask,
)

# ---- decode (Q_S = 1) -----------------------------------------------------------------------


def fia_bsnd_paged_decode_gqa() -> Case:
    def run(device: str) -> Outputs:
        g = gen(101)
        kv_lens, n, nkv, d = [1, 127, 128, 1000], 32, 4, 128
        kv = paged_kv(kv_lens, nkv, d, 128, g)
        q = torch.randn(4, 1, n, d, generator=g).to(BF16)
        out, _ = fia_paged(device, q, kv, "BSND", n)
        return cpu(out)

    return "FIA BSND paged decode GQA 32:4 D128 page128 bf16", run, BF16


def fia_bsh_paged_decode_lse() -> Case:
    def run(device: str) -> Outputs:
        g = gen(102)
        kv_lens, n, nkv, d = [300, 5, 256], 14, 2, 128
        kv = paged_kv(kv_lens, nkv, d, 128, g)
        q = torch.randn(3, 1, n * d, generator=g).to(BF16)
        return cpu(
            *fia_paged(
                device,
                q,
                kv,
                "BSH",
                n,
                inner_precise=1,  # bf16 does not tell high precision from high performance
                softmax_lse_flag=True,
            )
        )

    return "FIA BSH paged decode (Qwen2.5-7B TP2), inner_precise 1, + LSE bf16", run, BF16


def fia_bnsd_paged_decode_nd4_cache() -> Case:
    def run(device: str) -> Outputs:
        g = gen(103)
        kv_lens, n, nkv, d = [17, 64, 200], 8, 2, 128
        kv = paged_kv(kv_lens, nkv, d, 16, g, nd4=True)
        q = torch.randn(3, n, 1, d, generator=g).to(BF16)
        out, _ = fia_paged(device, q, kv, "BNSD", n)
        return cpu(out)

    return "FIA BNSD paged decode, (blocks, Nkv, 16, D) cache bf16", run, BF16


def fia_bsnd_paged_decode_batch_mask() -> Case:
    def run(device: str) -> Outputs:
        g = gen(104)
        kv_lens, n, nkv, d, block = [700, 40, 1], 8, 2, 128, 512
        kv = paged_kv(kv_lens, nkv, d, block, g, dtype=FP16)
        q = torch.randn(3, 1, n, d, generator=g).to(FP16)
        # A paged mask spans the whole block table (doc: last dim >= table width * block_size).
        mask = visible_mask((3, kv.table.size(1) * block), g, torch.uint8)
        return cpu(
            *fia_paged(
                device,
                q,
                kv,
                "BSND",
                n,
                atten_mask=mask,
                sparse_mode=0,
                softmax_lse_flag=True,
            )
        )

    return "FIA BSND paged decode, (B, KV_S) uint8 mask, page 512, GQA 8:2, + LSE fp16", run, FP16


def fia_bsh_dense_decode() -> Case:
    def run(device: str) -> Outputs:
        g = gen(105)
        b, kv, n, d = 3, 80, 4, 64
        q = torch.randn(b, 1, n * d, generator=g).to(FP16)
        k, v = (torch.randn(b, kv, n * d, generator=g).to(FP16) for _ in range(2))
        out, _ = fia(
            device,
            q,
            k,
            v,
            num_heads=n,
            input_layout="BSH",
            scale=d**-0.5,
            atten_mask=visible_mask((1, 1, 1, kv), g, torch.bool),
            actual_seq_lengths_kv=[kv - 13],  # one value broadcasts to every request
        )
        return cpu(out)

    return "FIA BSH dense decode MHA, (1,1,1,KV_S) mask, broadcast KV length fp16", run, FP16


# ---- prompt (Q_S > 1), dense KV -------------------------------------------------------------


def fia_bsnd_explicit_mask() -> Case:
    def run(device: str) -> Outputs:
        g = gen(106)
        b, s, kv, n, d = 2, 16, 48, 4, 64
        q = torch.randn(b, s, n, d, generator=g).to(BF16)
        k, v = (torch.randn(b, kv, n, d, generator=g).to(BF16) for _ in range(2))
        out, _ = fia(
            device,
            q,
            k,
            v,
            num_heads=n,
            input_layout="BSND",
            scale=d**-0.5,
            atten_mask=visible_mask((b, 1, s, kv), g, torch.bool),
            sparse_mode=0,
            inner_precise=2,
        )
        return cpu(out)

    return "FIA BSND dense prefill, explicit (B,1,S,KV) mask, inner_precise 2 bf16", run, BF16


def fia_bnsd_bsnd_left_up() -> Case:
    def run(device: str) -> Outputs:
        g = gen(107)
        b, s, kv, n, d = 2, 24, 40, 8, 128
        q = torch.randn(b, n, s, d, generator=g).to(BF16)
        k, v = (torch.randn(b, n, kv, d, generator=g).to(BF16) for _ in range(2))
        out, _ = fia(
            device,
            q,
            k,
            v,
            num_heads=n,
            input_layout="BNSD_BSND",
            scale=d**-0.5,
            atten_mask=TEMPLATE,
            sparse_mode=2,
            actual_seq_lengths=[24, 10],
            actual_seq_lengths_kv=[40, 30],
        )
        return cpu(*rows_within(out, 1, [24, 10]))

    return "FIA BNSD_BSND dense prefill, sparse 2 (left-up causal) bf16", run, BF16


def fia_bsh_dense_prompt_gqa() -> Case:
    def run(device: str) -> Outputs:
        g = gen(108)
        b, s, kv, n, nkv, d = 2, 20, 36, 8, 2, 64
        q = torch.randn(b, s, n * d, generator=g).to(FP16)
        k, v = (torch.randn(b, kv, nkv * d, generator=g).to(FP16) for _ in range(2))
        out, _ = fia(
            device,
            q,
            k,
            v,
            num_heads=n,
            num_key_value_heads=nkv,
            input_layout="BSH",
            scale=d**-0.5,
            atten_mask=TEMPLATE[None],
            sparse_mode=3,
            actual_seq_lengths=[s],  # one value broadcasts to every request
            actual_seq_lengths_kv=[36, 25],
        )
        return cpu(out)

    return "FIA BSH dense prefill GQA 8:2, sparse 3, (1,2048,2048) template fp16", run, FP16


def fia_bnsd_dense_prompt_all_mask() -> Case:
    def run(device: str) -> Outputs:
        g = gen(109)
        b, s, kv, n, d = 2, 16, 24, 4, 128
        q = torch.randn(b, n, s, d, generator=g).to(FP16)
        k, v = (torch.randn(b, n, kv, d, generator=g).to(FP16) for _ in range(2))
        out, _ = fia(
            device,
            q,
            k,
            v,
            num_heads=n,
            num_key_value_heads=n,
            input_layout="BNSD",
            scale=d**-0.5,
            atten_mask=visible_mask((1, s, kv), g, torch.uint8),
            sparse_mode=1,
            inner_precise=2,
        )
        return cpu(out)

    return "FIA BNSD dense prefill MHA, sparse 1 (allMask), (1,S,KV) uint8 mask fp16", run, FP16


def fia_bsh_dense_prompt_2d_mask() -> Case:
    def run(device: str) -> Outputs:
        g = gen(110)
        b, s, kv, n, nkv, d = 2, 12, 30, 4, 1, 96
        q = torch.randn(b, s, n * d, generator=g).to(BF16)
        k, v = (torch.randn(b, kv, nkv * d, generator=g).to(BF16) for _ in range(2))
        return cpu(
            *fia(
                device,
                q,
                k,
                v,
                num_heads=n,
                num_key_value_heads=nkv,
                input_layout="BSH",
                scale=d**-0.5,
                atten_mask=visible_mask((s, kv), g, torch.int8),
                sparse_mode=0,
                inner_precise=3,
                softmax_lse_flag=True,
            )
        )

    return (
        "FIA BSH dense prefill MQA 4:1 D96, (S,KV) int8 mask, inner_precise 3, + LSE bf16",
        run,
        BF16,
    )


def fia_tnd_dense_extend() -> Case:
    def run(device: str) -> Outputs:
        g = gen(111)
        q_lens, prefix, n = [7, 33, 1], [5, 2, 40], 8
        # Doc (TND without paging, sparse 3): each request's query shorter than its keys.
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        q = torch.randn(sum(q_lens), n, 192, generator=g).to(BF16)
        k = torch.randn(sum(kv_lens), n, 192, generator=g).to(BF16)
        v = torch.randn(sum(kv_lens), n, 128, generator=g).to(BF16)
        out, _ = fia(
            device,
            q,
            k,
            v,
            num_heads=n,
            input_layout="TND",
            scale=192**-0.5,
            atten_mask=TEMPLATE,
            sparse_mode=3,
            actual_seq_lengths=cumsum(q_lens),
            actual_seq_lengths_kv=cumsum(kv_lens),
        )
        return cpu(out)

    return "FIA TND dense extend with prefix, Q_D 192 / V_D 128, sparse 3 bf16", run, BF16


def fia_tnd_dense_no_mask() -> Case:
    def run(device: str) -> Outputs:
        g = gen(112)
        q_lens, kv_lens, n, d = [3, 20], [50, 9], 16, 192
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        k, v = (torch.randn(sum(kv_lens), n, d, generator=g).to(BF16) for _ in range(2))
        return cpu(
            *fia(
                device,
                q,
                k,
                v,
                num_heads=n,
                input_layout="TND",
                scale=d**-0.5,
                sparse_mode=0,
                actual_seq_lengths=cumsum(q_lens),
                actual_seq_lengths_kv=cumsum(kv_lens),
                softmax_lse_flag=True,
            )
        )

    return "FIA TND dense, no mask (sparse 0), Q/K/V_D 192, N 16, + LSE bf16", run, BF16


# ---- prompt (Q_S > 1), paged KV -------------------------------------------------------------


def fia_tnd_paged_extend() -> Case:
    def run(device: str) -> Outputs:
        g = gen(113)
        q_lens, prefix, n, nkv, d = [5, 1, 130], [0, 300, 127], 8, 2, 128
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        kv = paged_kv(kv_lens, nkv, d, 128, g)
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        return cpu(
            *fia_paged(
                device,
                q,
                kv,
                "TND",
                n,
                atten_mask=TEMPLATE,
                actual_seq_lengths=cumsum(q_lens),
                sparse_mode=3,
                next_tokens=0,
                softmax_lse_flag=True,
            )
        )

    return "FIA TND paged extend with cached prefix, sparse 3, + LSE bf16", run, BF16


def fia_bsnd_paged_prompt() -> Case:
    def run(device: str) -> Outputs:
        g = gen(114)
        q_lens, kv_lens, n, nkv, d, block = [10, 4], [300, 4], 8, 4, 64, 256
        kv = paged_kv(kv_lens, nkv, d, block, g, dtype=FP16)
        q = torch.randn(2, max(q_lens), n, d, generator=g).to(FP16)
        out, _ = fia_paged(
            device,
            q,
            kv,
            "BSND",
            n,
            atten_mask=TEMPLATE[None, None],
            sparse_mode=3,
            actual_seq_lengths=q_lens,
        )
        return cpu(*rows_within(out, 1, q_lens))

    return "FIA BSND paged prefill GQA 8:4, page 256, (1,1,2048,2048) template fp16", run, FP16


def fia_bnsd_paged_prompt_band_nd4() -> Case:
    def run(device: str) -> Outputs:
        g = gen(115)
        kv_lens, s, n, nkv, d, block = [40, 700], 6, 4, 2, 128, 512
        kv = paged_kv(kv_lens, nkv, d, block, g, nd4=True)
        q = torch.randn(2, n, s, d, generator=g).to(BF16)
        return cpu(
            *fia_paged(
                device,
                q,
                kv,
                "BNSD",
                n,
                atten_mask=TEMPLATE,
                sparse_mode=4,
                pre_tokens=32,
                next_tokens=0,
                softmax_lse_flag=True,
            )
        )

    return (
        "FIA BNSD paged prefill, (blocks, Nkv, 512, D) cache, sparse 4 (pre 32, next 0), + LSE "
        "bf16",
        run,
        BF16,
    )


# ---- shared blocks (sglang's radix cache) ---------------------------------------------------


def fia_shared_prefix_blocks() -> Case:
    """Four requests read the same two prefix blocks: their blocks sum to 12 in a 6-block cache.

    The doc asks for a block count >= the sum of each request's blocks; sglang's radix cache
    goes beyond it and its backend passes such tables unchecked. This case tells an NPU owner
    whether the kernel agrees, for the decode (BSND) and extend (TND) calls the backend makes.
    """

    def run(device: str) -> Outputs:
        g = gen(120)
        n, nkv, d, block = 8, 2, 128, 128
        kv_lens = [2 * block + 1 + 37 * b for b in range(4)]
        table = torch.tensor([[4, 1, private] for private in (0, 2, 3, 5)], dtype=torch.int32)
        key = torch.randn(6, block, nkv * d, generator=g).to(BF16)
        value = torch.randn(6, block, nkv * d, generator=g).to(BF16)
        kv = PagedKV(key, value, table, block, kv_lens, nkv, d)
        decode_q = torch.randn(4, 1, n, d, generator=g).to(BF16)
        decode, _ = fia_paged(device, decode_q, kv, "BSND", n)
        q_lens = [1, 3, 2, 5]
        extend_q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        extend, _ = fia_paged(
            device,
            extend_q,
            kv,
            "TND",
            n,
            atten_mask=TEMPLATE,
            actual_seq_lengths=cumsum(q_lens),
            sparse_mode=3,
        )
        return cpu(decode, extend)

    return (
        "FIA BSND decode + TND extend on shared prefix blocks (sum 12 > 6 blocks) bf16",
        run,
        BF16,
    )


CASES: list[CaseFactory] = [
    fia_bsnd_paged_decode_gqa,
    fia_bsh_paged_decode_lse,
    fia_bnsd_paged_decode_nd4_cache,
    fia_bsnd_paged_decode_batch_mask,
    fia_bsh_dense_decode,
    fia_bsnd_explicit_mask,
    fia_bnsd_bsnd_left_up,
    fia_bsh_dense_prompt_gqa,
    fia_bnsd_dense_prompt_all_mask,
    fia_bsh_dense_prompt_2d_mask,
    fia_tnd_dense_extend,
    fia_tnd_dense_no_mask,
    fia_tnd_paged_extend,
    fia_bsnd_paged_prompt,
    fia_bnsd_paged_prompt_band_nd4,
    fia_shared_prefix_blocks,
]
