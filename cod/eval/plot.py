"""Rate-distortion curves, one panel per metric, to a PNG (matplotlib's Agg canvas, no pyplot)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cod.errors import CodError, UsageError
from cod.eval.schema import LOWER_IS_BETTER, read_curve, series
from cod.image_io import atomic_write_bytes

#: Panel order and axis labels.
PLOT_METRICS: dict[str, str] = {
    "psnr-rgb": "PSNR-RGB [dB]",
    "ms-ssim-rgb": "MS-SSIM (RGB)",
    "delta-e": "CIEDE2000 ΔE",
    "lpips": "LPIPS-Alex",
    "lpips-vgg": "LPIPS-VGG",
    "dists": "DISTS",
    "fid": "FID",
    "kid": "KID",
}


def _log_bpp_axis(ax, bpps: Sequence[float]) -> None:
    """Log x axis with plain labels at 1-2-5 steps (no overlapping minor labels)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    lo, hi = min(bpps), max(bpps)
    ticks = [m * 10.0**e for e in range(-5, 3) for m in (1, 2, 5) if lo / 1.5 <= m * 10.0**e <= hi * 1.5]
    if len(ticks) >= 2:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def _values(curve: Mapping[str, Any], metric: str) -> list[float | None]:
    """The curve's values of ``metric`` (all None when it has none)."""
    return series(curve, metric) if metric in curve["results"] else [None] * len(curve["results"]["bpp"])


def _has_values(results: Sequence[Mapping[str, Any]], metric: str) -> bool:
    return any(v is not None for r in results for v in _values(r, metric))


def merge_curves(curves: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Curves with the same ``name`` (one codec benched at several targets in separate runs,
    e.g. ``--bpp 0.025`` in one folder and ``--bpp 0.1`` in another) joined into one curve,
    points in bpp order; a metric one run lacks is None at its points. Order of first
    appearance is kept; ``meta`` is the first curve's."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for j, c in enumerate(curves):
        groups.setdefault(str(c.get("name", f"curve {j}")), []).append(c)
    out = []
    for name, group in groups.items():
        if len(group) == 1:
            out.append(dict(group[0]))
            continue
        keys = [k for k in PLOT_METRICS if any(k in c["results"] for c in group)]
        points = sorted(((b, {k: _values(c, k)[i] for k in keys}) for c in group for i, b in enumerate(c["results"]["bpp"])), key=lambda p: p[0])
        results = {"bpp": [b for b, _ in points], **{k: [v[k] for _, v in points] for k in keys}}
        out.append({**group[0], "name": name, "results": results})
    return out


def plot_rd(
    results: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    metrics: Iterable[str] | None = None,
    log_x: bool = True,
    title: str | None = None,
) -> Path:
    """Plot every results dict as one curve per panel (bpp on x) and save a PNG; curves with
    the same name are joined first (:func:`merge_curves`).

    ``metrics`` defaults to every metric that has values in some curve; FID/KID panels name
    their patch size. Returns the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise CodError("nothing to plot: no results given")
    results = merge_curves([read_curve(r) for r in results])
    wanted = list(metrics) if metrics is not None else [m for m in PLOT_METRICS if _has_values(results, m)]
    unknown = [m for m in wanted if m not in PLOT_METRICS]
    if unknown:
        raise UsageError(f"cannot plot metric {unknown[0]!r}; choose from {', '.join(PLOT_METRICS)}")
    wanted = [m for m in wanted if _has_values(results, m)]
    if not wanted:
        raise CodError("nothing to plot: no metric has values in these results")

    cols = min(3, len(wanted))
    rows = math.ceil(len(wanted) / cols)
    fig = Figure(figsize=(5.0 * cols, 3.8 * rows))
    FigureCanvasAgg(fig)  # Agg canvas, no pyplot state
    axes = fig.subplots(rows, cols, squeeze=False)
    markers = "os^Dv<>pX*h"
    for i, metric in enumerate(wanted):
        ax = axes[i // cols][i % cols]
        for j, res in enumerate(results):
            pts = [(b, v) for b, v in zip(res["results"]["bpp"], _values(res, metric)) if v is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker=markers[j % len(markers)], markersize=5, linewidth=1.5, label=str(res.get("name", f"curve {j}")))
        label = PLOT_METRICS[metric]
        if metric in ("fid", "kid"):
            patch = next((r.get("meta", {}).get("fid_patch_size") for r in results if r.get("meta", {}).get("fid_patch_size")), None)
            if patch:
                label += f" (patch {patch})"
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{label}, {arrow}", fontsize=10)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        if log_x:
            _log_bpp_axis(ax, [b for r in results for b in r["results"]["bpp"]])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for k in range(len(wanted), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(out, buf.getvalue())
    return out
