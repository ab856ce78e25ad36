"""A multi-scale PatchGAN discriminator trained from scratch, with the hinge loss.

Used by the small recipe's adversarial phase (docs/training.md; not in the papers, whose stage
II-2 uses frozen DINOv2 features, unavailable offline). Each scale is a pix2pix-style
PatchGAN (4x4 convs, stride 2, LeakyReLU 0.2, spectral norm instead of normalisation layers)
that scores overlapping patches; scale k sees the image average-pooled k times by 2
(pix2pixHD). Inputs are images in [-1, 1].
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """conv4 s2 -> conv4 s2 -> conv4 s2 -> conv4 s1 -> conv4 s1 to one logit per patch
    (receptive field 70 px at the first three layers' strides, as pix2pix's 70x70 PatchGAN)."""

    def __init__(self, in_channels: int = 3, width: int = 32, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = []
        c_in, c = in_channels, width
        for i in range(layers):
            mods += [spectral_norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in, c = c, min(c * 2, width * 8)
        mods += [spectral_norm(nn.Conv2d(c_in, c, 4, stride=1, padding=1)), nn.LeakyReLU(0.2)]
        mods += [spectral_norm(nn.Conv2d(c, 1, 4, stride=1, padding=1))]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """``scales`` PatchGANs on the image at 1, 1/2, 1/4, ... resolution; returns their logit maps."""

    def __init__(self, scales: int = 3, width: int = 32, layers: int = 3, in_channels: int = 3):
        super().__init__()
        self.heads = nn.ModuleList(PatchDiscriminator(in_channels, width, layers) for _ in range(scales))
        self.min_side = 3 * 2**layers  # a head's smallest input: its last two convs need 3x3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        need = self.min_side * 2 ** (len(self.heads) - 1)
        if min(x.shape[-2:]) < need:
            raise ValueError(f"the {len(self.heads)}-scale discriminator needs crops of at least {need} px; got {tuple(x.shape[-2:])} (lower adversarial.scales)")
        out = []
        for i, head in enumerate(self.heads):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(head(x))
        return out


def hinge_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, averaged over scales: relu(1 - D(x)) + relu(1 + D(x̂))."""
    return sum(F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean() for r, f in zip(real, fake)) / len(real)


def hinge_g_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss, averaged over scales: -D(x̂)."""
    return sum(-f.float().mean() for f in fake) / len(fake)


# ------------------------------------------------------------------ saving and loading
def save_discriminator(path: str | Path, disc: MultiScaleDiscriminator) -> None:
    """Write the discriminator's weights (float32) with its shape settings, so a later run can
    continue the adversarial phase with it (``adversarial.init_from``) instead of a new one."""
    from safetensors.torch import save_file

    head = disc.heads[0].net
    width = head[0].parametrizations.weight.original.shape[0]
    layers = (len(head) - 3) // 2
    meta = {"format": "cod-discriminator", "scales": str(len(disc.heads)), "width": str(width), "layers": str(layers)}
    save_file({k: v.detach().float().cpu().contiguous() for k, v in disc.state_dict().items()}, str(path), metadata=meta)


def load_discriminator(disc: MultiScaleDiscriminator, path: str | Path) -> None:
    """Load weights written by :func:`save_discriminator` into ``disc`` (same scales, width and
    layers); a clear error when the file is absent or was made for another shape."""
    from safetensors import safe_open

    from cod.errors import CodError

    if not Path(path).is_file():
        raise CodError(f"adversarial.init_from: no such file {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "cod-discriminator":
            raise CodError(f"adversarial.init_from: {path} is not a discriminator written by cod train")
        state = {k: f.get_tensor(k) for k in f.keys()}
    own = disc.state_dict()
    if set(state) != set(own) or any(own[k].shape != v.shape for k, v in state.items()):
        raise CodError(f"adversarial.init_from: {path} holds a discriminator with scales={meta.get('scales')} width={meta.get('width')} layers={meta.get('layers')}; this run's differs")
    disc.load_state_dict(state)
