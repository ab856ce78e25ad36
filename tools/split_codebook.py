"""Grow a trained CoD-Lite model's codebook (for example 256 -> 1024 codes) by splitting every
code on the training photos, so the wider model starts where the old one stopped.

    python tools/split_codebook.py OLD.safetensors NEW.safetensors --bits 10 --data ../shared/data/train

The generalised Lloyd / LBG algorithm (Linde, Buzo & Gray 1980) started from the trained
codebook: the encoder runs on random crops of the training photos; each old code's cell (the
encoder outputs nearest to it) is split into 2**(new-old) children by k-means++ seeding inside
the cell, then ``--iters`` Lloyd iterations refine the whole new codebook on all outputs.
Children of a code that no crop uses are copies of it. The condition decoder and the rest of
the network are unchanged, so every child decodes close to its parent's picture and training
(``init_from`` NEW) teaches the decoder what the children tell apart. Why: the indices are
entropy-coded, so a larger codebook costs fewer bits than its width (docs/models.md, "what
limits colour"). The index prior of OLD belongs to the old codebook and is dropped: refit it
with ``cod fit-prior`` after training.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from cod.checkpoint import read_weights, save_weights
from cod.entropy import split_prior
from cod.errors import CodError
from cod.families import build_network
from cod.image_io import read_image
from cod.models.condition import nearest_codes
from cod.priors import training_images

def encoder_outputs(net, files: list[Path], crop: int, per_image: int, seed: int) -> torch.Tensor:
    """Encoder outputs (N, C) on ``per_image`` random crops of each photo (smaller photos whole)."""
    rng = np.random.default_rng(seed)
    stride = net.condition.index_stride
    out = []
    with torch.no_grad():
        for f in files:
            a = read_image(f)
            h, w = a.shape[:2]
            c = min(crop, h - h % stride, w - w % stride)
            for _ in range(per_image):
                y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
                t = torch.from_numpy(np.ascontiguousarray(a[y : y + c, x : x + c])).permute(2, 0, 1)[None].float() / 255
                z = net.condition.encoder(t)
                out.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return torch.cat(out)


def split_codebook(z: torch.Tensor, old: torch.Tensor, factor: int, iters: int, seed: int) -> torch.Tensor:
    """(K*factor, C) codebook: children k*factor + j of old code k, k-means++ seeded in its cell,
    then Lloyd iterations on all of ``z``; children of unused codes (and empty cells) copy it."""
    g = torch.Generator().manual_seed(seed)
    assign, _ = nearest_codes(z, old)
    new = old.repeat_interleave(factor, 0).clone()
    for k in range(old.shape[0]):
        cell = z[assign == k]
        if cell.shape[0] < factor:
            continue
        d = (cell - old[k]).pow(2).sum(1)  # the parent is child 0; seed the rest by D^2 sampling
        for j in range(1, factor):
            pick = torch.multinomial(d + 1e-12, 1, generator=g).item()
            new[k * factor + j] = cell[pick]
            d = torch.minimum(d, (cell - cell[pick]).pow(2).sum(1))
    for _ in range(iters):
        assign, _ = nearest_codes(z, new)
        sums = torch.zeros_like(new).index_add_(0, assign, z)
        counts = torch.bincount(assign, minlength=new.shape[0])
        used = counts > 0
        new[used] = sums[used] / counts[used, None]
    return new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("output")
    ap.add_argument("--bits", type=int, required=True, help="codebook bits of the new model (more than the old one's)")
    ap.add_argument("--data", required=True, help="folder of training photos (searched recursively)")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--per-image", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10, help="Lloyd iterations on the whole new codebook")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    config, state = read_weights(args.weights)
    split_prior(state)
    old_bits = int(config["codebook_bits"])
    if not old_bits < args.bits <= 16:
        raise SystemExit(f"error: --bits must be above the model's {old_bits} and at most 16")
    try:
        files = training_images([args.data])  # as `cod fit-prior`: evaluation sets are refused
    except CodError as e:
        raise SystemExit(f"error: {e}") from None
    torch.manual_seed(args.seed)
    net = build_network(config)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    net.eval()
    key = "condition.quantizer.codebook.weight"
    old = state[key].float()
    z = encoder_outputs(net, files, args.crop, args.per_image, args.seed)
    _, d_old = nearest_codes(z, old)
    new = split_codebook(z, old, 2 ** (args.bits - old_bits), args.iters, args.seed)
    assign, d_new = nearest_codes(z, new)
    state[key] = new
    save_weights(args.output, state, {**config, "codebook_bits": args.bits})
    var = (z - z.mean(0)).pow(2).sum(1).mean()
    print(f"{args.weights} -> {args.output}: {old.shape[0]} -> {new.shape[0]} codes on {z.shape[0]} encoder outputs "
          f"({len(files)} photos); quantisation error {d_old.mean() / var:.3f} -> {d_new.mean() / var:.3f} of the latent variance; "
          f"{int((torch.bincount(assign, minlength=new.shape[0]) > 0).sum())} codes used, "
          f"{-sum(p * math.log2(p) for p in (torch.bincount(assign).float() / assign.numel()).tolist() if p > 0):.2f} bits/index entropy")


if __name__ == "__main__":
    main()
