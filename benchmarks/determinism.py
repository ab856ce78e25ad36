"""What thread-independent decoding (cod.nn.determinism) costs: plain vs fixed-split decodes.

    python benchmarks/determinism.py [--model NAME] [--threads 1 2] [--repeats 5] [--size 768x512]

For each thread count: the same file decoded plainly (oneDNN / MKL free to split sums by the
thread count) and inside ``thread_independent`` (the default of every codec), alternating,
``--repeats`` times each; prints median seconds, the ratio fixed / plain, and how many pixels
of the plain decode differ from the 1-thread plain decode. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cod  # noqa: E402
from cod.cliargs import parse_size  # noqa: E402
from cod.eval.speed import cpu_model, synthetic_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the synthetic photo-like image")
    args = ap.parse_args()
    h, w = parse_size(args.size)
    codec = cod.load(args.model, device="cpu")
    idx, H, W, grid = codec.parse(codec.compress(synthetic_image(h, w)))
    plain = type(codec).decode.__wrapped__  # the decode without the thread_independent context
    print(f"CPU: {cpu_model()}; model {codec.name}; {w}x{h}; torch {torch.__version__}")
    print("| threads | plain s | fixed s | fixed / plain | plain pixels differing from 1 thread |")
    print("|---|---|---|---|---|")
    reference = None
    for t in args.threads:
        torch.set_num_threads(t)
        times: dict[str, list[float]] = {"plain": [], "fixed": []}
        outs = {}
        for _ in range(args.repeats):
            for kind, fn in (("plain", lambda: plain(codec, idx, H, W, grid)), ("fixed", lambda: codec.decode(idx, H, W, grid))):
                t0 = time.perf_counter()
                outs[kind] = fn()
                times[kind].append(time.perf_counter() - t0)
        if reference is None:
            reference = outs["plain"]
        differ = int((outs["plain"] != reference).any(-1).sum())
        p, f = float(np.median(times["plain"])), float(np.median(times["fixed"]))
        print(f"| {t} | {p:.3f} | {f:.3f} | {f / p:.2f} | {differ} |")


if __name__ == "__main__":
    main()
