"""Copy the training photos into a folder small enough to travel to a lent GPU machine
(the device tool sends at most 64 MiB): every image re-encoded as JPEG quality 88, 4:4:4,
sides capped at --max-side (default 768, Kodak's size; the recipe's crops are 192-256 px).

    python tools/pack_train_data.py ../shared/data/train .gpu/train     # ~20 MiB from ~112 MB
    DATA=.gpu/train bash benchmarks/train_default.sh 9                  # on the device machine
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from cod.train.data import find_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("dest")
    ap.add_argument("--quality", type=int, default=88)
    ap.add_argument("--max-side", type=int, default=768)
    args = ap.parse_args()
    src, dst = Path(args.source), Path(args.dest)
    total = 0
    files = find_images([src])
    for f in files:
        out = dst / f.relative_to(src).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
            im.save(out, quality=args.quality, subsampling=0)
        total += out.stat().st_size
    print(f"{len(files)} images -> {dst} ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
