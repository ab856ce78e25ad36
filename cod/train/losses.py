"""Loss terms of the CoD / CoD-Lite recipes besides the flow math (CoD spec §8.1, CoD-Lite spec
§4.2, §4.4); the rectified-flow terms are in cod.diffusion.flow."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cod.chroma import CBCR_TO_RGB, RGB_TO_CBCR, max_level
from cod.chroma import DEFAULT_STEP as CHROMA_STEP


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


def chroma_corrected(rec: torch.Tensor, target: torch.Tensor, block: int, step: int = CHROMA_STEP) -> torch.Tensor:
    """What the codec's chroma side information (cod.chroma, .cod v4) does to a decode, in torch
    and differentiable, for (B, 3, H, W) images in [-1, 1] with sides multiples of ``block``:
    ``rec``'s block-mean Cb/Cr moved to ``target``'s, quantised with ``step`` on the 0..255
    scale, the difference interpolated bilinearly between block centres (as cod.chroma.apply,
    before its rounding). Training on the corrected decode spends nothing on block colour."""
    if rec.shape[-2] % block or rec.shape[-1] % block:
        raise ValueError(f"chroma_corrected needs sides that are multiples of {block}, got {tuple(rec.shape[-2:])}")
    to_cbcr = rec.new_tensor(RGB_TO_CBCR, dtype=torch.float32)
    to_rgb = rec.new_tensor(CBCR_TO_RGB, dtype=torch.float32)
    scale = 127.5  # [-1, 1] -> 0..255 (the rows sum to 0, so the offset drops out)
    mean_rec = torch.einsum("kc,bchw->bkhw", to_cbcr, F.avg_pool2d(rec.float(), block)) * scale
    with torch.no_grad():
        mean_tgt = torch.einsum("kc,bchw->bkhw", to_cbcr, F.avg_pool2d(target.float(), block)) * scale
        m = max_level(step)
        want = torch.clamp(torch.round(mean_tgt / step), -m, m) * step
    delta = torch.einsum("ck,bkhw->bchw", to_rgb, want - mean_rec) / scale
    return rec + F.interpolate(delta, size=rec.shape[-2:], mode="bilinear", align_corners=False).to(rec.dtype)


def chroma_loss(pred: torch.Tensor, target: torch.Tensor, scale: int = 8) -> torch.Tensor:
    """L1 between the Cb/Cr chroma of ``scale``x-downsampled thumbnails (area average).

    Not in the papers: at ~0.03 bpp an L1/MS-SSIM-trained decoder finds that grey is the
    cheapest guess for an uncertain colour; on a thumbnail the colour is certain, so this
    term pays for keeping it (docs/models.md, the small recipe's ablation)."""
    w = pred.new_tensor(RGB_TO_CBCR)  # BT.601 Cb/Cr rows; they sum to 0, so the same for images in [-1, 1]
    if scale > 1:
        pred, target = F.avg_pool2d(pred.float(), scale, ceil_mode=True), F.avg_pool2d(target.float(), scale, ceil_mode=True)
    cp = torch.einsum("kc,bchw->bkhw", w.float(), pred.float())
    ct = torch.einsum("kc,bchw->bkhw", w.float(), target.float())
    return (cp - ct).abs().mean()


def grid_loss(pred: torch.Tensor, target: torch.Tensor, period: int = 16) -> torch.Tensor:
    """Fixed-pattern penalty against a visible ``period``-pixel grid, for (B, C, H, W) images.

    Not in the papers. A one-step decoder that paints each token's ``period``-px patch leaves a
    pattern that repeats with the patch: measured on the 0.0312 model g0e (Kodak-512), the
    mean |gradient| at one column phase is 1.31x the average and the per-phase mean error
    spans 13 levels, where photos are flat to a few %. Per position (row mod ``period``,
    column mod ``period``) this compares, over the batch, (a) the mean |horizontal| and
    |vertical| difference of ``pred``, relative to its own mean (so overall sharpness drops
    out), with ``target``'s, and (b) the mean error ``pred - target`` with its overall mean,
    relative to ``target``'s mean |difference|. A grid-free decode scores near 0 whatever its
    sharpness or content; L1 and MS-SSIM barely see the pattern."""
    p = period
    h, w = pred.shape[-2] // p * p, pred.shape[-1] // p * p
    if h < 2 * p or w < 2 * p:
        raise ValueError(f"grid_loss needs images of at least {2 * p}x{2 * p} pixels, got {tuple(pred.shape[-2:])}")
    pred, target = pred[..., :h, :w].float(), target[..., :h, :w].float()

    def per_phase(x: torch.Tensor) -> torch.Tensor:  # (B, C, h', w') with sides multiples of p -> (p, p)
        b, c, hh, ww = x.shape
        return x.reshape(b, c, hh // p, p, ww // p, p).mean(dim=(0, 1, 2, 4))

    gx = [per_phase((y[..., :, 1:] - y[..., :, :-1])[..., :, : w - p].abs()) for y in (pred, target)]
    gy = [per_phase((y[..., 1:, :] - y[..., :-1, :])[..., : h - p, :].abs()) for y in (pred, target)]
    profile = [g / g.mean().clamp(min=1e-4) for g in (*gx, *gy)]  # each relative to its own mean: sharpness drops out
    gradient = (profile[0] - profile[1]).abs().mean() + (profile[2] - profile[3]).abs().mean()
    scale = ((gx[1].mean() + gy[1].mean()) / 2).detach().clamp(min=1e-4)
    err = (pred - target).reshape(pred.shape[0], pred.shape[1], h // p, p, w // p, p).mean(dim=(0, 2, 4))  # (C, p, p)
    offset = (err - err.mean(dim=(1, 2), keepdim=True)).abs().mean() / scale
    return gradient + offset
