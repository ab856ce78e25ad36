"""VQGAN-style CNN blocks of the condition codec (CoD spec §4.1, CoD-Lite spec §2.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def Normalize(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, eps 1e-6, affine (the codec's only normalisation)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GN-SiLU-conv3x3-GN-SiLU-conv3x3 with a 1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a stride-2 3x3 conv: output floor(n/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class UpSample(nn.Module):
    """Nearest-neighbour x2 followed by a ResnetBlock (the decoder's ``ada`` stage)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttnBlock(nn.Module):
    """Single-head self-attention over a feature map, scale C^-1/2, residual.

    ``window`` selects the attention extent (CoD-Lite spec §2.7): ``None`` attends over the
    whole map (training form, and CoD); an integer ``w`` attends inside non-overlapping
    w x w windows once a side exceeds ``w``, with q, k, v replicate-padded at the
    bottom/right and the padded keys taking part in the softmax (the official
    eval-time behaviour, linear in image size).
    """

    def __init__(self, channels: int, window: int | None = None):
        super().__init__()
        self.window = window
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q, k, v: (N, L, C); one head.
        return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        win = self.window
        if win is None or (h <= win and w <= win):
            out = self._attend(*(t.flatten(2).transpose(1, 2) for t in (q, k, v)))
            out = out.transpose(1, 2).reshape(b, c, h, w)
        else:
            ph, pw = -h % win, -w % win
            hp, wp = h + ph, w + pw
            nh, nw = hp // win, wp // win

            def to_windows(t: torch.Tensor) -> torch.Tensor:
                if ph or pw:
                    t = F.pad(t, (0, pw, 0, ph), mode="replicate")
                t = t.reshape(b, c, nh, win, nw, win).permute(0, 2, 4, 3, 5, 1)
                return t.reshape(b * nh * nw, win * win, c)

            out = self._attend(to_windows(q), to_windows(k), to_windows(v))
            out = out.reshape(b, nh, nw, win, win, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hp, wp)
            out = out[:, :, :h, :w]
        return x + self.proj_out(out)


def set_attention_window(module: nn.Module, window: int | None) -> None:
    """Set the attention extent of every AttnBlock inside ``module`` (None = global)."""
    for m in module.modules():
        if isinstance(m, AttnBlock):
            m.window = window
