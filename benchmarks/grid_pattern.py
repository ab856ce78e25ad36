"""How visible a decoder's token grid is: statistics of the decodes per position in the patch.

    python benchmarks/grid_pattern.py codlite-small-0.0312 runs/x/model.safetensors [--limit 24]

A one-step decoder paints each token's patch (16 px), and what it paints the same way in every
patch shows as a grid. Over the Kodak-512 crops (evaluation data only) this measures, per
position (row mod P, column mod P):
  * "border step x, y": the mean absolute horizontal (vertical) difference across the patch
    border, relative to the mean over all positions (photos: ~1.0; a drawn grid: > 1);
  * "2-D spread": the standard deviation over the P x P positions of the mean |Laplacian|,
    relative to its mean (the dotted pattern);
  * "fixed error": the standard deviation over positions of the mean error decode - original
    (0..255 levels): a pattern added to every patch.
The first row is the originals themselves (the floor these statistics have on photos).
Decodes are the network's own (no chroma side information).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

import cod
from cod.eval.bench import load_images
from cod.eval.speed import cpu_model


def phase_stats(image: np.ndarray, period: int) -> tuple[float, float, np.ndarray]:
    """(border |dx| ratio, border |dy| ratio, per-position |Laplacian| means)."""
    a = image.astype(np.float64) / 255
    p = period
    gx = np.abs(np.diff(a, axis=1)).mean(-1)  # column j: between j and j + 1
    gy = np.abs(np.diff(a, axis=0)).mean(-1)
    col = np.arange(gx.shape[1]) % p
    row = np.arange(gy.shape[0]) % p
    bx = gx[:, col == p - 1].mean() / gx.mean()
    by = gy[row == p - 1, :].mean() / gy.mean()
    lap = np.abs(4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]).mean(-1)
    per = np.array([[lap[(i - 1) % p :: p, (j - 1) % p :: p].mean() for j in range(p)] for i in range(p)])
    return bx, by, per


def measure(images, decode, period: int) -> dict[str, float]:
    bx, by, per, err = [], [], [], np.zeros((period, period, 3))
    for _name, a in images:
        d = decode(a)
        x, y, lap = phase_stats(d, period)
        bx.append(x), by.append(y), per.append(lap)
        h, w = (s // period * period for s in a.shape[:2])
        e = d[:h, :w].astype(np.float64) - a[:h, :w]
        err += e.reshape(h // period, period, w // period, period, 3).mean((0, 2))
    lap = np.mean(per, 0)
    return {"border_dx": float(np.mean(bx)), "border_dy": float(np.mean(by)), "spread": float(lap.std() / lap.mean()), "fixed_error": float((err / len(images)).std())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="zoo names or .safetensors files")
    ap.add_argument("--kodak", default=os.environ.get("KODAK", "../shared/data/kodak"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--period", type=int, default=16, help="the decoder's patch side in pixels (16 for every CoD-Lite)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images = load_images(args.kodak, limit=args.limit, crop=512)
    print(f"# Kodak-512 ({len(images)} images), period {args.period} px; CPU: {cpu_model()}")
    print("| decodes of | border step x | border step y | 2-D spread | fixed error (levels) |")
    print("|---|---|---|---|---|")
    rows = [("originals", lambda a: a)]
    for m in args.models:
        # the network's own decode: without the chroma side information (a smooth correction)
        codec = cod.load(weights=m, chroma=False) if m.endswith(".safetensors") else cod.load(m, chroma=False)
        rows.append((m, lambda a, c=codec: np.asarray(c.decompress(c.compress(a)))))
    for name, decode in rows:
        r = measure(images, decode, args.period)
        print(f"| {name} | {r['border_dx']:.2f} | {r['border_dy']:.2f} | {r['spread']:.3f} | {r['fixed_error']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
