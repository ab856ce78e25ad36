"""Evaluation suite: image metrics, classical baselines, RD benchmarks, BD-rate, plots, speed.

    from cod.eval import MetricSuite, bench, bd_rate, plot_rd, speed, get_baseline

See docs/evaluation.md for the protocol, the results JSON schema and the backbone weights.
Every name is imported on first use (lazy_loader), and heavy dependencies (torch, lpips,
DISTS_pytorch, matplotlib, codec plugins) only where they are needed: `cod bdrate` runs
without torch.
"""
from typing import TYPE_CHECKING

import lazy_loader

_NAMES = {
    "baselines": ["available_baselines", "encode_at_bpp", "get_baseline", "lowest_bpp"],
    "bdrate": ["bd_metric", "bd_rate", "bd_rate_results"],
    "bench": ["bench", "load_results", "save_results"],
    "metrics": ["MetricSuite", "default_patch_size", "extract_patches", "ms_ssim", "psnr"],
    "plot": ["plot_rd"],
    "schema": ["BASELINE_NAMES", "METRIC_KEYS", "RESULTS_SCHEMA", "read_curve", "validate_results"],
    "speed": ["speed"],
}
if TYPE_CHECKING:
    from cod.eval.baselines import available_baselines, encode_at_bpp, get_baseline, lowest_bpp
    from cod.eval.bdrate import bd_metric, bd_rate, bd_rate_results
    from cod.eval.bench import bench, load_results, save_results
    from cod.eval.metrics import MetricSuite, default_patch_size, extract_patches, ms_ssim, psnr
    from cod.eval.plot import plot_rd
    from cod.eval.schema import BASELINE_NAMES, METRIC_KEYS, RESULTS_SCHEMA, read_curve, validate_results
    from cod.eval.speed import speed

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs=_NAMES)
