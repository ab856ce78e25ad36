"""Peak resident memory of decoding a large CoD-Lite file, one fresh process per rate (issue 16).

    python benchmarks/memory_decode.py [--models codlite-0.0039,...] [--size 7680x4320] [--threads 2]

The decode side of benchmarks/memory.py without the (slow) encode: each child loads the
full-size model with random weights, writes a valid file of all-zero indices claiming the size
(decoding does the same work whatever the indices), decodes it with the default settings
(fast precision, tiles from the default --max-memory) and prints its peak RSS (ru_maxrss; a
child inherits its parent's peak, which here is small: the parent imports no torch).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(model: str, size: str, threads: int) -> None:
    import resource

    import torch

    import cod
    from cod import bitstream as bs
    from cod.cliargs import parse_size

    torch.set_num_threads(threads)
    h, w = parse_size(size)
    codec = cod.load(model, random_init=True)
    gh, gw = codec.grid(h, w)
    data = bs.write_cod(bs.CodHeader(codec.family_code, codec.ds, codec.bits, codec.model_tag, h, w), bytes(bs.packed_size(gh * gw, codec.bits)))
    t0 = time.perf_counter()
    img = codec.decompress(data)
    assert img.size == (w, h)
    print(json.dumps({"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "seconds": time.perf_counter() - t0}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="codlite-0.0039,codlite-0.0078,codlite-0.0156,codlite-0.0312,codlite-0.125,codlite-0.5")
    ap.add_argument("--size", default="7680x4320")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.size, args.threads)
        return 0
    print(f"decode of a {args.size} file, fresh process per model, {args.threads} threads, default limits (4 GiB)")
    print(f"{'model':<16} | {'peak RSS GiB':>12} | {'s':>6}")
    for m in args.models.split(","):
        r = subprocess.run([sys.executable, __file__, "--child", m, "--size", args.size, "--threads", str(args.threads)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if r.returncode:
            print(f"{m:<16} | error: {(r.stderr.strip().splitlines() or ['failed'])[-1]}", flush=True)
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{m:<16} | {res['peak_bytes'] / 2**30:>12.2f} | {res['seconds']:>6.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
