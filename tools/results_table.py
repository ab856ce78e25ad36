"""Markdown table of `cod bench` results (one row per point), for docs/models.md.

    python tools/results_table.py results/default-models/k512/*.json [--fid results/default-models/k512-fid]

``--fid DIR``: take FID from the JSON files of the same codec in DIR (matched by the nearest
bpp, a subset run), shown with that run's image count.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--fid", default=None)
    args = ap.parse_args()
    fid: dict[str, list[tuple[float, float]]] = {}
    if args.fid:
        for f in sorted(Path(args.fid).glob("*.json")):
            d = load(f)
            for det in d.get("details", []):
                if det.get("fid") is not None:
                    fid.setdefault(det["codec"], []).append((det["bpp"], det["fid"]))
    print("| codec | bpp | PSNR (dB) | MS-SSIM | patch-FID | encode ms | decode ms |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for f in args.results:
        d = load(Path(f))
        for det in d.get("details", []):
            name = det["codec"]
            f_val = "–"
            if name in fid:
                b, v = min(fid[name], key=lambda p: abs(p[0] - det["bpp"]))
                if abs(b - det["bpp"]) <= 0.25 * det["bpp"]:
                    f_val = f"{v:.1f}"
            rows.append((det["bpp"], f"| {name} | {det['bpp']:.4f} | {det['psnr-rgb']:.2f} | {det['ms-ssim-rgb']:.4f} | {f_val} | {1000 * det['encoding_time']:.0f} | {1000 * det['decoding_time']:.0f} |"))
    for _, row in sorted(rows):
        print(row)


if __name__ == "__main__":
    main()
