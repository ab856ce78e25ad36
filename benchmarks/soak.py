"""Memory over a long batch: `cod decompress DIR` on many files of many sizes, RSS per file.

    python benchmarks/soak.py [--files 500] [--model NAME] [--at 10 100 250 500]

Makes ``--files`` .cod files of synthetic photos of varied sizes (64..320 a side, one size in
three repeated), then decodes the folder through the CLI's batch path (cod.cli.main) in this
process, reading the process's resident memory after each file (/proc/self/statm). Prints the
RSS after the files of ``--at`` and the peak; flat memory means RSS at the last file close to
RSS at the tenth.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cod  # noqa: E402
import cod.cli as cli  # noqa: E402
from cod.eval.speed import cpu_model, synthetic_image  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--model", default=None)
    ap.add_argument("--at", type=int, nargs="+", default=[10, 100, 250, 500])
    ap.add_argument("--precision", default="fast", choices=["fast", "fp32", "bf16"])
    args = ap.parse_args()
    codec = cod.load(args.model, precision=args.precision)
    with tempfile.TemporaryDirectory(prefix="cod-soak-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        for i in range(args.files):
            h, w = 64 + (i * 37) % 257, 64 + (i * 53) % 257
            if i % 3:
                h, w = 192, 256
            (src / f"{i:04d}.cod").write_bytes(codec.compress(synthetic_image(h, w, seed=i)))
        rss: list[float] = []
        from cod import image_io  # cmd_decompress imports write_image at each call: measure there

        original = image_io.write_image

        def write_and_measure(path, array, **kw):
            original(path, array, **kw)
            rss.append(rss_mb())

        image_io.write_image = write_and_measure
        try:
            t0 = time.perf_counter()
            code = cli.main(["decompress", str(src), "-o", str(out), "-q", "--model", codec.name, "--precision", args.precision])
            seconds = time.perf_counter() - t0
        finally:
            image_io.write_image = original
    print(f"CPU: {cpu_model()}; {codec.name}, precision {args.precision}; {args.files} files in {seconds:.0f} s (exit {code})")
    print("| after file | RSS MiB |")
    print("|---|---|")
    for n in args.at:
        if n <= len(rss):
            print(f"| {n} | {rss[n - 1]:.0f} |")
    if rss:
        print(f"| peak | {max(rss):.0f} |")
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
