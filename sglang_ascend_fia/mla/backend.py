"""The FIA attention backend for MLA models (DeepSeek-V2/V3): one FIA launch per layer.

The DeepSeek forward steps (:mod:`sglang_ascend_fia.mla.deepseek`) write the normalised latent
and the roped key part into the split pool, then call this backend through the model's own
``RadixAttention`` layers:

- decode (``attn_mqa``): one BSND paged call. Query = absorbed ``q_nope`` ``[B, 1, N, 512]`` with
  ``query_rope`` ``[B, 1, N, 64]``; key = value = the latent ``k_buffer`` and ``key_rope`` the
  ``v_buffer``, both viewed ``(blocks, page, D)`` with one KV head: no split, no concatenation.
- prefill (``attn_mha``): one TND call without paging, ``q_nope``/``k_nope``/``v`` of 128 with
  ``query_rope``/``key_rope`` of 64, causal ``sparse_mode=3``. Without a cached prefix K/V are
  this step's tokens. With one (a radix hit, a later chunk of a chunked prefill, decode rows
  riding in a mixed batch) the layer gathers the latent and rope rows of every KV token of the
  batch from the pool (one index per buffer, slots built once per batch), re-expands them with
  ``kv_b_proj`` and runs the same single call with cumulative KV lengths; ``sparse_mode=3``
  aligns each request's queries bottom-right on its full context. That is a fixed number of
  launches per layer whatever the batch, no per-request loop and no LSE merge (sglang 0.5.23
  runs two FIA calls, a Python zeroing loop and ``npu_attention_update``,
  ``ascend_backend.py:2102-2281``; the seed ignored the prefix).
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import torch
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend

from sglang_ascend_fia import ops
from sglang_ascend_fia.attention.backend import UnsupportedConfiguration
from sglang_ascend_fia.mla.heads import HeadPadder, decode_head_count, prefill_head_count
from sglang_ascend_fia.mla.metadata import MLAMetadata
from sglang_ascend_fia.ops.fia.rules import MASK_TEMPLATE_SIZE, MLA_DIM, MLA_ROPE_DIM

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch
    from sglang.srt.model_executor.model_runner import ModelRunner

logger = logging.getLogger(__name__)

_SPARSE_RIGHT_DOWN_CAUSAL = 3
# TND prefill with rope takes Q_D = K_D = V_D = 128 (the nope and value head dims).
_PREFILL_HEAD_DIM = 128
_NPU_DTYPES = (torch.float16, torch.bfloat16)


def _refusal(runner: ModelRunner) -> str | None:
    """Why this backend cannot serve ``runner``'s configuration, or None."""
    from sglang.srt.configs.model_config import is_deepseek_dsa
    from sglang.srt.runtime_context import get_parallel

    if not runner.use_mla_backend:
        return "the model does not use MLA"
    if not runner.spec_algorithm.is_none() or runner.is_draft_worker:
        return "speculative decoding is not implemented by the FIA MLA backend"
    if is_deepseek_dsa(runner.model_config.hf_config):
        return "DeepSeek sparse attention (DSA) is not implemented by the FIA MLA backend"
    if runner.is_hybrid_swa:
        return "sliding-window MLA is not implemented by the FIA MLA backend"
    parallel = get_parallel()
    if parallel.attn_cp_size > 1 or parallel.dcp_enabled:
        return "context parallel attention is not implemented by the FIA MLA backend"
    pool = runner.token_to_kv_pool
    if getattr(pool, "v_buffer", None) is None or not hasattr(pool, "kv_lora_rank"):
        return f"the KV pool {type(pool).__name__} is not the split latent/rope MLA pool"
    if getattr(pool, "use_fia_nz", False):
        return "the NZ MLA cache (SGLANG_USE_FIA_NZ) is not implemented by the FIA MLA backend"
    if runner.kv_cache_dtype != runner.dtype:
        return f"quantized KV caches ({runner.kv_cache_dtype}) are not implemented"
    return None


class AscendFIAMLABackend(AttentionBackend):
    """sglang ``AttentionBackend`` running DeepSeek MLA attention through FIA via ``ops``."""

    def __init__(self, model_runner: ModelRunner) -> None:
        super().__init__()
        reason = _refusal(model_runner)
        if reason is not None:
            raise UnsupportedConfiguration(
                f"sglang-ascend-fia: the 'ascend' attention backend cannot start: {reason} "
                "(set ASCEND_USE_FIA=0 to use sglang's own backend)"
            )
        from sglang.srt.runtime_context import get_parallel

        config = model_runner.model_config
        self.device = model_runner.device
        self.page_size: int = model_runner.page_size
        self.req_to_token: torch.Tensor = model_runner.req_to_token_pool.req_to_token
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.kv_lora_rank: int = config.kv_lora_rank
        self.rope_dim: int = config.qk_rope_head_dim
        self.q_heads: int = config.get_num_attention_heads(get_parallel().attn_tp_size)
        self._validate(config, model_runner.dtype)
        self.prefill_heads = prefill_head_count(self.q_heads)
        self.decode_heads = decode_head_count(self.q_heads)
        self.mask_template = torch.triu(
            torch.ones(
                MASK_TEMPLATE_SIZE, MASK_TEMPLATE_SIZE, dtype=torch.bool, device=self.device
            ),
            diagonal=1,
        )
        self.heads = HeadPadder()
        self.forward_metadata: MLAMetadata | None = None
        logger.info(
            "sglang-ascend-fia: FIA MLA attention backend (page_size=%d, %d query heads per "
            "rank, padded to %d for prefill and %d for decode)",
            self.page_size,
            self.q_heads,
            self.prefill_heads,
            self.decode_heads,
        )

    def _validate(self, config: Any, dtype: torch.dtype) -> None:
        """Refuse at start-up what FIA's MLA calls would reject in kernel tiling."""
        problems: list[str] = []
        try:
            # The decode call carries query_rope (block size 16 or 128) on the same pages.
            ops.check_page_size(self.page_size, mla=True)
        except ValueError as exc:
            problems.append(str(exc))
        if (self.kv_lora_rank, self.rope_dim) != (MLA_DIM, MLA_ROPE_DIM):
            problems.append(
                f"kv_lora_rank {self.kv_lora_rank} / qk_rope_head_dim {self.rope_dim}: FIA's "
                f"MLA decode takes {MLA_DIM} / {MLA_ROPE_DIM}"
            )
        dims = (config.qk_nope_head_dim, config.v_head_dim)
        if dims != (_PREFILL_HEAD_DIM, _PREFILL_HEAD_DIM):
            problems.append(
                f"qk_nope_head_dim / v_head_dim {dims}: FIA's TND prefill with rope takes "
                f"{_PREFILL_HEAD_DIM} / {_PREFILL_HEAD_DIM}"
            )
        try:
            prefill_head_count(self.q_heads)
        except ValueError as exc:
            problems.append(str(exc))
        if str(self.device).split(":", 1)[0] == "npu" and dtype not in _NPU_DTYPES:
            problems.append(
                f"--dtype {str(dtype).removeprefix('torch.')} is not a dtype FIA takes on an NPU "
                "(use bfloat16 or float16)"
            )
        if problems:
            raise UnsupportedConfiguration(
                "sglang-ascend-fia: the 'ascend' attention backend cannot start: "
                + "; ".join(problems)
            )

    # ----------------------------------------------------------------- per-batch host work
    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        """Block table, FIA's host length lists and (prefix batches) the KV slots, once."""
        mode = forward_batch.forward_mode
        if mode.is_target_verify() or mode.is_draft_extend_v2():
            raise UnsupportedConfiguration(
                f"sglang-ascend-fia: forward mode {mode.name} is not supported by the FIA "
                "MLA backend"
            )
        seq_lens_cpu = forward_batch.seq_lens_cpu
        if seq_lens_cpu is None:
            seq_lens_cpu = forward_batch.seq_lens.cpu()  # once per batch, never per layer
        kv_lens: list[int] = seq_lens_cpu.tolist()
        bs = len(kv_lens)
        max_len = max(kv_lens, default=0)
        req_rows = forward_batch.req_pool_indices[:bs]
        # Device gather with a host-known bound: column j holds token j*page's slot.
        block_table = (
            self.req_to_token[req_rows, : max(max_len, 1) : self.page_size] // self.page_size
        ).to(torch.int32)
        if mode.is_decode_or_idle():
            self.forward_metadata = MLAMetadata(block_table, kv_lens, num_tokens=bs)
            return
        q_lens: list[int] = list(forward_batch.extend_seq_lens_cpu)
        cum_q_lens = list(itertools.accumulate(q_lens))
        metadata = MLAMetadata(
            block_table,
            kv_lens,
            num_tokens=cum_q_lens[-1] if cum_q_lens else 0,
            cum_q_lens=cum_q_lens,
        )
        if kv_lens != q_lens:
            metadata.kv_slots = self._kv_slots(req_rows, kv_lens)
            metadata.cum_kv_lens = list(itertools.accumulate(kv_lens))
        self.forward_metadata = metadata

    def _kv_slots(self, req_rows: torch.Tensor, kv_lens: list[int]) -> torch.Tensor:
        """int64 slots of every KV token, request by request, built on the device."""
        total = sum(kv_lens)
        device = req_rows.device
        lens = torch.tensor(kv_lens, device=device)
        starts = torch.tensor([0, *itertools.accumulate(kv_lens)][:-1], device=device)
        owner = torch.repeat_interleave(
            torch.arange(len(kv_lens), device=device), lens, output_size=total
        )
        column = torch.arange(total, device=device) - torch.repeat_interleave(
            starts, lens, output_size=total
        )
        return self.req_to_token[req_rows[owner], column].to(torch.int64)

    # --------------------------------------------------------------------------- forward
    def forward_extend(
        self,
        q: torch.Tensor,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        layer: RadixAttention,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Prefill of new tokens against their whole context: one TND FIA call."""
        q_rope, k_rope = _rope_kwargs(kwargs, "extend")
        _refuse_save(save_kv_cache)
        metadata = self.current_metadata()
        rows = q.shape[0]
        n = metadata.num_tokens
        heads = layer.tp_q_head_num
        query = q.reshape(rows, heads, -1)[:n]
        query_rope = q_rope.reshape(rows, heads, self.rope_dim)[:n]
        if metadata.attends_cached_prefix:
            key, value, key_rope = self._context_from_pool(layer, metadata, heads)
            kv_lens = metadata.cum_kv_lens
        else:
            if k is None or v is None:
                raise ValueError("sglang-ascend-fia: an MLA prefill without a prefix needs k/v")
            key = k.reshape(rows, heads, -1)[:n]
            value = v.reshape(rows, heads, -1)[:n]
            key_rope = k_rope.reshape(rows, -1, self.rope_dim)[:n].expand(n, heads, -1)
            kv_lens = metadata.cum_q_lens
        padded = self.prefill_heads

        def operand(name: str, x: torch.Tensor) -> torch.Tensor:
            # FIA takes contiguous tensors only: the q/k split views and the one-head key_rope
            # broadcast to every head (TND needs Q_N = K_N) are materialised here, once each.
            return self.heads.pad(name, x, padded).contiguous()

        out, _ = ops.fused_infer_attention_score(
            operand("prefill_q", query),
            operand("prefill_k", key),
            operand("prefill_v", value),
            query_rope=operand("prefill_q_rope", query_rope),
            key_rope=operand("prefill_k_rope", key_rope),
            atten_mask=self.mask_template,
            actual_seq_lengths=metadata.cum_q_lens,
            actual_seq_lengths_kv=kv_lens,
            num_heads=padded,
            num_key_value_heads=padded,
            scale=layer.scaling,
            input_layout="TND",
            sparse_mode=_SPARSE_RIGHT_DOWN_CAUSAL,
        )
        out = out[:, :heads].reshape(n, heads * out.shape[-1])
        return _pad_rows(out, rows)

    def _context_from_pool(
        self, layer: RadixAttention, metadata: MLAMetadata, heads: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K, V and key_rope ``[T_kv, N, D]`` of every KV token of the batch, from the pool."""
        assert metadata.kv_slots is not None
        pool = self.token_to_kv_pool
        latent = pool.get_key_buffer(layer.layer_id).view(-1, self.kv_lora_rank)
        rope = pool.get_value_buffer(layer.layer_id).view(-1, self.rope_dim)
        latent = latent.index_select(0, metadata.kv_slots)
        rope = rope.index_select(0, metadata.kv_slots)
        kv_b_proj = getattr(layer, "kv_b_proj", None)
        if kv_b_proj is None:
            raise RuntimeError(
                "sglang-ascend-fia: the MLA prefill layer has no kv_b_proj to re-expand the "
                "cached latent with (the DeepSeek forward patch sets it)"
            )
        kv = kv_b_proj(latent)[0].view(latent.shape[0], heads, -1)
        key, value = kv.split([_PREFILL_HEAD_DIM, kv.shape[-1] - _PREFILL_HEAD_DIM], dim=-1)
        key_rope = rope.unsqueeze(1).expand(-1, heads, -1)
        return key, value, key_rope

    def forward_mixed(
        self,
        q: torch.Tensor,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        layer: RadixAttention,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Mixed chunked-prefill + decode batches: decode rows are extends with a prefix."""
        return self.forward_extend(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)

    def forward_decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        layer: RadixAttention,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """One BSND paged FIA call over the latent cache, with the absorbed query."""
        q_rope, _ = _rope_kwargs(kwargs, "decode")
        _refuse_save(save_kv_cache)
        metadata = self.current_metadata()
        rows = q.shape[0]
        bs = metadata.num_tokens
        heads = layer.tp_q_head_num
        padded = self.decode_heads
        pool = self.token_to_kv_pool
        latent = pool.get_key_buffer(layer.layer_id).view(-1, self.page_size, self.kv_lora_rank)
        rope = pool.get_value_buffer(layer.layer_id).view(-1, self.page_size, self.rope_dim)
        query = self.heads.pad("decode_q", q.reshape(rows, heads, -1)[:bs], padded).contiguous()
        query_rope = self.heads.pad(
            "decode_q_rope", q_rope.reshape(rows, heads, self.rope_dim)[:bs], padded
        ).contiguous()
        out, _ = ops.fused_infer_attention_score(
            query.unsqueeze(1),
            latent,
            latent,
            query_rope=query_rope.unsqueeze(1),
            key_rope=rope,
            actual_seq_lengths_kv=metadata.kv_lens,
            block_table=metadata.block_table,
            num_heads=padded,
            num_key_value_heads=1,
            scale=layer.scaling,
            input_layout="BSND",
            sparse_mode=0,
            block_size=self.page_size,
        )
        out = out[:, 0, :heads].reshape(bs, heads * self.kv_lora_rank)
        return _pad_rows(out, rows)

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        # Graph capture needs the NPUGraphRunner length-rebinding contract for the MLA calls,
        # which this backend does not implement yet: refuse at start-up, not at replay.
        raise UnsupportedConfiguration(
            "sglang-ascend-fia: graph mode is not implemented by the FIA MLA backend; run with "
            "--disable-cuda-graph (or ASCEND_USE_FIA=0)"
        )

    def current_metadata(self) -> MLAMetadata:
        if self.forward_metadata is None:
            raise RuntimeError("init_forward_metadata() was not called before the forward")
        return self.forward_metadata

    def support_triton(self) -> bool:
        return False


def _rope_kwargs(kwargs: dict[str, Any], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    extra = sorted(set(kwargs) - {"q_rope", "k_rope"})
    if extra:
        raise NotImplementedError(f"sglang-ascend-fia: the FIA MLA backend does not take {extra}")
    q_rope, k_rope = kwargs.get("q_rope"), kwargs.get("k_rope")
    if q_rope is None or k_rope is None:
        raise ValueError(f"sglang-ascend-fia: MLA {where} needs q_rope and k_rope")
    return q_rope, k_rope


def _refuse_save(save_kv_cache: bool) -> None:
    # The DeepSeek forward patch writes the latent itself before attention: the attention
    # layers see the expanded K (prefill) or no new K at all, never the cache row.
    if save_kv_cache:
        raise ValueError(
            "sglang-ascend-fia: the FIA MLA backend expects the latent already written "
            "(save_kv_cache=False); the DeepSeek forward patch writes it"
        )


def _pad_rows(out: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero rows for padded query tokens (graph / DP padding), as sglang's backend does."""
    if out.shape[0] == rows:
        return out
    return torch.cat([out, out.new_zeros(rows - out.shape[0], out.shape[1])])
