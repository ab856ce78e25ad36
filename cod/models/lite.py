"""CoD-Lite: the convolutional pixel-diffusion network and its one-step codec.

Reads top to bottom (CoD-Lite spec §2.6-2.8):
  1. condition codec (image -> indices -> condition map at H/16)
  2. stem: 16x16 patch embedding of x_t concatenated with the condition, 1x1 merge
  3. DiCo blocks modulated by the time embedding
  4. per-pixel head (PixNerd): per-pixel features + DCT positions, modulated by the token
  5. one-step decoding: x_t = 0 (noise_level * noise), t = 0, output = x-prediction
  (6. optional, not in the papers: a small residual 3x3-conv refinement of the output across
     patch borders, ``output_refine`` channels; the small default models use it)

The t=0 folding of the time modulation is the explicit step :meth:`CoDLite.fold_time_modulation`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cod.config import ModelConfig
from cod.diffusion.flow import velocity_from_x
from cod.models.condition import ConditionCodec
from cod.nn.conv_blocks import set_attention_window
from cod.nn.diffusion_blocks import DiCoBlock, FinalLayer, NerfEmbedder, PixelHead, TimestepEmbedder

# Tokens per chunk in the per-pixel head: bounds memory on large images, exact.
PIXEL_HEAD_CHUNK = 2048


@dataclass(frozen=True, kw_only=True)
class CoDLiteConfig(ModelConfig):
    """A CoD-Lite network (CoD-Lite spec §2); the published widths are in cod.zoo."""

    in_channels: int
    patch_size: int
    hidden_size: int
    hidden_size_x: int
    num_blocks: int  # DiCo blocks + pixel-head blocks
    num_cond_blocks: int  # DiCo blocks
    mlp_ratio: float
    light: bool
    encoder_channels: int
    latent_channels: int
    attention_window: int | None  # codec attention window at inference (None: global)
    noise_level: float
    patch_bottleneck: int = 128  # the stem's bottleneck (official layout; files before this key meant 128)
    time_folded: bool = False  # build the network with its t=0 modulation folded
    output_refine: int = 0  # channels of the optional output refinement (0: none, the official layout)
    chroma_block: int = 0  # block side of the chroma side information the codec writes (cod.chroma; 0: none, the official layout)


class PatchEmbed(nn.Module):
    """16x16 patch embedding of x_t (no bias) concatenated with the condition, then 1x1 merge."""

    def __init__(self, patch_size: int, in_channels: int, bottleneck: int, hidden_size: int):
        super().__init__()
        self.proj1 = nn.Conv2d(in_channels, bottleneck, patch_size, stride=patch_size, bias=False)
        self.proj2 = nn.Conv2d(bottleneck + hidden_size, hidden_size, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.proj2(torch.cat([self.proj1(x), cond], dim=1))


@dataclass
class CoDLiteOutput:
    """Training-side forward output."""

    reconstruction: torch.Tensor  # x-prediction in [-1, 1] (unclipped)
    vq_loss: torch.Tensor
    indices: torch.Tensor  # (B, h*w)
    cond: torch.Tensor  # condition map (B, hidden, H/16, W/16)
    features: list[torch.Tensor] | None = None  # DiCo block outputs, when asked for


class CoDLite(nn.Module):
    """The CoD-Lite network (official ``DConv``/``OneStepCoD``), train form by default."""

    def __init__(self, config: CoDLiteConfig):
        c = config
        ds, codebook_bits, patch_size, hidden_size, hidden_size_x = c.ds, c.codebook_bits, c.patch_size, c.hidden_size, c.hidden_size_x
        in_channels, num_blocks, num_cond_blocks = c.in_channels, c.num_blocks, c.num_cond_blocks
        super().__init__()
        if patch_size != 16:
            raise ValueError("the condition grid is H/16: patch_size must be 16")
        self.ds, self.codebook_bits, self.patch_size = ds, codebook_bits, patch_size
        self.hidden_size, self.hidden_size_x = hidden_size, hidden_size_x
        self.attention_window = c.attention_window
        self.noise_level = c.noise_level
        p2 = patch_size * patch_size
        # 1. condition codec
        self.condition = ConditionCodec(ds, codebook_bits, hidden_size, c.up2x, c.light, c.encoder_channels, c.latent_channels)
        # 2. time, per-pixel condition features, pixel embedder, patch stem
        self.time_embedder: TimestepEmbedder | None = TimestepEmbedder(hidden_size)
        self.pixel_condition_proj = nn.Conv2d(hidden_size, hidden_size_x * p2, 1)
        self.pixel_embedder = NerfEmbedder(in_channels + hidden_size_x, hidden_size_x)
        self.patch_embedder = PatchEmbed(patch_size, in_channels, c.patch_bottleneck, hidden_size)
        # 3. DiCo blocks
        self.blocks = nn.ModuleList(DiCoBlock(hidden_size, c.mlp_ratio) for _ in range(num_cond_blocks))
        # 4. per-pixel head
        self.pixel_head = PixelHead(hidden_size_x, hidden_size, num_blocks - num_cond_blocks, patch_size)
        self.final_layer = FinalLayer(hidden_size_x, in_channels)
        # 6. optional output refinement (zero-initialised: starts as the identity)
        self.output_refine: nn.Sequential | None = None
        if c.output_refine:
            self.output_refine = nn.Sequential(nn.Conv2d(in_channels, c.output_refine, 3, padding=1), nn.SiLU(), nn.Conv2d(c.output_refine, in_channels, 3, padding=1))
            nn.init.zeros_(self.output_refine[2].weight)
            nn.init.zeros_(self.output_refine[2].bias)

    # ------------------------------------------------------------------ modes
    @property
    def time_folded(self) -> bool:
        return self.time_embedder is None

    @torch.no_grad()
    def fold_time_modulation(self, t: float = 0.0) -> "CoDLite":
        """Evaluate the DiCo modulation at time ``t`` once (fp32) and drop the adaLN linears
        and the time embedder (spec §2.8). Afterwards the network only runs at that t."""
        if self.time_embedder is None:
            return self
        param = next(self.parameters())
        c = self.time_embedder.float()(torch.full((1,), float(t), device=param.device))
        for block in self.blocks:
            block.float().fold(c)
        self.time_embedder = None
        return self

    def set_attention(self, windowed: bool) -> "CoDLite":
        """Windowed (official eval behaviour) or global (training) attention in the codec."""
        set_attention_window(self.condition, self.attention_window if windowed else None)
        return self

    # --------------------------------------------------------------- network
    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor | None, cond: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x-prediction from the noisy image x_t (B,3,H,W), time t (B,) and condition map."""
        b, _, H, W = x_t.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        if self.time_embedder is not None:
            if t is None:
                raise ValueError("t is required before fold_time_modulation()")
            c = self.time_embedder(t.to(x_t.device).expand(b))
        else:
            c = None
        s = self.patch_embedder(x_t, cond)
        features = []
        for block in self.blocks:
            s = block(s, c)
            if return_features:
                features.append(s)
        out = self._pixel_decode(x_t, s, cond)
        if self.output_refine is not None:
            out = out + self.output_refine(out)
        return (out, features) if return_features else out

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, clamp_min: float = 0.05) -> torch.Tensor:
        """Rectified-flow velocity from the x-prediction: (x̂ - x_t) / max(1 - t, clamp_min)."""
        return velocity_from_x(self.predict(x_t, t, cond), x_t, t, clamp_min)

    def _pixel_decode(self, x_t: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, cin, H, W = x_t.shape
        p, p2, kx = self.patch_size, self.patch_size**2, self.hidden_size_x
        L = (H // p) * (W // p)
        tokens = s.flatten(2).transpose(1, 2)  # (B, L, hidden)
        cond_tokens = cond.flatten(2).transpose(1, 2)
        patches = F.unfold(x_t, p, stride=p).transpose(1, 2)  # (B, L, cin*p2), index c*p2 + pix
        wx = self.pixel_condition_proj.weight.flatten(1)
        bx = self.pixel_condition_proj.bias
        out = x_t.new_empty(b, L, p2, cin)
        for lo in range(0, L, PIXEL_HEAD_CHUNK):
            hi = min(L, lo + PIXEL_HEAD_CHUNK)
            n = hi - lo
            px = F.linear(cond_tokens[:, lo:hi], wx, bx).view(b, n, kx, p2)  # index k*p2 + pix
            feats = torch.cat([patches[:, lo:hi].view(b, n, cin, p2), px], dim=2)
            feats = feats.transpose(2, 3).reshape(b * n, p2, cin + kx)
            h = self.pixel_head(self.pixel_embedder(feats), tokens[:, lo:hi].reshape(b * n, -1))
            out[:, lo:hi] = self.final_layer(h).view(b, n, p2, cin)
        out = out.permute(0, 3, 2, 1).reshape(b, cin * p2, L)
        return F.fold(out, (H, W), p, stride=p)

    # ------------------------------------------------------------ one step
    def decode_one_step(self, cond: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One network call at t=0 on x_t = noise_level * noise (zeros by default)."""
        b, _, h, w = cond.shape
        shape = (b, 3, h * self.patch_size, w * self.patch_size)
        x = torch.zeros(shape, device=cond.device, dtype=cond.dtype)
        if self.noise_level and noise is not None:
            x = noise.to(x) * self.noise_level
        t = None if self.time_folded else torch.zeros(b, device=cond.device)
        return self.predict(x, t, cond)

    def forward(self, image01: torch.Tensor, noise: torch.Tensor | None = None, return_features: bool = False) -> CoDLiteOutput:
        """Training forward of the one-step codec: image in [0,1] -> reconstruction in
        [-1,1] through the straight-through VQ, plus the VQ loss."""
        cond, q = self.condition(image01)
        b, _, h, w = cond.shape
        x = torch.zeros(b, 3, h * self.patch_size, w * self.patch_size, device=cond.device, dtype=cond.dtype)
        if self.noise_level and noise is not None:
            x = noise.to(x) * self.noise_level
        t = None if self.time_folded else torch.zeros(b, device=cond.device)
        if return_features:
            rec, feats = self.predict(x, t, cond, return_features=True)
        else:
            rec, feats = self.predict(x, t, cond), None
        return CoDLiteOutput(reconstruction=rec, vq_loss=q.loss, indices=q.indices, cond=cond, features=feats)


def build_codlite(config: CoDLiteConfig | Mapping[str, Any]) -> CoDLite:
    """Construct a CoDLite from its typed config or a config dict (see cod.zoo); an unknown or
    missing key is a ConfigError naming it."""
    cfg = CoDLiteConfig.coerce(config)
    model = CoDLite(cfg)
    if cfg.time_folded:
        model.fold_time_modulation(0.0)
    return model
