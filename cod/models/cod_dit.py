"""What the two CoD diffusion transformers share (CoD spec §5.1, §5.3 steps 1-4, §6).

Both networks predict the rectified-flow velocity of a noisy input x_t at time t given a
condition map (one token per DiT token) from the condition codec. They share:

  1. the condition codec (``condition``: encoder -> 4-bit VQ -> decoder of width hidden_size)
  2. patchify: ``unfold`` into p x p patches, channel-major vectors, raster order (§3)
  3. the time embedder (sinusoid with max_period 10 on t in [0, 1], cos first)
  4. the encoder tower: Linear([patch ; condition token]) -> adaLN blocks modulated by
     silu(t_emb) -> s = silu(t_emb + s)

The two subclasses differ in what turns ``s`` into the velocity: a NeRF-style per-pixel
head (:mod:`cod.models.pixel_dit`) or a second transformer tower with token-wise adaLN
(:mod:`cod.models.latent_dit`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cod.config import ModelConfig
from cod.diffusion.settings import DecodeSettings
from cod.models.condition import ConditionCodec, Quantized
from cod.nn.diffusion_blocks import TimestepEmbedder
from cod.nn.transformer import FlattenDiTBlock, RoPECache

TIME_MAX_PERIOD = 10.0  # §5.1: the sinusoid of t in [0, 1] uses max_period 10


@dataclass(frozen=True, kw_only=True)
class CoDConfig(ModelConfig):
    """What the configs of both CoD networks hold (the published widths are in cod.zoo)."""

    rate: str  # the rate label of cod.zoo.COD_RATES (or bits / ds**2 for another codec)
    decode: DecodeSettings  # the model's decode defaults, stored in every .cod file it writes
    in_channels: int
    patch_size: int
    hidden_size: int
    num_groups: int  # attention heads
    num_blocks: int  # encoder tower + the pixel head / decoder tower
    num_cond_blocks: int  # encoder tower
    light: bool
    encoder_channels: int
    latent_channels: int


class CoDDiTBase(nn.Module):
    """Condition codec, time embedder and encoder tower (official ``y_embedder``,
    ``t_embedder``, ``s_embedder``, ``blocks[:num_cond_blocks]``)."""

    def __init__(self, config: CoDConfig):
        super().__init__()
        c = config
        in_channels, patch_size, hidden_size, num_groups, num_cond_blocks = c.in_channels, c.patch_size, c.hidden_size, c.num_groups, c.num_cond_blocks
        ds, codebook_bits, up2x = c.ds, c.codebook_bits, c.up2x
        self.in_channels, self.patch_size, self.hidden_size = in_channels, patch_size, hidden_size
        self.num_groups, self.num_cond_blocks = num_groups, num_cond_blocks
        self.ds, self.codebook_bits, self.up2x = ds, codebook_bits, up2x
        patch_dim = in_channels * patch_size**2
        # 1. condition codec (one implementation with CoD-Lite; CoD attends globally)
        self.condition = ConditionCodec(ds, codebook_bits, hidden_size, up2x, c.light, c.encoder_channels, c.latent_channels)
        # 3. time embedder
        self.time_embedder = TimestepEmbedder(hidden_size, max_period=TIME_MAX_PERIOD)
        # 4. encoder tower
        self.encoder_embedder = nn.Linear(patch_dim + hidden_size, hidden_size)
        self.encoder_blocks = nn.ModuleList(FlattenDiTBlock(hidden_size, num_groups) for _ in range(num_cond_blocks))
        self.rope = RoPECache(hidden_size // num_groups)

    # ------------------------------------------------------------------ init
    def initialize_base_weights(self) -> None:
        """Official init of the shared parts (§4.4, §5.3): zero condition-decoder output (the
        condition map is exactly 0 at init), xavier token embedder, N(0, 0.02) time MLP."""
        for m in self.condition.decoder.conv_out.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.encoder_embedder.weight)
        nn.init.zeros_(self.encoder_embedder.bias)
        nn.init.normal_(self.time_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embedder.mlp[2].weight, std=0.02)

    # ------------------------------------------------------------------ pieces
    @property
    def index_stride(self) -> int:
        """Image pixels per VQ index along a side (ds with up2x, ds/2 without; spec §2.2)."""
        return self.condition.index_stride

    @property
    def pixels_per_token(self) -> int:
        """Image pixels per DiT token along a side (16 for both variants)."""
        return 16

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, C*p*p), channel-major vectors, raster order (spec §3)."""
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        return F.unfold(x, p, stride=p).transpose(1, 2)

    def unpatchify(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        p = self.patch_size
        return F.fold(tokens.transpose(1, 2).contiguous(), (height, width), p, stride=p)

    def embed_time(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """t: scalar or (B,) in [0, 1] -> (B, 1, hidden)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.encoder_embedder.weight.device).reshape(-1)
        if t.numel() == 1 and batch > 1:
            t = t.expand(batch)
        return self.time_embedder(t).view(batch, 1, self.hidden_size)

    def condition_map(self, y: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Condition image in [0, 1] -> (condition map (B, hidden, H/16, W/16), VQ output)."""
        return self.condition(y)

    def encode_tokens(self, patches: torch.Tensor, cond_tokens: torch.Tensor, t_emb: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """Encoder tower (§5.3 step 4): s = silu(t_emb + blocks(Linear([patch ; cond])))."""
        s = self.encoder_embedder(torch.cat([patches, cond_tokens], dim=-1))
        c = F.silu(t_emb)
        for block in self.encoder_blocks:
            s = block(s, c, rope)
        return F.silu(t_emb + s)

    def _prepare(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, cond: torch.Tensor | None):
        """Steps 1-4 common to both forwards."""
        b, _, h, w = x_t.shape
        q = None
        if cond is None:
            if y is None:
                raise ValueError("give the condition image y or a precomputed condition map cond")
            cond, q = self.condition_map(y)
        patches = self.patchify(x_t)
        hp, wp = h // self.patch_size, w // self.patch_size
        if tuple(cond.shape[-2:]) != (hp, wp):
            raise ValueError(f"condition map is {tuple(cond.shape[-2:])}, the {h}x{w} input has a {hp}x{wp} token grid")
        cond_tokens = cond.flatten(2).transpose(1, 2)
        if cond_tokens.shape[0] != b:
            raise ValueError(f"batch of x_t is {b}, of the condition {cond_tokens.shape[0]}")
        rope = self.rope(hp, wp, x_t.device)
        t_emb = self.embed_time(t, b)
        s = self.encode_tokens(patches, cond_tokens, t_emb, rope)
        return patches, cond, cond_tokens, rope, s, q
