"""Loss terms of the CoD / CoD-Lite recipes (CoD spec §8.1, CoD-Lite spec §4.2, §4.4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projection_mlp(in_dim: int, out_dim: int, hidden: int | None = None) -> nn.Sequential:
    """REPA projector: Linear-SiLU-Linear-SiLU-Linear (384 -> 384 -> 384 -> 768 officially)."""
    hidden = hidden or in_dim
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))


def alignment_loss(tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos over tokens; extra source tokens are truncated as in the original."""
    n = min(tokens.shape[1], target.shape[1])
    return (1 - F.cosine_similarity(tokens[:, :n].float(), target[:, :n].float(), dim=-1)).mean()


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C), row-major."""
    return x.flatten(2).transpose(1, 2)


class CodecReconHead(nn.Module):
    """1x1 convs C -> C -> C -> 3*p*p, SiLU, then depth-to-space by p (the codec_recon head)."""

    def __init__(self, channels: int, out_channels: int = 3, patch: int = 16):
        super().__init__()
        self.patch = patch
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.SiLU(), nn.Conv2d(channels, channels, 1), nn.SiLU(),
            nn.Conv2d(channels, out_channels * patch * patch, 1),
        )

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.net(cond), self.patch)


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM on images in [-1, 1] (backbone-free perceptual term); falls back to
    SSIM when the image is too small for 5 scales."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    p, t = (pred.float().clamp(-1, 1) + 1) / 2, (target.float() + 1) / 2
    if min(p.shape[-2:]) >= 176:
        return 1 - msssim(p, t, data_range=1.0, normalize="relu")
    return 1 - ssim(p, t, data_range=1.0)


def flow_interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rectified flow x_t = t x + (1 - t) eps (t = 0 noise, t = 1 data)."""
    t = t.view(-1, 1, 1, 1)
    return t * x + (1 - t) * noise
