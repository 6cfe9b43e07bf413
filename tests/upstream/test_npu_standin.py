"""The torch_npu stand-in's own references, against dense attention written out here.

The stand-in is imported in a child process: putting ``torch_npu`` into this pytest process
would change what other tests see (``doctor`` looks for it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from side_by_side import STANDIN_DIR

CHECKS = textwrap.dedent(
    """
    import math, torch, torch_npu
    torch.manual_seed(0)
    H, HKV, D, PAGE = 4, 2, 8, 4
    lens, qlens = [6, 9], [2, 9]  # request 0 has a 4-token cached prefix
    blocks = torch.tensor([[3, 1, 0], [2, 4, 5]], dtype=torch.int32)
    k_cache = torch.zeros(6, PAGE, HKV, D); v_cache = torch.zeros(6, PAGE, HKV, D)
    keys = [torch.randn(n, HKV, D) for n in lens]; values = [torch.randn(n, HKV, D) for n in lens]
    slots = [blocks[b].long()[torch.arange(n) // PAGE] * PAGE + torch.arange(n) % PAGE
             for b, n in enumerate(lens)]
    torch_npu._npu_reshape_and_cache(
        key=torch.cat(keys), value=torch.cat(values), key_cache=k_cache, value_cache=v_cache,
        slot_indices=torch.cat(slots).int())
    def dense(q, b, first):  # q [n, H, D] at absolute positions first.., causal
        k = keys[b].repeat_interleave(H // HKV, 1); v = values[b].repeat_interleave(H // HKV, 1)
        s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(D)
        pos = torch.arange(q.shape[0])[:, None] + first
        s = s.masked_fill(torch.arange(k.shape[0])[None] > pos, float("-inf"))
        return torch.einsum("hqk,khd->qhd", s.softmax(-1), v)
    q = torch.randn(sum(qlens), H, D)
    out = torch.empty(sum(qlens), H * D)
    mask = torch.ones(128, 128, dtype=torch.bool).triu(1).float()
    torch_npu._npu_flash_attention_qlens(
        query=q.reshape(-1, H * D), key_cache=k_cache, value_cache=v_cache, mask=mask,
        block_table=blocks, seq_len=torch.tensor(qlens, dtype=torch.int32),
        context_lens=torch.tensor(lens, dtype=torch.int32), scale_value=1 / math.sqrt(D),
        num_heads=H, num_kv_heads=HKV, out=out)
    want = torch.cat([dense(q[:2], 0, 4), dense(q[2:], 1, 0)])
    assert torch.allclose(out.view(-1, H, D), want, atol=1e-5), "qlens"
    qd = torch.randn(2, H, D); outd = torch.empty(2, H, D)
    torch_npu._npu_paged_attention(
        query=qd, key_cache=k_cache, value_cache=v_cache, num_kv_heads=HKV, num_heads=H,
        scale_value=1 / math.sqrt(D), block_table=blocks,
        context_lens=torch.tensor(lens, dtype=torch.int32), out=outd)
    want = torch.cat([dense(qd[b:b + 1], b, lens[b]) for b in range(2)])
    assert torch.allclose(outd, want, atol=1e-5), "paged"
    counts = torch_npu.standin_call_counts()
    assert counts == {"_npu_reshape_and_cache": 1, "_npu_flash_attention_qlens": 1,
                      "_npu_paged_attention": 1}, counts
    for call in (lambda: torch_npu.npu_rotary_mul(q), lambda: torch_npu.npu_format_cast(q, 29)):
        try:
            call()
        except NotImplementedError:
            pass
        else:
            raise AssertionError("an unimplemented kernel returned")
    from sgl_kernel_npu.attention.sinks_attention import attention_sinks_triton
    try:
        attention_sinks_triton(q)
    except NotImplementedError:
        pass
    else:
        raise AssertionError("attention_sinks_triton returned")
    assert not hasattr(torch, "npu"), "the stand-in must leave sglang's is_npu() false"
    print("ok")
    """
)


def test_standin_references_match_dense_attention_and_unimplemented_names_raise() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", CHECKS], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
