"""Tiled against whole decoding (issue 16): PSNR and a picture of a crop across a tile seam.

    python benchmarks/seams.py IMAGE [--size 1920x1080] [--model codlite-small-0.0312] [-o seams.png]

The image (resized to --size) is compressed once; the file is decoded whole and again with an
activation budget small enough that the condition decoder works in several blended tiles.
Prints the tile plan and the PSNR of the tiled decode against the whole one (full image and
the strips around each seam), and writes a picture: for a 256-pixel crop centred on the first
vertical seam, the whole decode, the tiled decode and their difference x8 (mid-grey = none).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cod  # noqa: E402
from cod.cliargs import parse_size, run_script  # noqa: E402
from cod.errors import CodError  # noqa: E402
from cod.eval.metrics import psnr  # noqa: E402


def main() -> int:
    from PIL import Image

    from cod.image_io import read_image
    from cod.lite_pipeline import condition_bytes_per_index, condition_plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--model", default="codlite-small-0.0312")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--tiles", type=int, default=4, help="about this many condition tiles along the width")
    ap.add_argument("-o", "--output", default="seams.png")
    args = ap.parse_args()
    h, w = parse_size(args.size)
    img = np.asarray(Image.fromarray(read_image(args.image)).resize((w, h), Image.Resampling.LANCZOS))
    codec = cod.load(args.model, precision=args.precision)
    data = codec.compress(img)
    whole = np.asarray(codec.decompress(data))
    _, _, _, grid = codec.parse(data)
    # a budget whose tiles cover about 1/tiles of the grid's width, whole height
    codec.memory_budget = int(condition_bytes_per_index(codec.engine) * grid[0] * grid[1] / args.tiles) + 1
    plan = condition_plan(codec.engine, grid, codec.ds, codec.multiple, codec.model.attention_window, codec.memory_budget)
    if not plan.tiled:
        raise CodError(f"a budget for {args.tiles} tiles did not split the {grid[0]}x{grid[1]} index grid (tiles stay aligned to attention windows): use a larger image or more --tiles")
    tiled = np.asarray(codec.decompress(data))
    unit = codec.multiple
    print(f"{args.model} ({codec.plan.describe()}), {w}x{h}, index grid {grid[0]}x{grid[1]}")
    print(f"tiles (units of {unit} px): rows {plan.rows}, cols {plan.cols}")
    print(f"PSNR tiled vs whole: {psnr(tiled, whole):.2f} dB; max |diff| {int(np.abs(tiled.astype(int) - whole.astype(int)).max())}")
    seams = sorted({c0 * unit for c0, _ in plan.cols[1:]} | {c1 * unit for _, c1 in plan.cols[:-1]})
    for x in seams:
        if 16 <= x <= w - 16:
            print(f"  strip x={x - 16}..{x + 16}: {psnr(tiled[:, x - 16 : x + 16], whole[:, x - 16 : x + 16]):.2f} dB")
    x = seams[0] if seams else w // 2
    y0, x0 = max(0, h // 2 - 128), min(max(0, x - 128), w - 256)
    a, b = whole[y0 : y0 + 256, x0 : x0 + 256], tiled[y0 : y0 + 256, x0 : x0 + 256]
    diff = np.clip(128 + 8 * (b.astype(int) - a.astype(int)), 0, 255).astype(np.uint8)
    gap = np.full((256, 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([a, gap, b, gap, diff], axis=1)).save(args.output)
    print(f"wrote {args.output}: whole | tiled | difference x8, a 256-px crop at x={x0}..{x0 + 256} (a seam at x={x})")
    return 0


if __name__ == "__main__":
    run_script(main)
