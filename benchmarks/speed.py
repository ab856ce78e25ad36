"""Encode/decode speed and peak memory of a CoD-Lite codec (random weights are fine).

    python benchmarks/speed.py                       # full-size codlite-0.0312, CPU fp32
    python benchmarks/speed.py --sizes 720x480 --runs 5 --device cuda
    python benchmarks/speed.py --cod                 # + CoD pixel: seconds per sampling step at 512x512

Prints one table row per image size: median (and min-max) of the timed runs after the
warm-up, for compress (image -> .cod bytes) and decompress (bytes -> image), and peak
memory: the RSS peak during the timed runs above the RSS before them (CPU) or the CUDA
allocator's peak, plus the process's lifetime peak RSS. Every measured call is the full
public path: image array -> padding -> network -> packing -> container, and back.
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import cod  # noqa: E402
from cod.cliargs import add_device_arg, parse_size  # noqa: E402
from cod.codec import resolve_device  # noqa: E402
from cod.eval.speed import speed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="codlite-0.0312")
    ap.add_argument("--weights", default=None, help="weights file (default: random weights of the full-size model)")
    ap.add_argument("--sizes", default="720x480,1920x1024", help="comma-separated WIDTHxHEIGHT")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    add_device_arg(ap)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cod", nargs="?", const="cod-pixel-0.0039", default=None, metavar="MODEL",
                    help="also time a full-size CoD model per sampling step at 512x512 (benchmarks/cod_speed.py)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    codec = cod.load(args.model, weights=args.weights, device=args.device, random_init=args.weights is None)
    params = sum(p.numel() for p in codec.model.parameters()) + sum(b.numel() for b in codec.model.buffers())
    enc_params = sum(p.numel() for p in codec.model.condition.encoder.parameters())
    print(f"model {codec.name} ({'random' if args.weights is None else args.weights}), {params / 1e6:.1f} M parameters "
          f"(encoder {enc_params / 1e6:.1f} M), device {args.device}, dtype float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"warm-up {args.warmup}, timed runs {args.runs}")
    print(f"{'size (WxH)':>11} | {'encode ms median (min-max)':>27} | {'decode ms median (min-max)':>27} | {'peak enc MiB':>12} | {'peak dec MiB':>12}")
    for s in args.sizes.split(","):
        h, w = parse_size(s, "--sizes")
        r = speed(codec, (h, w), warmup=args.warmup, runs=args.runs, device=args.device)
        e, d, m = r["encode_ms"], r["decode_ms"], r["peak_memory"]
        print(f"{w:>5}x{h:<5} | {e['median']:>9.0f} ({e['min']:>6.0f}-{e['max']:>6.0f})      | {d['median']:>9.0f} ({d['min']:>6.0f}-{d['max']:>6.0f})      | {m['encode_mib']:>12.0f} | {m['decode_mib']:>12.0f}")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.cod:
        import subprocess

        del codec  # free the CoD-Lite model before loading a 0.9 B-parameter one
        print()
        cmd = [sys.executable, str(Path(__file__).with_name("cod_speed.py")), "--model", args.cod, "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        return subprocess.call(cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
