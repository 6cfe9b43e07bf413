"""``verify-ops`` cases for the attention ops (NPU kernel vs pure-PyTorch reference).

Same protocol as :mod:`sglang_ascend_fia.verify_cases_moe`: ``CASES`` is a list of functions,
each returning ``(name, run, dtype)``; ``run(device)`` builds seeded inputs on the CPU, moves them
to ``device``, calls the facade op (torch_npu on an NPU, the reference elsewhere) and returns CPU
tensors; ``dtype`` sets the float tolerance.

The shapes are the calls sglang 0.5.23 makes on Ascend (``ascend_backend.py``,
``memory_pool_npu.py``, ``deepseek_v2_attention_mla_npu.py``, ``layernorm.py``) and stay inside
the documented kernel constraints (TND without paging: N in {8..128}, Q_D 192 / V_D 128; MLA:
latent 512 + rope 64, page 128; prompt paging: block 128). Every query row sees at least one
key, so no output depends on what the doc leaves unspecified for fully masked rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sglang_ascend_fia import ops

Outputs = tuple[torch.Tensor, ...]
Case = tuple[str, Callable[[str], Outputs], torch.dtype]

BF16 = torch.bfloat16
TEMPLATE = ~torch.tril(torch.ones(2048, 2048, dtype=torch.bool))  # sparse_mode 2/3/4 template


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cpu(*tensors: torch.Tensor) -> Outputs:
    return tuple(t.cpu() for t in tensors)


def _paged(
    kv_lens: list[int],
    heads: int,
    dim: int,
    block_size: int,
    g: torch.Generator,
    *,
    nd4: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A bf16 cache with shuffled blocks and a -1-padded int32 table (one spare column)."""
    needed = [-(-n // block_size) for n in kv_lens]
    blocks = sum(needed) + 2
    order = torch.randperm(blocks, generator=g)
    table = torch.full((len(kv_lens), max(needed) + 1), -1, dtype=torch.int32)
    cursor = 0
    for b, count in enumerate(needed):
        table[b, :count] = order[cursor : cursor + count].int()
        cursor += count
    shape = (blocks, heads, block_size, dim) if nd4 else (blocks, block_size, heads * dim)
    return torch.randn(*shape, generator=g).to(BF16), table


def _cumsum(lens: list[int]) -> list[int]:
    return torch.tensor(lens).cumsum(0).tolist()


# ---- FIA: MHA / GQA --------------------------------------------------------------------------


def fia_bsnd_paged_decode_gqa() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(101)
        kv_lens, n, nkv, d = [1, 127, 128, 1000], 32, 4, 128
        k_cache, table = _paged(kv_lens, nkv, d, 128, g)
        v_cache = torch.randn(k_cache.shape, generator=g).to(BF16)
        q = torch.randn(4, 1, n, d, generator=g).to(BF16)
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            k_cache.to(device),
            v_cache.to(device),
            num_heads=n,
            num_key_value_heads=nkv,
            input_layout="BSND",
            scale=d**-0.5,
            block_table=table.to(device),
            block_size=128,
            actual_seq_lengths_kv=kv_lens,
        )
        return _cpu(out)

    return "FIA BSND paged decode GQA 32:4 D128 page128 bf16", run, BF16


def fia_bsh_paged_decode_lse() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(102)
        kv_lens, n, nkv, d = [300, 5, 256], 14, 2, 128
        k_cache, table = _paged(kv_lens, nkv, d, 128, g)
        v_cache = torch.randn(k_cache.shape, generator=g).to(BF16)
        q = torch.randn(3, 1, n * d, generator=g).to(BF16)
        return _cpu(
            *ops.fused_infer_attention_score(
                q.to(device),
                k_cache.to(device),
                v_cache.to(device),
                num_heads=n,
                num_key_value_heads=nkv,
                input_layout="BSH",
                scale=d**-0.5,
                block_table=table.to(device),
                block_size=128,
                actual_seq_lengths_kv=kv_lens,
                softmax_lse_flag=True,
            )
        )

    return "FIA BSH paged decode (Qwen2.5-7B TP2) + LSE bf16", run, BF16


def fia_bnsd_paged_decode_nd4_cache() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(103)
        kv_lens, n, nkv, d = [17, 64, 200], 8, 2, 128
        k_cache, table = _paged(kv_lens, nkv, d, 16, g, nd4=True)
        v_cache = torch.randn(k_cache.shape, generator=g).to(BF16)
        q = torch.randn(3, n, 1, d, generator=g).to(BF16)
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            k_cache.to(device),
            v_cache.to(device),
            num_heads=n,
            num_key_value_heads=nkv,
            input_layout="BNSD",
            scale=d**-0.5,
            block_table=table.to(device),
            block_size=16,
            actual_seq_lengths_kv=kv_lens,
        )
        return _cpu(out)

    return "FIA BNSD paged decode, (blocks, Nkv, 16, D) cache bf16", run, BF16


def fia_tnd_paged_extend() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(104)
        q_lens, prefix, n, nkv, d = [5, 1, 130], [0, 300, 127], 8, 2, 128
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        k_cache, table = _paged(kv_lens, nkv, d, 128, g)
        v_cache = torch.randn(k_cache.shape, generator=g).to(BF16)
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        return _cpu(
            *ops.fused_infer_attention_score(
                q.to(device),
                k_cache.to(device),
                v_cache.to(device),
                num_heads=n,
                num_key_value_heads=nkv,
                input_layout="TND",
                scale=d**-0.5,
                block_table=table.to(device),
                block_size=128,
                atten_mask=TEMPLATE.to(device),
                actual_seq_lengths=_cumsum(q_lens),
                actual_seq_lengths_kv=kv_lens,
                sparse_mode=3,
                next_tokens=0,
                softmax_lse_flag=True,
            )
        )

    return "FIA TND paged extend with cached prefix, sparse 3, + LSE bf16", run, BF16


def fia_tnd_dense_extend() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(105)
        lens, n = [7, 33, 1], 8
        q = torch.randn(sum(lens), n, 192, generator=g).to(BF16)
        k = torch.randn(sum(lens), n, 192, generator=g).to(BF16)
        v = torch.randn(sum(lens), n, 128, generator=g).to(BF16)
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            k.to(device),
            v.to(device),
            num_heads=n,
            input_layout="TND",
            scale=192**-0.5,
            atten_mask=TEMPLATE.to(device),
            sparse_mode=3,
            actual_seq_lengths=_cumsum(lens),
            actual_seq_lengths_kv=_cumsum(lens),
        )
        return _cpu(out)

    return "FIA TND dense extend Q_D 192 / V_D 128, sparse 3 bf16", run, BF16


def fia_bsnd_explicit_mask() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(106)
        b, s, kv, n, d = 2, 16, 48, 4, 64
        q = torch.randn(b, s, n, d, generator=g).to(BF16)
        k = torch.randn(b, kv, n, d, generator=g).to(BF16)
        v = torch.randn(b, kv, n, d, generator=g).to(BF16)
        mask = torch.rand(b, 1, s, kv, generator=g) < 0.4
        mask[..., 0] = False  # every row keeps key 0
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            k.to(device),
            v.to(device),
            num_heads=n,
            input_layout="BSND",
            scale=d**-0.5,
            atten_mask=mask.to(device),
            sparse_mode=0,
            inner_precise=2,
        )
        return _cpu(out)

    return "FIA BSND dense prefill, explicit (B,1,S,KV) mask bf16", run, BF16


def fia_bnsd_bsnd_left_up() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(107)
        b, s, kv, n, d = 2, 24, 40, 8, 128
        q = torch.randn(b, n, s, d, generator=g).to(BF16)
        k = torch.randn(b, n, kv, d, generator=g).to(BF16)
        v = torch.randn(b, n, kv, d, generator=g).to(BF16)
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            k.to(device),
            v.to(device),
            num_heads=n,
            input_layout="BNSD_BSND",
            scale=d**-0.5,
            atten_mask=TEMPLATE.to(device),
            sparse_mode=2,
            actual_seq_lengths=[24, 10],
            actual_seq_lengths_kv=[40, 30],
        )
        return _cpu(out[0], out[1, :10])  # request 1's rows past its 10 queries are undefined

    return "FIA BNSD_BSND dense prefill, sparse 2 (left-up causal) bf16", run, BF16


def fia_v2_tnd_paged_band() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(108)
        q_lens, prefix, n, nkv, d = [40, 3], [100, 500], 8, 1, 128
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        k_cache, table = _paged(kv_lens, nkv, d, 128, g)
        v_cache = torch.randn(k_cache.shape, generator=g).to(BF16)
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        out, _ = ops.fused_infer_attention_score_v2(
            q.to(device),
            k_cache.to(device),
            v_cache.to(device),
            num_query_heads=n,
            num_key_value_heads=nkv,
            input_layout="TND",
            softmax_scale=d**-0.5,
            block_table=table.to(device),
            block_size=128,
            atten_mask=TEMPLATE.to(device),
            actual_seq_qlen=_cumsum(q_lens),
            actual_seq_kvlen=kv_lens,
            sparse_mode=4,
            pre_tokens=64,
            next_tokens=0,
        )
        return _cpu(out)

    return "FIA v2 TND paged sliding window (sparse 4, pre 64, next 0) bf16", run, BF16


def fia_v2_tnd_paged_sink() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(109)
        q_lens, prefix, n, nkv, d = [9, 1], [20, 260], 8, 2, 64
        kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
        k_cache, table = _paged(kv_lens, nkv, d, 128, g)
        v_cache = torch.randn(k_cache.shape, generator=g).to(BF16)
        q = torch.randn(sum(q_lens), n, d, generator=g).to(BF16)
        sink = torch.randn(n, generator=g).to(BF16)
        out, _ = ops.fused_infer_attention_score_v2(
            q.to(device),
            k_cache.to(device),
            v_cache.to(device),
            num_query_heads=n,
            num_key_value_heads=nkv,
            input_layout="TND",
            softmax_scale=d**-0.5,
            block_table=table.to(device),
            block_size=128,
            atten_mask=TEMPLATE.to(device),
            actual_seq_qlen=_cumsum(q_lens),
            actual_seq_kvlen=kv_lens,
            sparse_mode=3,
            learnable_sink=sink.to(device),
        )
        return _cpu(out)

    return "FIA v2 TND paged extend with learnable_sink bf16", run, BF16


# ---- FIA: MLA --------------------------------------------------------------------------------


def fia_mla_paged_decode() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(110)
        kv_lens, n = [1, 129, 700], 16
        latent, table = _paged(kv_lens, 1, 512, 128, g)
        rope = torch.randn(latent.size(0), 128, 64, generator=g).to(BF16)
        q = torch.randn(3, 1, n, 512, generator=g).to(BF16)
        q_rope = torch.randn(3, 1, n, 64, generator=g).to(BF16)
        latent_d = latent.to(device)
        return _cpu(
            *ops.fused_infer_attention_score(
                q.to(device),
                latent_d,
                latent_d,
                query_rope=q_rope.to(device),
                key_rope=rope.to(device),
                num_heads=n,
                num_key_value_heads=1,
                input_layout="BSND",
                scale=192**-0.5,
                block_table=table.to(device),
                block_size=128,
                actual_seq_lengths_kv=kv_lens,
                sparse_mode=0,
                softmax_lse_flag=True,
            )
        )

    return "FIA MLA paged decode latent 512 + rope 64, 16 heads, + LSE bf16", run, BF16


def fia_mla_paged_mtp() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(111)
        kv_lens, n, s = [40, 300], 16, 2
        latent, table = _paged(kv_lens, 1, 512, 128, g)
        rope = torch.randn(latent.size(0), 128, 64, generator=g).to(BF16)
        q = torch.randn(2, s, n, 512, generator=g).to(BF16)
        q_rope = torch.randn(2, s, n, 64, generator=g).to(BF16)
        latent_d = latent.to(device)
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            latent_d,
            latent_d,
            query_rope=q_rope.to(device),
            key_rope=rope.to(device),
            num_heads=n,
            num_key_value_heads=1,
            input_layout="BSND",
            scale=192**-0.5,
            block_table=table.to(device),
            block_size=128,
            actual_seq_lengths_kv=kv_lens,
            sparse_mode=3,
            atten_mask=TEMPLATE.to(device),
        )
        return _cpu(out)

    return "FIA MLA paged multi-token verify (Q_S 2, sparse 3) bf16", run, BF16


def fia_mla_tnd_extend() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(112)
        lens, n = [6, 50], 16
        t = sum(lens)
        q, k = (torch.randn(t, n, 128, generator=g).to(BF16) for _ in range(2))
        v = torch.randn(t, n, 128, generator=g).to(BF16)
        q_rope, k_rope = (torch.randn(t, n, 64, generator=g).to(BF16) for _ in range(2))
        out, _ = ops.fused_infer_attention_score(
            q.to(device),
            k.to(device),
            v.to(device),
            query_rope=q_rope.to(device),
            key_rope=k_rope.to(device),
            num_heads=n,
            input_layout="TND",
            scale=192**-0.5,
            atten_mask=TEMPLATE.to(device),
            sparse_mode=3,
            next_tokens=0,
            actual_seq_lengths=_cumsum(lens),
            actual_seq_lengths_kv=_cumsum(lens),
        )
        return _cpu(out)

    return "FIA MLA TND extend nope 128 + rope 64, sparse 3 bf16", run, BF16


def fia_v2_mla_prefix_lse() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(113)
        q_lens, prefix, n = [4, 9], [130, 7], 16
        q = torch.randn(sum(q_lens), n, 128, generator=g).to(BF16)
        q_rope = torch.randn(sum(q_lens), n, 64, generator=g).to(BF16)
        k = torch.randn(sum(prefix), n, 128, generator=g).to(BF16)
        k_rope = torch.randn(sum(prefix), n, 64, generator=g).to(BF16)
        v = torch.randn(sum(prefix), n, 128, generator=g).to(BF16)
        return _cpu(
            *ops.fused_infer_attention_score_v2(
                q.to(device),
                k.to(device),
                v.to(device),
                query_rope=q_rope.to(device),
                key_rope=k_rope.to(device),
                num_query_heads=n,
                num_key_value_heads=n,
                input_layout="TND",
                actual_seq_qlen=_cumsum(q_lens),
                actual_seq_kvlen=_cumsum(prefix),
                sparse_mode=0,
                softmax_scale=192**-0.5,
                return_softmax_lse=True,
            )
        )

    return "FIA v2 MLA prefix pass (TND, sparse 0, cumulative kv) + LSE bf16", run, BF16


# ---- KV-cache writes and helpers -------------------------------------------------------------


def scatter_nd_update_rows() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(120)
        cache = torch.randn(4 * 128, 2, 128, generator=g).to(BF16)
        loc = torch.randperm(4 * 128, generator=g)[:37]
        new = torch.randn(37, 2, 128, generator=g).to(BF16)
        cache_d = cache.to(device)
        ops.scatter_nd_update_(cache_d, loc.view(-1, 1).to(device), new.to(device))
        return _cpu(cache_d)

    return "scatter_nd_update_ KV rows [slots, H, D] bf16", run, BF16


def scatter_pa_kv_cache_norm() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(121)
        k_cache = torch.randn(4, 128, 2, 128, generator=g).to(BF16)
        v_cache = torch.randn(4, 128, 2, 128, generator=g).to(BF16)
        slots = torch.randperm(4 * 128, generator=g)[:21].int()
        k, v = (torch.randn(21, 2, 128, generator=g).to(BF16) for _ in range(2))
        k_d, v_d = k_cache.to(device), v_cache.to(device)
        ops.scatter_pa_kv_cache(
            k.to(device), v.to(device), k_d, v_d, slots.to(device), cache_mode="Norm"
        )
        return _cpu(k_d, v_d)

    return "scatter_pa_kv_cache 'Norm' (sglang's call) bf16", run, BF16


def scatter_pa_kv_cache_nz() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(122)
        k_cache = torch.randn(3, 2 * 128 // 16, 128, 16, generator=g).to(BF16)
        v_cache = torch.randn(3, 2 * 64 // 16, 128, 16, generator=g).to(BF16)
        slots = torch.randperm(3 * 128, generator=g)[:10].int()
        k = torch.randn(10, 2, 128, generator=g).to(BF16)
        v = torch.randn(10, 2, 64, generator=g).to(BF16)
        k_d, v_d = k_cache.to(device), v_cache.to(device)
        ops.scatter_pa_kv_cache(k.to(device), v.to(device), k_d, v_d, slots.to(device))
        return _cpu(k_d, v_d)

    return "scatter_pa_kv_cache 'PA_NZ' (default mode) bf16", run, BF16


def attention_update_two_parts() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(123)
        rows = 5 * 16
        lse = [torch.randn(rows, generator=g) * 3 for _ in range(2)]
        out = [torch.randn(rows, 128, generator=g) for _ in range(2)]
        return _cpu(
            *ops.attention_update([t.to(device) for t in lse], [t.to(device) for t in out], 1)
        )

    return "attention_update two partial results, update_type=1 fp32", run, torch.float32


def interleave_rope_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(124)
        x = torch.randn(12, 16, 1, 64, generator=g).to(BF16)
        angles = torch.rand(12, 32, generator=g) * 6
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1).view(12, 1, 1, 64).to(BF16)
        sin = torch.cat([angles.sin(), angles.sin()], dim=-1).view(12, 1, 1, 64).to(BF16)
        return _cpu(ops.interleave_rope(x.to(device), cos.to(device), sin.to(device)))

    return "interleave_rope (DeepSeek q_pe) bf16", run, BF16


def add_rms_norm_bf16() -> Case:
    def run(device: str) -> Outputs:
        g = _gen(125)
        residual, x = (torch.randn(9, 1024, generator=g).to(BF16) for _ in range(2))
        weight = (1 + 0.1 * torch.randn(1024, generator=g)).to(BF16)
        return _cpu(*ops.add_rms_norm(residual.to(device), x.to(device), weight.to(device), 1e-6))

    return "add_rms_norm (residual, x, weight) bf16", run, BF16


CASES: list[Callable[[], Case]] = [
    fia_bsnd_paged_decode_gqa,
    fia_bsh_paged_decode_lse,
    fia_bnsd_paged_decode_nd4_cache,
    fia_tnd_paged_extend,
    fia_tnd_dense_extend,
    fia_bsnd_explicit_mask,
    fia_bnsd_bsnd_left_up,
    fia_v2_tnd_paged_band,
    fia_v2_tnd_paged_sink,
    fia_mla_paged_decode,
    fia_mla_paged_mtp,
    fia_mla_tnd_extend,
    fia_v2_mla_prefix_lse,
    scatter_nd_update_rows,
    scatter_pa_kv_cache_norm,
    scatter_pa_kv_cache_nz,
    attention_update_two_parts,
    interleave_rope_bf16,
    add_rms_norm_bf16,
]
