"""Reverse-channel coding of one DiffC step (spec §11.3 steps 3-5): chunking, partitioning,
and ordered random coding (the Poisson functional representation truncated to K candidates).

Given mu, the normalised mean of the target Gaussian N(mu, I) under the shared prior N(0, I)
(see :func:`cod.diffc.bridge.normalised_shift`), the encoder sends a sample of N(mu, I)
with about KL = |mu|**2 / (2 ln 2) bits:

  1. chunk sizes: n = the step's KL budget in bits (an integer the decoder receives), split
     into ceil(n / (max - padding)) chunks of k <= max bits, each carrying ``padding``
     extra bits (the original's ``get_chunk_sizes``);
  2. dimensions are shuffled (a per-step permutation) and dealt to chunks in proportion to
     their bits, so each chunk holds about its share of the KL;
  3. per chunk c with K = 2**k candidates z_j ~ N(0, I) (shared randomness, keyed by step,
     chunk and candidate), the encoder picks j = argmin_j log T_j - <z_j, mu_c>, with T_j the
     arrival times of a seeded unit-rate Poisson process, and sends j; the decoder
     regenerates z_j. <z_j, mu_c> is log q(z_j)/p(z_j) up to a constant, so this is the
     Poisson functional representation (Li & El Gamal 2018) truncated to K candidates;
     j is roughly Zipf distributed (see :mod:`cod.diffc.coding`).

The work per step is about 2**max * dim Gaussian draws whatever the rate, which is what
``max_chunk_size`` trades against the per-chunk coding overhead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cod.diffc.rng import exponential_rows, gaussian_rows, permutation, soft_log

TILE = 1 << 18  # Gaussian draws per batch of the encoder (bounds memory; exact per element)


# ------------------------------------------------------------------ 1. chunk sizes
def chunk_sizes(n_bits: int, max_chunk_size: int, padding: int) -> tuple[int, ...]:
    """ceil(n / (max - padding)) chunks sharing n + padding * chunks bits as evenly as
    possible, larger ones first (the original's ``get_chunk_sizes`` for an integer n)."""
    if n_bits <= 0:
        return ()
    chunks = -(-n_bits // (max_chunk_size - padding))
    base, extra = divmod(n_bits + padding * chunks, chunks)
    return (base + 1,) * extra + (base,) * (chunks - extra)


def max_kl_bits(dim: int, max_chunk_size: int, padding: int) -> int:
    """The largest per-step budget whose chunks all get dimensions: at most dim // 2 chunks
    (each chunk then holds at least one dimension)."""
    return max(1, dim // 2) * (max_chunk_size - padding)


# ------------------------------------------------------------------ 2. partition
@dataclass(frozen=True)
class StepLayout:
    """Which dimensions each chunk of a step codes: chunk c holds ``perm[offsets[c] :
    offsets[c] + dims[c]]``, in that order. Without chunks (a step with a zero budget) the
    whole vector is candidate 0 of a virtual chunk 0: a sample of the prior, no bits."""

    key: tuple[int, int]  # Philox key: (step, seed)
    sizes: tuple[int, ...]  # bits per chunk
    dims: tuple[int, ...]  # dimensions per chunk
    perm: torch.Tensor  # (dim,) int64

    def groups(self) -> list[tuple[int, int, list[int]]]:
        """(bits, dims, chunk ids) of runs of consecutive chunks with the same bits and dims."""
        out: list[tuple[int, int, list[int]]] = []
        for c, (k, d) in enumerate(zip(self.sizes, self.dims)):
            if out and out[-1][:2] == (k, d):
                out[-1][2].append(c)
            else:
                out.append((k, d, [c]))
        return out


def step_layout(step: int, seed: int, dim: int, n_bits: int, max_chunk_size: int, padding: int, device: torch.device | str = "cpu") -> StepLayout:
    """Chunk sizes and the dimensions of each chunk for a step with a budget of ``n_bits``.
    Dimensions go to chunks in proportion to their bits (floor, the last chunk takes the
    rest), after a per-step permutation (the original shuffles with numpy's PCG64 seeded by
    the step; ours is a Philox permutation, the same on every device)."""
    if not 0 <= n_bits <= max_kl_bits(dim, max_chunk_size, padding):
        raise ValueError(f"step budget {n_bits} bits outside 0..{max_kl_bits(dim, max_chunk_size, padding)} for {dim} dimensions")
    key = (step, seed)
    sizes = chunk_sizes(n_bits, max_chunk_size, padding)
    if not sizes:
        return StepLayout(key, (), (), torch.arange(dim, device=device))
    total = sum(sizes)
    dims = [dim * k // total for k in sizes[:-1]]
    dims.append(dim - sum(dims))
    return StepLayout(key, sizes, tuple(dims), permutation(key, dim, device))


# ------------------------------------------------------------------ 3. ordered random coding
def _rows(chunks: list[int], cands: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Counter words (candidate, chunk) for every (chunk, candidate) pair, chunk-major."""
    ch = torch.tensor(chunks, dtype=torch.int64, device=device)
    return cands.repeat(len(chunks)), ch.repeat_interleave(len(cands))


@torch.no_grad()
def encode_step(mu: torch.Tensor, layout: StepLayout, tile: int = TILE) -> np.ndarray:
    """Indices (one per chunk, int64) of the candidates the encoder picks for the normalised
    shift ``mu`` (dim,) float64. Deterministic: the arrival times are Philox draws too."""
    device = mu.device
    out = np.zeros(len(layout.sizes), dtype=np.int64)
    for (k, d, chunks), off in zip(layout.groups(), _group_offsets(layout)):
        K = 1 << k
        dims = layout.perm[off : off + d * len(chunks)].view(len(chunks), d)
        per_batch = max(1, tile // (K * d))
        for b0 in range(0, len(chunks), per_batch):
            cb = chunks[b0 : b0 + per_batch]
            mu_b = mu[dims[b0 : b0 + len(cb)]]  # (b, d)
            ch = torch.tensor(cb, dtype=torch.int64, device=device)
            log_t = soft_log(exponential_rows(layout.key, torch.zeros_like(ch), ch, K).cumsum_(1))  # (b, K)
            best = torch.full((len(cb),), math.inf, dtype=torch.float64, device=device)
            best_j = torch.zeros(len(cb), dtype=torch.int64, device=device)
            step = max(1, min(K, tile // (len(cb) * d)))
            for j0 in range(0, K, step):
                cands = torch.arange(j0, min(K, j0 + step), dtype=torch.int64, device=device)
                c1, c2 = _rows(cb, cands, device)
                z = gaussian_rows(layout.key, c1, c2, d).view(len(cb), len(cands), d)
                w = torch.einsum("bjd,bd->bj", z.to(torch.float64), mu_b)
                score = log_t[:, j0 : j0 + len(cands)] - w
                val, idx = score.min(dim=1)
                better = val < best
                best = torch.where(better, val, best)
                best_j = torch.where(better, idx + j0, best_j)
            out[cb[0] : cb[0] + len(cb)] = best_j.cpu().numpy()
    return out


def decode_step(indices: np.ndarray, layout: StepLayout, dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (dim,) float32 sample the indices stand for: chunk c's candidate indices[c] placed
    on the chunk's dimensions (the encoder uses this same function)."""
    if not layout.sizes:
        zero = torch.zeros(1, dtype=torch.int64, device=device)
        return gaussian_rows(layout.key, zero, zero, dim)[0]
    if len(indices) != len(layout.sizes):
        raise ValueError(f"{len(indices)} indices for {len(layout.sizes)} chunks")
    z = torch.empty(dim, dtype=torch.float32, device=device)
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=device)
    for (k, d, chunks), off in zip(layout.groups(), _group_offsets(layout)):
        ch = torch.tensor(chunks, dtype=torch.int64, device=device)
        rows = gaussian_rows(layout.key, idx[ch], ch, d)
        z[layout.perm[off : off + d * len(chunks)]] = rows.reshape(-1)
    return z


def _group_offsets(layout: StepLayout) -> list[int]:
    offs, pos = [], 0
    for k, d, chunks in layout.groups():
        offs.append(pos)
        pos += d * len(chunks)
    return offs


__all__ = ["chunk_sizes", "max_kl_bits", "StepLayout", "step_layout", "encode_step", "decode_step", "TILE"]
