"""Bjøntegaard delta rate and delta quality with piecewise cubic (PCHIP) interpolation.

As in the JCT-VC / JVET common-test-conditions sheets: log10(rate) is interpolated as a
function of the quality metric with a monotone piecewise cubic Hermite interpolant, and both
curves are integrated over the metric range they share. The arithmetic is the `bjontegaard`
package's (FAU-LMS, ``method="pchip"``); this module checks the curves first, with one-line
errors. For lower-is-better metrics (LPIPS, DISTS, FID, KID) the metric is negated first, so a
negative BD-rate always means the test codec needs fewer bits than the anchor for the same quality.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from cod.errors import CodError
from cod.eval.schema import LOWER_IS_BETTER, read_curve, series


def _curve(rate: Sequence[float], metric: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if r.shape != m.shape or r.ndim != 1:
        raise CodError(f"{what}: rate and metric must be equal-length lists, got {r.shape} and {m.shape}")
    if len(r) < 2:
        raise CodError(f"{what}: at least 2 rate points are needed, got {len(r)}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(m))):
        raise CodError(f"{what}: rates and metric values must be finite numbers")
    if np.any(r <= 0):
        raise CodError(f"{what}: rates must be positive")
    return r, m


def _sorted_by(x: np.ndarray, y: np.ndarray, what: str, xname: str) -> tuple[np.ndarray, np.ndarray]:
    """The curve ordered by ``x``, which must take distinct values (PCHIP needs them increasing)."""
    order = np.argsort(x)
    xs, ys = x[order], y[order]
    if np.any(np.diff(xs) <= 0):
        raise CodError(f"{what}: two points have the same {xname}; the curve must be strictly monotone in it")
    return xs, ys


def _overlap(a: np.ndarray, b: np.ndarray, name: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise CodError(
            f"the curves do not overlap in {name}: anchor spans [{a.min():.6g}, {a.max():.6g}], "
            f"test spans [{b.min():.6g}, {b.max():.6g}]"
        )
    return float(lo), float(hi)


def bd_rate(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float], test_metric: Sequence[float], lower_is_better: bool = False, metric_name: str = "metric") -> float:
    """Average rate difference of test vs anchor at equal quality, in percent (negative = test saves bits)."""
    import bjontegaard

    ra, ma = _curve(anchor_rate, anchor_metric, "anchor")
    rt, mt = _curve(test_rate, test_metric, "test")
    if lower_is_better:
        ma, mt = -ma, -mt
    _overlap(ma, mt, metric_name)
    ma, ra = _sorted_by(ma, ra, "anchor", metric_name)
    mt, rt = _sorted_by(mt, rt, "test", metric_name)
    return float(bjontegaard.bd_rate(ra, ma, rt, mt, method="pchip", require_matching_points=False, min_overlap=0))


def bd_metric(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float], test_metric: Sequence[float], metric_name: str = "metric") -> float:
    """Average metric difference (test - anchor) at equal rate over the shared log-rate range (BD-PSNR style)."""
    import bjontegaard

    ra, ma = _curve(anchor_rate, anchor_metric, "anchor")
    rt, mt = _curve(test_rate, test_metric, "test")
    _overlap(np.log10(ra), np.log10(rt), "log10(bpp)")
    ra, ma = _sorted_by(ra, ma, "anchor", "bpp")
    rt, mt = _sorted_by(rt, mt, "test", "bpp")
    return float(bjontegaard.bd_psnr(ra, ma, rt, mt, method="pchip", require_matching_points=False, min_overlap=0))


@dataclass
class BDResult:
    """BD-rate and BD-metric of one test curve against an anchor for one metric."""

    metric: str
    anchor: str
    test: str
    bd_rate_percent: float
    bd_metric: float | None
    metric_range: tuple[float, float]
    lower_is_better: bool
    overlap_fraction: float = 1.0

    def line(self) -> str:
        """One human-readable line (with a warning when the shared range is under half of either curve's)."""
        arrow = "lower is better" if self.lower_is_better else "higher is better"
        dm = f", BD-{self.metric} {self.bd_metric:+.4g}" if self.bd_metric is not None else ""
        lo, hi = self.metric_range
        warn = f"; warning: the curves share only {self.overlap_fraction:.0%} of their {self.metric} range" if self.overlap_fraction < 0.5 else ""
        return f"{self.test} vs {self.anchor}: BD-rate ({self.metric}) {self.bd_rate_percent:+.2f} %{dm} over {self.metric} [{lo:.4g}, {hi:.4g}] ({arrow}){warn}"


def _points(results: Mapping[str, Any], metric: str) -> tuple[list[float], list[float]]:
    curve = read_curve(results)
    pairs = [(b, v) for b, v in zip(curve["results"]["bpp"], series(curve, metric)) if v is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def bd_rate_results(anchor: Mapping[str, Any], test: Mapping[str, Any], metric: str = "psnr-rgb") -> BDResult:
    """BD-rate (and BD-metric when the rate ranges overlap) between two results dicts in
    CompressAI's layout (cod.eval.schema.read_curve: only bpp and ``metric`` are needed; points
    with a null metric skipped)."""
    lower = metric in LOWER_IS_BETTER
    ra, ma = _points(anchor, metric)
    rt, mt = _points(test, metric)
    an, tn = str(anchor.get("name", "anchor")), str(test.get("name", "test"))
    rate = bd_rate(ra, ma, rt, mt, lower_is_better=lower, metric_name=metric)
    try:
        dm: float | None = bd_metric(ra, ma, rt, mt, metric_name=metric)
    except CodError:
        dm = None
    lo = max(min(ma), min(mt))
    hi = min(max(ma), max(mt))
    widest = max(max(ma) - min(ma), max(mt) - min(mt))
    return BDResult(metric, an, tn, rate, dm, (lo, hi), lower, (hi - lo) / widest)
