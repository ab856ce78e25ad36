"""Entropy coding of the indices (.cod v2) against fixed-length indices (v1), per image.

    python benchmarks/entropy_coding.py WEIGHTS [WEIGHTS ...] [--kodak DIR] [--json OUT]

For every weights file that carries an index prior (`cod fit-prior`): Kodak at full size and
as 512 centre crops, the v1 and v2 file sizes of each image (whole files, headers included),
the saving, and whether the two files decode to byte-identical images; then the time the
range coder itself adds (encode and decode of the index grid, median of 20) for a 1920x1080
image. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cod  # noqa: E402
from cod.eval.bench import load_images  # noqa: E402
from cod.eval.speed import cpu_model, synthetic_image  # noqa: E402


def coder_overhead_ms(codec, height: int = 1080, width: int = 1920, repeats: int = 20) -> tuple[float, float, int]:
    """Median ms of prior.encode and prior.decode on the index grid of a photo-like image."""
    img = synthetic_image(height, width)
    idx, H, W = codec.encode(img)
    grid = np.asarray(idx).reshape(codec.grid(H, W))
    coding = codec.prior.best_coding
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = codec.prior.encode(grid, coding)
        t1 = time.perf_counter()
        out = codec.prior.decode(data, *grid.shape, coding)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        assert np.array_equal(out, grid)
    return 1e3 * float(np.median(enc)), 1e3 * float(np.median(dec)), grid.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--kodak", default=os.environ.get("KODAK", "../shared/data/kodak"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}")
    report = {}
    for w in args.weights:
        v2 = cod.load(weights=w)
        v1 = cod.load(weights=w, entropy=False)
        if v2.prior is None:
            print(f"{w}: no index prior (run `cod fit-prior`); skipped")
            continue
        report[w] = {}
        print(f"\n## {w} ({v2.name}, {v2.bits}-bit codebook, ds {v2.ds}, prior {v2.prior.tag:04x})\n")
        for label, crop in (("Kodak-512", 512), ("Kodak", None)):
            rows = []
            for name, img in load_images(args.kodak, crop=crop):
                d1, d2 = v1.compress(img), v2.compress(img)
                same = np.array_equal(np.asarray(v1.decompress(d1)), np.asarray(v2.decompress(d2)))
                rows.append({"image": name, "v1_bytes": len(d1), "v2_bytes": len(d2), "saving": 1 - len(d2) / len(d1), "identical": same,
                             "v2_bpp": 8 * len(d2) / (img.shape[0] * img.shape[1])})
            report[w][label] = rows
            print(f"| {label} | " + " | ".join(r["image"].replace(".png", "") for r in rows) + " | mean |")
            print("|---|" + "---|" * (len(rows) + 1))
            print("| v1 bytes | " + " | ".join(str(r["v1_bytes"]) for r in rows) + f" | {np.mean([r['v1_bytes'] for r in rows]):.0f} |")
            print("| v2 bytes | " + " | ".join(str(r["v2_bytes"]) for r in rows) + f" | {np.mean([r['v2_bytes'] for r in rows]):.0f} |")
            print("| saving % | " + " | ".join(f"{100 * r['saving']:.1f}" for r in rows) + f" | {100 * np.mean([r['saving'] for r in rows]):.1f} |")
            print(f"\n{label}: mean v2 bpp {np.mean([r['v2_bpp'] for r in rows]):.4f}; decodes byte-identical: {all(r['identical'] for r in rows)}\n")
        e, d, n = coder_overhead_ms(v2)
        report[w]["coder_ms_1920x1080"] = {"encode": e, "decode": d, "indices": n}
        print(f"range coder at 1920x1080 ({n} indices): encode {e:.2f} ms, decode {d:.2f} ms (median of 20)")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "results": report}, indent=1))


if __name__ == "__main__":
    main()
