"""Kodak-512 quality of trained CoD-Lite weights files, one table row each (docs/models.md).

    python benchmarks/ablation_eval.py runs/a/model.safetensors runs/b/model.safetensors [--fid] [--json out.json]

Each file is loaded with ``cod.load(weights=...)`` and every Kodak image (centre crop 512)
goes through the real public path (image -> .cod bytes -> image). Printed per file: bpp from
the file sizes, PSNR, MS-SSIM, mean CIEDE2000 colour error, the index entropy (bits per index
over the set, what an entropy coder with a static histogram would pay), codes used, and with
``--fid`` the patch-FID (64 px patches on the two grids, all images). Kodak is evaluation data
only: nothing here trains.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cod.eval.bench import load_images
from cod.eval.metrics import MetricSuite
from cod.eval.speed import cpu_model


def evaluate(weights: str, images, suite: MetricSuite, chroma_block: int | None = None) -> dict:
    import cod

    codec = cod.load(weights=weights, chroma=True if chroma_block is None else chroma_block)  # an int: that block side (cod.chroma)
    suite.reset()
    sizes, counts, n_idx = [], None, 0
    t0 = time.time()
    for _name, arr in images:
        data = codec.compress(arr)
        idx, *_ = codec.parse(data)
        idx = np.asarray(idx).ravel()
        c = np.bincount(idx, minlength=2**codec.bits)
        counts = c if counts is None else counts + c
        n_idx += idx.size
        suite.add(arr, np.asarray(codec.decompress(data)))
        sizes.append(len(data) * 8 / (arr.shape[0] * arr.shape[1]))
    p = counts[counts > 0] / counts.sum()
    s = suite.summary()
    row = {"weights": weights, "bpp": float(np.mean(sizes)), **s["metrics"], "entropy_bits": float(-(p * np.log2(p)).sum()),
           "codes_used": int((counts > 0).sum()), "codebook": int(counts.size), "chroma_block": codec.chroma_block, "seconds": time.time() - t0}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--kodak", default=os.environ.get("KODAK", "../shared/data/kodak"))
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--fid", action="store_true", help="also patch-FID (slow on CPU: ~10 min for 24 images)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--chroma-block", type=int, default=None, help="chroma side information block (cod.chroma; 0: none); default: the weights' config")
    args = ap.parse_args()
    images = load_images(args.kodak, limit=args.limit, crop=args.crop)
    metrics = ["psnr-rgb", "ms-ssim-rgb", "delta-e"] + (["fid"] if args.fid else [])
    suite = MetricSuite(metrics, fid_patch=64 if args.fid else None)
    print(f"# Kodak-{args.crop} ({len(images)} images); CPU: {cpu_model()}, {torch.get_num_threads()} threads")
    print("| weights | bpp | PSNR | MS-SSIM | ΔE2000 | patch-FID | bits/index (entropy) | codes used |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for w in args.weights:
        r = evaluate(w, images, suite, args.chroma_block)
        rows.append(r)
        fid = f"{r['fid']:.1f}" if r.get("fid") is not None else "–"
        print(f"| {w} | {r['bpp']:.4f} | {r['psnr-rgb']:.2f} | {r['ms-ssim-rgb']:.4f} | {r['delta-e']:.2f} | {fid} | {r['entropy_bits']:.2f} | {r['codes_used']}/{r['codebook']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "images": len(images), "crop": args.crop, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
