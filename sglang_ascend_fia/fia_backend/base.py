"""What the FIA MHA/GQA and MLA attention backends share: per-batch host work and graph mode.

Both backends read the same things once per batch: each request's full KV length from the
``seq_lens_cpu`` mirror and an int32 block table gathered on the device with a host-known bound.
Both run decode as one paged FIA call whose ``actual_seq_lengths_kv`` list ``NPUGraphRunner``
rebinds on replay (``graph.update(cpu_update_input=[{"actual_seq_lengths_kv": lens}])``,
npu_graph_runner.py:199-205, the same key for MHA and MLA: 140-146), so graph capture and replay
are shared too. A subclass builds its own metadata (:meth:`FIABackendBase._decode_metadata`) and
its own FIA calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import torch
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend

from sglang_ascend_fia.fia_backend.handoff import HandoffRule, Verdict, first_reason
from sglang_ascend_fia.ops.fia.rules import MASK_TEMPLATE_SIZE

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
    from sglang.srt.model_executor.model_runner import ModelRunner

    from sglang_ascend_fia.ops import PreparedCall


# What each backend logs, once per model runner it serves, by the backend kind
# ``handoff.Decision`` records: exact prefixes, so the NPU acceptance suite's served-by check
# (tests/npu/acceptance.py) reads the very text the backends write and cannot match the other.
SERVED_LOG_PREFIX: Final[Mapping[str, str]] = MappingProxyType(
    {
        "fia": "sglang-ascend-fia: FIA attention backend (",
        "fia-mla": "sglang-ascend-fia: FIA MLA attention backend (",
    }
)


class UnsupportedConfiguration(ValueError):
    """Startup-time refusal: this backend cannot serve the requested configuration."""


class DecodeMetadata(Protocol):
    """The fields graph mode refreshes in place."""

    block_table: torch.Tensor
    kv_lens: list[int]
    # ops calls prepared with the fields above (``ops.PreparedCall``); dropped on a refresh.
    prepared: dict[object, Any]


M = TypeVar("M", bound=DecodeMetadata)


def prepared_call(
    metadata: DecodeMetadata, key: object, prepare: Callable[[], PreparedCall]
) -> PreparedCall:
    """The batch's call ``key``, made by ``prepare`` for the first layer that needs it; later
    layers find it in ``metadata.prepared`` without building its arguments again."""
    call = metadata.prepared.get(key)
    if call is None:
        call = metadata.prepared[key] = prepare()
    return call


def device_type(device: object) -> str:
    # A string compare: torch.device("npu") itself fails where torch_npu is not imported.
    return str(device).split(":", 1)[0]


def pad_rows(out: torch.Tensor, rows: int) -> torch.Tensor:
    """Zero rows for padded query tokens (graph / DP padding), as sglang's backend does."""
    if out.shape[0] == rows:
        return out
    return torch.cat([out, out.new_zeros(rows - out.shape[0], out.shape[1])])


def causal_mask_template(device: torch.device | str) -> torch.Tensor:
    """FIA's sparse modes 2-4 read a fixed 2048 x 2048 causal template (True = masked); the real
    mask is derived from the lengths. sglang builds the same tensor (ascend_backend.py:146-153).
    Built after a backend's start-up checks, which refuse a device this process cannot use."""
    return torch.triu(
        torch.ones(MASK_TEMPLATE_SIZE, MASK_TEMPLATE_SIZE, dtype=torch.bool, device=device),
        diagonal=1,
    )


class FIABackendBase(AttentionBackend, Generic[M]):
    """sglang ``AttentionBackend`` state and host work common to both FIA backends."""

    # Names the backend in refusals ("the FIA backend", "the FIA MLA backend").
    backend_name = "the FIA backend"

    # The rules the registry checks before building this backend (``<feature>.handoff.RULES``).
    handoff_rules: tuple[HandoffRule, ...] = ()

    def refuse_handed_off(self, model_runner: ModelRunner, verdict: Verdict | None) -> None:
        """The registry hands such models to sglang's own backend before a FIA backend is
        built, and passes its verdict; a backend built directly (no verdict) runs the rules
        itself and refuses with the reason."""
        if verdict is None:
            verdict = Verdict(first_reason(self.handoff_rules, model_runner))
        if verdict.reason is not None:
            raise UnsupportedConfiguration(
                f"sglang-ascend-fia: {self.backend_name} cannot serve this model: "
                f"{verdict.reason} (sglang's own AscendAttnBackend serves it)"
            )

    def __init__(self, model_runner: ModelRunner) -> None:
        super().__init__()
        self.device = model_runner.device
        self.page_size: int = model_runner.page_size
        self.req_to_token: torch.Tensor = model_runner.req_to_token_pool.req_to_token
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.forward_metadata: M | None = None
        # Graph mode: static block-table buffer and the per-batch-size metadata bound at capture.
        self._graph_block_table: torch.Tensor | None = None
        self._graph_metadata: dict[int, M] = {}
        self._max_context_len: int = model_runner.model_config.context_len

    # ----------------------------------------------------------------- per-batch host work
    def _check_forward_mode(self, mode: ForwardMode) -> None:
        # Speculative decoding is handed to sglang's own backend at start-up (handoff.py).
        if mode.is_target_verify() or mode.is_draft_extend_v2():
            raise UnsupportedConfiguration(
                f"sglang-ascend-fia: forward mode {mode.name} is not supported by "
                f"{self.backend_name}"
            )

    @staticmethod
    def _kv_lens(forward_batch: ForwardBatch) -> list[int]:
        seq_lens_cpu = forward_batch.seq_lens_cpu
        if seq_lens_cpu is None:
            # Only a mirrorless batch gets here (needs_cpu_seq_lens keeps the mirror on): one
            # copy per batch, never per layer.
            seq_lens_cpu = forward_batch.seq_lens.cpu()
        return seq_lens_cpu.tolist()

    def _block_table(self, req_rows: torch.Tensor, max_len: int) -> torch.Tensor:
        """int32 ``[batch, blocks]``: a device gather with a host-known bound, no sync
        (ascend_backend.py:567 syncs on seq_lens.max()). Column j holds the slot of token
        j*page, whose page id is slot // page."""
        return (
            self.req_to_token[req_rows, : max(max_len, 1) : self.page_size] // self.page_size
        ).to(torch.int32)

    def _decode_metadata(
        self, block_table: torch.Tensor, kv_lens: list[int], graph_mode: bool
    ) -> M:
        """The subclass's metadata of a decode batch of ``len(kv_lens)`` requests."""
        raise NotImplementedError

    def current_metadata(self) -> M:
        if self.forward_metadata is None:
            raise RuntimeError("init_forward_metadata() was not called before the forward")
        return self.forward_metadata

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
        """Mixed chunked-prefill + decode batches: the decode rows are extends of one token over
        their cached context, so ``forward_extend`` serves the whole batch in its launches."""
        return self.forward_extend(q, k, v, layer, forward_batch, save_kv_cache, **kwargs)

    # ------------------------------------------------------------------------ graph mode
    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        """Allocate the static block table every captured graph reads."""
        max_blocks = (self._max_context_len + self.page_size - 1) // self.page_size
        self._graph_block_table = torch.zeros(
            (max_bs, max_blocks), dtype=torch.int32, device=self.device
        )
        self._graph_metadata.clear()

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        # Padded rows get KV length 0, as NPUGraphRunner pads its replay list with zeros
        # (npu_graph_runner.py:395-403).
        return 0

    def get_cpu_graph_seq_len_fill_value(self) -> int:
        # DP-attention padding asks this on CPU and the cuda-graph value elsewhere
        # (forward_batch_info.py:2013-2017): the same padded rows either way, so the same 0.
        return self.get_cuda_graph_seq_len_fill_value()

    def init_forward_metadata_out_graph(
        self, forward_batch: ForwardBatch, in_capture: bool = False
    ) -> None:
        """Capture/replay metadata for decode graphs.

        The FIA call captured in a graph keeps the ``actual_seq_lengths_kv`` list bound at
        capture; ``NPUGraphRunner`` replays with ``graph.update(cpu_update_input=
        [{"actual_seq_lengths_kv": lens}])``. Tensors must keep their addresses, so the block
        table is refreshed in place.
        """
        if self._graph_block_table is None:
            raise RuntimeError("init_cuda_graph_state() must run before graph capture")
        mode = forward_batch.forward_mode
        if not mode.is_decode_or_idle():
            raise UnsupportedConfiguration(
                f"sglang-ascend-fia: graph capture of {mode.name} batches is not supported by "
                f"{self.backend_name}"
            )
        bs = forward_batch.batch_size
        kv_lens = self._kv_lens(forward_batch)[:bs]
        if in_capture or bs not in self._graph_metadata:
            self._graph_metadata[bs] = self._decode_metadata(
                self._graph_block_table[:bs], kv_lens, graph_mode=True
            )
        metadata = self._graph_metadata[bs]
        if not in_capture:
            # Eager view of the same lengths; a real replay rebinds them via graph.update.
            metadata.kv_lens[:] = kv_lens
        # The calls prepared with the old lengths validated those: the next layer prepares anew.
        metadata.prepared.clear()
        table = metadata.block_table
        max_len = max(kv_lens, default=0)
        blocks = (max_len + self.page_size - 1) // self.page_size
        table[:, blocks:].zero_()
        if blocks:
            table[:, :blocks].copy_(
                self.req_to_token[forward_batch.req_pool_indices[:bs], : max_len : self.page_size]
                // self.page_size
            )
        self.forward_metadata = metadata

    def support_triton(self) -> bool:
        return False


def refuse_kwargs(kwargs: dict[str, Any], allowed: frozenset[str], backend_name: str) -> None:
    """Refuse keyword arguments a backend does not implement (sinks, topk indices, LSE)."""
    extra = sorted(set(kwargs) - allowed)
    if extra:
        raise NotImplementedError(f"sglang-ascend-fia: {backend_name} does not take {extra}")
