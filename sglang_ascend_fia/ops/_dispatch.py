"""Dispatch between torch_npu kernels and the pure-PyTorch references, with launch accounting.

Every public op in :mod:`sglang_ascend_fia.ops` is declared with :func:`npu_op` on its reference,
whose signature is the op's (torch_npu 2.14's names and defaults); nothing restates it. A call:

1. binds its arguments once to that signature (:func:`bind_arguments`) and hands the mapping to
   the op's validator, which checks the documented kernel constraints (the same checks on every
   device, so a CPU run rejects what an NPU would reject; ``validation_counts()`` counts them);
2. counts one launch for the op (``launch_counts()``), so tests and benchmarks can assert how many
   kernels a forward makes;
3. runs ``torch_npu.<npu_name>`` when the first tensor argument lives on an NPU, and the reference
   implementation otherwise.

A caller that makes the same call many times per batch with only some tensors changing (every
layer of a forward) can bind the rest once with ``op.prepare(**fixed)`` (:class:`PreparedCall`):
a launch then passes only the changing tensors, and the validator runs again only when their
geometry (shape, strides, dtype, device) differs from the last accepted launch. That makes a
layer's host work a few attribute reads instead of keying ~15 arguments.

``torch_npu`` is imported only when an NPU tensor is actually seen.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import torch

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

Validator = Callable[[Mapping[str, Any]], None]
"""Checks one bound call: every parameter of the op by name, defaults filled in."""


class NpuOp(Protocol[P, R]):
    """A facade op: callable like the torch_npu kernel, with its parts exposed for tests and
    ``verify-ops``."""

    npu_name: str
    reference: Callable[P, R]
    validator: Validator | None
    # Binds a call like the op does, then runs ``validator`` (what an NPU call runs before the
    # kernel).
    validate: Callable[P, None]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    # Binds the arguments that stay fixed for a batch (by keyword); see :class:`PreparedCall`.
    prepare: Callable[..., PreparedCall]


@dataclass(frozen=True)
class _Parameters:
    signature: inspect.Signature
    positional: tuple[str, ...]  # positional-or-keyword names, in order
    names: frozenset[str]
    defaults: dict[str, Any]


@functools.cache
def _parameters(fn: Callable[..., Any]) -> _Parameters:
    # inspect.signature() rebuilds the Signature on every call (~100 us for FIA's 40
    # parameters); an op's signature never changes, so it is read once.
    signature = inspect.signature(fn)
    params = signature.parameters
    return _Parameters(
        signature=signature,
        positional=tuple(n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD),
        names=frozenset(params),
        defaults={n: p.default for n, p in params.items() if p.default is not p.empty},
    )


def bind_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Every parameter of ``fn`` by name, defaults filled in, as a call ``fn(*args, **kwargs)``
    would bind them; Python's own ``TypeError`` for a call that does not bind."""
    p = _parameters(fn)
    given = len(args)
    if (
        given <= len(p.positional)
        and p.names.issuperset(kwargs)
        and kwargs.keys().isdisjoint(p.positional[:given])
    ):
        # The usual call (tensors by position, the rest by keyword), bound in a few
        # microseconds; a call missing a required argument falls through to Signature.bind.
        bound = {**p.defaults, **dict(zip(p.positional, args, strict=False)), **kwargs}
        if len(bound) == len(p.names):
            return bound
    call = p.signature.bind(*args, **kwargs)
    call.apply_defaults()
    return dict(call.arguments)


_launches: Counter[str] = Counter()
_validations: Counter[str] = Counter()
_reference_logged = False


def launch_counts() -> dict[str, int]:
    """Kernel launches per op name (without the ``npu_`` prefix) since the last reset."""
    return dict(_launches)


def reset_launch_counts() -> None:
    _launches.clear()


def validation_counts() -> dict[str, int]:
    """Full validator runs per op name since the last :func:`reset_validation_counts`."""
    return dict(_validations)


def reset_validation_counts() -> None:
    _validations.clear()


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
            return value[0]
    return None


def is_npu(tensor: torch.Tensor | None) -> bool:
    # A string compare on the device type: no import, no device query, no sync.
    return tensor is not None and tensor.device.type == "npu"


def _npu_kernel(npu_name: str) -> Callable[..., Any]:
    import torch_npu  # only reached with an NPU tensor in hand

    return getattr(torch_npu, npu_name)


def _log_reference_once(device: str) -> None:
    global _reference_logged
    if not _reference_logged:
        _reference_logged = True
        logger.info(
            "sglang-ascend-fia: no NPU tensor seen (device %s); NPU ops run their pure-PyTorch "
            "references",
            device,
        )


Geometry = tuple[torch.Size, tuple[int, ...], torch.dtype, torch.device]


class PreparedCall:
    """One op's call with the arguments that are fixed for a batch bound once (``fixed``, by
    keyword); each launch passes the tensors that change (by position: the op's leading
    parameters, e.g. FIA's query, key and value; any later one, e.g. ``query_rope``, by keyword).

    The first launch validates the whole call with the op's validator. A later launch whose
    changing tensors have the geometry (shape, strides, dtype, device) of the last accepted one
    skips it: validators read only the geometry of data tensors, never their values
    (``ops._checks``), and the fixed arguments are the very objects validated. So index and length
    tensors, whose values validators do read, belong in ``fixed``: an int32/int64 changing tensor
    is refused. Whoever owns a fixed argument that changes in place (graph mode's
    ``kv_lens[:] = ...``) drops the prepared call and prepares a new one.
    """

    __slots__ = (
        "_fixed",
        "_geometry",
        "_implementation",
        "_name",
        "_npu_name",
        "_reference",
        "_validate",
    )

    def __init__(
        self,
        op_name: str,
        npu_name: str,
        reference: Callable[..., Any],
        validate: Validator | None,
        fixed: dict[str, Any],
    ) -> None:
        self._name, self._npu_name = op_name, npu_name
        self._reference, self._validate = reference, validate
        self._fixed = fixed
        self._geometry: list[Geometry] | None = None
        self._implementation: Callable[..., Any] = reference

    def __call__(self, *tensors: torch.Tensor, **more: torch.Tensor) -> Any:
        kwargs = {**self._fixed, **more} if more else self._fixed
        geometry = [(t.shape, t.stride(), t.dtype, t.device) for t in tensors]
        if more:
            geometry += [(t.shape, t.stride(), t.dtype, t.device) for t in more.values()]
        if geometry != self._geometry:
            self._geometry = None  # a refused launch is never remembered
            self._check_changing(tensors, more)
            if self._validate is not None:
                _validations[self._name] += 1
                self._validate(bind_arguments(self._reference, tensors, kwargs))
            # The device is part of the geometry, so the implementation is chosen once per
            # geometry too: torch_npu's kernel on an NPU tensor, the reference elsewhere.
            if is_npu(tensors[0]):
                self._implementation = _npu_kernel(self._npu_name)
            else:
                _log_reference_once(tensors[0].device.type)
                self._implementation = self._reference
            self._geometry = geometry
        _launches[self._name] += 1
        return self._implementation(*tensors, **kwargs)

    def _check_changing(self, tensors: tuple[torch.Tensor, ...], more: dict[str, Any]) -> None:
        for position, t in enumerate((*tensors, *more.values())):
            if t.dtype in (torch.int32, torch.int64):
                raise TypeError(
                    f"sglang-ascend-fia: a prepared {self._name} launch got an {t.dtype} tensor "
                    f"(changing tensor #{position}); index and length tensors are bound once "
                    "with prepare(), only data tensors change per launch"
                )


def npu_op(
    npu_name: str,
    *,
    validate: Validator | None = None,
) -> Callable[[Callable[P, R]], NpuOp[P, R]]:
    """Declare ``reference`` as the CPU/CUDA implementation of ``torch_npu.<npu_name>``.

    ``reference``'s signature is the op's. ``validate`` takes the call bound to it (a mapping of
    every parameter) and raises ``ValueError`` on anything the NPU kernel documents as
    unsupported. It runs before either implementation, on every call; a caller that makes the
    same call per layer binds it once with ``prepare`` (:class:`PreparedCall`).
    """

    def decorate(reference: Callable[P, R]) -> NpuOp[P, R]:
        op_name = reference.__name__

        @functools.wraps(reference)
        def check(*args: P.args, **kwargs: P.kwargs) -> None:
            if validate is not None:
                validate(bind_arguments(reference, args, kwargs))

        @functools.wraps(reference)
        def op(*args: P.args, **kwargs: P.kwargs) -> R:
            if validate is not None:
                _validations[op_name] += 1
                validate(bind_arguments(reference, args, kwargs))
            _launches[op_name] += 1
            tensor = _first_tensor(args, kwargs)
            if is_npu(tensor):
                return _npu_kernel(npu_name)(*args, **kwargs)
            _log_reference_once(tensor.device.type if tensor is not None else "none")
            return reference(*args, **kwargs)

        facade = cast(NpuOp[P, R], op)
        facade.npu_name = npu_name
        facade.reference = reference
        facade.validator = validate
        facade.validate = check
        facade.prepare = lambda **fixed: PreparedCall(op_name, npu_name, reference, validate, fixed)
        return facade

    return decorate
