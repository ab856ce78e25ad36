"""Chunking, partitioning and ordered random coding of one DiffC step (cod.diffc.rcc)."""
import math

import numpy as np
import pytest
import torch

from cod.diffc import rcc
from cod.diffc.rng import gaussian_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def orig_get_chunk_sizes(Dkl, max_size=8, chunk_padding_bits=2):
    """The original's get_chunk_sizes + distribute_apples, transcribed."""
    n = int(np.ceil(Dkl))
    num_chunks = int(np.ceil(n / (max_size - chunk_padding_bits)))
    if num_chunks == 0:
        return ()
    m = n + chunk_padding_bits * num_chunks
    base, extra = m // num_chunks, m % num_chunks
    dist = [base] * num_chunks
    for i in range(extra):
        dist[i] += 1
    return tuple(dist)


@pytest.mark.parametrize("max_size,pad", [(16, 2), (8, 2), (6, 1), (4, 0)])
def test_chunk_sizes_match_the_original(max_size, pad):
    for n in list(range(0, 200)) + [1000, 4097, 123457]:
        sizes = rcc.chunk_sizes(n, max_size, pad)
        assert sizes == orig_get_chunk_sizes(n, max_size, pad)
        assert all(k <= max_size for k in sizes) and sum(sizes) == (n + pad * len(sizes) if n else 0)


@pytest.mark.parametrize("dim,n", [(7, 1), (100, 37), (3000, 5000), (64, rcc.max_kl_bits(64, 8, 2))])
def test_layout_partitions_every_dimension_once(dim, n):
    lay = rcc.step_layout(3, 0, dim, n, 8, 2)
    assert sum(lay.dims) == dim and min(lay.dims) >= 1
    assert torch.equal(torch.sort(lay.perm).values, torch.arange(dim))
    total = sum(lay.sizes)
    for k, d in zip(lay.sizes[:-1], lay.dims[:-1]):
        assert d == dim * k // total
    # groups cover the chunks in order
    assert [c for _, _, cs in lay.groups() for c in cs] == list(range(len(lay.sizes)))
    with pytest.raises(ValueError):
        rcc.step_layout(3, 0, dim, rcc.max_kl_bits(dim, 8, 2) + 1, 8, 2)


def test_decode_places_each_chunks_candidate_on_its_dimensions():
    dim = 50
    lay = rcc.step_layout(5, 9, dim, 30, 8, 2)
    idx = np.arange(len(lay.sizes)) * 3 % 64
    z = rcc.decode_step(idx, lay, dim)
    off = 0
    for c, d in enumerate(lay.dims):
        want = gaussian_rows(lay.key, torch.tensor([int(idx[c])]), torch.tensor([c]), d)[0]
        assert torch.equal(z[lay.perm[off : off + d]], want)
        off += d


def test_zero_budget_is_a_prior_sample_without_bits():
    lay = rcc.step_layout(0, 0, 20, 0, 8, 2)
    assert lay.sizes == () and len(rcc.encode_step(torch.zeros(20, dtype=torch.float64), lay)) == 0
    z = rcc.decode_step(np.zeros(0, dtype=np.int64), lay, 20)
    assert torch.equal(z, gaussian_rows((0, 0), torch.tensor([0]), torch.tensor([0]), 20)[0])


def test_encoder_is_deterministic_and_independent_of_tiling():
    g = torch.Generator().manual_seed(0)
    dim = 300
    mu = torch.randn(dim, generator=g, dtype=torch.float64) * 0.3
    n = math.ceil(float(mu.square().sum()) / (2 * math.log(2)))
    lay = rcc.step_layout(2, 0, dim, n, 8, 2)
    a = rcc.encode_step(mu, lay)
    assert np.array_equal(a, rcc.encode_step(mu, lay))
    assert np.array_equal(a, rcc.encode_step(mu, lay, tile=97))  # many small tiles
    assert np.array_equal(a, rcc.encode_step(mu, lay, tile=1 << 22))  # one tile
    assert all(0 <= j < 2**k for j, k in zip(a, lay.sizes))


@pytest.mark.parametrize("padding,mean_lo", [(6, 0.57), (2, 0.5)])
def test_ordered_random_coding_simulates_the_target_gaussian(padding, mean_lo):
    """Over many steps (independent shared randomness) the transmitted candidate is a sample
    of N(mu, I): mean ~mu, unit variance, and its index costs about the KL. With 2**6 times
    more candidates than 2**KL the mean is within noise of mu; with the default 2 padding
    bits it falls ~12% short (the truncation bias the original has too)."""
    dim, trials = 16, 300
    mu = torch.full((dim,), 0.6, dtype=torch.float64)
    kl = float(mu.square().sum()) / (2 * math.log(2))  # 4.15 bits: one chunk of 5 + padding bits
    zs, logj = [], []
    for step in range(trials):
        lay = rcc.step_layout(step, 0, dim, math.ceil(kl), 5 + padding, padding)
        idx = rcc.encode_step(mu, lay)
        zs.append(rcc.decode_step(idx, lay, dim).double())
        logj.append(math.log2(idx[0] + 1))
    z = torch.stack(zs)
    assert mean_lo < z.mean().item() < 0.63
    assert abs(z.var().item() - 1.0) < 0.1
    assert kl - 2 < np.mean(logj) < kl + 1
