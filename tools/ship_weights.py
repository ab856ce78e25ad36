"""Copy a trained model into the package (cod/weights/NAME.safetensors), optionally in fp16.

    python tools/ship_weights.py runs/codlite-small-0.0312/model.safetensors --name codlite-small-0.0312 --dtype float16 --check IMAGE

The config travels inside the file (cod.checkpoint). ``--check IMAGE`` round-trips the image
through the original and the shipped weights and prints how far the decodes differ, so the
precision decision (docs/models.md) rests on a measurement.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cod.checkpoint import read_weights, save_weights
from cod.families import WEIGHTS_DIR, load
from cod.image_io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="a model.safetensors exported by `cod train`")
    ap.add_argument("--name", required=True, help="installed model name (file stem), e.g. codlite-small-0.0312")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--check", default=None, help="an image to round-trip with both weight copies")
    ap.add_argument("--chroma-block", type=int, default=None, help="set the config's chroma_block (cod.chroma: the block side of the colour the codec stores beside the indices; 0: none); default: as trained")
    ap.add_argument("--out", default=None, help="write here instead of cod/weights/NAME.safetensors")
    args = ap.parse_args()

    config, state = read_weights(args.weights)
    config = {**config, "name": args.name}
    if args.chroma_block is not None:
        config["chroma_block"] = args.chroma_block
    out = Path(args.out) if args.out else WEIGHTS_DIR / f"{args.name}.safetensors"
    save_weights(out, state, config, dtype=getattr(torch, args.dtype))
    print(f"{args.weights} -> {out} ({out.stat().st_size / 1e6:.2f} MB, {args.dtype})")
    if args.check:
        image = read_image(args.check)
        # the file as trained (and its index prior, if any), with the same colour side information: compare the weights alone
        ref = load(weights=args.weights, chroma=int(config.get("chroma_block", 0)))
        shipped = load(weights=out)
        a = np.asarray(ref.decompress(ref.compress(image))).astype(int)
        b = np.asarray(shipped.decompress(shipped.compress(image))).astype(int)
        same_idx = np.mean(np.asarray(ref.parse(ref.compress(image))[0]) == np.asarray(shipped.parse(shipped.compress(image))[0]))
        print(f"check on {args.check}: {same_idx:.2%} of the indices identical; decoded max |diff| {np.abs(a - b).max()} levels, mean {np.abs(a - b).mean():.4f}")


if __name__ == "__main__":
    main()
