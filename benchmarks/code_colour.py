"""What limits a model's colour: how much of each block's mean colour its code carries.

    python benchmarks/code_colour.py codlite-small-0.0312 runs/x/model.safetensors [--limit 24]

For every index position (a ds x ds block of a Kodak-512 crop) this takes the block's mean
CIELAB colour in the original and in the decode. "explained by code" is the fraction of the
variance of L*, a*, b* over all blocks that the code alone accounts for (1 - within-code
variance / total variance): what a decoder that sees only this block's code could know. The
decoded block means are then regressed on the original ones: a slope below 1 with a high
correlation is a decoder shrinking colour towards the mean, as the best guess from too little
information does (slope ~ the explained fraction). Kodak is evaluation data only.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from skimage.color import rgb2lab

import cod
from cod.eval.bench import load_images
from cod.eval.speed import cpu_model


def block_means(arr: np.ndarray, side: int) -> np.ndarray:
    h, w = arr.shape[:2]
    lab = rgb2lab(arr)[: h - h % side, : w - w % side]
    return lab.reshape(h // side, side, w // side, side, 3).mean((1, 3)).reshape(-1, 3)


def measure(model: str, images) -> list[dict]:
    codec = cod.load(weights=model) if model.endswith(".safetensors") else cod.load(model)
    ids, orig, dec = [], [], []
    for _name, a in images:
        data = codec.compress(a)
        idx, height, width, (h, w) = codec.parse(data)
        side = codec.ds  # pixels per index along a side
        # blocks wholly inside the image (the padded edge's indices, if any, are left out)
        ids.append(np.asarray(idx).reshape(h, w)[: height // side, : width // side].ravel())
        orig.append(block_means(a, side))
        dec.append(block_means(np.asarray(codec.decompress(data)), side))
    ids, orig, dec = np.concatenate(ids), np.concatenate(orig), np.concatenate(dec)
    counts = np.bincount(ids)
    rows = []
    for c, channel in enumerate(("L*", "a*", "b*")):
        v, d = orig[:, c], dec[:, c]
        within = ((v - (np.bincount(ids, v, counts.size) / np.maximum(counts, 1))[ids]) ** 2).mean()
        rows.append({"model": model, "channel": channel, "blocks": int(ids.size), "codes_used": int((counts > 0).sum()),
                     "explained": float(1 - within / v.var()), "corr": float(np.corrcoef(v, d)[0, 1]),
                     "slope": float(np.polyfit(v, d, 1)[0]), "bias": float((d - v).mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="zoo names or .safetensors files")
    ap.add_argument("--kodak", default=os.environ.get("KODAK", "../shared/data/kodak"))
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    images = load_images(args.kodak, limit=args.limit, crop=512)
    print(f"# Kodak-512, {len(images)} images; CPU: {cpu_model()}, {torch.get_num_threads()} threads")
    print("| model | channel | codes used | explained by code | decoded vs original: corr | slope | bias |")
    print("|---|---|---|---|---|---|---|")
    for m in args.models:
        for r in measure(m, images):
            print(f"| {m} | {r['channel']} | {r['codes_used']} | {r['explained']:.2f} | {r['corr']:.2f} | {r['slope']:.2f} | {r['bias']:+.2f} |")


if __name__ == "__main__":
    main()
