"""Entropy coding of the VQ indices: a fitted prior per model, range-coded with ``constriction``.

The papers write every index with a fixed ``bits`` bits (CoD-Lite spec §2.1); the indices of a
trained model are far from uniform, and neighbouring indices depend on each other. A prior
(:class:`IndexPrior`) holds two integer models, fitted on training images by :func:`fit_prior`:

- **static** (level 1): one histogram over the codebook;
- **context** (level 2): the histogram of an index given the classes of its already-coded left
  and upper neighbours. The codebook is split into ``G`` classes by clustering each code's
  distribution of right/lower neighbours (k-means under cross-entropy); a missing neighbour
  (image border) is its own class, so there are ``(G + 1)**2`` contexts.

Every row is an integer frequency table summing to ``2**PRECISION`` with no zero entry
(smoothing towards the static histogram), so the coder never meets an impossible symbol.
The tables are turned into ``constriction`` models with ``perfect=True``: for a table that is
exactly representable at the coder's precision, the optimal quantisation is the table itself,
so encoder and decoder build identical models on any machine and with any constriction
version (integers in, integers out). Indices are coded in raster order with the queue range
coder; the payload is its 32-bit words written big-endian, trailing zero bytes dropped
(they are restored on reading).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from cod.errors import BitstreamError

#: Fixed-point precision of the frequency tables (constriction's default range coder: 24 bits).
PRECISION = 24
TOTAL = 1 << PRECISION
#: Coding kinds written in a v2 header (docs/format.md).
CODING_STATIC = 1
CODING_CONTEXT = 2
CODING_NAMES = {CODING_STATIC: "static", CODING_CONTEXT: "context"}
#: Tensor names of a prior inside a weights file (next to the network's tensors).
PRIOR_PREFIX = "entropy_prior."


# ------------------------------------------------------------------------ tables
def quantize_frequencies(weights: np.ndarray) -> np.ndarray:
    """Non-negative weights (..., K) -> int64 frequencies, each >= 1, each row summing to
    exactly ``TOTAL`` (largest remainders, ties to the lower index). Deterministic integer
    arithmetic after one float64 scaling."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        return quantize_frequencies(w[None])[0]
    k = w.shape[-1]
    if k > TOTAL // 2:
        raise ValueError(f"{k} symbols do not fit a {PRECISION}-bit table")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError("frequency weights must be finite and non-negative")
    s = w.sum(-1, keepdims=True)
    w = np.where(s > 0, w / np.where(s > 0, s, 1), 1.0 / k)
    budget = TOTAL - k  # every symbol gets 1 for free
    exact = w * budget
    q = np.floor(exact).astype(np.int64)
    short = budget - q.sum(-1)
    rema = exact - q
    order = np.argsort(-rema, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(k)[None].repeat(len(w), 0), axis=-1)
    q += ranks < short[:, None]
    q += 1
    assert (q.sum(-1) == TOTAL).all()
    return q


def _neighbour_classes(grid: np.ndarray, classes: np.ndarray, none: int) -> np.ndarray:
    """Context of every position of an (h, w) grid: class(left) * (G+1) + class(up)."""
    cls = classes[grid]
    left = np.full_like(cls, none)
    left[:, 1:] = cls[:, :-1]
    up = np.full_like(cls, none)
    up[1:, :] = cls[:-1, :]
    return left * (none + 1) + up


def _cluster_codes(grids: Iterable[np.ndarray], k: int, groups: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """Codebook classes: k-means (cross-entropy) of each code's right/lower-neighbour histogram."""
    n = np.zeros((k, k))
    for g in grids:
        np.add.at(n, (g[:, :-1].ravel(), g[:, 1:].ravel()), 1)
        np.add.at(n, (g[:-1, :].ravel(), g[1:, :].ravel()), 1)
    mass = n.sum(1)
    p = (n + 1) / (n + 1).sum(1, keepdims=True)
    groups = min(groups, k)
    rng = np.random.default_rng(seed)
    # initial centres: the most frequent codes' rows plus random ones (deterministic)
    start = np.argsort(-mass, kind="stable")[:groups]
    cent = p[start].copy()
    labels = np.zeros(k, dtype=np.int64)
    for _ in range(iters):
        d = -(p @ np.log(cent).T)  # cross-entropy of each code's row under each centre
        labels = d.argmin(1)
        for c in range(groups):
            m = labels == c
            if m.any():
                cent[c] = ((p[m] * (mass[m, None] + 1)).sum(0) / (mass[m].sum() + m.sum())) + 1e-12
            else:  # empty class: re-seed on a random code
                cent[c] = p[rng.integers(k)]
    return labels.astype(np.int64)


# ------------------------------------------------------------------------ the prior
@dataclass(frozen=True)
class IndexPrior:
    """Integer entropy models of one model's indices (see the module docstring)."""

    bits: int
    static: np.ndarray  # (K,) int64, sums to TOTAL
    classes: np.ndarray | None = None  # (K,) int64 in [0, G)
    context: np.ndarray | None = None  # ((G+1)**2, K) int64, rows sum to TOTAL
    _models: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        k = 1 << self.bits
        check_table(self.static[None], k, "static")
        if (self.classes is None) != (self.context is None):
            raise ValueError("a context prior needs both classes and context tables")
        if self.classes is not None:
            rows = self.context.shape[0] if self.context.ndim == 2 else 0
            g = int(round(rows**0.5)) - 1
            if g < 1 or (g + 1) ** 2 != rows:
                raise ValueError(f"context table has {rows} rows; it needs (G + 1)**2 for G classes")
            if self.classes.shape != (k,) or self.classes.min() < 0 or self.classes.max() >= g:
                raise ValueError(f"context classes must be one class in [0, {g}) per code")
            check_table(self.context, k, "context")

    # -------------------------------------------------------------- facts
    @property
    def num_codes(self) -> int:
        return 1 << self.bits

    @property
    def groups(self) -> int:
        return 0 if self.context is None else int(round(self.context.shape[0] ** 0.5)) - 1

    @property
    def best_coding(self) -> int:
        return CODING_CONTEXT if self.context is not None else CODING_STATIC

    @property
    def tag(self) -> int:
        """16-bit fingerprint of the tables (written in v2 files, checked on reading)."""
        crc = 0
        for a in (self.static, self.classes, self.context):
            if a is not None:
                crc = zlib.crc32(np.ascontiguousarray(a, dtype="<u4").tobytes(), crc)
        return crc & 0xFFFF

    def ideal_bits(self, grid: np.ndarray, coding: int | None = None) -> float:
        """Information content of an (h, w) index grid under this prior, in bits."""
        coding = coding or self.best_coding
        g = np.asarray(grid, dtype=np.int64)
        if coding == CODING_STATIC:
            return float(-np.log2(self.static[g] / TOTAL).sum())
        ctx = _neighbour_classes(g, self.classes, self.groups)
        return float(-np.log2(self.context[ctx, g] / TOTAL).sum())

    # -------------------------------------------------------------- coding
    def _model(self, coding: int, row: int = 0):
        key = (coding, row)
        m = self._models.get(key)
        if m is None:
            import constriction

            table = self.static if coding == CODING_STATIC else self.context[row]
            m = constriction.stream.model.Categorical(table / TOTAL, perfect=True)
            self._models[key] = m
        return m

    def encode(self, grid: np.ndarray, coding: int | None = None) -> bytes:
        """Range-code an (h, w) index grid in raster order."""
        import constriction

        coding = coding or self.best_coding
        g = np.asarray(grid, dtype=np.int64)
        if g.ndim != 2:
            raise ValueError("encode expects an (h, w) index grid")
        if g.size and (g.min() < 0 or g.max() >= self.num_codes):
            raise ValueError(f"index out of range for {self.bits} bits")
        enc = constriction.stream.queue.RangeEncoder()
        if coding == CODING_STATIC:
            enc.encode(g.ravel().astype(np.int32), self._model(CODING_STATIC))
        elif coding == CODING_CONTEXT:
            self._require_context()
            ctx = _neighbour_classes(g, self.classes, self.groups).ravel().tolist()
            model = self._model
            for s, c in zip(g.ravel().tolist(), ctx):
                enc.encode(s, model(CODING_CONTEXT, c))
        else:
            raise ValueError(f"unknown coding {coding}")
        words = enc.get_compressed().astype(">u4").tobytes()
        return words.rstrip(b"\0")

    def decode(self, payload: bytes, height: int, width: int, coding: int) -> np.ndarray:
        """Inverse of :meth:`encode`: an (height, width) int64 grid. Any payload decodes to
        some grid in bounded time (one symbol per position) or raises BitstreamError;
        corruption is otherwise the container's CRC's business."""
        try:
            return self._decode(payload, height, width, coding)
        except BitstreamError:
            raise
        except Exception as exc:  # constriction's complaint about invalid compressed data
            raise BitstreamError(f"corrupt entropy-coded payload ({exc})") from None

    def _decode(self, payload: bytes, height: int, width: int, coding: int) -> np.ndarray:
        import constriction

        n = height * width
        pad = -len(payload) % 4
        words = np.frombuffer(bytes(payload) + b"\0" * (pad + 4), dtype=">u4").astype(np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)
        if coding == CODING_STATIC:
            out = np.asarray(dec.decode(self._model(CODING_STATIC), n), dtype=np.int64)
            return out.reshape(height, width)
        if coding != CODING_CONTEXT:
            raise BitstreamError(f"unknown index coding {coding}")
        self._require_context()
        cls = self.classes.tolist()
        none = self.groups
        stride = none + 1
        models = [self._model(CODING_CONTEXT, c) for c in range(stride * stride)]  # built once per prior
        decode = dec.decode
        out: list[int] = []
        up_cls = [none] * width  # classes of the row above (none for the first row)
        for _ in range(height):
            left = none
            row_cls = []
            for j in range(width):
                s = decode(models[left * stride + up_cls[j]])
                out.append(s)
                left = cls[s]
                row_cls.append(left)
            up_cls = row_cls
        return np.asarray(out, dtype=np.int64).reshape(height, width)

    def _require_context(self) -> None:
        if self.context is None:
            raise BitstreamError("this file is context-coded, but the model's prior has no context tables (refit with `cod fit-prior`)")

    # -------------------------------------------------------------- storage
    def to_tensors(self) -> dict[str, "torch.Tensor"]:  # noqa: F821
        import torch

        out = {PRIOR_PREFIX + "static": torch.from_numpy(self.static.astype(np.int32))}
        if self.context is not None:
            out[PRIOR_PREFIX + "classes"] = torch.from_numpy(self.classes.astype(np.int32))
            out[PRIOR_PREFIX + "context"] = torch.from_numpy(self.context.astype(np.int32))
        return out

    @classmethod
    def from_tensors(cls, bits: int, tensors: Mapping[str, "torch.Tensor"]) -> "IndexPrior | None":  # noqa: F821
        """The prior stored in a weights file's tensors, or None when it has none."""
        if PRIOR_PREFIX + "static" not in tensors:
            return None

        def get(name: str) -> np.ndarray | None:
            t = tensors.get(PRIOR_PREFIX + name)
            return None if t is None else t.detach().cpu().numpy().astype(np.int64)

        return cls(bits, get("static"), get("classes"), get("context"))


def split_prior(state: dict) -> dict:
    """Remove and return the prior's tensors from a weights state dict."""
    return {k: state.pop(k) for k in [k for k in state if k.startswith(PRIOR_PREFIX)]}


def check_table(table: np.ndarray, k: int, what: str) -> None:
    """A frequency table is (rows, k), integer, every entry >= 1, every row summing to TOTAL."""
    t = np.asarray(table)
    if t.ndim != 2 or t.shape[1] != k:
        raise ValueError(f"{what} table has shape {t.shape}, expected (rows, {k})")
    if (t < 1).any():
        raise ValueError(f"{what} table has a zero-frequency code: every code needs a non-zero probability")
    if (t.sum(1) != TOTAL).any():
        raise ValueError(f"{what} table rows must sum to 2**{PRECISION}")


# ------------------------------------------------------------------------ fitting
def fit_prior(grids: list[np.ndarray], bits: int, groups: int = 16, alphas: Iterable[float] = (4, 16, 64, 256, 1024), seed: int = 0) -> tuple[IndexPrior, dict]:
    """Fit the static and context models on index grids of training images.

    Smoothing: static = (counts + 1/2) (Krichevsky–Trofimov); each context row = counts +
    alpha x static, with alpha picked from ``alphas`` by the bits of held-out grids (every
    fifth grid) and the tables then refitted on all grids. Returns (prior, report)."""
    k = 1 << bits
    grids = [np.asarray(g, dtype=np.int64) for g in grids if np.asarray(g).size]
    if not grids:
        raise ValueError("no index grids to fit a prior on")
    if any(g.min() < 0 or g.max() >= k for g in grids):
        raise ValueError(f"index out of range for {bits} bits")

    def static_of(gs: list[np.ndarray]) -> np.ndarray:
        counts = np.bincount(np.concatenate([g.ravel() for g in gs]), minlength=k).astype(np.float64)
        return counts + 0.5

    def context_of(gs: list[np.ndarray], classes: np.ndarray, p0: np.ndarray, alpha: float) -> np.ndarray:
        g1 = int(classes.max()) + 1
        n = np.zeros(((g1 + 1) ** 2, k))
        for g in gs:
            np.add.at(n, (_neighbour_classes(g, classes, g1).ravel(), g.ravel()), 1)
        return n + alpha * (p0 / p0.sum())[None]

    held = grids[::5] if len(grids) >= 5 else []
    train = [g for i, g in enumerate(grids) if i % 5] if held else grids
    report: dict = {"grids": len(grids), "indices": int(sum(g.size for g in grids))}
    best_alpha = list(alphas)[len(list(alphas)) // 2]
    if held:
        classes = _cluster_codes(train, k, groups, seed)
        p0 = static_of(train)
        scores = {}
        for a in alphas:
            trial = IndexPrior(bits, quantize_frequencies(p0), classes, quantize_frequencies(context_of(train, classes, p0, a)))
            scores[a] = sum(trial.ideal_bits(g) for g in held) / sum(g.size for g in held)
        best_alpha = min(scores, key=scores.get)
        report["held_out_bits_per_index"] = {str(a): round(v, 4) for a, v in scores.items()}
        report["held_out_static_bits_per_index"] = round(sum(trial.ideal_bits(g, CODING_STATIC) for g in held) / sum(g.size for g in held), 4)
    classes = _cluster_codes(grids, k, groups, seed)
    p0 = static_of(grids)
    prior = IndexPrior(bits, quantize_frequencies(p0), classes, quantize_frequencies(context_of(grids, classes, p0, best_alpha)))
    report.update(alpha=best_alpha, groups=int(classes.max()) + 1, codes_seen=int((np.bincount(np.concatenate([g.ravel() for g in grids]), minlength=k) > 0).sum()))
    return prior, report
