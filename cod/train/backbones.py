"""Frozen feature networks for representation alignment (REPA) and perceptual losses.

The official recipe aligns to DINOv2 ViT-B/14 patch tokens. Its weights cannot be
downloaded here: ``dinov2`` reads them from a local file (``COD_WEIGHTS_DIR`` or a path);
``random`` is a small random conv net for tests; ``none`` disables alignment (the
backbone-free recipe, docs/training.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cod.errors import CheckpointError

DINOV2_FILE = "dinov2_vitb14_pretrain.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TokenBackbone(nn.Module):
    """Frozen network mapping images in [0,1] (B,3,H,W) to tokens (B, H/16 * W/16, dim)."""

    dim: int

    def train(self, mode: bool = True) -> "TokenBackbone":  # always frozen, always eval
        return super().train(False)


class RandomTokenBackbone(TokenBackbone):
    """A fixed random conv net with one token per 16x16 patch (stand-in for tests)."""

    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.net = nn.Sequential(nn.Conv2d(3, dim, 4, 4), nn.GELU(), nn.Conv2d(dim, dim, 4, 4))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        return self.net(image01).flatten(2).transpose(1, 2)


class DinoV2Backbone(TokenBackbone):
    """DINOv2 ViT-B/14 ``x_norm_patchtokens`` of the ImageNet-normalised image, resized by
    14/16 (bicubic) so there is exactly one token per 16x16 patch (CoD spec §8.1)."""

    def __init__(self, weights: str | Path):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise CheckpointError("DINOv2 alignment needs timm: pip install timm") from None
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"DINOv2 weights not found: {path} (the official {DINOV2_FILE}; see docs/training.md)")
        self.net = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state.pop("mask_token", None)  # the official release keeps its iBOT mask token; timm has none
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: not DINOv2 ViT-B/14 weights ({str(exc).splitlines()[0]})") from None
        self.dim = 768
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        h, w = image01.shape[-2:]
        x = F.interpolate((image01 - self.mean) / self.std, size=(h // 16 * 14, w // 16 * 14), mode="bicubic", align_corners=False)
        tokens = self.net.forward_features(x)
        return tokens[:, self.net.num_prefix_tokens :]


def build_token_backbone(kind: str, weights: str | None = None) -> TokenBackbone | None:
    """``none`` | ``random`` | ``dinov2`` (weights from ``weights`` or $COD_WEIGHTS_DIR)."""
    if kind in (None, "none"):
        return None
    if kind == "random":
        return RandomTokenBackbone()
    if kind == "dinov2":
        path = weights or os.path.join(os.environ.get("COD_WEIGHTS_DIR", ""), DINOV2_FILE)
        return DinoV2Backbone(path)
    raise CheckpointError(f"unknown alignment backbone {kind!r} (none, random, dinov2)")
