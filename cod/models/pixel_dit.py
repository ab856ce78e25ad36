"""CoD pixel model: PixNerDiT, a DiT on 16x16 RGB patches with a NeRF-style pixel head.

Reads top to bottom (CoD spec §5.3):
  1-4. patchify, time embedding, condition map, encoder tower -> s   (cod.models.cod_dit)
  5.   per-pixel inputs: [R, G, B, g_0..g_{K-1}] with g = Linear(condition token)
  6.   NerfEmbedder: + 64 DCT position features -> Linear to K = hidden_size_x
  7.   NeRF blocks: each token's s generates the two weight matrices of a per-pixel MLP
  8.   final layer: RMSNorm -> Linear to RGB -> fold back to the image

Output: the rectified-flow velocity v = x - eps (t=0 noise, t=1 data, spec §3).
Our names vs the official ones: see ``COD_PIXEL_RENAMES`` in cod/official.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cod.models.cod_dit import CoDConfig, CoDDiTBase
from cod.nn.diffusion_blocks import FinalLayer, NerfEmbedder, RMSNorm

# Tokens per chunk of the pixel head: bounds its memory on large images; exact (per token).
PIXEL_HEAD_CHUNK = 1024


@dataclass(frozen=True, kw_only=True)
class CoDPixelConfig(CoDConfig):
    """A PixNerDiT (family ``cod-pixel``)."""

    hidden_size_x: int  # per-pixel feature width K
    nerf_mlpratio: int


class NerfBlock(nn.Module):
    """Per-pixel residual MLP whose weights come from the token's vector s (spec §5.3 step 7).

    W1 (K, rK) and W2 (rK, K) are L2-normalised along their input dimension (every output
    column has unit norm); h <- h + silu(RMSNorm(h) W1) W2, no biases.
    """

    def __init__(self, hidden_size: int, hidden_size_x: int, mlp_ratio: int):
        super().__init__()
        self.hidden_size_x, self.mlp_ratio = hidden_size_x, mlp_ratio
        self.param_generator1 = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size_x**2 * mlp_ratio))
        self.norm = RMSNorm(hidden_size_x)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # x: (N, P*P, K) pixel features of N tokens; s: (N, hidden)
        n, k, r = x.shape[0], self.hidden_size_x, self.mlp_ratio
        w1, w2 = self.param_generator1(s).chunk(2, dim=-1)
        w1 = F.normalize(w1.view(n, k, k * r), dim=-2)
        w2 = F.normalize(w2.view(n, k * r, k), dim=-2)
        return x + torch.bmm(F.silu(torch.bmm(self.norm(x), w1)), w2)


class PixNerDiT(CoDDiTBase):
    """CoD pixel-space velocity network (official ``cod.models.pixel_dit.PixNerDiT``)."""

    def __init__(self, config: CoDPixelConfig):
        if config.patch_size != 16:
            raise ValueError("the condition grid is H/16: the pixel model's patch_size must be 16")
        super().__init__(config)
        in_channels, patch_size, hidden_size, hidden_size_x = config.in_channels, config.patch_size, config.hidden_size, config.hidden_size_x
        self.hidden_size_x = hidden_size_x
        p2 = patch_size**2
        # 5. per-pixel condition features
        self.pixel_condition_proj = nn.Linear(hidden_size, hidden_size_x * p2)
        # 6. per-pixel input embedding (+ DCT positions)
        self.pixel_embedder = NerfEmbedder(in_channels + hidden_size_x, hidden_size_x)
        # 7. NeRF blocks
        self.pixel_blocks = nn.ModuleList(NerfBlock(hidden_size, hidden_size_x, config.nerf_mlpratio) for _ in range(config.num_blocks - config.num_cond_blocks))
        # 8. final layer
        self.final_layer = FinalLayer(hidden_size_x, in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official init (spec §5.3): shared parts, zero final linear; the rest PyTorch default."""
        self.initialize_base_weights()
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        return_quantized: bool = False,
    ):
        """Velocity of x_t (B,3,H,W) at time t (B,) given the condition image y in [0,1] or a
        precomputed condition map ``cond``. Returns (v, cond[, VQ output when y was given])."""
        b, c, h, w = x_t.shape
        patches, cond, cond_tokens, _, s, q = self._prepare(x_t, t, y, cond)
        out = self.render_pixels(patches, cond_tokens, s)
        v = self.unpatchify(out, h, w)
        return (v, cond, q) if return_quantized else (v, cond)

    def render_pixels(self, patches: torch.Tensor, cond_tokens: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Steps 5-8 for every token, in chunks: -> (B, L, C*P*P) channel-major patches."""
        b, L, _ = patches.shape
        c, p2 = self.in_channels, self.patch_size**2
        out = patches.new_empty(b, L, c * p2)
        for lo in range(0, L, PIXEL_HEAD_CHUNK):
            hi = min(L, lo + PIXEL_HEAD_CHUNK)
            n = b * (hi - lo)
            g = self.pixel_condition_proj(cond_tokens[:, lo:hi])  # (B, n, K*P*P), index k*P*P + pixel
            feats = torch.cat([patches[:, lo:hi], g], dim=-1).reshape(n, c + self.hidden_size_x, p2).transpose(1, 2)
            x = self.pixel_embedder(feats)  # (n, P*P, K)
            s_tok = s[:, lo:hi].reshape(n, self.hidden_size)
            for block in self.pixel_blocks:
                x = block(x, s_tok)
            x = self.final_layer(x)  # (n, P*P, C)
            out[:, lo:hi] = x.transpose(1, 2).reshape(b, hi - lo, c * p2)
        return out


def build_pixel_dit(config: CoDPixelConfig | Mapping[str, Any]) -> PixNerDiT:
    """PixNerDiT from its typed config or a config dict (cod.zoo)."""
    return PixNerDiT(CoDPixelConfig.coerce(config))
