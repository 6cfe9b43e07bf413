"""Validate once per geometry: a per-op memo of the last call its validator accepted.

All layers of a forward batch make the same FIA call but for their own query and KV-cache
tensors: same shapes, dtypes, devices and scalars, and the very same per-batch objects from the
backend's metadata (``actual_seq_lengths(_kv)`` lists, ``block_table``, the mask template). The
first layer validates fully; the others find their call's key equal to the remembered one and
skip straight to the launch, on the NPU dispatch path as on the reference path.

A call's key holds everything a validator may read:

- float tensors: shape, strides (contiguity), dtype and device. Validators never read float
  values (``ops._checks``), so a new query or another layer's cache of the same geometry matches;
- any other tensor (block tables, length tensors, masks): the same, plus the tensor's identity
  and its in-place version counter. The memo keeps a strong reference to each such tensor, so an
  id cannot be recycled by a new tensor while it is remembered, and an in-place update (graph
  mode refreshes its static block table with ``copy_``) changes the key;
- lists and tuples of ints (the lengths): their contents, copied, so a list updated in place (the
  graph-mode ``kv_lens[:] = ...``) or a new list with other lengths changes the key;
- ints, floats, bools and dtypes: type and value; strings and None: value.

Any other argument (a list of tensors, an unknown object) makes the call unkeyable: it is
validated every time. A call the validator refuses is never remembered.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from typing import Any

import torch

_NUMBERS = (int, float, bool, torch.dtype)


class _Unkeyable(Exception):
    """An argument the memo cannot fingerprint: validate the call."""


def _fingerprint(value: Any, held: list[torch.Tensor]) -> object:
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind in _NUMBERS:
        return kind, value  # 1, 1.0 and True are equal but not the same argument
    if kind is torch.Tensor or isinstance(value, torch.Tensor):
        meta = (value.shape, value.stride(), value.dtype, value.device)
        if value.dtype.is_floating_point:
            return meta
        held.append(value)
        return (*meta, id(value), value._version)
    if kind is list or kind is tuple:
        try:
            # ints only ("q": int64); a float, a tensor or anything else cannot be keyed.
            return kind, array("q", value)
        except (TypeError, OverflowError):
            raise _Unkeyable from None
    raise _Unkeyable


CallKey = tuple[object, tuple[torch.Tensor, ...]]
"""A call's key, and the tensors whose identity it contains (kept alive while remembered)."""


class ValidationMemo:
    """The key of the last call one op's validator accepted."""

    __slots__ = ("_held", "_key")

    def __init__(self) -> None:
        self._key: object = None
        self._held: tuple[torch.Tensor, ...] = ()

    @staticmethod
    def key(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> CallKey | None:
        """This call's key, or None when it cannot be keyed. Pass it to :meth:`remember` once
        the validator has accepted the call."""
        held: list[torch.Tensor] = []
        try:
            key = (
                tuple([_fingerprint(v, held) for v in args]),
                tuple(kwargs),
                tuple([_fingerprint(v, held) for v in kwargs.values()]),
            )
        except _Unkeyable:
            return None
        return key, tuple(held)

    def known(self, key: CallKey | None) -> bool:
        return key is not None and key[0] == self._key

    def remember(self, key: CallKey | None) -> None:
        if key is not None:
            self._key, self._held = key

    def forget(self) -> None:
        self._key, self._held = None, ()
