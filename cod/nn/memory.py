"""Peak memory of a computation: its tensors counted as they are created and freed (cod.limits).

:func:`peak_bytes` runs a function and returns the most bytes its tensors held at once: every
tensor a torch function returns is counted from its creation until the last tensor sharing its
storage is freed. Run on the ``meta`` device (a :func:`meta_twin` of the network, meta inputs)
nothing is allocated or computed, so the peak of decoding any claimed size is known before
deciding to decode it. What happens inside one operator (oneDNN scratch, im2col buffers,
a composite's temporaries) is not seen; cod.limits.SCRATCH_FACTOR covers it (measured).

The first operator on meta tensors imports torch._dynamo (seconds): the codecs trace on the
meta device only when a cheaper bound cannot settle the question (cod.codec.IndexCodec).
"""
from __future__ import annotations

import copy
import weakref
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


class PeakExceeded(Exception):
    """Raised inside :func:`peak_bytes` once the live bytes pass ``stop_above``."""


class _LiveBytes(TorchFunctionMode):
    def __init__(self, stop_above: int | None) -> None:
        super().__init__()
        self.stop_above = stop_above
        self.refs: dict[int, int] = {}  # storage -> tensors alive on it
        self.size: dict[int, int] = {}  # storage -> bytes
        self.now = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.now -= self.size.pop(key)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self.refs:
                    self.refs[key] = 0
                    self.size[key] = storage.nbytes()
                    self.now += self.size[key]
                self.refs[key] += 1
                weakref.finalize(t, self._free, key)
        if self.now > self.peak:
            self.peak = self.now
            if self.stop_above is not None and self.peak > self.stop_above:
                raise PeakExceeded(self.peak)
        return out


def peak_bytes(fn: Callable[[], Any], stop_above: int | None = None) -> int:
    """Most bytes held at once by the tensors ``fn`` creates (tensors that existed before are
    not counted). With ``stop_above``, ``fn`` is abandoned as soon as the count passes it, and
    the count so far (above ``stop_above``) is returned."""
    live = _LiveBytes(stop_above)
    try:
        with torch.inference_mode(), live:
            fn()
    except PeakExceeded:
        pass
    return live.peak


def meta_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` (structure, attributes, folded weights and all) whose parameters
    and buffers live on the meta device: the real ones are never copied."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


__all__ = ["peak_bytes", "meta_twin", "PeakExceeded"]
