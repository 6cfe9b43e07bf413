"""DeepSeek-V2/V3 attention forward steps for the FIA MLA backend (manifest entries
``fia-mla-deepseek-prepare`` and ``fia-mla-deepseek-core``).

sglang's ``"ascend"`` handler (``models/deepseek_common/attention_backend_handler.py:75-89``)
picks ``MHA_NPU`` for extend/mixed batches and ``MLA_NPU`` for decode, and
``DeepseekV2AttentionMLA.forward_prepare/forward_core`` (``models/deepseek_v2.py:2373-2521``)
send those to the ``forward_*_npu`` functions that ``deepseek_v2.py:255-263`` imports by name
only on an NPU, from a module that imports ``torch_npu`` and ``sgl_kernel_npu`` at top level
(``hardware_backend/npu/modules/deepseek_v2_attention_mla_npu.py:1-5``). So the two methods are
wrapped: when the FIA MLA backend serves the batch, the handler's choice is kept and its two
methods run here, on every device; any other backend gets sglang's own code.

The math is sglang's: q from ``q_proj`` or ``q_a_proj -> q_a_layernorm -> q_b_proj``; the latent
``kv_a_layernorm(kv_a)``; rope through the layer's own ``rotary_emb`` (yarn and its mscale
included) and its ``scaling``; prefill K/V from ``kv_b_proj``; decode absorbs ``w_kc`` into the
query and ``w_vc`` into the output (``deepseek_v2_attention_mla_npu.py:45-161, 167-350``);
then ``o_proj``. The latent and the roped key part are written once, through the pool.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from sglang.srt.model_executor.forward_context import get_attn_backend, get_token_to_kv_pool
from sglang.srt.models.deepseek_common.attention_forward_methods.forward_methods import (
    AttnForwardMethod,
)

from sglang_ascend_fia.mla.backend import AscendFIAMLABackend

if TYPE_CHECKING:
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

__sglang_patches__ = ("fia-mla-deepseek-prepare", "fia-mla-deepseek-core")


@dataclass
class PrefillState:
    """``MHA_NPU`` (extend / mixed): per-head q, K/V of this step (None with a prefix)."""

    q_nope: torch.Tensor
    q_pe: torch.Tensor
    k_nope: torch.Tensor | None
    v: torch.Tensor | None
    k_pe: torch.Tensor
    forward_batch: ForwardBatch


@dataclass
class DecodeState:
    """``MLA_NPU`` (decode): the query absorbed into the latent space."""

    q_absorbed: torch.Tensor
    q_pe: torch.Tensor
    k_pe: torch.Tensor
    forward_batch: ForwardBatch


def _prepare_signature(
    positions: torch.Tensor,
    hidden_states: Any,
    forward_batch: ForwardBatch,
    zero_allocator: Any,
    input_on_attn_tp_slices: bool = False,
    llama_4_scaling: torch.Tensor | None = None,
    prev_topk_indices: torch.Tensor | None = None,
) -> None:
    """The parameters of ``DeepseekV2AttentionMLA.forward_prepare`` (deepseek_v2.py:2373)."""


_PREPARE = inspect.signature(_prepare_signature)


def forward_prepare(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """wrapt wrapper of ``DeepseekV2AttentionMLA.forward_prepare``."""
    if not isinstance(get_attn_backend(), AscendFIAMLABackend):
        return wrapped(*args, **kwargs)
    call = _PREPARE.bind(*args, **kwargs).arguments
    hidden_states = call["hidden_states"]
    if not isinstance(hidden_states, torch.Tensor):
        raise NotImplementedError(
            "sglang-ascend-fia: quantized (tuple) attention inputs are not implemented by the "
            "FIA MLA path"
        )
    if hidden_states.shape[0] == 0:
        return wrapped(*args, **kwargs)  # sglang's own early return for an empty batch
    if call.get("llama_4_scaling") is not None:
        raise NotImplementedError("sglang-ascend-fia: llama_4_scaling is not implemented")
    forward_batch = call["forward_batch"]
    if instance.attn_mha.kv_b_proj is None:
        # As forward_prepare does (deepseek_v2.py:2383-2384): the prefill re-expands cached
        # latents through the attention layer's kv_b_proj.
        instance.attn_mha.kv_b_proj = instance.kv_b_proj
    method = instance.dispatch_attn_forward_method(forward_batch)
    state: PrefillState | DecodeState
    if method == AttnForwardMethod.MHA_NPU:
        state = _prefill_prepare(instance, call["positions"], hidden_states, forward_batch)
    elif method == AttnForwardMethod.MLA_NPU:
        state = _decode_prepare(instance, call["positions"], hidden_states, forward_batch)
    else:
        raise NotImplementedError(
            f"sglang-ascend-fia: attention method {method.name} is not implemented by the FIA "
            "MLA path"
        )
    return None, method, forward_batch, state


def forward_core(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """wrapt wrapper of ``DeepseekV2AttentionMLA.forward_core``."""
    intermediate = args[0] if args else kwargs["intermediate_state"]
    state = intermediate[3] if isinstance(intermediate, tuple) else None
    if isinstance(state, PrefillState):
        return _prefill_core(instance, state)
    if isinstance(state, DecodeState):
        return _decode_core(instance, state)
    return wrapped(*args, **kwargs)


def _project(
    m: Any, positions: torch.Tensor, hidden_states: torch.Tensor, forward_batch: ForwardBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q_nope ``[T, N, nope]``, roped q_pe ``[T, N, rope]``, the normalised latent ``[T, R]``
    and roped k_pe ``[T, 1, rope]``; writes the latent and k_pe into the split pool."""
    if m.q_lora_rank is not None:
        from sglang.srt.layers.layer_boundary.adapters.attention import get_attn_tp_context

        q, latent_cache = (
            get_attn_tp_context()
            .fetch_qkv_latent()
            .split([m.q_lora_rank, m.kv_lora_rank + m.qk_rope_head_dim], dim=-1)
        )
        q = m.q_b_proj(m.q_a_layernorm(q))[0]
    else:
        q = m.q_proj(hidden_states)[0]
        latent_cache = m.kv_a_proj_with_mqa(hidden_states)[0]
    q = q.view(-1, m.num_local_heads, m.qk_head_dim)
    latent = m.kv_a_layernorm(latent_cache[..., : m.kv_lora_rank].contiguous())
    k_pe = latent_cache[..., m.kv_lora_rank :].unsqueeze(1)
    q_nope, q_pe = q.split([m.qk_nope_head_dim, m.qk_rope_head_dim], dim=-1)
    if m.rotary_emb is not None:
        q_pe, k_pe = m.rotary_emb(positions, q_pe, k_pe)
    get_token_to_kv_pool().set_kv_buffer(m.attn_mqa, forward_batch.out_cache_loc, latent, k_pe)
    return q_nope, q_pe, latent, k_pe


def _prefill_prepare(
    m: Any, positions: torch.Tensor, hidden_states: torch.Tensor, forward_batch: ForwardBatch
) -> PrefillState:
    q_nope, q_pe, latent, k_pe = _project(m, positions, hidden_states, forward_batch)
    backend = get_attn_backend()
    assert isinstance(backend, AscendFIAMLABackend)
    k_nope = v = None
    if not backend.current_metadata().attends_cached_prefix:
        # Without a prefix this step's latent is the whole context; with one the backend
        # re-expands every KV token from the pool, so expanding these here would be wasted.
        kv = m.kv_b_proj(latent)[0].view(-1, m.num_local_heads, m.qk_nope_head_dim + m.v_head_dim)
        k_nope, v = kv.split([m.qk_nope_head_dim, m.v_head_dim], dim=-1)
    return PrefillState(q_nope, q_pe, k_nope, v, k_pe, forward_batch)


def _prefill_core(m: Any, s: PrefillState) -> torch.Tensor:
    out = m.attn_mha(
        s.q_nope,
        s.k_nope,
        s.v,
        s.forward_batch,
        save_kv_cache=False,
        q_rope=s.q_pe,
        k_rope=s.k_pe,
    )
    output, _ = m.o_proj(out.reshape(-1, m.num_local_heads * m.v_head_dim))
    return output


def _decode_prepare(
    m: Any, positions: torch.Tensor, hidden_states: torch.Tensor, forward_batch: ForwardBatch
) -> DecodeState:
    q_nope, q_pe, _, k_pe = _project(m, positions, hidden_states, forward_batch)
    # w_kc absorption, as deepseek_v2_attention_mla_npu.py:262 / forward_mla.py:586.
    q_absorbed = torch.bmm(q_nope.transpose(0, 1), m.w_kc).transpose(0, 1)
    return DecodeState(q_absorbed, q_pe, k_pe, forward_batch)


def _decode_core(m: Any, s: DecodeState) -> torch.Tensor:
    out = m.attn_mqa(
        s.q_absorbed,
        None,
        None,
        s.forward_batch,
        save_kv_cache=False,
        q_rope=s.q_pe,
        k_rope=s.k_pe,
    )
    out = out.view(-1, m.num_local_heads, m.kv_lora_rank)
    # w_vc, as npu_transpose_batchmatmul(out, w_vc, perm_x1=(1,0,2), perm_y=(1,0,2)) does
    # (deepseek_v2_attention_mla_npu.py:338-344).
    out = torch.bmm(out.transpose(0, 1), m.w_vc).transpose(0, 1)
    output, _ = m.o_proj(out.reshape(-1, m.num_local_heads * m.v_head_dim))
    return output
