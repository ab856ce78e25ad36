"""Shared randomness of DiffC that is the same on every device (issue 13, spec §11.3 steps 3-4).

The original draws its candidates from cuRAND XORWOW (GPU only), seeds chunks with CPython's
tuple hash and takes unseeded CuPy exponentials (bug B9). Here every random number is a pure
function of integers, computed with operations that IEEE 754 rounds exactly, so a CPU and a
GPU produce the same bits:

  1. Philox4x32-10 (Salmon et al., SC'11; the Random123 known-answer vectors are in the tests)
     in int64 tensor arithmetic: the 32x32 -> 64-bit products are split into 16-bit halves so
     no intermediate leaves the int64 range.
  2. Elementary functions built only from +, -, *, /, sqrt and exact bit operations (frexp,
     exponent assembly): ``soft_log``, ``soft_exp``, ``soft_sincos``. Their results do not
     depend on a platform's libm (torch.log / numpy.log may differ in the last bit between a
     CPU and a GPU, or between two CPUs).
  3. Box-Muller in float64 on the Philox words, rounded once to float32.

A stream of numbers is addressed by a key (two 32-bit words: the DiffC step and the seed) and
a counter (four 32-bit words: position, candidate, chunk, domain). Domains separate the uses.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # multipliers of Philox4x32
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # Weyl key increments
PHILOX_ROUNDS = 10

# Counter word 3 of every DiffC draw: which use the numbers are for.
DOMAIN_CANDIDATES = 0  # candidate Gaussian vectors of the reverse-channel code
DOMAIN_ARRIVALS = 1  # exponential inter-arrival times of the encoder (encoder only)
DOMAIN_PERMUTATION = 2  # the per-step shuffle of dimensions into chunks
DOMAIN_NOISE = 3  # the initial noise x at tau = 1000

# Exactly representable constants (Python float literals, not libm results).
LN2 = 0.6931471805599453
LN2_HI = 0.693145751953125  # ln 2 with the low 32 bits zero: k * LN2_HI is exact for |k| < 2**20
LN2_LO = 1.4286068203094173e-06  # ln 2 - LN2_HI
INV_LN2 = 1.4426950408889634
SQRT_HALF = 0.7071067811865476
QUARTER_PI = 0.7853981633974483

_ATANH = [1.0 / (2 * k + 1) for k in range(11)]  # log m = 2 s sum s^(2k) / (2k+1)
_EXP = [1.0 / _f for _f in (1, 1, 2, 6, 24, 120, 720, 5040, 40320, 362880, 3628800, 39916800, 479001600, 6227020800)]
_SIN = [(-1.0) ** k / _f for k, _f in enumerate((1, 6, 120, 5040, 362880, 39916800, 6227020800, 1307674368000, 355687428096000))]
_COS = [(-1.0) ** k / _f for k, _f in enumerate((1, 2, 24, 720, 40320, 3628800, 479001600, 87178291200, 20922789888000))]


# ------------------------------------------------------------------ 1. Philox4x32-10
def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of a * m for a in [0, 2**32) (int64) and a 32-bit constant m."""
    p_lo = a * (m & 0xFFFF)  # < 2**48
    p_hi = a * (m >> 16)  # < 2**48
    t = (p_hi & 0xFFFF).bitwise_left_shift_(16).add_(p_lo)  # < 2**49
    hi = (t >> 32).add_(p_hi.bitwise_right_shift_(16))
    return hi, t.bitwise_and_(MASK32)


def philox4x32(counter: tuple, key: tuple[int, int], rounds: int = PHILOX_ROUNDS) -> tuple[torch.Tensor, ...]:
    """Philox4x32-``rounds`` of a counter of four 32-bit words (int64 tensors or ints, broadcast
    together; at least one a tensor) under a key of two 32-bit ints. Returns four int64 tensors
    with values in [0, 2**32)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        hi0, lo0 = _mulhilo(torch.as_tensor(c0), PHILOX_M[0])
        hi1, lo1 = _mulhilo(torch.as_tensor(c2), PHILOX_M[1])
        c0, c1, c2, c3 = torch.bitwise_xor(hi1, c1).bitwise_xor_(k0), lo1, torch.bitwise_xor(hi0, c3).bitwise_xor_(k1), lo0
    return c0, c1, c2, c3


def random_words(key: tuple[int, int], c1: torch.Tensor, c2: torch.Tensor, domain: int, n_words: int) -> torch.Tensor:
    """(R, n_words) int64 words in [0, 2**32) for R rows: word 4q + w of row r is output word w
    of Philox(counter = (q, c1[r], c2[r], domain), key). ``c1``, ``c2``: (R,) int64."""
    quads = -(-n_words // 4)
    q = torch.arange(quads, dtype=torch.int64, device=c1.device)[None, :]
    r0, r1, r2, r3 = philox4x32((q, c1[:, None], c2[:, None], domain), key)
    shape = (c1.shape[0], quads)
    words = torch.stack([w.expand(shape) for w in (r0, r1, r2, r3)], dim=-1)
    return words.reshape(c1.shape[0], 4 * quads)[:, :n_words]


def uniform01(words: torch.Tensor) -> torch.Tensor:
    """32-bit words -> float64 in (0, 1): (w + 1/2) / 2**32, exact."""
    return (words.to(torch.float64) + 0.5) * 2.0**-32


# ------------------------------------------------------------------ 2. elementary functions
def _horner(x: torch.Tensor, coeffs: list[float]) -> torch.Tensor:
    """sum_k coeffs[k] x**k with one rounded multiply and one rounded add per term."""
    p = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p.mul_(x).add_(c)
    return p


def soft_log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of positive finite float64 values, from exact operations only (|error| below
    1e-15 relative). x = m 2**e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh((m-1)/(m+1))."""
    m, e = torch.frexp(x)
    small = m < SQRT_HALF
    m = torch.where(small, m * 2.0, m)
    e = (e.to(torch.int64) - small.to(torch.int64)).to(torch.float64)
    s = (m - 1.0) / (m + 1.0)
    p = _horner(s * s, _ATANH).mul_(s).mul_(2.0)
    return (e * LN2_LO).add_(p).add_(e * LN2_HI)


def soft_exp(x: torch.Tensor) -> torch.Tensor:
    """exp of float64 values in [-700, 700] from exact operations only (relative error below
    1e-15): x = k ln 2 + r, |r| <= ln(2)/2, exp(r) by its Taylor series, times 2**k assembled
    from bits."""
    x = x.clamp(-700.0, 700.0)
    k = torch.round(x * INV_LN2)
    r = (x - k * LN2_HI) - k * LN2_LO
    two_k = ((k.to(torch.int64) + 1023) << 52).view(torch.float64)
    return _horner(r, _EXP).mul_(two_k)


def soft_sincos(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) of float64 angles in [0, pi/4] by Taylor polynomials (error below 1e-16)."""
    p2 = phi * phi
    return _horner(p2, _SIN).mul_(phi), _horner(p2, _COS)


# ------------------------------------------------------------------ 3. distributions
def box_muller(w_radius: torch.Tensor, w_angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent N(0, 1) float64 values per pair of 32-bit words.

    r = sqrt(-2 log u) with u = (w_radius + 1/2) / 2**32 (|z| <= 6.8); the angle 2 pi u' is
    split exactly into an octant (top 3 bits of w_angle) and a fraction, so sin and cos are
    only ever evaluated on [0, pi/4]."""
    r = torch.sqrt(soft_log(uniform01(w_radius)).mul_(-2.0))
    octant = w_angle >> 29
    odd = (octant & 1).bool()
    f = ((w_angle & 0x1FFFFFFF).to(torch.float64) + 0.5) * 2.0**-29
    s, c = soft_sincos(torch.where(odd, 1.0 - f, f).mul_(QUARTER_PI))
    # angle = (octant + f) pi/4: odd octants reflect (cos <-> sin), odd quadrants rotate (swap
    # again), quadrants 1, 2 negate the cosine and quadrants 2, 3 the sine
    swap = (octant ^ (octant >> 1)).bitwise_and_(1).bool()
    neg_cos = ((octant + 2) >> 2).bitwise_and_(1).to(torch.float64).mul_(-2.0).add_(1.0)
    neg_sin = (octant >> 2).to(torch.float64).mul_(-2.0).add_(1.0)
    cos_t, sin_t = torch.where(swap, s, c), torch.where(swap, c, s)
    return cos_t.mul_(neg_cos).mul_(r), sin_t.mul_(neg_sin).mul_(r)


def gaussian_rows(key: tuple[int, int], c1: torch.Tensor, c2: torch.Tensor, dim: int, domain: int = DOMAIN_CANDIDATES) -> torch.Tensor:
    """(R, dim) float32 standard normals; row r is the vector of (c1[r], c2[r]) (for DiffC
    candidates: c1 = candidate index, c2 = chunk index). Element 2i, 2i+1 of a row come from
    words 2i, 2i+1 by Box-Muller; a row's first elements do not depend on ``dim``."""
    n = dim + (dim & 1)
    words = random_words(key, c1, c2, domain, n)
    z0, z1 = box_muller(words[:, 0::2], words[:, 1::2])
    return torch.stack([z0, z1], dim=-1).reshape(c1.shape[0], n)[:, :dim].to(torch.float32)


def exponential_rows(key: tuple[int, int], c1: torch.Tensor, c2: torch.Tensor, count: int, domain: int = DOMAIN_ARRIVALS) -> torch.Tensor:
    """(R, count) float64 Exp(1) values, -log u."""
    return soft_log(uniform01(random_words(key, c1, c2, domain, count))).neg_()


def permutation(key: tuple[int, int], n: int, device: torch.device | str = "cpu", domain: int = DOMAIN_PERMUTATION) -> torch.Tensor:
    """A uniformly random permutation of range(n) (int64): sort by (31 random bits, index),
    keys that are all distinct, so every device and sort algorithm gives the same order."""
    if n >= 2**32:
        raise ValueError("permutation of more than 2**32 elements")
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    w = random_words(key, zero, zero, domain, n)[0]
    sort_key = (w >> 1).bitwise_left_shift_(32).add_(torch.arange(n, dtype=torch.int64, device=device))
    return torch.argsort(sort_key)


def gaussian_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 N(0, I) of ``shape`` from the DiffC generator (domain DOMAIN_NOISE, key (0, seed))."""
    n = 1
    for s in shape:
        n *= int(s)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    return gaussian_rows((0, seed), zero, zero, n, DOMAIN_NOISE).reshape(shape)


__all__ = [
    "philox4x32", "random_words", "uniform01", "soft_log", "soft_exp", "soft_sincos", "box_muller", "gaussian_rows",
    "exponential_rows", "permutation", "gaussian_noise", "DOMAIN_CANDIDATES", "DOMAIN_ARRIVALS", "DOMAIN_PERMUTATION",
    "DOMAIN_NOISE",
]
