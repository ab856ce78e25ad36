"""Copy a trained model into the package (cod/weights/NAME.safetensors), optionally in fp16.

    python tools/ship_weights.py runs/codlite-small-0.0312/model.safetensors --name codlite-small-0.0312 --dtype float16 --check IMAGE

The config travels inside the file (cod.checkpoint). ``--check IMAGE`` round-trips the image
through the original and the shipped weights and prints how far the decodes differ, so the
precision decision (docs/models.md) rests on a measurement. ``--pinned DIR`` remakes the pinned
sample the default-model test decodes (DIR/sample.NAME.cod and .png, compressed from
DIR/sample.png with the shipped weights on the faithful fp32 path); with ``--retire-as LABEL`` a
pinned file of a different model tag is first kept as DIR/retired.NAME-LABEL.cod, and the line
for cod.zoo.RETIRED_MODELS is printed (its text names the commit that still holds the weights).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cod import bitstream
from cod.checkpoint import read_weights, save_weights
from cod.families import WEIGHTS_DIR, load
from cod.image_io import read_image, write_image


def remake_pinned(weights: Path, name: str, folder: Path, retire_as: str | None) -> None:
    """Write folder/sample.NAME.cod and .png from folder/sample.png (fp32 path), keeping an old file of another tag if asked."""
    codec = load(weights=weights, precision="fp32")
    data = codec.compress(read_image(folder / "sample.png"))
    new = bitstream.read_cod(data).header
    cod_path, png_path = folder / f"sample.{name}.cod", folder / f"sample.{name}.png"
    if cod_path.exists():
        old = bitstream.read_cod(cod_path.read_bytes()).header
        if old.model_tag != new.model_tag:
            if retire_as is None:
                raise SystemExit(f"error: {cod_path} was written by another model (tag {old.model_tag:#06x}); pass --retire-as LABEL to keep it as a retired-model file")
            kept = folder / f"retired.{name}-{retire_as}.cod"
            if kept.exists():
                raise SystemExit(f"error: {kept} exists; choose another --retire-as label")
            kept.write_bytes(cod_path.read_bytes())
            print(f"kept {cod_path} as {kept}; add to cod.zoo.RETIRED_MODELS:")
            print(f'    ({old.ds}, {old.bits}, 0x{old.model_tag:04X}): "{name} {retire_as} (commit ...: `git show ...:cod/weights/{name}.safetensors > old.safetensors`)",')
    cod_path.write_bytes(data)
    write_image(png_path, np.asarray(codec.decompress(data)))
    print(f"pinned sample: {cod_path} ({len(data)} bytes, .cod v{new.version}, tag {new.model_tag:#06x}) and {png_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="a model.safetensors exported by `cod train`")
    ap.add_argument("--name", required=True, help="installed model name (file stem), e.g. codlite-small-0.0312")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--check", default=None, help="an image to round-trip with both weight copies")
    ap.add_argument("--chroma-block", type=int, default=None, help="set the config's chroma_block (cod.chroma: the block side of the colour the codec stores beside the indices; 0: none); default: as trained")
    ap.add_argument("--out", default=None, help="write here instead of cod/weights/NAME.safetensors")
    ap.add_argument("--pinned", default=None, metavar="DIR", help="remake DIR/sample.NAME.cod and .png (the default-model test's pinned sample) from DIR/sample.png")
    ap.add_argument("--retire-as", default=None, metavar="LABEL", help="with --pinned: keep a pinned file of another model as DIR/retired.NAME-LABEL.cod")
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
    if args.pinned:
        remake_pinned(out, args.name, Path(args.pinned), args.retire_as)


if __name__ == "__main__":
    main()
