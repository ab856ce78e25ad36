"""Markdown table of `cod bench` results (one row per point, sorted by bpp), for docs/models.md.

    python tools/results_table.py results/default-models/k512/*.json [--max-bpp 0.16]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--max-bpp", type=float, default=None, help="only points at or below this bpp")
    args = ap.parse_args()
    print("| codec | bpp | PSNR (dB) | MS-SSIM | ΔE2000 | patch-FID | encode ms | decode ms |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for f in args.results:
        for det in json.loads(Path(f).read_text()).get("details", []):
            if args.max_bpp is not None and det["bpp"] > args.max_bpp:
                continue
            fid = f"{det['fid']:.1f}" if det.get("fid") is not None else "–"
            de = f"{det['delta-e']:.2f}" if det.get("delta-e") is not None else "–"
            rows.append((det["bpp"], f"| {det['codec']} | {det['bpp']:.4f} | {det['psnr-rgb']:.2f} | {det['ms-ssim-rgb']:.4f} | {de} | {fid} | {1000 * det['encoding_time']:.0f} | {1000 * det['decoding_time']:.0f} |"))
    for _, row in sorted(rows):
        print(row)


if __name__ == "__main__":
    main()
