"""DiffC's shared randomness (cod.diffc.rng): Philox4x32-10 against the Random123 known
answers and an independent scalar implementation, elementary functions against libm, the
Gaussian candidates' distribution, and pinned values (the numbers are part of the format)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from cod.diffc import rng

pytestmark = pytest.mark.usefixtures("one_thread")

# Random123 kat_vectors: counter[4], key[2] -> output[4]
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0), (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_reference(ctr, key, rounds=10):
    """Philox4x32 with Python integers, written from the paper's round function."""
    c, k = list(ctr), list(key)
    for r in range(rounds):
        if r:
            k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
    return tuple(c)


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    out = rng.philox4x32(tuple(torch.tensor([c]) for c in ctr), key)
    assert tuple(int(w) for w in out) == want
    assert philox_reference(ctr, key) == want


def test_philox_matches_scalar_reference_on_random_counters():
    g = np.random.default_rng(0)
    ctrs = g.integers(0, 2**32, size=(200, 4))
    key = (0x12345678, 0x9ABCDEF0)
    out = torch.stack(rng.philox4x32(tuple(torch.as_tensor(ctrs[:, i]) for i in range(4)), key), dim=1)
    want = [philox_reference(tuple(int(v) for v in c), key) for c in ctrs]
    assert out.tolist() == [list(w) for w in want]


def test_elementary_functions_match_libm():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(200_000, generator=g, dtype=torch.float64) * (1 - 2**-33) + 2**-33
    assert torch.allclose(rng.soft_log(u), torch.log(u), rtol=0, atol=4e-15)
    x = torch.cat([-40 * u, 40 * u])
    assert torch.allclose(rng.soft_exp(x), torch.exp(x), rtol=2e-15, atol=0)
    phi = u * (math.pi / 4)
    s, c = rng.soft_sincos(phi)
    assert torch.allclose(s, torch.sin(phi), rtol=0, atol=4e-16) and torch.allclose(c, torch.cos(phi), rtol=0, atol=4e-16)


def test_box_muller_matches_the_textbook_formula():
    w = rng.random_words((9, 9), torch.arange(64), torch.zeros(64, dtype=torch.int64), 0, 4096)
    z0, z1 = rng.box_muller(w[:, 0::2], w[:, 1::2])
    r = torch.sqrt(-2 * torch.log(rng.uniform01(w[:, 0::2])))
    theta = 2 * math.pi * rng.uniform01(w[:, 1::2])
    assert torch.allclose(z0, r * torch.cos(theta), rtol=0, atol=1e-13)
    assert torch.allclose(z1, r * torch.sin(theta), rtol=0, atol=1e-13)


def test_candidates_are_standard_normal_and_independent():
    z = rng.gaussian_rows((3, 0), torch.arange(512), torch.full((512,), 7), 1000).double()
    flat = z.flatten().numpy()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 0.005 and abs(flat.std() - 1) < 0.005
    # rows (candidates) uncorrelated
    c = torch.corrcoef(z[:64])
    assert (c - torch.eye(64, dtype=c.dtype)).abs().max() < 0.15
    # the other Box-Muller output and other keys/chunks give different numbers
    other = [rng.gaussian_rows(k, torch.arange(4), torch.full((4,), ch), 1000) for k, ch in [((4, 0), 7), ((3, 1), 7), ((3, 0), 8)]]
    for o in other:
        assert not torch.equal(o, z[:4].float())


def test_rows_do_not_depend_on_batch_or_length():
    """A candidate is a pure function of (key, candidate, chunk, position): the decoder
    regenerates one row, the encoder computes it within a batch."""
    batch = rng.gaussian_rows((5, 1), torch.arange(10, 20), torch.full((10,), 3), 37)
    single = rng.gaussian_rows((5, 1), torch.tensor([14]), torch.tensor([3]), 37)
    assert torch.equal(batch[4], single[0])
    longer = rng.gaussian_rows((5, 1), torch.tensor([14]), torch.tensor([3]), 100)
    assert torch.equal(longer[0, :37], single[0])


def test_pinned_values():
    """The generator's numbers are part of the DiffC format: any change breaks old files."""
    g = rng.gaussian_rows((7, 11), torch.tensor([0, 3]), torch.tensor([5, 5]), 6)
    assert g.view(torch.int32).tolist() == [
        [-1092570753, -1075300952, -1094649714, 1052092601, 1062386528, 1056528051],
        [1050767102, -1077520894, -1079662958, 1072640091, 1067060582, 1055988197],
    ]
    assert rng.permutation((3, 0), 12).tolist() == [11, 4, 5, 9, 6, 2, 1, 3, 10, 0, 8, 7]
    assert rng.gaussian_noise((1, 2, 2, 2), 0).flatten()[:2].tolist() == [0.8389843106269836, -1.298612117767334]
    e = rng.exponential_rows((1, 1), torch.tensor([0]), torch.tensor([2]), 4)
    assert e.tolist() == [[1.0479313791995977, 1.6706247797026037, 1.816700084054972, 0.3345083936071667]]


def test_permutation_is_a_permutation():
    p = rng.permutation((1, 2), 10_001)
    assert torch.equal(torch.sort(p).values, torch.arange(10_001))
    assert not torch.equal(p, rng.permutation((2, 2), 10_001))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_identical_on_cpu_and_gpu():
    args = ((7, 11), torch.arange(300), torch.full((300,), 9), 1001)
    cpu = rng.gaussian_rows(*args)
    gpu = rng.gaussian_rows(args[0], args[1].cuda(), args[2].cuda(), args[3]).cpu()
    assert torch.equal(cpu.view(torch.int32), gpu.view(torch.int32))
    assert torch.equal(rng.permutation((1, 2), 5000), rng.permutation((1, 2), 5000, "cuda").cpu())
    e = rng.exponential_rows((1, 1), torch.arange(50), torch.zeros(50, dtype=torch.int64), 999)
    assert torch.equal(e, rng.exponential_rows((1, 1), torch.arange(50).cuda(), torch.zeros(50, dtype=torch.int64).cuda(), 999).cpu())
