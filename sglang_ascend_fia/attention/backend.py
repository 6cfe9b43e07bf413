"""The FIA attention backend for MHA/GQA models: one fused kernel launch per layer per forward.

``init_forward_metadata`` does all host-side work once per batch, from the ``*_cpu`` mirrors
sglang already keeps. A layer's forward then writes its K/V through ``ops`` and makes exactly one
``fused_infer_attention_score`` call:

- extend / mixed: TND queries over the whole batch, paged KV, cumulative query lengths and
  per-request full KV lengths (so a radix-cached or chunked prefix is attended), causal
  ``sparse_mode=3`` aligned bottom-right. TND + paged only at the head dims sglang 0.5.23 runs
  it at (``ops.tnd_paged_supported``); other head dims get one BSND call padded to the longest
  request, with per-request ``actual_seq_lengths``;
- decode: BSND queries ``[B, 1, N, D]``, paged KV, no mask.

Compared with sglang 0.5.23's in-tree ``AscendAttnBackend`` this never loops over requests and
never syncs with the device inside a layer (``ascend_backend.py:1929, 3240`` call
``.cpu().tolist()`` per layer; 541/567 sync on ``seq_lens.max()`` per batch).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.attention import handoff
from sglang_ascend_fia.attention.kv_write import LayerKV, kv_rows
from sglang_ascend_fia.attention.metadata import FIAMetadata, padded_rows
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
from sglang_ascend_fia.ops.fia.rules import (
    MAX_3D_CACHE_HIDDEN,
    MAX_GQA_RATIO,
    MAX_HEAD_DIM,
    MAX_HEADS,
    NPU_FLOAT_DTYPES,
    PROMPT_HEAD_DIM_ALIGN,
    REFERENCE_FLOAT_DTYPES,
    SPARSE_RIGHT_DOWN_CAUSAL,
)

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch
    from sglang.srt.model_executor.model_runner import ModelRunner

    from sglang_ascend_fia.ops import PreparedCall

__all__ = ["AscendFIABackend", "UnsupportedConfiguration"]

logger = logging.getLogger(__name__)

# A layer's FIA arguments: query heads, KV heads, scale.
LayerKey = tuple[int, int, float]


class AscendFIABackend(FIABackendBase[FIAMetadata]):
    """sglang ``AttentionBackend`` running MHA/GQA attention through FIA via ``ops``."""

    backend_name = "the FIA attention backend"
    handoff_rules = handoff.RULES

    def __init__(self, model_runner: ModelRunner, verdict: Verdict | None = None) -> None:
        self.refuse_handed_off(model_runner, verdict)
        super().__init__(model_runner)
        pool = self.token_to_kv_pool
        self.kv_heads: int = pool.head_num
        self.head_dim: int = pool.head_dim
        self.v_head_dim: int = pool.v_head_dim
        self.data_type = model_runner.dtype
        self.kv_cache_dtype = model_runner.kv_cache_dtype
        from sglang.srt.runtime_context import get_parallel

        self._validate_configuration(
            model_runner.model_config.get_num_attention_heads(get_parallel().attn_tp_size)
        )
        self._refuse_layers_sharded_unlike_the_pool(getattr(model_runner, "model", None))
        self.mask_template = causal_mask_template(self.device)
        # Prefill takes one TND call where upstream proves it, else one padded BSND call.
        self._tnd_extend = ops.tnd_paged_supported(self.head_dim, self.v_head_dim)
        # Per layer: its FIA arguments once checked (_layer_key) and its cache views.
        self._layer_keys: dict[int, LayerKey] = {}
        self._layer_views: dict[int, LayerKV] = {}
        logger.info(
            SERVED_LOG_PREFIX["fia"] + "page_size=%d, kv_heads=%d, head_dim=%d)",
            self.page_size,
            self.kv_heads,
            self.head_dim,
        )

    def _sharding_problem(self, layer: Any) -> str:
        # The pool holds the attention-TP share of the KV heads (kv_cache_configurator.py:
        # 2308-2310); a model that shards attention by --tp-size under --enable-dp-attention
        # (sglang's dense Qwen2, qwen2.py:165-178) hands it K/V that do not fit.
        return (
            f"sglang-ascend-fia: layer {layer.layer_id} has {layer.tp_k_head_num} KV heads "
            f"per rank, the KV pool {self.kv_heads}: the model shards attention other than "
            "sglang sized its KV cache (a model without data-parallel attention support run "
            "with --enable-dp-attention?)"
        )

    def _refuse_layers_sharded_unlike_the_pool(self, model: Any) -> None:
        """At start-up, not in the first request: every attention layer the model holds must
        write as many KV heads per rank as the pool stores (``_layer_key`` guards a backend
        built without a model)."""
        if model is None:
            return
        for module in model.modules():
            heads = getattr(module, "tp_k_head_num", None)
            if heads is not None and hasattr(module, "layer_id") and heads != self.kv_heads:
                raise UnsupportedConfiguration(self._sharding_problem(module))

    def _validate_configuration(self, q_heads: int) -> None:
        """Refuse at startup what no backend can run: the FIA kernel's documented page-size,
        head and dtype limits (torch_npu ``npu_fused_infer_attention_score`` doc; see
        ``ops.fia.rules``), each named with its legal values."""
        problems: list[str] = []
        try:
            # Prompt calls need a multiple of 128 in [128, 512]; decode calls 16-aligned <= 512.
            ops.check_page_size(self.page_size, mla=False)
        except ValueError as exc:
            problems.append(str(exc))
        if q_heads % self.kv_heads or q_heads // self.kv_heads > MAX_GQA_RATIO:
            problems.append(
                f"{q_heads} query heads over {self.kv_heads} KV heads is not a GQA ratio FIA "
                f"takes (an integer <= {MAX_GQA_RATIO})"
            )
        dtype_name = str(self.data_type).removeprefix("torch.")
        if device_type(self.device) == "npu" and self.data_type not in NPU_FLOAT_DTYPES:
            # The reference ops also take fp32 (the CPU test bed compares against HF in fp32);
            # FIA itself does not, so refuse here instead of in the first forward.
            problems.append(
                f"--dtype {dtype_name} is not a dtype FIA takes on an NPU (use bfloat16 or float16)"
            )
        elif self.data_type not in REFERENCE_FLOAT_DTYPES:
            problems.append(
                f"--dtype {dtype_name} is not a dtype FIA or its reference takes (use bfloat16 "
                "or float16; float32 off the NPU only)"
            )
        if q_heads > MAX_HEADS:
            problems.append(f"{q_heads} query heads per rank exceed FIA's limit {MAX_HEADS}")
        for dim in sorted({self.head_dim, self.v_head_dim}):
            # Prefill is a Q_S>1 call: its head dims must be aligned and bounded.
            if dim % PROMPT_HEAD_DIM_ALIGN or dim > MAX_HEAD_DIM:
                problems.append(
                    f"head_dim {dim} is not one FIA prefill takes (a multiple of "
                    f"{PROMPT_HEAD_DIM_ALIGN} up to {MAX_HEAD_DIM})"
                )
        for dim in {self.head_dim, self.v_head_dim}:
            if self.kv_heads * dim > MAX_3D_CACHE_HIDDEN:
                problems.append(
                    f"KV heads x head_dim = {self.kv_heads * dim} exceeds FIA's paged-cache "
                    f"limit {MAX_3D_CACHE_HIDDEN}"
                )
        if problems:
            raise UnsupportedConfiguration(
                "sglang-ascend-fia: the 'ascend' attention backend cannot start: "
                + "; ".join(problems)
                + f" (this model: {q_heads} query / {self.kv_heads} KV heads per rank, "
                f"head_dim {self.head_dim})"
            )

    # ----------------------------------------------------------------- per-batch host work
    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        """Build the block table and FIA's host length lists, once per batch."""
        mode = forward_batch.forward_mode
        self._check_forward_mode(mode)
        kv_lens = self._kv_lens(forward_batch)
        bs = len(kv_lens)
        block_table = self._block_table(
            forward_batch.req_pool_indices[:bs], max(kv_lens, default=0)
        )
        if mode.is_decode_or_idle():
            self.forward_metadata = self._decode_metadata(block_table, kv_lens, graph_mode=False)
            return
        q_lens = list(forward_batch.extend_seq_lens_cpu)
        cum_q_lens = list(itertools.accumulate(q_lens))
        num_tokens = cum_q_lens[-1] if cum_q_lens else 0
        metadata = FIAMetadata(block_table, kv_lens, cum_q_lens, num_tokens, q_lens=q_lens)
        if not self._tnd_extend:
            metadata.max_q_len = max(q_lens, default=0)
            metadata.padded_rows = padded_rows(q_lens, metadata.max_q_len).to(
                self.device, non_blocking=True
            )
        self.forward_metadata = metadata

    def _decode_metadata(
        self, block_table: torch.Tensor, kv_lens: list[int], graph_mode: bool
    ) -> FIAMetadata:
        return FIAMetadata(block_table, kv_lens, None, len(kv_lens), graph_mode=graph_mode)

    # --------------------------------------------------------------------------- forward
    # A layer's host work is a dict lookup per prepared call, the views of its own q/k/v and
    # the launches: the per-batch arguments are bound once in ``metadata.prepared`` and
    # validated by the batch's first layer (``PreparedCall``); the cache views are built once
    # per layer (``LayerKV``).
    def _layer_kv(self, layer: RadixAttention) -> LayerKV:
        pool = self.token_to_kv_pool
        # Read every layer: a pool may wait there for that layer's load (HiCache layer-wise).
        k_buffer = pool.get_key_buffer(layer.layer_id)
        v_buffer = pool.get_value_buffer(layer.layer_id)
        views = self._layer_views.get(layer.layer_id)
        if views is None or views.k_buffer is not k_buffer or views.v_buffer is not v_buffer:
            views = self._layer_views[layer.layer_id] = LayerKV.of(
                k_buffer, v_buffer, self.page_size
            )
        return views

    def _save_kv(
        self,
        metadata: FIAMetadata,
        forward_batch: ForwardBatch,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        views: LayerKV,
    ) -> None:
        """K and V of this step into their slots: one ``scatter_pa_kv_cache`` launch."""
        if k is None or v is None:
            return
        loc = forward_batch.out_cache_loc
        # The prepared call holds ``loc``, so its id names it while the metadata lives.
        write = prepared_call(
            metadata,
            ("kv", id(loc)),
            lambda: ops.scatter_pa_kv_cache.prepare(slot_mapping=loc, cache_mode="Norm"),
        )
        rows = loc.shape[0]
        write(
            kv_rows(k, rows, views.k_blocks),
            kv_rows(v, rows, views.v_blocks),
            views.k_blocks,
            views.v_blocks,
        )

    def _fia_call(
        self,
        metadata: FIAMetadata,
        form: str,
        layer_key: LayerKey,
        per_batch: Callable[[], dict[str, Any]],
    ) -> PreparedCall:
        """The batch's FIA call of ``form`` for layers of ``layer_key``, prepared by the first
        with the common arguments and ``per_batch()``'s."""

        def prepare() -> PreparedCall:
            heads, kv_heads, scale = layer_key
            return ops.fused_infer_attention_score.prepare(
                actual_seq_lengths_kv=metadata.kv_lens,
                block_table=metadata.block_table,
                num_heads=heads,
                scale=scale,
                num_key_value_heads=kv_heads,
                block_size=self.page_size,
                **per_batch(),
            )

        return prepared_call(metadata, (form, layer_key), prepare)

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
        """Prefill, chunked prefill and prefix-cached extend: one TND paged FIA call."""
        if kwargs:
            _reject_kwargs(kwargs)
        layer_key = self._layer_key(layer)
        metadata = self.current_metadata()
        views = self._layer_kv(layer)
        if save_kv_cache:
            self._save_kv(metadata, forward_batch, k, v, views)
        rows = q.shape[0]
        # FIA takes only contiguous tensors; some models pass q as a view of a fused qkv.
        query = q.reshape(-1, layer.tp_q_head_num, layer.qk_head_dim)[: metadata.num_tokens]
        query = query.contiguous()
        if metadata.padded_rows is not None:
            out = self._extend_padded_bsnd(query, layer, layer_key, metadata, views)
            return pad_rows(out, rows)
        call = self._fia_call(
            metadata,
            "TND",
            layer_key,
            lambda: {
                "atten_mask": self.mask_template,
                "actual_seq_lengths": metadata.cum_q_lens,
                "input_layout": "TND",
                "sparse_mode": SPARSE_RIGHT_DOWN_CAUSAL,
            },
        )
        out, _ = call(query, views.k_paged, views.v_paged)
        out = out.reshape(-1, layer.tp_q_head_num * layer.v_head_dim)
        return pad_rows(out, rows)

    def _extend_padded_bsnd(
        self,
        query: torch.Tensor,
        layer: RadixAttention,
        layer_key: LayerKey,
        metadata: FIAMetadata,
        views: LayerKV,
    ) -> torch.Tensor:
        """One BSND paged call padded to the longest request (the documented multi-request
        prompt form), for head dims TND + paged is not proven at; sglang loops per request."""
        assert metadata.padded_rows is not None
        bs, max_q = len(metadata.kv_lens), metadata.max_q_len
        heads, dim = layer.tp_q_head_num, layer.qk_head_dim
        padded = query.new_zeros(bs * max_q, heads, dim)
        padded.index_copy_(0, metadata.padded_rows, query)
        prompt = max_q > 1  # Q_S=1 is the decode branch: no mask, lengths ignored (doc)
        call = self._fia_call(
            metadata,
            "BSND padded",
            layer_key,
            lambda: {
                "atten_mask": self.mask_template if prompt else None,
                "actual_seq_lengths": metadata.q_lens if prompt else None,
                "input_layout": "BSND",
                "sparse_mode": SPARSE_RIGHT_DOWN_CAUSAL if prompt else 0,
            },
        )
        out, _ = call(padded.view(bs, max_q, heads, dim), views.k_paged, views.v_paged)
        flat = out.reshape(bs * max_q, heads * layer.v_head_dim)
        return flat.index_select(0, metadata.padded_rows)

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
        """One BSND paged FIA call, no mask (a decode mask cost ~10% in vllm-ascend)."""
        if kwargs:
            _reject_kwargs(kwargs)
        layer_key = self._layer_key(layer)
        metadata = self.current_metadata()
        views = self._layer_kv(layer)
        if save_kv_cache:
            self._save_kv(metadata, forward_batch, k, v, views)
        rows = q.shape[0]
        bs = metadata.num_tokens
        # BSND [B, 1, N, D] straight from q; rows past bs are graph/DP padding.
        query = q.reshape(rows, 1, layer.tp_q_head_num, layer.qk_head_dim)
        if rows != bs:
            query = query[:bs]
        call = self._fia_call(metadata, "BSND decode", layer_key, lambda: {"input_layout": "BSND"})
        out, _ = call(query.contiguous(), views.k_paged, views.v_paged)
        out = out.reshape(bs, layer.tp_q_head_num * layer.v_head_dim)
        return pad_rows(out, rows)

    def _layer_key(self, layer: RadixAttention) -> LayerKey:
        """The layer's FIA arguments (query heads, KV heads, scale), read once per layer, when
        the layer is first refused if FIA would compute it wrongly (logit_cap, non-causal,
        cross, sliding window). The registry hook hands such models to sglang's own backend
        at start-up, and hands off a model with a layer id it found no layer for
        (``handoff.LAYER_COVERAGE``), so for a backend it built the refusal is never reached:
        it guards a backend built directly, without a model to check. A layer whose KV heads
        per rank are not the pool's is refused too: no backend can store its K/V."""
        key = self._layer_keys.get(layer.layer_id)
        if key is not None:
            return key
        reason = handoff.layer_reason(layer)
        if reason is not None:
            raise UnsupportedConfiguration(
                f"sglang-ascend-fia: layer {layer.layer_id}: {reason}; the FIA backend would "
                "compute it wrongly"
            )
        if layer.tp_k_head_num != self.kv_heads:
            raise UnsupportedConfiguration(self._sharding_problem(layer))
        key = self._layer_keys[layer.layer_id] = (
            layer.tp_q_head_num,
            layer.tp_k_head_num,
            layer.scaling,
        )
        return key


_NO_KWARGS: frozenset[str] = frozenset()


def _reject_kwargs(kwargs: dict[str, Any]) -> None:
    # q_rope/k_rope (MLA), sinks, topk indices, LSE requests: none reach an MHA/GQA model.
    refuse_kwargs(kwargs, _NO_KWARGS, "the FIA backend")
