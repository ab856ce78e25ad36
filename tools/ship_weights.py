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
import re
from pathlib import Path

import numpy as np
import torch

from cod import bitstream
from cod.checkpoint import read_weights, save_weights
from cod.families import WEIGHTS_DIR, load
from cod.image_io import atomic_output, read_image, write_image


def pinned_sample(weights: Path, name: str, folder: Path, retire_as: str | None) -> tuple[bytes, np.ndarray, Path | None]:
    """The pinned sample of ``weights`` (folder/sample.png compressed on the fp32 path, and its
    decode) and where the pinned file it replaces is to be kept (None: nothing to keep). Refuses,
    before anything is written, to replace a file of another model without ``retire_as``."""
    codec = load(weights=weights, precision="fp32")
    data = codec.compress(read_image(folder / "sample.png"))
    new_tag = bitstream.read_cod(data).header.model_tag
    cod_path, keep = folder / f"sample.{name}.cod", None
    if cod_path.exists():
        old_tag = bitstream.read_cod(cod_path.read_bytes()).header.model_tag
        if old_tag != new_tag:
            if retire_as is None:
                raise SystemExit(f"error: {cod_path} was written by another model (tag {old_tag:#06x}); pass --retire-as LABEL to keep it as a retired-model file")
            keep = folder / f"retired.{name}-{retire_as}.cod"
            if keep.exists():
                raise SystemExit(f"error: {keep} exists; choose another --retire-as label")
    return data, np.asarray(codec.decompress(data)), keep


def write_pinned(name: str, folder: Path, label: str | None, data: bytes, decoded: np.ndarray, keep: Path | None) -> None:
    cod_path, png_path = folder / f"sample.{name}.cod", folder / f"sample.{name}.png"
    if keep is not None:
        old = bitstream.read_cod(cod_path.read_bytes()).header
        with atomic_output(keep, overwrite=False) as tmp:
            tmp.write_bytes(cod_path.read_bytes())
        print(f"kept {cod_path} as {keep}; add to cod.zoo.RETIRED_MODELS (and to tests/test_default_model.py's retired files):")
        print(f'    ({old.ds}, {old.bits}, 0x{old.model_tag:04X}): "{name} {label} (commit ...: `git show ...:cod/weights/{name}.safetensors > old.safetensors`)",')
    with atomic_output(cod_path) as tmp:
        tmp.write_bytes(data)
    write_image(png_path, decoded)
    new = bitstream.read_cod(data).header
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
    if args.retire_as is not None and not args.pinned:
        ap.error("--retire-as needs --pinned")
    if args.retire_as is not None and not re.fullmatch(r"[A-Za-z0-9._]+", args.retire_as):
        ap.error(f"--retire-as {args.retire_as!r}: use letters, digits, '.' and '_' (it names a file and a string in cod/zoo.py)")
    if args.pinned and not (Path(args.pinned) / "sample.png").is_file():
        ap.error(f"--pinned {args.pinned}: no sample.png there to compress")

    config, state = read_weights(args.weights)
    config = {**config, "name": args.name}
    if args.chroma_block is not None:
        config["chroma_block"] = args.chroma_block
    out = Path(args.out) if args.out else WEIGHTS_DIR / f"{args.name}.safetensors"
    # staged under a hidden temporary name (not *.safetensors, so no loader sees it as a model)
    # and published only when every check has passed and the pinned files are written: a
    # refused or failed ship leaves the installed weights as they were
    with atomic_output(out) as staged:
        save_weights(staged, state, config, dtype=getattr(torch, args.dtype))
        if args.check:
            image = read_image(args.check)
            # the file as trained (and its index prior, if any), with the same colour side information: compare the weights alone
            ref = load(weights=args.weights, chroma=int(config.get("chroma_block", 0)))
            shipped = load(weights=staged)
            ref_file, shipped_file = ref.compress(image), shipped.compress(image)
            a = np.asarray(ref.decompress(ref_file)).astype(int)
            b = np.asarray(shipped.decompress(shipped_file)).astype(int)
            same_idx = np.mean(np.asarray(ref.parse(ref_file)[0]) == np.asarray(shipped.parse(shipped_file)[0]))
            print(f"check on {args.check}: {same_idx:.2%} of the indices identical; decoded max |diff| {np.abs(a - b).max()} levels, mean {np.abs(a - b).mean():.4f}")
        if args.pinned:
            pinned = pinned_sample(staged, args.name, Path(args.pinned), args.retire_as)
            write_pinned(args.name, Path(args.pinned), args.retire_as, *pinned)
            if args.retire_as is not None and pinned[2] is None:
                print(f"--retire-as {args.retire_as}: nothing to retire (the pinned file was written by this model, or there was none)")
    print(f"{args.weights} -> {out} ({out.stat().st_size / 1e6:.2f} MB, {args.dtype})")


if __name__ == "__main__":
    main()
