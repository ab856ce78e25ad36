"""PSNR and MS-SSIM on RGB uint8 images (the full metric suite lives in cod.eval)."""
from __future__ import annotations

import math

import numpy as np


def psnr(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB of uint8 RGB images (peak 255); inf for identical images."""
    mse = np.mean((ref.astype(np.float64) - rec.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim(ref: np.ndarray, rec: np.ndarray) -> float | None:
    """MS-SSIM (5 scales, Gaussian 11/1.5, torchmetrics); None when a side is under 161 px."""
    if min(ref.shape[:2]) < 161:
        return None
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    a = torch.tensor(ref).permute(2, 0, 1)[None].double()
    b = torch.tensor(rec).permute(2, 0, 1)[None].double()
    return float(msssim(b, a, data_range=255.0))
