"""Widen a CoD-Lite model's condition encoder and latent by 2x, preserving its function.

    python tools/widen_codec.py OLD.safetensors NEW.safetensors [--noise 0.01]

Net2WiderNet (Chen et al., "Net2Net", ICLR 2016) for this encoder: every widened channel k
becomes the pair (2k, 2k+1), so GroupNorm(32)'s contiguous groups hold the same channels as
before and see the same statistics; a layer's output channels are duplicated, its input
channels duplicated and halved (the sum is unchanged); the attention queries are scaled by
1/sqrt(2) (their dot products count every channel twice while the softmax scale only drops by
sqrt(2)); codebook rows are duplicated (nearest neighbours unchanged) and the condition
decoder's first conv halves its duplicated inputs. Without noise the wide model encodes to the
same indices and decodes to the same image (checked on a test image); ``--noise`` then adds
N(0, (noise * std)^2) to the widened tensors so the twins can learn apart. This lets the small
recipe grow the encoder (encoder_channels, latent_channels 32 -> 64) without retraining it from
scratch (docs/models.md, the ablation).
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from cod.checkpoint import read_weights, save_weights
from cod.entropy import split_prior

WIDENED = ("encoder_channels", "latent_channels")


def widen_state(state: dict[str, torch.Tensor], wide_shapes: dict[str, torch.Size]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The wide state dict (no noise) and the names of the tensors that changed shape."""
    out, changed = {}, []
    for name, shape in wide_shapes.items():
        a = state[name].float()
        if tuple(a.shape) == tuple(shape):
            out[name] = a.clone()
            continue
        if a.ndim != len(shape):
            raise ValueError(f"{name}: {tuple(a.shape)} -> {tuple(shape)} is not a widening")
        b = a
        for d, (n_old, n_new) in enumerate(zip(a.shape, shape)):
            if n_new == n_old:
                continue
            if n_new != 2 * n_old:
                raise ValueError(f"{name}: dimension {d} goes {n_old} -> {n_new}, not 2x")
            b = b.repeat_interleave(2, dim=d)
            is_input_dim = d == 1 and a.ndim >= 2 and not name.endswith("codebook.weight")
            if is_input_dim:
                b = b / 2
        out[name] = b
        changed.append(name)
    for name in changed:  # queries of widened attention blocks
        if name.endswith((".q.weight", ".q.bias")):
            out[name] = out[name] / math.sqrt(2)
    return out, changed


def main() -> None:
    from cod.families import build_network
    from cod.models.lite import CoDLite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("output")
    ap.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise, relative to each tensor's std")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", default="cod/samples/parrots.png")
    args = ap.parse_args()
    config, state = read_weights(args.weights)
    split_prior(state)  # a prior belongs to the old codebook; refit it after training
    wide_cfg = {**config, **{k: 2 * int(config[k]) for k in WIDENED}}
    wide = build_network(wide_cfg)
    assert isinstance(wide, CoDLite)
    new, changed = widen_state(state, {k: v.shape for k, v in wide.state_dict().items()})
    wide.load_state_dict(new)
    old = build_network(config)
    old.load_state_dict({k: v.float() for k, v in state.items()})
    # check: same indices, same decode
    from PIL import Image

    img = torch.from_numpy(np.array(Image.open(args.check).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    img = img[..., : img.shape[-2] // 16 * 16, : img.shape[-1] // 16 * 16]
    with torch.no_grad():
        for m in (old, wide):
            m.eval().set_attention(windowed=True)
        i_old, i_new = old.condition.encode(img), wide.condition.encode(img)
        same = (i_old == i_new).float().mean().item()
        h, w = img.shape[-2] // old.condition.index_stride, img.shape[-1] // old.condition.index_stride
        c_old, c_new = old.condition.decode(i_old, h, w), wide.condition.decode(i_old, h, w)
        cond_err = (c_old - c_new).abs().max().item()
    print(f"{len(changed)} tensors widened; indices identical at {100 * same:.2f}% of positions; condition map max |diff| {cond_err:.2e}")
    g = torch.Generator().manual_seed(args.seed)
    for name in changed:
        t = new[name]
        if t.ndim >= 2 or name.endswith("codebook.weight"):
            t.add_(torch.randn(t.shape, generator=g) * args.noise * t.std())
    save_weights(args.output, new, wide_cfg)
    print(f"{args.weights} -> {args.output} ({', '.join(f'{k} {config[k]} -> {wide_cfg[k]}' for k in WIDENED)}, noise {args.noise})")


if __name__ == "__main__":
    main()
