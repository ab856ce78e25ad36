"""Entropy coding of a DiffC chain (cod.diffc.coding): budget codes, the truncated Zipf model of
the original, range-coded streams and their failure modes."""
import math

import numpy as np
import pytest

from cod.diffc import coding
from cod.diffc.rcc import chunk_sizes
from cod.errors import BitstreamError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_budget_codes_round_up_by_at_most_a_sixteenth():
    values = [coding.budget_value(c) for c in range(coding.MAX_BUDGET_CODE + 1)]
    assert values == sorted(set(values))  # strictly increasing: one code per value
    for n in list(range(0, 3000)) + [10**6 + 7, 2**40 + 1]:
        c = coding.budget_code(n)
        v = coding.budget_value(c)
        assert v >= n and (c == 0 or coding.budget_value(c - 1) < n)
        assert v - n <= n / 16
    with pytest.raises(ValueError):
        coding.budget_code(values[-1] + 1)


def test_zipf_model_is_the_originals():
    """p(j) ~ (j+1)**-s, s = 1 + 1/(D_c + e**-1 ln(e+1)) (gaussian_channel_simulator.py)."""
    assert coding.ZIPF_OFFSET == pytest.approx(np.exp(-1) * np.log(np.e + 1), rel=1e-15)
    n, sizes = 100, chunk_sizes(100, 16, 2)
    for k in set(sizes):
        s = coding.zipf_exponent(n, k, sum(sizes))
        assert s == pytest.approx(1 + 1 / (n * k / sum(sizes) + np.exp(-1) * np.log(np.e + 1)), rel=1e-15)
    for K, s in [(8, 1.7), (4096, 1.05), (65536, 1.1)]:
        p = coding.zipf_probabilities(K, s)
        want = np.arange(1, K + 1, dtype=np.float64) ** -s
        assert np.allclose(p, want, rtol=1e-14, atol=0)


def random_steps(seed, n_steps, max_size=8, pad=2):
    """Budgets and indices drawn from the models themselves."""
    g = np.random.default_rng(seed)
    codes, indices = [], []
    for _ in range(n_steps):
        code = coding.budget_code(int(g.integers(0, 3000)) if g.random() > 0.1 else 0)
        n = coding.budget_value(code)
        sizes = chunk_sizes(n, max_size, pad)
        idx = np.zeros(len(sizes), dtype=np.int64)
        for c0, count, s in coding.step_models(n, max_size, pad):
            p = coding.zipf_probabilities(1 << sizes[c0], s)
            idx[c0 : c0 + count] = g.choice(len(p), size=count, p=p / p.sum())
        codes.append(code)
        indices.append(idx)
    return codes, indices


@pytest.mark.parametrize("max_size,pad", [(8, 2), (16, 2), (5, 1)])
def test_stream_round_trip_and_size_estimate(max_size, pad):
    codes, indices = random_steps(0, 20, max_size, pad)
    data = coding.encode_stream(codes, indices, max_size, pad)
    got_codes, got_idx = coding.decode_stream(data, 20, 10**6, max_size, pad)
    assert got_codes == codes and all(np.array_equal(a, b) for a, b in zip(got_idx, indices))
    est = sum(coding.step_bits(p, c, i, max_size, pad) for p, c, i in zip([0] + codes[:-1], codes, indices))
    assert est <= 8 * len(data) <= est + 64  # the range coder adds at most two words


def test_zipf_coding_is_near_the_entropy():
    """Indices drawn from the model cost their entropy (+ quantisation, < 1%)."""
    codes, indices = random_steps(1, 30)
    data = coding.encode_stream(codes, indices, 8, 2)
    entropy = 0.0
    for code in codes:
        n = coding.budget_value(code)
        sizes = chunk_sizes(n, 8, 2)
        for c0, count, s in coding.step_models(n, 8, 2):
            p = coding.zipf_probabilities(1 << sizes[c0], s)
            p = p / p.sum()
            entropy -= count * float((p * np.log2(p)).sum())
    side = sum(-coding._delta_model()[1][c - p + coding.MAX_BUDGET_CODE] for p, c in zip([0] + codes[:-1], codes))
    assert 8 * len(data) < 1.02 * (entropy + side) + 64


def test_decode_stream_errors():
    codes, indices = random_steps(2, 5)
    data = coding.encode_stream(codes, indices, 8, 2)
    with pytest.raises(BitstreamError, match="impossible budget"):
        coding.decode_stream(data, 5, max(coding.budget_value(c) for c in codes) - 1, 8, 2)
    with pytest.raises(BitstreamError, match="left over"):
        coding.decode_stream(data + b"\x12\x34\x56\x78" * 3, 5, 10**6, 8, 2)
    with pytest.raises(BitstreamError, match="32-bit words"):
        coding.decode_stream(data[:-1], 5, 10**6, 8, 2)
    # garbage decodes to something or fails cleanly, and never runs away
    g = np.random.default_rng(3)
    for _ in range(30):
        junk = g.integers(0, 256, size=4 * int(g.integers(1, 20)), dtype=np.uint8).tobytes()
        try:
            coding.decode_stream(junk, 10, 5000, 8, 2)
        except BitstreamError:
            pass


def test_information_content_matches_the_model():
    n = coding.budget_value(coding.budget_code(500))
    sizes = chunk_sizes(n, 8, 2)
    idx = np.zeros(len(sizes), dtype=np.int64)
    bits = coding.step_bits(0, coding.budget_code(500), idx, 8, 2)
    want = -coding._delta_model()[1][coding.budget_code(500) + coding.MAX_BUDGET_CODE]
    for c0, count, s in coding.step_models(n, 8, 2):
        p = coding.zipf_probabilities(1 << sizes[c0], s)
        want -= count * math.log2(p[0] / p.sum())
    assert bits == pytest.approx(want, rel=1e-12)
