"""Evaluation suite: image metrics, classical baselines, RD benchmarks, BD-rate, plots, speed.

    from cod.eval import MetricSuite, bench, bd_rate, plot_rd, speed, get_baseline

See docs/evaluation.md for the protocol, the results JSON schema and the backbone weights.
Heavy dependencies (lpips, DISTS_pytorch, matplotlib, codec plugins) are imported on use.
"""
from cod.eval.baselines import (
    BASELINE_NAMES,
    available_baselines,
    encode_at_bpp,
    get_baseline,
    lowest_bpp,
)
from cod.eval.bdrate import bd_metric, bd_rate, bd_rate_results
from cod.eval.bench import bench, load_results, save_results
from cod.eval.metrics import (
    METRIC_KEYS,
    MetricSuite,
    default_patch_size,
    extract_patches,
    ms_ssim,
    psnr,
)
from cod.eval.plot import plot_rd
from cod.eval.schema import RESULTS_SCHEMA, validate_results
from cod.eval.speed import speed

__all__ = [
    "BASELINE_NAMES",
    "METRIC_KEYS",
    "MetricSuite",
    "RESULTS_SCHEMA",
    "available_baselines",
    "bd_metric",
    "bd_rate",
    "bd_rate_results",
    "bench",
    "default_patch_size",
    "encode_at_bpp",
    "extract_patches",
    "get_baseline",
    "load_results",
    "lowest_bpp",
    "ms_ssim",
    "plot_rd",
    "psnr",
    "save_results",
    "speed",
    "validate_results",
]
