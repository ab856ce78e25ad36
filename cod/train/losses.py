"""Loss terms of the CoD / CoD-Lite recipes besides the flow math (CoD spec §8.1, CoD-Lite spec
§4.2, §4.4); the rectified-flow terms are in cod.diffusion.flow."""
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


# ITU-R BT.601 chroma rows (Cb, Cr) of the RGB -> YCbCr matrix, for images in [-1, 1]
_CHROMA = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def chroma_loss(pred: torch.Tensor, target: torch.Tensor, scale: int = 8) -> torch.Tensor:
    """L1 between the Cb/Cr chroma of ``scale``x-downsampled thumbnails (area average).

    Not in the papers: at ~0.03 bpp an L1/MS-SSIM-trained decoder finds that grey is the
    cheapest guess for an uncertain colour; on a thumbnail the colour is certain, so this
    term pays for keeping it (docs/models.md, the small recipe's ablation)."""
    w = pred.new_tensor(_CHROMA)
    if scale > 1:
        pred, target = F.avg_pool2d(pred.float(), scale, ceil_mode=True), F.avg_pool2d(target.float(), scale, ceil_mode=True)
    cp = torch.einsum("kc,bchw->bkhw", w.float(), pred.float())
    ct = torch.einsum("kc,bchw->bkhw", w.float(), target.float())
    return (cp - ct).abs().mean()
