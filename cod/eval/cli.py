"""`cod bench`, `cod plot`, `cod bdrate` and `cod speed`: the evaluation subcommands.

The main CLI (cod/cli.py) calls :func:`add_eval_subcommands` on its subparsers; every handler
takes the argparse namespace and returns an exit code, and reports bad input as a one-line
CodError.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cod.cliargs import add_device_arg, add_force_arg, add_limit_args, add_precision_args, add_unsafe_pickle_arg, limit_kwargs, parse_size, refuse_existing
from cod.errors import CodError, UsageError
from cod.eval.schema import BASELINE_NAMES, KEY_ALIASES, METRIC_KEYS, WEIGHTS_ENV


# ----------------------------------------------------------------------------- parsing helpers
def parse_bpps(text: str | None) -> list[float]:
    """'0.05,0.1,0.2' -> [0.05, 0.1, 0.2] (positive numbers)."""
    if not text:
        return []
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--bpp: expected comma-separated numbers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise UsageError(f"--bpp: target rates must be positive, got {text!r}")
    return values


def parse_metrics(text: str | None) -> list[str]:
    """'psnr-rgb,lpips' -> ['psnr-rgb', 'lpips']; 'all' or empty -> every metric. CompressAI's
    older names are accepted: 'psnr' -> 'psnr-rgb', 'ms-ssim' -> 'ms-ssim-rgb'."""
    if not text or text == "all":
        return list(METRIC_KEYS)
    names = [KEY_ALIASES.get(t.strip(), t.strip()) for t in text.split(",") if t.strip()]
    for n in names:
        if n not in METRIC_KEYS:
            raise UsageError(f"--metrics: unknown metric {n!r}; choose from {', '.join(METRIC_KEYS)}")
    return list(dict.fromkeys(names))


def _weights_for(models: list[str], given: list[str]) -> dict[str, str | None]:
    """--weights values (PATH for a single model, or NAME=PATH) -> model name -> path."""
    out: dict[str, str | None] = {m: None for m in models}
    for item in given:
        name, sep, path = item.partition("=")
        if sep and name in out:
            out[name] = path
        elif not sep and len(models) == 1:
            out[models[0]] = item
        elif sep:
            raise UsageError(f"--weights {item}: {name!r} is not one of the --codec models ({', '.join(models) or 'none'})")
        else:
            raise UsageError(f"--weights {item}: with {len(models)} models use NAME=PATH")
    return out


def _load_model(name: str, weights: str | None, device: Any, unsafe_pickle: bool = False, **options: Any) -> Any:
    import cod

    return cod.load(name, weights=weights, device=device, unsafe_pickle=unsafe_pickle, **options)


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


# ----------------------------------------------------------------------------- handlers
def cmd_bench(args: argparse.Namespace) -> int:
    """Run the codecs over the image folder; write one results JSON per curve, after each point."""
    from pathlib import Path

    from cod.codec import resolve_device
    from cod.eval.baselines import get_baseline, is_baseline_name
    from cod.eval.bench import bench, curve_name, load_images
    from cod.eval.metrics import MetricSuite, default_patch_size
    from cod.families import known_models

    if args.resume and args.force:
        raise UsageError("--resume continues the results files, --force starts them over: give one")
    targets = parse_bpps(args.bpp)
    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    names = list(dict.fromkeys(args.codec))
    models = [n for n in names if not is_baseline_name(n)]
    weights = _weights_for(models, args.weights or [])
    for n in models:
        if weights[n] is None and n not in known_models():
            raise UsageError(f"unknown codec {n}; known: {', '.join(BASELINE_NAMES)} (each also NAME-downK), {', '.join(known_models())}")
    if any(is_baseline_name(n) for n in names) and not targets:
        raise UsageError("baseline codecs need target rates: add --bpp 0.05,0.1,0.2")
    codecs = [get_baseline(n) if is_baseline_name(n) else _load_model(n, weights[n], device, args.unsafe_pickle) for n in names]
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {args.output}: bench writes a folder of NAME.json files, and {args.output} is a file")
    if not args.resume:
        refuse_existing([out_dir / f"{curve_name(c)}.json" for c in codecs], args.force, "pass --resume to continue it, or --force to start over")
    images = load_images(args.image_dir, limit=args.limit, crop=args.crop)
    patch = args.fid_patch or default_patch_size([img.shape for _, img in images])
    suite = MetricSuite(metrics, weights_dir=args.weights_dir, device=device, fid_patch=patch)
    results = bench(codecs, images, targets, suite=suite, crop=args.crop, dataset=str(args.image_dir), progress=not args.quiet, output=out_dir, resume=args.resume)
    print(f"{'curve':<16} {'target':>7} {'bpp':>8} {'PSNR':>7} {'MS-SSIM':>8} {'LPIPS':>7} {'DISTS':>7} {'FID':>7} {'enc s':>7} {'dec s':>7}")
    for res in results:
        r = res["results"]
        for i, bpp in enumerate(r["bpp"]):
            tgt = res["meta"]["target_bpp"][i]
            print(
                f"{res['name'][:16]:<16} {_fmt(tgt, '7.4f'):>7} {bpp:8.4f} {_fmt(r['psnr-rgb'][i], '7.2f'):>7} "
                f"{_fmt(r['ms-ssim-rgb'][i], '8.4f'):>8} {_fmt(r['lpips'][i], '7.4f'):>7} {_fmt(r['dists'][i], '7.4f'):>7} "
                f"{_fmt(r['fid'][i], '7.2f'):>7} {r['encoding_time'][i]:7.3f} {r['decoding_time'][i]:7.3f}"
            )
        for key, note in res["meta"]["notes"].items():
            where = res["name"] if key == res["name"] else f"{res['name']}, {key}"
            print(f"note ({where}): {note}", file=sys.stderr)
    for res in results:
        print(f"wrote {out_dir / (res['name'] + '.json')}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot results JSON files as RD curves into one PNG."""
    from cod.eval.plot import plot_rd
    from cod.eval.schema import load_results

    refuse_existing([args.output], args.force)
    results = [load_results(p) for p in args.results]
    metrics = parse_metrics(args.metrics) if args.metrics else None
    out = plot_rd(results, args.output, metrics=metrics, log_x=not args.linear_x, title=args.title)
    print(f"wrote {out}")
    return 0


def cmd_bdrate(args: argparse.Namespace) -> int:
    """BD-rate of each test curve against the anchor, for each metric asked."""
    from cod.eval.bdrate import bd_rate_results
    from cod.eval.schema import load_results

    metrics = parse_metrics(args.metric)
    anchor = load_results(args.anchor)
    tests = [load_results(path) for path in args.tests]
    if args.metric == "all":  # every metric that each curve has
        metrics = [m for m in metrics if all(any(v is not None for v in c["results"].get(m, [])) for c in [anchor, *tests])]
        if not metrics:
            raise CodError("no metric has values in every one of these results files")
    rows = []
    for test in tests:
        for metric in metrics:
            res = bd_rate_results(anchor, test, metric)
            rows.append(res)
            if not args.json:
                print(res.line())
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    """Time one codec (a model or a baseline at --quality) at one image size."""
    from cod.codec import resolve_device
    from cod.eval.baselines import FixedQuality, get_baseline, is_baseline_name
    from cod.eval.speed import format_speed, speed
    from cod.image_io import atomic_write_bytes

    size = parse_size(args.size)
    if args.json:
        refuse_existing([args.json], args.force)
    device = resolve_device(args.device)
    if is_baseline_name(args.model):
        codec: Any = FixedQuality(get_baseline(args.model), args.quality)
    else:
        codec = _load_model(args.model, args.weights, device, args.unsafe_pickle, precision=args.precision, **limit_kwargs(args))
    report = speed(codec, size=size, warmup=args.warmup, runs=args.runs, device=device)
    print(format_speed(report))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=1) + "\n").encode(), overwrite=args.force)
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- parser
def add_eval_subcommands(subparsers: Any) -> None:
    """Add `bench`, `plot`, `bdrate` and `speed` to the main CLI's subparsers."""
    metric_help = f"comma-separated subset of {','.join(METRIC_KEYS)} (default: all)"

    p = subparsers.add_parser("bench", help="rate-distortion benchmark of codecs over an image folder -> results JSON")
    p.add_argument("image_dir", help="folder of images (searched recursively)")
    p.add_argument("--codec", action="append", required=True, help=f"a baseline ({', '.join(BASELINE_NAMES)}; NAME-downK: the image downscaled by K first, e.g. avif-down4) or a model (codlite-0.0312, see `cod models`); repeat")
    p.add_argument("--weights", action="append", default=[], help="model weights (ours or an official .pt): PATH (one model) or NAME=PATH; repeat")
    add_unsafe_pickle_arg(p)
    p.add_argument("--bpp", default=None, help="target bpps for the baselines, comma-separated (e.g. 0.05,0.1,0.2)")
    p.add_argument("-o", "--output", default="results", help="output folder for NAME.json files, written after every point (default: results)")
    p.add_argument("--resume", action="store_true", help="continue the NAME.json files there: run only the points they lack")
    add_force_arg(p, "NAME.json files (start them over)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--crop", type=int, default=None, help="centre-crop images to CROPxCROP (Kodak-512: --crop 512)")
    p.add_argument("--metrics", default=None, help=metric_help)
    p.add_argument("--weights-dir", default=None, help=f"folder with the LPIPS/DISTS backbone files (default: ${WEIGHTS_ENV})")
    p.add_argument("--fid-patch", type=int, default=None, help="FID/KID patch size (default: 64 for images up to 512x512, else 256)")
    add_device_arg(p, " for models and metrics")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser("plot", help="RD curves of results JSON files -> PNG")
    p.add_argument("results", nargs="+", help="results JSON files: from `cod bench`, or CompressAI's (only bpp is required)")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--metrics", default=None, help="panels to draw (default: every metric with values)")
    p.add_argument("--linear-x", action="store_true", help="linear bpp axis (default: logarithmic)")
    p.add_argument("--title", default=None)
    add_force_arg(p, "PNG file")
    p.set_defaults(func=cmd_plot)

    p = subparsers.add_parser("bdrate", help="Bjøntegaard delta rate (PCHIP) of results JSON files against an anchor")
    p.add_argument("anchor", help="anchor results JSON (from `cod bench`, or CompressAI's: only bpp and the metric are required)")
    p.add_argument("tests", nargs="+", help="test results JSON file(s)")
    p.add_argument("--metric", default="psnr-rgb", help="metric(s), comma-separated (psnr and ms-ssim mean psnr-rgb and ms-ssim-rgb), or 'all': every metric all files have (default: psnr-rgb)")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    p.set_defaults(func=cmd_bdrate)

    p = subparsers.add_parser("speed", help="encode/decode latency and peak memory at one image size")
    p.add_argument("--model", "-m", required=True, help="a model (codlite-0.0312) or a baseline (jpeg, ...) with --quality")
    p.add_argument("--size", default="1920x1024", help="WIDTHxHEIGHT (default: 1920x1024)")
    p.add_argument("--weights", "-w", default=None, help="model weights file, ours or an official .pt (default: the installed weights)")
    add_unsafe_pickle_arg(p)
    add_device_arg(p)
    add_precision_args(p)
    add_limit_args(p)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: 2)")
    p.add_argument("--runs", type=int, default=10, help="timed calls (default: 10)")
    p.add_argument("--quality", type=float, default=75, help="quality for a baseline codec (default: 75)")
    p.add_argument("--json", default=None, help="also write the full report to this JSON file")
    add_force_arg(p, "--json file")
    p.set_defaults(func=cmd_speed)
