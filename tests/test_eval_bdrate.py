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


# ----------------------------------------------------------------------------- CompressAI's files
COMPRESSAI = __import__("pathlib").Path(__file__).resolve().parent / "data" / "compressai"


def _published(name):
    import json

    return json.loads((COMPRESSAI / name).read_text())["results"]


def test_compressai_published_files_as_anchor_and_test(capsys):
    """`cod bdrate` reads CompressAI's own results/image/kodak files as published (old keys
    psnr / ms-ssim: vtm.json, compressai-*.json; new keys: vtm-rgb.json); the BD-rate is the
    `bjontegaard` package's on the same numbers."""
    import bjontegaard

    from cod.cli import main

    vtm, hyper = _published("vtm.json"), _published("compressai-bmshj2018-hyperprior_mse_cpu.json")
    want = {
        "psnr-rgb": bjontegaard.bd_rate(vtm["bpp"], vtm["psnr"], hyper["bpp"], hyper["psnr"], method="pchip", require_matching_points=False, min_overlap=0),
        "ms-ssim-rgb": bjontegaard.bd_rate(vtm["bpp"], vtm["ms-ssim"], hyper["bpp"], hyper["ms-ssim"], method="pchip", require_matching_points=False, min_overlap=0),
    }
    assert 20 < want["psnr-rgb"] < 60  # the 2018 hyperprior needs more bits than VTM for the same PSNR
    for anchor in ("vtm.json", "vtm-rgb.json"):
        for metric in ("psnr-rgb", "psnr", "ms-ssim-rgb", "ms-ssim"):
            assert main(["bdrate", str(COMPRESSAI / anchor), str(COMPRESSAI / "compressai-bmshj2018-hyperprior_mse_cpu.json"), "--metric", metric, "--json"]) == 0
            (row,) = __import__("json").loads(capsys.readouterr().out)
            key = metric if metric.endswith("-rgb") else metric + "-rgb"
            assert row["metric"] == key and row["anchor"] == "VTM" and row["test"] == "bmshj2018-hyperprior"
            assert row["bd_rate_percent"] == pytest.approx(want[key], rel=1e-12)
    assert main(["bdrate", str(COMPRESSAI / "vtm.json"), str(COMPRESSAI / "vtm-rgb.json"), "--metric", "all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("+0.00 %" in ln for ln in lines)  # the two metrics both files have


def test_only_bpp_and_the_metric_asked_for_are_required(tmp_path, capsys):
    import json

    from cod.cli import main

    hand = {"name": "mine", "results": {"bpp": [0.05, 0.1, 0.2, 0.4], "psnr-rgb": PSNR, "ms-ssim-rgb": [0.8, 0.85, 0.9, 0.93], "fid": [80.0, 60.0, 40.0, 30.0]}}
    (tmp_path / "mine.json").write_text(json.dumps(hand))
    anchor = str(COMPRESSAI / "vtm.json")
    assert main(["bdrate", anchor, str(tmp_path / "mine.json"), "--metric", "psnr-rgb"]) == 0
    assert "mine vs VTM: BD-rate (psnr-rgb)" in capsys.readouterr().out
    assert main(["bdrate", str(tmp_path / "mine.json"), str(tmp_path / "mine.json"), "--metric", "fid"]) == 0
    assert main(["bdrate", anchor, str(tmp_path / "mine.json"), "--metric", "lpips"]) == 1
    assert capsys.readouterr().err.strip().endswith("VTM: no 'lpips' in results (has psnr-rgb, ms-ssim-rgb, encoding_time, decoding_time)")
    for bad, msg in (({"results": {"psnr-rgb": PSNR}}, "no 'bpp' list"), ({"results": {"bpp": [0.1, 0.2, 0.3, 0.4], "psnr-rgb": PSNR[:3]}}, "one value per bpp point"), ([1, 2], "not a results file")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        assert main(["bdrate", str(tmp_path / "bad.json"), anchor]) == 1
        assert msg in capsys.readouterr().err
    # plot draws CompressAI's files next to ours: one panel per metric any curve has
    png = tmp_path / "rd.png"
    assert main(["plot", anchor, str(COMPRESSAI / "compressai-bmshj2018-hyperprior_mse_cpu.json"), str(tmp_path / "mine.json"), "-o", str(png)]) == 0
    from PIL import Image

    with Image.open(png) as im:
        assert im.width > 1000  # psnr-rgb, ms-ssim-rgb, fid: three panels in a row
