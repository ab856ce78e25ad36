"""Condition codec: ConditionEncoder -> VectorQuantizer -> ConditionDecoder.

One implementation for CoD and CoD-Lite (CoD spec §4, CoD-Lite spec §2.2-2.5). The
differences between the two official copies are constructor options: decoder width
(``out_channels``), ``light`` (5 instead of 7 decoder blocks), ``ds`` (4...32, 128) and
``up2x`` (stride-2 stem; index grid H/ds instead of H/(ds/2)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cod.nn.conv_blocks import AttnBlock, Downsample, Normalize, ResnetBlock, UpSample
from cod.zoo import index_stride

SUPPORTED_DS = (4, 8, 16, 32, 128)


def _check_ds(ds: int, up2x: bool) -> None:
    if ds not in SUPPORTED_DS:
        raise ValueError(f"ds must be one of {SUPPORTED_DS}, got {ds}")
    if ds < 32 and not up2x:
        raise ValueError(f"ds={ds} requires up2x=True")


class ConditionEncoder(nn.Module):
    """VQGAN-style encoder, [0,1] RGB -> (B, latent_channels, H/ds, W/ds) (spec §2.3)."""

    def __init__(self, ds: int, up2x: bool = True, channels: int = 128, latent_channels: int = 128, in_channels: int = 3):
        super().__init__()
        _check_ds(ds, up2x)
        c = channels
        self.conv_in = nn.Conv2d(in_channels, c, 3, stride=2 if up2x else 1, padding=1)

        def maybe_down(ch: int, needed_ds: int) -> nn.Module:
            return Downsample(ch) if ds >= needed_ds else nn.Identity()

        self.down_block_0 = nn.Sequential(ResnetBlock(c), ResnetBlock(c), Downsample(c))
        self.down_block_1 = nn.Sequential(ResnetBlock(c), ResnetBlock(c), maybe_down(c, 8))
        self.down_block_2 = nn.Sequential(ResnetBlock(c, 2 * c), ResnetBlock(2 * c), maybe_down(2 * c, 16))
        self.down_block_3 = nn.Sequential(ResnetBlock(2 * c), ResnetBlock(2 * c), maybe_down(2 * c, 32))
        top = 4 * c
        db4: list[nn.Module] = [ResnetBlock(2 * c, top), AttnBlock(top), ResnetBlock(top), AttnBlock(top)]
        if ds == 128:
            top = 8 * c
            db4 += [Downsample(4 * c), ResnetBlock(4 * c, top), AttnBlock(top), ResnetBlock(top), AttnBlock(top), Downsample(top)]
        self.down_block_4 = nn.Sequential(*db4)
        self.mid_block = nn.Sequential(ResnetBlock(top), AttnBlock(top), ResnetBlock(top))
        self.norm_out = Normalize(top)
        self.conv_out = nn.Conv2d(top, latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in (self.down_block_0, self.down_block_1, self.down_block_2, self.down_block_3, self.down_block_4, self.mid_block):
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, C) vectors and a (K, C) codebook: the index of the nearest code, argmin_k |z|^2 +
    |e_k|^2 - 2 z.e_k in float32 (first minimum; spec §2.4), and that squared distance
    (clamped at 0), in row chunks: the distance matrix of an 8K image at ds 4 would be 2 GB.
    The one nearest-neighbour rule of the package (the quantizer, the fast encoder, tools)."""
    flat, e = flat.float(), codebook.float()
    e2 = e.pow(2).sum(1)[None]
    idx = torch.empty(flat.shape[0], dtype=torch.int64, device=flat.device)
    dist = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    for lo in range(0, flat.shape[0], chunk):
        f = flat[lo : lo + chunk]
        m = (f.pow(2).sum(1, keepdim=True) + e2 - 2 * f @ e.t()).min(1)
        idx[lo : lo + chunk], dist[lo : lo + chunk] = m.indices, m.values.clamp_min(0)
    return idx, dist


@dataclass
class Quantized:
    """Output of VectorQuantizer.forward."""

    value: torch.Tensor  # straight-through z + sg(e - z), (B, C, h, w)
    indices: torch.Tensor  # (B, h*w) int64, row-major
    loss: torch.Tensor  # VQ loss (spec §2.4)


class VectorQuantizer(nn.Module):
    """Learned codebook of 2**bits rows, nearest neighbour in L2 (spec §2.4)."""

    def __init__(self, bits: int, dim: int = 128):
        super().__init__()
        self.bits = bits
        self.codebook = nn.Embedding(2**bits, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / 2**bits, 1.0 / 2**bits)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code of each position (:func:`nearest_codes`), (B, h*w) in row-major order."""
        b, c, h, w = z.shape
        return nearest_codes(z.permute(0, 2, 3, 1).reshape(-1, c), self.codebook.weight)[0].reshape(b, h * w)

    def lookup(self, indices: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Codebook rows for (B, h*w) indices as a (B, C, h, w) map."""
        return self.codebook(indices).reshape(indices.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> Quantized:
        b, c, h, w = z.shape
        idx = self.indices(z)
        e = self.lookup(idx, h, w).to(z.dtype)
        # commitment term weight 1, codebook term 0.25 (the official "legacy" order, spec §9.10)
        loss = F.mse_loss(e.detach(), z) + 0.25 * F.mse_loss(e, z.detach())
        return Quantized(value=z + (e - z).detach(), indices=idx, loss=loss)


class ConditionDecoder(nn.Module):
    """Codebook rows (B, 128, H/ds, W/ds) -> condition map (B, out_channels, H/16, W/16) (spec §2.5)."""

    def __init__(self, ds: int, out_channels: int, up2x: bool = True, light: bool = True, latent_channels: int = 128):
        super().__init__()
        _check_ds(ds, up2x)
        c = out_channels
        self.conv_in = nn.Conv2d(latent_channels, c, 3, padding=1)
        if ds == 128:
            blocks = [ResnetBlock(c), AttnBlock(c), UpSample(c), ResnetBlock(c), AttnBlock(c), UpSample(c), ResnetBlock(c), AttnBlock(c), ResnetBlock(c)]
        elif light:
            blocks = [ResnetBlock(c), AttnBlock(c), ResnetBlock(c), AttnBlock(c), ResnetBlock(c)]
        else:
            blocks = [ResnetBlock(c), AttnBlock(c), ResnetBlock(c), AttnBlock(c), ResnetBlock(c), AttnBlock(c), ResnetBlock(c)]
        self.block = nn.Sequential(*blocks)
        self.norm_out = Normalize(c)
        if ds == 4:
            self.conv_out: nn.Module = nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1), ResnetBlock(c), nn.Conv2d(c, c, 3, stride=2, padding=1))
        elif ds == 8:
            self.conv_out = nn.Conv2d(c, c, 3, stride=2, padding=1)
        else:
            self.conv_out = nn.Conv2d(c, c, 3, padding=1)
        if up2x:
            self.ada: nn.Module = UpSample(c) if ds >= 32 else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.block(self.conv_in(z))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return self.ada(h) if hasattr(self, "ada") else h


class ConditionCodec(nn.Module):
    """Encoder + VQ + decoder; ``forward`` for training, ``encode``/``decode`` for the bitstream."""

    def __init__(
        self,
        ds: int,
        codebook_bits: int,
        out_channels: int,
        up2x: bool = True,
        light: bool = True,
        encoder_channels: int = 128,
        latent_channels: int = 128,
    ):
        super().__init__()
        self.ds = ds
        self.codebook_bits = codebook_bits
        self.up2x = up2x
        self.encoder = ConditionEncoder(ds, up2x, encoder_channels, latent_channels)
        self.quantizer = VectorQuantizer(codebook_bits, latent_channels)
        self.decoder = ConditionDecoder(ds, out_channels, up2x, light, latent_channels)

    @property
    def index_stride(self) -> int:
        """Pixels per index along each side (ds with up2x, ds/2 without)."""
        return index_stride(self.ds, self.up2x)

    def forward(self, image01: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Image in [0,1] -> (condition map, quantizer output with straight-through value)."""
        q = self.quantizer(self.encoder(image01))
        return self.decoder(q.value), q

    def encode(self, image01: torch.Tensor) -> torch.Tensor:
        """Image in [0,1] (B,3,H,W) -> indices (B, h*w), h = H/index_stride."""
        return self.quantizer.indices(self.encoder(image01))

    def decode(self, indices: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Indices (B, h*w) -> condition map, using the exact codebook rows."""
        return self.decoder(self.quantizer.lookup(indices, h, w))
