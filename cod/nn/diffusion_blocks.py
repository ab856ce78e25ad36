"""Blocks of the CoD-Lite diffusion CNN (CoD-Lite spec §2.6): time embedding, DiCo
block with foldable adaLN, PixNerd-style per-pixel head."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TimestepEmbedder(nn.Module):
    """256-d sinusoid of t in [0, 1] (cos first, not scaled by 1000) -> MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_size = frequency_size
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def sinusoid(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.sinusoid(t)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def layer_norm_2d(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the channel axis of an NCHW map, no affine."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), eps=eps).permute(0, 3, 1, 2)


class DiCoBlock(nn.Module):
    """Conv DiT block (DiCo): modulated depthwise-conv branch with channel attention,
    then a modulated 1x1-conv MLP; six adaLN vectors from the time embedding.

    ``fold(c)`` evaluates the modulation for a fixed time embedding once and replaces
    the adaLN linear by a (6, C) buffer: the one-step codec's t=0 folding (spec §2.8).
    """

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        c, m = hidden_size, int(hidden_size * mlp_ratio)
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1), nn.Sigmoid())
        self.conv4 = nn.Conv2d(c, m, 1)
        self.conv5 = nn.Conv2d(m, c, 1)
        self.adaLN_modulation: nn.Module | None = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.register_buffer("modulation", None)  # (6, C) once folded

    @property
    def folded(self) -> bool:
        return self.adaLN_modulation is None

    def modulation_from(self, c: torch.Tensor) -> torch.Tensor:
        """(B, 6, C) modulation vectors from a time embedding (B, C)."""
        assert self.adaLN_modulation is not None
        return self.adaLN_modulation(c).unflatten(1, (6, -1))

    @torch.no_grad()
    def fold(self, c: torch.Tensor) -> None:
        """Freeze the modulation at time embedding ``c`` (1, C) and drop the adaLN linear."""
        mod = self.modulation_from(c.float())[0].float()
        self.adaLN_modulation = None
        self.modulation = mod.contiguous()

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if self.adaLN_modulation is not None:
            if c is None:
                raise ValueError("an unfolded DiCoBlock needs the time embedding c")
            mod = self.modulation_from(c)
        else:
            mod = self.modulation.unsqueeze(0)
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[..., None, None] for m in mod.unbind(1))
        h = layer_norm_2d(x) * (1 + scale1) + shift1
        h = F.gelu(self.conv2(self.conv1(h)))
        h = self.conv3(h * self.ca(h))
        x = x + gate1 * h
        h = layer_norm_2d(x) * (1 + scale2) + shift2
        h = self.conv5(F.gelu(self.conv4(h)))
        return x + gate2 * h


class NerfEmbedder(nn.Module):
    """Per-pixel input embedding: append 64 DCT position features, then Linear (PixNerd)."""

    def __init__(self, in_features: int, hidden_size: int, max_freqs: int = 8):
        super().__init__()
        self.max_freqs = max_freqs
        self.embedder = nn.Sequential(nn.Linear(in_features + max_freqs**2, hidden_size))

    def dct_features(self, patch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(P*P, F*F): cos(pi f_a x) cos(pi f_b y) / (1 + f_a f_b), index a*F + b."""
        pos = torch.linspace(0, 1, patch_size, device=device)
        pos_y, pos_x = torch.meshgrid(pos, pos, indexing="ij")
        freqs = torch.linspace(0, self.max_freqs, self.max_freqs, device=device)
        fx, fy = freqs[None, :, None], freqs[None, None, :]
        px, py = pos_x.reshape(-1, 1, 1), pos_y.reshape(-1, 1, 1)
        dct = torch.cos(px * fx * torch.pi) * torch.cos(py * fy * torch.pi) / (1 + fx * fy)
        return dct.reshape(patch_size * patch_size, -1).to(dtype)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        n, p2, _ = inputs.shape
        dct = self.dct_features(int(round(p2**0.5)), inputs.device, inputs.dtype)
        return self.embedder(torch.cat([inputs, dct.expand(n, -1, -1)], dim=-1))


class PixelResBlock(nn.Module):
    """Per-pixel MLP block modulated by the pixel's condition vector (adaLN)."""

    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        h = self.mlp(self.in_ln(x) * (1 + scale) + shift)
        return x + gate * h


class PixelHead(nn.Module):
    """PixNerd ``SimpleMLPAdaLN``: each token's vector becomes P*P per-pixel conditions
    (position-major layout) that modulate a small MLP over the pixel features."""

    def __init__(self, channels: int, token_size: int, num_blocks: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.cond_embed = nn.Linear(token_size, patch_size * patch_size * channels)
        self.input_proj = nn.Linear(channels, channels)
        self.res_blocks = nn.ModuleList(PixelResBlock(channels) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # x: (N, P*P, channels) pixel features; tokens: (N, token_size)
        x = self.input_proj(x)
        y = self.cond_embed(tokens).reshape(tokens.shape[0], self.patch_size**2, -1)
        for block in self.res_blocks:
            x = block(x, y)
        return x


class RMSNorm(nn.Module):
    """RMSNorm with a learnable gain, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(x.dtype)


class FinalLayer(nn.Module):
    """RMSNorm -> Linear to RGB."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm = RMSNorm(channels)
        self.linear = nn.Linear(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))
