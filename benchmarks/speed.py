"""Encode/decode speed and peak memory of CoD-Lite codecs (random weights are fine).

    python benchmarks/speed.py                       # full-size codlite-0.0312, fast path, CPU
    python benchmarks/speed.py --compare             # fp32-faithful vs fast, side by side, ratios
    python benchmarks/speed.py --compare --precisions fp32,fast,bf16 --models codlite-0.0312
    python benchmarks/speed.py --device cuda --compile    # the GPU table (bf16, torch.compile + CUDA graphs)
    python benchmarks/speed.py --profile --sizes 720x480 --precisions fp32,fast   # where the time goes
    python benchmarks/speed.py --cod                 # + CoD pixel: seconds per sampling step at 512x512

Default mode: one table row per image size, median (and min-max) of the timed runs after the
warm-up, for compress (image -> .cod bytes) and decompress (bytes -> image), and peak
memory (RSS peak above the RSS before the runs on CPU, the CUDA allocator's peak on a GPU).

``--compare``: for every model and size, the precisions of ``--precisions`` (the first is the
reference) share one set of weights and are timed alternately (cod.eval.speed.compare: every
round runs each of them once, the order reversed every other round), median of ``--runs``
after ``--warmup``; the ratio is reference time / time (2.5x = 2.5 times faster). A loaded
machine slows all of them alike, so the ratios hold where absolute times do not; the load
average is printed before and after. Every measured call is the full public path: image
array -> padding -> network -> container, and back.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cod  # noqa: E402,I001  (before torch: its environment defaults, cod/__init__.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cod.cliargs import add_device_arg, parse_size, run_script  # noqa: E402
from cod.limits import parse_memory  # noqa: E402
from cod.codec import resolve_device  # noqa: E402
from cod.eval.speed import compare, cpu_model, speed  # noqa: E402
from cod.inference import PRECISIONS  # noqa: E402


def _load(model: str, weights: str | None, device: str, precision: str, args: argparse.Namespace):
    kw = {"max_memory": parse_memory(args.max_memory)} if args.max_memory else {}
    codec = cod.load(model, weights=weights, device=device, random_init=weights is None, precision=precision, **kw)
    codec.compile = args.compile
    return codec


def _load_avg() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def _header(args: argparse.Namespace) -> None:
    from cod.inference import cpu_native_bf16

    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else cpu_model()
    cpu = f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {'yes' if cpu_native_bf16() else 'no'}"
    print(f"device {args.device} ({where}; {cpu}), {torch.get_num_threads()} threads, torch {torch.__version__}; {_load_avg()}")


def _image(args: argparse.Namespace, h: int, w: int):
    """--image resized (Lanczos) to h x w, or None (cod.eval.speed's synthetic image)."""
    if not args.image:
        return None
    from PIL import Image

    from cod.image_io import read_image

    return np.asarray(Image.fromarray(read_image(args.image)).resize((w, h), Image.Resampling.LANCZOS))


def run_compare(args: argparse.Namespace) -> int:
    precisions = args.precisions.split(",")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or len(precisions) < 2:
        print(f"error: --precisions needs two or more of {', '.join(PRECISIONS)}, got {args.precisions!r}", file=sys.stderr)
        return 2
    _header(args)
    print(f"alternating runs (order reversed every other round), warm-up {args.warmup}, median of {args.runs}; ratio = {precisions[0]} time / time")
    ref = precisions[0]
    cols = " | ".join(f"{p + ' enc':>10} | {'x':>5}" for p in precisions[1:])
    accs = " | ".join(f"{p + ' dB':>8} {'same':>6}" for p in precisions[1:])
    print(f"{'model':<16} {'size':>9} | {ref + ' enc':>10} | {cols} || {ref + ' dec':>10} | " + " | ".join(f"{p + ' dec':>10} | {'x':>5}" for p in precisions[1:]) + f" || {accs}")
    for model in args.models.split(","):
        base = _load(model, args.weights, args.device, precisions[0], args)
        codecs = {p: base if p == precisions[0] else dataclasses.replace(base, precision=p) for p in precisions}
        for c in codecs.values():
            c.compile = args.compile
        descr = {p: c.plan.describe() for p, c in codecs.items()}
        for s in args.sizes.split(","):
            h, w = parse_size(s, "--sizes")
            r = compare(codecs, (h, w), warmup=args.warmup, runs=args.runs, device=args.device, image=_image(args, h, w))["codecs"]
            enc = " | ".join(f"{r[p]['encode_ms']['median']:>8.0f}ms | {r[p]['encode_speedup']:>4.2f}x" for p in precisions[1:])
            dec = " | ".join(f"{r[p]['decode_ms']['median']:>8.0f}ms | {r[p]['decode_speedup']:>4.2f}x" for p in precisions[1:])
            acc = " | ".join(f"{r[p]['decode_psnr_db']:>8.1f} {100 * r[p]['same_index']:>5.1f}%" for p in precisions[1:])
            print(f"{model:<16} {w:>4}x{h:<4} | {r[ref]['encode_ms']['median']:>8.0f}ms | {enc} || {r[ref]['decode_ms']['median']:>8.0f}ms | {dec} || {acc}", flush=True)
        del codecs, base
    print(f"dB: PSNR of each precision's decode of the {ref} file against the {ref} decode; same: positions where its encoder picks the {ref} index")
    print("precisions: " + "; ".join(f"{p} = {d}" for p, d in descr.items()))
    print(_load_avg())
    return 0


def run_profile(args: argparse.Namespace) -> int:
    """torch.profiler over one compress and one decompress (after a warm-up round trip) of each
    of --precisions: the operators that take the time, by self CPU time (CUDA time on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    from cod.eval.speed import synthetic_image

    _header(args)
    model = args.models.split(",")[0]
    base = _load(model, args.weights, args.device, "fp32", args)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    key = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    for s in args.sizes.split(","):
        h, w = parse_size(s, "--sizes")
        img = _image(args, h, w)
        img = synthetic_image(h, w) if img is None else img
        for p in args.precisions.split(","):
            codec = base if p == "fp32" else dataclasses.replace(base, precision=p)
            codec.compile = args.compile
            data = codec.compress(img)
            codec.decompress(data)
            for what, fn in (("compress", lambda: codec.compress(img)), ("decompress", lambda: codec.decompress(data))):
                with profile(activities=acts) as prof:
                    fn()
                total = sum(getattr(e, key) for e in prof.key_averages()) / 1e3
                print(f"\n== {model} {w}x{h} {what}, {codec.plan.describe()}: {total:.0f} ms of operator time")
                print(prof.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=40))
    return 0


def run_table(args: argparse.Namespace) -> int:
    codec = _load(args.models.split(",")[0], args.weights, args.device, args.precision, args)
    params = sum(p.numel() for p in codec.model.parameters()) + sum(b.numel() for b in codec.model.buffers())
    enc_params = sum(p.numel() for p in codec.model.condition.encoder.parameters())
    _header(args)
    print(f"model {codec.name} ({'random' if args.weights is None else args.weights}), {params / 1e6:.1f} M parameters "
          f"(encoder {enc_params / 1e6:.1f} M), precision {codec.plan.describe()}{', torch.compile' if args.compile else ''}")
    print(f"warm-up {args.warmup}, timed runs {args.runs}")
    print(f"{'size (WxH)':>11} | {'encode ms median (min-max)':>27} | {'decode ms median (min-max)':>27} | {'peak enc MiB':>12} | {'peak dec MiB':>12}")
    for s in args.sizes.split(","):
        h, w = parse_size(s, "--sizes")
        r = speed(codec, (h, w), warmup=args.warmup, runs=args.runs, device=args.device, image=_image(args, h, w))
        e, d, m = r["encode_ms"], r["decode_ms"], r["peak_memory"]
        print(f"{w:>5}x{h:<5} | {e['median']:>9.0f} ({e['min']:>6.0f}-{e['max']:>6.0f})      | {d['median']:>9.0f} ({d['min']:>6.0f}-{d['max']:>6.0f})      | {m['encode_mib']:>12.0f} | {m['decode_mib']:>12.0f}", flush=True)
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; {_load_avg()}")
    if args.cod:
        import subprocess

        del codec  # free the CoD-Lite model before loading a 0.9 B-parameter one
        print()
        cmd = [sys.executable, str(Path(__file__).with_name("cod_speed.py")), "--model", args.cod, "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        return subprocess.call(cmd)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", action="store_true", help="time --precisions side by side (alternating) and print the ratios")
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of one compress and one decompress per precision of --precisions")
    ap.add_argument("--profile-rows", type=int, default=12, help="--profile: operators listed per table (default 12)")
    ap.add_argument("--models", "--model", default=None, help="comma-separated model names (default: the model of --weights; else codlite-0.0312, --compare: codlite-0.0312,codlite-0.0039)")
    ap.add_argument("--weights", default=None, help="weights file (default: random weights of the full-size model)")
    ap.add_argument("--sizes", default="720x480,1920x1024", help="comma-separated WIDTHxHEIGHT")
    ap.add_argument("--precision", default="fast", choices=PRECISIONS, help="default mode: the precision timed (default fast)")
    ap.add_argument("--precisions", default="fp32,fast", help="--compare: the precisions, the first is the reference (default fp32,fast)")
    ap.add_argument("--image", default=None, help="time this image (resized to each size) instead of the synthetic one")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the fast form (CUDA graphs on a GPU); each size compiles once, in the warm-up")
    ap.add_argument("--max-memory", default=None, help="memory limit of the codec (cod --max-memory, tiles sized from it), e.g. 2G")
    add_device_arg(ap)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cod", nargs="?", const="cod-pixel-0.0039", default=None, metavar="MODEL",
                    help="also time a full-size CoD model per sampling step at 512x512 (benchmarks/cod_speed.py)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    if args.models is None and args.weights:  # the model the weights file holds
        from cod.checkpoint import read_config

        args.models = read_config(args.weights)["name"]
    elif args.models is None:
        args.models = "codlite-0.0312,codlite-0.0039" if args.compare else "codlite-0.0312"
    if args.compile and args.warmup < 1:
        args.warmup = 1
    if args.profile:
        return run_profile(args)
    return run_compare(args) if args.compare else run_table(args)


if __name__ == "__main__":
    run_script(main)
