"""The model card's side-by-side picture: Kodak crops coded by our model, by JPEG 2000 and by
downscaled AVIF at the same number of bytes (or fewer), next to the original.

    python tools/side_by_side.py --model codlite-small-0.0312 -o docs/images/side-by-side-0.0312.jpg
    python tools/side_by_side.py --model codlite-small-0.125 --baselines jpeg2000,avif,avif-down2 -o docs/images/side-by-side-0.125.jpg

Each image is the 512x512 centre crop that the Kodak-512 evaluation codes; the picture shows its
central ``--view`` pixels at 1:1 (no resampling, so a block grid or a colour cast shows as it
is). Baselines are searched to the highest quality whose file is not larger than ours.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import cod
from cod.eval.baselines import encode_at_bpp, get_baseline
from cod.eval.bench import center_crop
from cod.eval.metrics import delta_e, psnr
from cod.image_io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--kodak", default=os.environ.get("KODAK", "../shared/data/kodak"))
    ap.add_argument("--images", default="kodim04.png,kodim14.png,kodim23.png")
    ap.add_argument("--baselines", default="jpeg2000,avif-down2,avif-down4")
    ap.add_argument("--view", type=int, default=256, help="side of the 1:1 view cut from each 512 crop")
    ap.add_argument("-o", "--output", default="docs/images/side-by-side-0.0312.jpg")
    args = ap.parse_args()

    codec = cod.load(args.model, weights=args.weights)
    rows = []
    for name in args.images.split(","):
        img = center_crop(read_image(Path(args.kodak) / name), 512)
        h, w = img.shape[:2]
        data = codec.compress(img)
        rec = np.asarray(codec.decompress(data))
        cells = [(img, f"{name} original"), (rec, f"{codec.name}: {len(data)} B")]
        scores = [f"{name}: ours {len(data)} B {psnr(img, rec):.2f} dB dE {delta_e(img, rec):.2f}"]
        for b in args.baselines.split(","):
            enc = encode_at_bpp(get_baseline(b), img, 8 * len(data) / (h * w))
            out = get_baseline(b).decompress(enc.data)
            cells.append((out, f"{b}: {len(enc.data)} B" + ("" if enc.target_reached else " (min)")))
            scores.append(f"{b} {len(enc.data)} B {psnr(img, out):.2f} dB dE {delta_e(img, out):.2f}")
        print("; ".join(scores))
        rows.append(cells)
    v, band = args.view, 16
    sheet = Image.new("RGB", (v * len(rows[0]), (v + band) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, cells in enumerate(rows):
        for c, (arr, label) in enumerate(cells):
            y0 = (512 - v) // 2
            sheet.paste(Image.fromarray(np.ascontiguousarray(arr[y0 : y0 + v, y0 : y0 + v])), (c * v, r * (v + band) + band))
            draw.text((c * v + 3, r * (v + band) + 2), label, fill="black")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=90, subsampling=0)  # JPEG: 4:4:4, so the colours shown are the codecs' own
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
