"""The FIA attention backend for MLA models (DeepSeek-V2/V3): one FIA launch per layer.

The DeepSeek forward steps (:mod:`sglang_ascend_fia.mla.deepseek`) write the normalised latent
and the roped key part into the split pool, then call this backend through the model's own
``RadixAttention`` layers:

- decode (``attn_mqa``): one BSND paged call. Query = absorbed ``q_nope`` ``[B, 1, N, 512]`` with
  ``query_rope`` ``[B, 1, N, 64]``; key = value = the latent ``k_buffer`` and ``key_rope`` the
  ``v_buffer``, both viewed ``(blocks, page, D)`` with one KV head: no split, no concatenation.
- prefill (``attn_mha``): one TND call without paging (FIA v2, which takes up to 1M tokens
  where v1 takes 65536), ``q_nope``/``k_nope``/``v`` of 128 with ``query_rope``/``key_rope`` of
  64, causal ``sparse_mode=3``. Without a cached prefix K/V are
  this step's tokens. With one (a radix hit, a later chunk of a chunked prefill, decode rows
  riding in a mixed batch) the layer gathers the latent and rope rows of every KV token of the
  batch from the pool (one index per buffer, slots built once per batch), re-expands them with
  ``kv_b_proj`` and runs the same single call with cumulative KV lengths; ``sparse_mode=3``
  aligns each request's queries bottom-right on its full context. That is a fixed number of
  launches per layer whatever the batch, no per-request loop and no LSE merge (sglang 0.5.23
  runs two FIA calls, a Python zeroing loop and ``npu_attention_update``,
  ``ascend_backend.py:2102-2281``; the seed ignored the prefix). A batch whose KV tokens exceed
  one launch (or its request count) is cut into runs of whole requests, one launch each
  (:func:`~sglang_ascend_fia.mla.metadata.plan_prefill_launches`); a single request never
  exceeds it, because a model whose context is longer is handed off at start-up.

Decode graphs (capture and replay through ``NPUGraphRunner``) are the shared FIA graph plumbing
of :class:`~sglang_ascend_fia.fia_backend.base.FIABackendBase`; the decode head-padding buffers
are sized for the largest captured batch before capture, so a graph never reallocates them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.fia_backend.base import (
    SERVED_LOG_PREFIX,
    FIABackendBase,
    UnsupportedConfiguration,
    causal_mask_template,
    device_type,
    pad_rows,
    prepared_call,
    refuse_kwargs,
)
from sglang_ascend_fia.fia_backend.handoff import Verdict
from sglang_ascend_fia.mla import handoff
from sglang_ascend_fia.mla.heads import HeadPadder, decode_head_count, prefill_head_count
from sglang_ascend_fia.mla.metadata import MLAMetadata, plan_prefill_launches
from sglang_ascend_fia.ops.fia.rules import (
    NPU_FLOAT_DTYPES,
    SPARSE_RIGHT_DOWN_CAUSAL,
    TND_MAX_BATCH_V2,
    TND_MAX_TOKENS,
    TND_ROPE_HEAD_DIM,
)

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch
    from sglang.srt.model_executor.model_runner import ModelRunner

logger = logging.getLogger(__name__)

_ROPE_KWARGS = frozenset({"q_rope", "k_rope"})
# The prefill runs on FIA v2: TND without page attention up to 1M tokens and 4096 requests.
PREFILL_MAX_TOKENS = TND_MAX_TOKENS[2]
PREFILL_MAX_REQUESTS = TND_MAX_BATCH_V2


class AscendFIAMLABackend(FIABackendBase[MLAMetadata]):
    """sglang ``AttentionBackend`` running DeepSeek MLA attention through FIA via ``ops``."""

    backend_name = "the FIA MLA backend"

    handoff_rules = handoff.RULES

    def __init__(self, model_runner: ModelRunner, verdict: Verdict | None = None) -> None:
        if not model_runner.use_mla_backend:
            raise UnsupportedConfiguration(
                "sglang-ascend-fia: the FIA MLA backend serves MLA models; this model does not "
                "use MLA"
            )
        self.refuse_handed_off(model_runner, verdict)
        super().__init__(model_runner)
        from sglang.srt.runtime_context import get_parallel

        config = model_runner.model_config
        self.kv_lora_rank: int = config.kv_lora_rank
        self.rope_dim: int = config.qk_rope_head_dim
        self.q_heads: int = config.get_num_attention_heads(get_parallel().attn_tp_size)
        self.dtype: torch.dtype = model_runner.dtype
        self._validate()
        self.mask_template = causal_mask_template(self.device)
        self.prefill_heads = prefill_head_count(self.q_heads)
        self.decode_heads = decode_head_count(self.q_heads)
        # What one prefill launch takes; tests lower these to exercise the cut.
        self.prefill_max_tokens = PREFILL_MAX_TOKENS
        self.prefill_max_requests = PREFILL_MAX_REQUESTS
        self.heads = HeadPadder()
        logger.info(
            SERVED_LOG_PREFIX["fia-mla"] + "page_size=%d, %d query heads per rank, padded to "
            "%d for prefill and %d for decode)",
            self.page_size,
            self.q_heads,
            self.prefill_heads,
            self.decode_heads,
        )

    def _validate(self) -> None:
        """Refuse at start-up what no backend runs: page sizes outside FIA's MLA rules and a
        dtype FIA does not take on an NPU. What FIA does not implement was handed off."""
        problems: list[str] = []
        try:
            # The decode call carries query_rope (block size 16 or 128) on the same pages.
            ops.check_page_size(self.page_size, mla=True)
        except ValueError as exc:
            problems.append(str(exc))
        if device_type(self.device) == "npu" and self.dtype not in NPU_FLOAT_DTYPES:
            problems.append(
                f"--dtype {str(self.dtype).removeprefix('torch.')} is not a dtype FIA takes on "
                "an NPU (use bfloat16 or float16)"
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
        self._check_forward_mode(mode)
        kv_lens = self._kv_lens(forward_batch)
        bs = len(kv_lens)
        req_rows = forward_batch.req_pool_indices[:bs]
        block_table = self._block_table(req_rows, max(kv_lens, default=0))
        if mode.is_decode_or_idle():
            self.forward_metadata = self._decode_metadata(block_table, kv_lens, graph_mode=False)
            return
        q_lens: list[int] = list(forward_batch.extend_seq_lens_cpu)
        prefix = kv_lens != q_lens
        launches = plan_prefill_launches(
            q_lens,
            kv_lens if prefix else q_lens,
            self.prefill_max_tokens,
            self.prefill_max_requests,
        )
        self.forward_metadata = MLAMetadata(
            block_table,
            kv_lens,
            num_tokens=sum(q_lens),
            launches=launches,
            kv_slots=self._kv_slots(req_rows, kv_lens) if prefix else None,
        )

    def _decode_metadata(
        self, block_table: torch.Tensor, kv_lens: list[int], graph_mode: bool
    ) -> MLAMetadata:
        return MLAMetadata(block_table, kv_lens, num_tokens=len(kv_lens), graph_mode=graph_mode)

    def _kv_slots(self, req_rows: torch.Tensor, kv_lens: list[int]) -> torch.Tensor:
        """int64 slots of every KV token, request by request, built on the device."""
        total = sum(kv_lens)
        device = req_rows.device
        lens = torch.tensor(kv_lens, device=device)
        starts = torch.cumsum(lens, 0) - lens
        owner = torch.repeat_interleave(
            torch.arange(len(kv_lens), device=device), lens, output_size=total
        )
        column = torch.arange(total, device=device) - torch.repeat_interleave(
            starts, lens, output_size=total
        )
        return self.req_to_token[req_rows[owner], column].to(torch.int64)

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        """The shared static block table, plus the decode head padding at the largest batch:
        capture must never (re)allocate a buffer a replay reads."""
        super().init_cuda_graph_state(max_bs, max_num_tokens)
        if self.decode_heads != self.q_heads:
            for name, dim in (("decode_q", self.kv_lora_rank), ("decode_q_rope", self.rope_dim)):
                self.heads.reserve(name, max_bs, self.decode_heads, dim, self.dtype, self.device)

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
        """Prefill of new tokens against their whole context: one TND FIA launch per run of
        requests that fits one (one run in the normal case)."""
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
        else:
            if k is None or v is None:
                raise ValueError("sglang-ascend-fia: an MLA prefill without a prefix needs k/v")
            key = k.reshape(rows, heads, -1)[:n]
            value = v.reshape(rows, heads, -1)[:n]
            key_rope = k_rope.reshape(rows, -1, self.rope_dim)[:n].expand(n, heads, -1)
        outs = [
            self._prefill_launch(metadata, i, layer, query, query_rope, key, value, key_rope)
            for i in range(len(metadata.launches))
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        out = out[:, :heads].reshape(n, heads * out.shape[-1])
        return pad_rows(out, rows)

    def _prefill_launch(
        self,
        metadata: MLAMetadata,
        index: int,
        layer: RadixAttention,
        query: torch.Tensor,
        query_rope: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_rope: torch.Tensor,
    ) -> torch.Tensor:
        padded = self.prefill_heads

        def operand(name: str, x: torch.Tensor, rows: slice) -> torch.Tensor:
            # FIA takes contiguous tensors only: the q/k split views and the one-head key_rope
            # broadcast to every head (TND needs Q_N = K_N) are materialised here, once each.
            return self.heads.pad(name, x[rows], padded).contiguous()

        launch = metadata.launches[index]
        # Bound once per batch and validated by its first layer; later layers only launch.
        call = prepared_call(
            metadata,
            ("prefill", index, padded, layer.scaling),
            lambda: ops.fused_infer_attention_score_v2.prepare(
                atten_mask=self.mask_template,
                actual_seq_qlen=launch.cum_q_lens,
                actual_seq_kvlen=launch.cum_kv_lens,
                num_query_heads=padded,
                num_key_value_heads=padded,
                softmax_scale=layer.scaling,
                input_layout="TND",
                sparse_mode=SPARSE_RIGHT_DOWN_CAUSAL,
            ),
        )
        q_rows, kv_rows = launch.q_rows, launch.kv_rows
        out, _ = call(
            operand("prefill_q", query, q_rows),
            operand("prefill_k", key, kv_rows),
            operand("prefill_v", value, kv_rows),
            query_rope=operand("prefill_q_rope", query_rope, q_rows),
            key_rope=operand("prefill_k_rope", key_rope, kv_rows),
        )
        return out

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
        key, value = kv.split([TND_ROPE_HEAD_DIM, kv.shape[-1] - TND_ROPE_HEAD_DIM], dim=-1)
        key_rope = rope.unsqueeze(1).expand(-1, heads, -1)
        return key, value, key_rope

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
        # Bound once per batch and validated by its first layer; later layers only launch.
        call = prepared_call(
            metadata,
            ("decode", padded, layer.scaling),
            lambda: ops.fused_infer_attention_score.prepare(
                actual_seq_lengths_kv=metadata.kv_lens,
                block_table=metadata.block_table,
                num_heads=padded,
                num_key_value_heads=1,
                scale=layer.scaling,
                input_layout="BSND",
                sparse_mode=0,
                block_size=self.page_size,
            ),
        )
        out, _ = call(
            query.unsqueeze(1),
            latent,
            latent,
            query_rope=query_rope.unsqueeze(1),
            key_rope=rope,
        )
        out = out[:, 0, :heads].reshape(bs, heads * self.kv_lora_rank)
        return pad_rows(out, rows)


def _rope_kwargs(kwargs: dict[str, Any], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    refuse_kwargs(kwargs, _ROPE_KWARGS, "the FIA MLA backend")
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
