"""Entropy coding of a DiffC chain (spec §11.3 step 6) with ``constriction``'s range coder.

Per coded step the stream holds, in order:
  1. the step's KL budget n (integer bits, >= the measured KL) as a 4-bit-mantissa
     "minifloat" code rounded up (at most 1/16 above n), sent as the difference to the
     previous step's code under a fixed heavy-tailed model p(d) ~ 1 / (1 + |d|)**2;
  2. the candidate index of every chunk under the original's truncated Zipf model:
     p(j) ~ (j + 1)**-s on 0..2**k - 1 with s = 1 + 1 / (D_c + e**-1 ln(e + 1)), where D_c =
     n k / sum(k) is the chunk's share of the budget.

The original transmits neither n nor the KL (bug B6) and computes s from the float KL; here
both sides compute s from the transmitted n. All model probabilities are built from exact
operations (:mod:`cod.diffc.rng` soft functions), so the quantised models, and with them the
bits, are the same on every platform.
"""
from __future__ import annotations

from functools import lru_cache

import constriction
import numpy as np
import torch

from cod.diffc.rcc import chunk_sizes
from cod.diffc.rng import soft_exp, soft_log
from cod.errors import BitstreamError

ZIPF_OFFSET = 0.48312197571606913  # e**-1 * ln(e + 1), the original's constant, as a literal
BUDGET_MANTISSA = 16  # minifloat mantissa steps: codes < 2 * 16 are exact, then 16 per octave
MAX_BUDGET_CODE = 2 * BUDGET_MANTISSA + BUDGET_MANTISSA * 44  # budgets up to 31 * 2**45 bits


# ------------------------------------------------------------------ budgets (side information)
def budget_code(n: int) -> int:
    """Smallest code whose value is >= n (n >= 0)."""
    if n < 0:
        raise ValueError("negative budget")
    m = BUDGET_MANTISSA
    if n < 2 * m:
        return n
    e = n.bit_length() - m.bit_length()  # n >> e in [16, 31]
    mant = -(-n // (1 << e))
    if mant == 2 * m:
        e, mant = e + 1, m
    code = 2 * m + m * (e - 1) + (mant - m)
    if code > MAX_BUDGET_CODE:
        raise ValueError(f"budget {n} too large to code")
    return code


def budget_value(code: int) -> int:
    """The budget a code stands for (inverse of :func:`budget_code` on its values)."""
    m = BUDGET_MANTISSA
    if not 0 <= code <= MAX_BUDGET_CODE:
        raise ValueError(f"budget code {code} out of range")
    if code < 2 * m:
        return code
    e, mant = divmod(code - 2 * m, m)
    return (m + mant) << (e + 1)


@lru_cache(maxsize=1)
def _delta_model():
    d = np.arange(-MAX_BUDGET_CODE, MAX_BUDGET_CODE + 1, dtype=np.float64)
    p = 1.0 / ((1.0 + np.abs(d)) * (1.0 + np.abs(d)))  # exact IEEE operations
    return constriction.stream.model.Categorical(p, perfect=False), np.log2(p / p.sum())


# ------------------------------------------------------------------ Zipf models of the indices
def zipf_exponent(n_bits: int, k: int, total_bits: int) -> float:
    """s = 1 + 1 / (D_c + e**-1 ln(e+1)) with D_c = n k / sum(k)."""
    return 1.0 + 1.0 / (n_bits * k / total_bits + ZIPF_OFFSET)


def zipf_probabilities(K: int, s: float) -> np.ndarray:
    """(j + 1)**-s for j in 0..K-1 (unnormalised float64), from exact operations only."""
    j1 = torch.arange(1, K + 1, dtype=torch.float64)
    return soft_exp(soft_log(j1).mul_(-s)).numpy()


@lru_cache(maxsize=16)  # a step uses at most two; 16 models of 2**20 symbols are ~256 MB
def zipf_model(k: int, s: float):
    """(constriction Categorical, log2 of the normalised probabilities) for 2**k symbols."""
    p = zipf_probabilities(1 << k, s)
    return constriction.stream.model.Categorical(p, perfect=False), np.log2(p / p.sum())


def step_models(n_bits: int, max_chunk_size: int, padding: int) -> list[tuple[int, int, float]]:
    """(first chunk, chunk count, exponent) of the runs of equal-size chunks of a step."""
    sizes = chunk_sizes(n_bits, max_chunk_size, padding)
    total = sum(sizes)
    runs: list[tuple[int, int, float]] = []
    for c, k in enumerate(sizes):
        if runs and sizes[runs[-1][0]] == k:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, runs[-1][2])
        else:
            runs.append((c, 1, zipf_exponent(n_bits, k, total)))
    return runs


def step_bits(prev_code: int, code: int, indices: np.ndarray, max_chunk_size: int, padding: int) -> float:
    """Information content (bits) of one step under the models: the size estimate the rate
    control uses (the real stream adds at most a word or two in total)."""
    bits = -float(_delta_model()[1][code - prev_code + MAX_BUDGET_CODE])
    n = budget_value(code)
    sizes = chunk_sizes(n, max_chunk_size, padding)
    for c0, count, s in step_models(n, max_chunk_size, padding):
        logp = zipf_model(sizes[c0], s)[1]
        bits -= float(logp[indices[c0 : c0 + count]].sum())
    return bits


# ------------------------------------------------------------------ the stream
def encode_stream(codes: list[int], indices: list[np.ndarray], max_chunk_size: int, padding: int) -> bytes:
    """Range-code the steps' budget codes and chunk indices; big-endian 32-bit words."""
    enc = constriction.stream.queue.RangeEncoder()
    delta, _ = _delta_model()
    prev = 0
    for code, idx in zip(codes, indices):
        enc.encode(int(code - prev + MAX_BUDGET_CODE), delta)
        prev = code
        n = budget_value(code)
        sizes = chunk_sizes(n, max_chunk_size, padding)
        if len(idx) != len(sizes):
            raise ValueError(f"{len(idx)} indices for {len(sizes)} chunks")
        for c0, count, s in step_models(n, max_chunk_size, padding):
            enc.encode(np.asarray(idx[c0 : c0 + count], dtype=np.int32), zipf_model(sizes[c0], s)[0])
    return enc.get_compressed().astype(">u4").tobytes()


def decode_stream(data: bytes, n_steps: int, max_budget: int, max_chunk_size: int, padding: int) -> tuple[list[int], list[np.ndarray]]:
    """Inverse of :func:`encode_stream` for ``n_steps`` steps. A budget above ``max_budget``
    (what the image's dimensions allow), unread data or data the models cannot have produced
    is a BitstreamError; any other stream decodes to something, in bounded time (integrity
    is the container's CRC's business)."""
    try:
        return _decode_stream(data, n_steps, max_budget, max_chunk_size, padding)
    except BitstreamError:
        raise
    except Exception as exc:  # constriction's complaint about invalid compressed data
        raise BitstreamError(f"corrupt DiffC stream ({exc})") from None


def _decode_stream(data: bytes, n_steps: int, max_budget: int, max_chunk_size: int, padding: int) -> tuple[list[int], list[np.ndarray]]:
    if len(data) % 4:
        raise BitstreamError(f"corrupt DiffC stream: {len(data)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype=">u4").astype(np.uint32)
    dec = constriction.stream.queue.RangeDecoder(words)
    delta, _ = _delta_model()
    codes: list[int] = []
    indices: list[np.ndarray] = []
    prev = 0
    for step in range(n_steps):
        code = prev + int(dec.decode(delta)) - MAX_BUDGET_CODE
        if not 0 <= code <= MAX_BUDGET_CODE or budget_value(code) > max_budget:
            raise BitstreamError(f"corrupt DiffC stream: step {step} claims an impossible budget (code {code})")
        prev = code
        n = budget_value(code)
        sizes = chunk_sizes(n, max_chunk_size, padding)
        idx = np.zeros(len(sizes), dtype=np.int64)
        for c0, count, s in step_models(n, max_chunk_size, padding):
            idx[c0 : c0 + count] = dec.decode(zipf_model(sizes[c0], s)[0], count)
        codes.append(code)
        indices.append(idx)
    if not dec.maybe_exhausted():
        raise BitstreamError("corrupt DiffC stream: data left over after the last step")
    return codes, indices


__all__ = [
    "budget_code", "budget_value", "zipf_exponent", "zipf_probabilities", "zipf_model", "step_models", "step_bits",
    "encode_stream", "decode_stream", "MAX_BUDGET_CODE", "ZIPF_OFFSET",
]
