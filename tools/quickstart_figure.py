"""The README's before/after picture: the sample photo next to its decodes by the installed
models, each labelled with its file size and bpp (docs/images/quickstart.png).

    python tools/quickstart_figure.py [--image cod/samples/parrots.png] [-o docs/images/quickstart.jpg]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import cod
from cod.eval.metrics import ms_ssim, psnr
from cod.image_io import read_image
from cod.zoo import SMALL_RATES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(Path(cod.__file__).parent / "samples" / "parrots.png"))
    ap.add_argument("-o", "--output", default="docs/images/quickstart.jpg")
    ap.add_argument("--width", type=int, default=384, help="width of each panel")
    args = ap.parse_args()

    img = read_image(args.image)
    h, w = img.shape[:2]
    panels = [(Image.fromarray(img), f"original ({Path(args.image).stat().st_size // 1024} KB PNG)")]
    for rate in SMALL_RATES:
        codec = cod.load(f"codlite-small-{rate}")
        data = codec.compress(img)
        rec = np.asarray(codec.decompress(data))
        label = f"{codec.name}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp, {psnr(img, rec):.2f} dB, MS-SSIM {ms_ssim(img, rec):.3f}"
        panels.append((Image.fromarray(rec), label))
        print(label)
    pw, ph = args.width, round(args.width * h / w)
    band = 18
    sheet = Image.new("RGB", (pw * len(panels), ph + band), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, label) in enumerate(panels):
        sheet.paste(im.resize((pw, ph), Image.Resampling.LANCZOS), (i * pw, band))
        draw.text((i * pw + 4, 3), ", ".join(label.split(", ")[:2]), fill="black")  # name, size/bpp
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=92)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
