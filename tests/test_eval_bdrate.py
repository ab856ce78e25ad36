"""BD-rate / BD-metric (PCHIP) against cases with known answers and an independent implementation."""
import math

import numpy as np
import pytest

from cod.errors import CodError
from cod.eval.bdrate import bd_metric, bd_rate, bd_rate_results

RATES = [0.05, 0.1, 0.2, 0.4]
PSNR = [24.1, 26.3, 28.9, 31.2]
LPIPS = [0.41, 0.30, 0.21, 0.14]

# Example RD data of the FAU-LMS `bjontegaard` package's README (x265 presets).
R1 = [9487.76, 4593.60, 2486.44, 1358.24]
P1 = [40.037, 38.615, 36.845, 34.851]
R2 = [9787.80, 4469.00, 2451.52, 1356.24]
P2 = [40.121, 38.651, 36.970, 34.987]


def test_identical_curves_give_zero():
    assert bd_rate(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-12)
    assert bd_rate(RATES, LPIPS, RATES, LPIPS, lower_is_better=True) == pytest.approx(0.0, abs=1e-12)
    assert bd_metric(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [0.5, 0.8, 1.25, 2.0, 3.7])
def test_rate_scaled_curve_gives_k_minus_one(k):
    scaled = [k * r for r in RATES]
    assert bd_rate(RATES, PSNR, scaled, PSNR) == pytest.approx((k - 1) * 100, rel=1e-10)
    assert bd_rate(RATES, LPIPS, scaled, LPIPS, lower_is_better=True) == pytest.approx((k - 1) * 100, rel=1e-10)


def test_lines_in_log_rate_hand_computed():
    # metric = 10*log10(r) + c: a +1 dB shift at equal rate is a rate factor 10**-0.1 at equal quality.
    r = np.array([0.1, 0.2, 0.4, 0.8])
    anchor = 10 * np.log10(r) + 30
    test = anchor + 1.0
    assert bd_rate(r, anchor, r, test) == pytest.approx((10**-0.1 - 1) * 100, rel=1e-10)  # -20.567 %
    assert bd_metric(r, anchor, r, test) == pytest.approx(1.0, rel=1e-10)
    # the same curve for a lower-is-better metric (negated): the same saving
    assert bd_rate(r, -anchor, r, -test, lower_is_better=True) == pytest.approx((10**-0.1 - 1) * 100, rel=1e-10)


def test_matches_independent_bjontegaard_package():
    bjontegaard = pytest.importorskip("bjontegaard")
    ours = bd_rate(R1, P1, R2, P2)
    ref = bjontegaard.bd_rate(R1, P1, R2, P2, method="pchip")
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours == pytest.approx(-4.4175, abs=1e-4)
    assert bd_metric(R1, P1, R2, P2) == pytest.approx(bjontegaard.bd_psnr(R1, P1, R2, P2, method="pchip"), rel=1e-9)
    # unsorted input and a lower-is-better metric (the package sees the negated metric)
    lp_a, lp_t = [0.12, 0.2, 0.31, 0.45], [0.11, 0.19, 0.30, 0.46]
    ra, rt = [0.8, 0.4, 0.2, 0.1], [0.75, 0.41, 0.19, 0.1]
    ref = bjontegaard.bd_rate(ra, [-v for v in lp_a], rt, [-v for v in lp_t], method="pchip", min_overlap=0)
    assert bd_rate(ra[::-1], lp_a[::-1], rt, lp_t, lower_is_better=True) == pytest.approx(ref, rel=1e-9)


def test_no_overlap_is_a_clear_error():
    with pytest.raises(CodError, match="do not overlap in psnr-rgb"):
        bd_rate(RATES, PSNR, RATES, [p + 10 for p in PSNR], metric_name="psnr-rgb")


@pytest.mark.parametrize(
    "rates, values, match",
    [
        ([0.1], [30.0], "at least 2"),
        ([0.1, 0.2, 0.4], [30.0, 30.0, 32.0], "same metric"),
        ([0.0, 0.2], [30.0, 32.0], "positive"),
        ([0.1, 0.2], [30.0, math.nan], "finite"),
    ],
)
def test_bad_curves(rates, values, match):
    with pytest.raises(CodError, match=match):
        bd_rate(rates, values, RATES, PSNR, metric_name="metric")


def _results(name, bpp, **series):
    return {"name": name, "description": "", "results": {"bpp": bpp, **series}}


def test_bd_rate_results_on_results_dicts():
    anchor = _results("jpeg", RATES, **{"psnr-rgb": PSNR, "lpips": LPIPS})
    test = _results("ours", [r * 0.5 for r in RATES] + [1.0], **{"psnr-rgb": PSNR + [None], "lpips": LPIPS + [None]})
    res = bd_rate_results(anchor, test, "psnr-rgb")  # the null point is skipped
    assert res.bd_rate_percent == pytest.approx(-50.0)
    assert not res.lower_is_better and res.metric_range == (24.1, 31.2)
    assert "ours vs jpeg: BD-rate (psnr-rgb) -50.00 %" in res.line()
    low = bd_rate_results(anchor, test, "lpips")
    assert low.lower_is_better
    assert low.bd_rate_percent == pytest.approx(-50.0)
    assert low.overlap_fraction == pytest.approx(1.0) and "warning" not in low.line()
    narrow = _results("narrow", [0.1, 0.2], **{"psnr-rgb": [30.0, 31.5]})
    res = bd_rate_results(anchor, narrow, "psnr-rgb")
    assert res.overlap_fraction == pytest.approx(1.2 / 7.1) and "share only 17%" in res.line()
    with pytest.raises(CodError, match="no 'fid'"):
        bd_rate_results(anchor, test, "fid")
