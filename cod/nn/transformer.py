"""Transformer pieces shared by the CoD diffusion transformers (CoD spec §5.1-§5.2, §6).

Reads top to bottom:
  1. 2-D rotary position embedding on a resolution-normalised token grid (§5.2)
  2. multi-head self-attention with per-head RMSNorm on q and k, then RoPE (``RAttention``)
  3. SwiGLU feed-forward
  4. the adaLN transformer block (``FlattenDiTBlock``): global or token-wise modulation
  5. the adaLN final layer of the latent model (§6, step 5')

Module and parameter names inside a block are the official ones, so a block's state dict
keys need no renaming (cod/official.py renames only the top level).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cod.nn.diffusion_blocks import RMSNorm


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


# --------------------------------------------------------------------------- 1. RoPE
def rope_angles_2d(head_dim: int, height: int, width: int, theta: float = 10000.0, extent: float = 16.0, device: torch.device | None = None) -> torch.Tensor:
    """Rotation angles (height*width, head_dim/2) of the 2-D RoPE, float32 (spec §5.2).

    Tokens sit on ``linspace(0, extent, n)`` along each axis, whatever the grid size, so a
    non-square grid is stretched. Channel pair 2k rotates by x*w_k, pair 2k+1 by y*w_k with
    w_k = theta^(-4k/head_dim), k < head_dim/4.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    xs = torch.linspace(0, extent, width, device=device)
    ys = torch.linspace(0, extent, height, device=device)
    y_pos, x_pos = torch.meshgrid(ys, xs, indexing="ij")
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim))
    ax = torch.outer(x_pos.reshape(-1), freqs)  # (N, D/4)
    ay = torch.outer(y_pos.reshape(-1), freqs)
    return torch.stack([ax, ay], dim=-1).reshape(height * width, head_dim // 2)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive (real, imag) channel pairs of x (B, N, heads, D) by angles (N, D/2), in float32."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    re, im = xf.unbind(-1)
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
    return out.flatten(-2).type_as(x)


class RoPECache:
    """Angles per (height, width, device), computed once (no buffers: the state dict stays parameters-only)."""

    def __init__(self, head_dim: int):
        self.head_dim = head_dim
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def __call__(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._cache:
            self._cache[key] = rope_angles_2d(self.head_dim, height, width).to(device)
        return self._cache[key]


# ---------------------------------------------------------------------- 2. attention
class RAttention(nn.Module):
    """Self-attention: qkv (no bias) -> per-head RMSNorm on q, k -> RoPE -> SDPA -> proj."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)  # (B, N, H, D)
        q = apply_rope(self.q_norm(q), rope)
        k = apply_rope(self.k_norm(k), rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, D)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


# ---------------------------------------------------------------------- 3. SwiGLU
def swiglu_hidden(hidden_size: int, mlp_ratio: float = 4.0) -> int:
    """Hidden width of the SwiGLU: int(2/3 * int(ratio * hidden)), 3072 at 1152."""
    return int(2 * int(hidden_size * mlp_ratio) / 3)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


# ---------------------------------------------------------------------- 4. block
class FlattenDiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN (spec §5.1).

    ``c`` is the conditioning vector, already passed through SiLU by the caller:
    (B, 1, C) for global modulation (time, encoder tower) or (B, N, C) token-wise (decoder
    tower of the latent model). The modulation linear is not zero-initialised (official).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = RMSNorm(hidden_size)
        self.attn = RAttention(hidden_size, num_heads)
        self.norm2 = RMSNorm(hidden_size)
        self.mlp = FeedForward(hidden_size, swiglu_hidden(hidden_size, mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


# ---------------------------------------------------------------------- 5. final layer
class AdaLNFinalLayer(nn.Module):
    """LayerNorm (no affine) -> token-wise shift/scale from ``c`` -> Linear (spec §6)."""

    def __init__(self, hidden_size: int, out_features: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_features)
        self.adaLN_modulation = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
