"""Which padding gives the cleanest borders? PSNR near the padded edge vs the interior.

    python benchmarks/padding.py --weights MODEL.safetensors [--images ../shared/data/kodak] [--crop 740x500]

Each image is cropped (top-left) to a size that is not a multiple of the model's padding
multiple, compressed with each padding mode, decoded, and scored: PSNR over the band of
``--band`` pixels along the bottom and right edges (next to the padding) and over the rest.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import cod  # noqa: E402
from cod.cliargs import parse_size  # noqa: E402
from cod.tensor_io import PAD_MODES  # noqa: E402
from cod.image_io import list_images, read_image  # noqa: E402


def psnr_masked(ref: np.ndarray, rec: np.ndarray, mask: np.ndarray) -> float:
    d = (ref.astype(np.float64) - rec.astype(np.float64))[mask]
    return 10 * np.log10(255.0**2 / max(np.mean(d**2), 1e-12))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--images", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"))
    ap.add_argument("--crop", default="740x500", help="WIDTHxHEIGHT crop, top-left")
    ap.add_argument("--band", type=int, default=16)
    ap.add_argument("--limit", type=int, default=8)
    args = ap.parse_args()
    ch, cw = parse_size(args.crop, "--crop")
    files = list_images([args.images])[: args.limit]
    codecs = {m: cod.load(weights=args.weights, pad_mode=m) for m in PAD_MODES}
    print(f"{args.weights}: multiple {codecs['replicate'].multiple}, crop {cw}x{ch} (pad {-ch % codecs['replicate'].multiple} rows, {-cw % codecs['replicate'].multiple} cols), band {args.band} px, {len(files)} images")
    scores = {m: ([], []) for m in PAD_MODES}
    for f in files:
        img = read_image(f)
        h, w = min(ch, img.shape[0]), min(cw, img.shape[1])
        img = np.ascontiguousarray(img[:h, :w])
        band = np.zeros((h, w), bool)
        band[-args.band :, :] = True
        band[:, -args.band :] = True
        for m, c in codecs.items():
            rec = np.asarray(c.decompress(c.compress(img)))
            scores[m][0].append(psnr_masked(img, rec, band))
            scores[m][1].append(psnr_masked(img, rec, ~band))
    print(f"{'padding':<10} {'border PSNR':>12} {'interior PSNR':>14} {'border - interior':>18}")
    for m, (b, i) in scores.items():
        print(f"{m:<10} {np.mean(b):12.2f} {np.mean(i):14.2f} {np.mean(b) - np.mean(i):18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
