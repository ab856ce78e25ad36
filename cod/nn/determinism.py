"""Thread-independent CPU inference: the same input gives the same bits at any thread count.

oneDNN and MKL pick their blocking, and with it the order of the sums inside a convolution
or a matrix product, from the number of threads: a decode at 1 and at 2 torch threads differs
in the last bits of a 1x1 convolution (first at ``condition.decoder.block.1.q`` of the small
default model) and, after the network, by one level at a few pixels. Inside
:func:`thread_independent`, every such product runs as single-threaded kernels on a fixed
split of its independent parts (output rows of a convolution, rows of a linear layer or matrix
product, matrices of a batched product), the parts spread over a pool of worker threads. The
split depends on the shapes alone, so the arithmetic is the same whatever the thread count,
and the parts still run in parallel. Every other operator is one of ATen's own kernels, which
share work between threads only across independent outputs (each output's sum is computed by
one thread, in one order). tests/test_determinism.py checks decodes at 1, 2 and 4 threads.

Only CPU tensors are affected; on a GPU the context does nothing.
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: Multiply-adds per part (a few ms on one core). A constant, so that the split (and so every
#: sum's order) never depends on the machine or the thread count. Smaller parts cost more than
#: they balance: at 2 threads the 720x480 fast decode took 0.72-0.77 s with 2**27, 0.79-0.86 s
#: with 2**25, 1.6 s with 2**23 (one-row convolution parts, a pool hand-off each).
WORK_PER_PART = 1 << 27

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    # a forked child (a DataLoader worker) inherits the pools but not their threads
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _single_threaded_worker() -> None:
    torch.get_num_threads()  # torch's lazy per-thread setup first, or it would undo the next line
    torch.set_num_threads(1)  # this worker thread's OpenMP / MKL setting (thread-local)


def _pool(workers: int) -> ThreadPoolExecutor:
    """A kept pool of ``workers`` single-threaded torch workers."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            before = torch.get_num_threads()
            pool = ThreadPoolExecutor(workers, thread_name_prefix="cod-fixed", initializer=_single_threaded_worker)
            barrier = threading.Barrier(workers)
            list(pool.map(lambda _: barrier.wait(), range(workers)))  # start every worker now
            # a worker's set_num_threads(1) also changed torch's default for threads created
            # later: put the caller's value back (the workers keep their own setting)
            torch.set_num_threads(before)
            _pools[workers] = pool
        return pool


def _parts(n: int, per_item: int) -> list[tuple[int, int]]:
    """Split range(n) into consecutive parts of about WORK_PER_PART multiply-adds each."""
    step = max(1, WORK_PER_PART // max(1, per_item))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


class _FixedSplit(TorchFunctionMode):
    """Runs convolutions and matrix products as single-threaded kernels on fixed parts."""

    def __init__(self, workers: int):
        super().__init__()
        self.pool = _pool(workers)

    # ------------------------------------------------------------ running parts
    def _map(self, jobs: list[Callable[[], Any]]) -> list[Any]:
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def run(job: Callable[[], Any]) -> Any:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return job()

        if len(jobs) == 1:
            return [self.pool.submit(run, jobs[0]).result()]
        return list(self.pool.map(run, jobs))

    def _rows(self, mm: Callable[..., torch.Tensor], x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x @ w (+ bias) over the rows of x (all dims but the last folded), part by part, each
        part writing its rows of the result (``mm`` is torch.mm or torch.addmm, with out=)."""
        flat = x.reshape(-1, x.shape[-1])
        parts = _parts(flat.shape[0], w.shape[0] * w.shape[1])
        out = flat.new_empty(flat.shape[0], w.shape[1])
        args = (bias,) if bias is not None else ()
        self._map([lambda a=a, b=b: mm(*args, flat[a:b], w, out=out[a:b]) for a, b in parts])
        return out.reshape(*x.shape[:-1], w.shape[1])

    # ------------------------------------------------------------ the operators
    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim < 2 or x.numel() == 0 or weight.ndim != 2 or (bias is not None and bias.ndim != 1):
            return self._map([lambda: F.linear(x, weight, bias)])[0]
        return self._rows(torch.mm if bias is None else torch.addmm, x, weight.t(), bias)

    def _addmm(self, bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1) -> torch.Tensor:
        # the fast CoD-Lite form's linear layers (cod.inference): rows split like F.linear
        if beta == 1 and alpha == 1 and a.ndim == 2 and b.ndim == 2 and a.numel() and bias.ndim == 1 and bias.shape[0] == b.shape[1]:
            return self._rows(torch.addmm, a, b, bias)
        return self._map([lambda: torch.addmm(bias, a, b, beta=beta, alpha=alpha)])[0]

    def _matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.ndim >= 2 and b.ndim == 2 and a.numel():
            return self._rows(torch.mm, a, b)
        if a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0]:
            return self._bmm(a, b)
        return self._map([lambda: torch.matmul(a, b)])[0]

    def _bmm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        parts = _parts(a.shape[0], a.shape[1] * a.shape[2] * b.shape[2])
        if len(parts) == 1:
            return self._map([lambda: torch.bmm(a, b)])[0]
        out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
        self._map([lambda i=i, j=j: torch.bmm(a[i:j], b[i:j], out=out[i:j]) for i, j in parts])
        return out

    def _conv2d(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
        whole = lambda: F.conv2d(x, weight, bias, stride, padding, dilation, groups)  # noqa: E731
        if x.ndim != 4 or isinstance(padding, str) or x.numel() == 0:
            return self._map([whole])[0]
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
        n, _, H, _ = x.shape
        cout, cin_g, kh, kw = weight.shape
        hout = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wout = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if hout <= 0 or wout <= 0:
            return self._map([whole])[0]
        per_row = cout * wout * cin_g * kh * kw
        if per_row * hout >= WORK_PER_PART:  # split the output rows of each image
            parts = [(i, a, b) for i in range(n) for a, b in _parts(hout, per_row)]
        else:  # split the batch
            parts = [(slice(a, b), 0, hout) for a, b in _parts(n, per_row * hout)]

        def part(items, r0: int, r1: int) -> torch.Tensor:
            # input rows [r0*sh - ph, (r1-1)*sh - ph + dh*(kh-1) + 1), zero rows outside the image
            lo, hi = r0 * sh - ph, (r1 - 1) * sh - ph + dh * (kh - 1) + 1
            xs = x[items] if isinstance(items, slice) else x[items : items + 1]
            xs = xs[:, :, max(lo, 0) : min(hi, H)]
            if lo < 0 or hi > H:
                xs = F.pad(xs, (0, 0, max(-lo, 0), max(hi - H, 0)))
            return F.conv2d(xs, weight, bias, (sh, sw), (0, pw), (dh, dw), groups)

        if len(parts) == 1:
            return self._map([lambda: part(*parts[0])])[0]
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format
        out = torch.empty((n, cout, hout, wout), dtype=x.dtype, device=x.device, memory_format=fmt)  # the input's layout (the fast form is channels-last)
        self._map([lambda p=p: out[p[0], :, p[1] : p[2]].copy_(part(*p)[0] if not isinstance(p[0], slice) else part(*p)) for p in parts])
        return out

    _SPLIT = {
        F.linear: "_linear",
        torch.conv2d: "_conv2d",
        F.conv2d: "_conv2d",
        torch.matmul: "_matmul",
        torch.Tensor.matmul: "_matmul",
        torch.Tensor.__matmul__: "_matmul",
        torch.mm: "_matmul",
        torch.Tensor.mm: "_matmul",
        torch.bmm: "_bmm",
        torch.Tensor.bmm: "_bmm",
        torch.addmm: "_addmm",
        torch.Tensor.addmm: "_addmm",
    }
    # other oneDNN / BLAS operators: one single-threaded kernel, whole
    _WHOLE = {
        torch.conv1d, torch.conv3d, F.conv1d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
        torch.baddbmm, torch.addbmm, torch.einsum, torch.tensordot, torch.Tensor.baddbmm,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = self._SPLIT.get(func)
        if name is None and func not in self._WHOLE:
            return func(*args, **kwargs)
        if any(isinstance(a, torch.Tensor) and a.device.type != "cpu" for a in args):
            return func(*args, **kwargs)
        if name is None:
            return self._map([lambda: func(*args, **kwargs)])[0]
        return getattr(self, name)(*args, **kwargs)


@contextmanager
def thread_independent(device: torch.device | str | None = "cpu", workers: int | None = None) -> Iterator[None]:
    """Within this block, CPU convolutions and matrix products give the same bits at any
    torch thread count; ``workers`` (default: ``torch.get_num_threads()``) run their parts
    in parallel. Does nothing for a CUDA device."""
    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    with _FixedSplit(workers or torch.get_num_threads()):
        yield


F_ = TypeVar("F_", bound=Callable[..., Any])


def thread_independent_method(method: F_) -> F_:
    """Decorator: run a codec method inside :func:`thread_independent` on ``self.device``."""

    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with thread_independent(getattr(self, "device", "cpu")):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__ = ["thread_independent", "thread_independent_method", "WORK_PER_PART"]
