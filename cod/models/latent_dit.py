"""CoD latent model: DDT, an encoder/decoder DiT on SD-VAE latents (CoD spec §6).

Reads top to bottom:
  1-4. patchify (2x2 on the 4-channel latent = 16 image pixels per token), time embedding,
       condition map, encoder tower -> s                            (cod.models.cod_dit)
  5.   decoder tower: Linear([patch ; condition token]) -> transformer blocks with
       token-wise adaLN from s -> adaLN final layer -> fold to (B, 4, H/8, W/8)

The latent is the SD-VAE latent times sf**2 (not sf; spec §6.1, see cod.models.vae).
Our names vs the official ones: see ``COD_LATENT_RENAMES`` in cod/official.py.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cod.models.cod_dit import CoDDiTBase, common_config_args
from cod.nn.transformer import AdaLNFinalLayer, FlattenDiTBlock


class DDT(CoDDiTBase):
    """CoD latent-space velocity network (official ``cod.models.latent_dit.DDT``)."""

    def __init__(
        self,
        ds: int = 32,
        codebook_bits: int = 4,
        in_channels: int = 4,
        patch_size: int = 2,
        hidden_size: int = 1152,
        num_groups: int = 16,
        num_blocks: int = 28,
        num_cond_blocks: int = 22,
        up2x: bool = True,
        light: bool = False,
        encoder_channels: int = 128,
        latent_channels: int = 128,
        **_: Any,
    ):
        super().__init__(in_channels, patch_size, hidden_size, num_groups, num_cond_blocks, ds, codebook_bits, up2x, light, encoder_channels, latent_channels)
        patch_dim = in_channels * patch_size**2
        # 5. decoder tower
        self.decoder_embedder = nn.Linear(patch_dim + hidden_size, hidden_size)
        self.decoder_blocks = nn.ModuleList(FlattenDiTBlock(hidden_size, num_groups) for _ in range(num_blocks - num_cond_blocks))
        self.final_layer = AdaLNFinalLayer(hidden_size, patch_dim)
        self.initialize_weights()

    @property
    def pixels_per_token(self) -> int:
        return 8 * self.patch_size  # the VAE's /8 times the latent patch

    def initialize_weights(self) -> None:
        """Official init (spec §6): shared parts, xavier decoder embedder, zero final adaLN and linear."""
        self.initialize_base_weights()
        nn.init.xavier_uniform_(self.decoder_embedder.weight)
        nn.init.zeros_(self.decoder_embedder.bias)
        for lin in (self.final_layer.adaLN_modulation[0], self.final_layer.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        return_quantized: bool = False,
    ):
        """Velocity of the latent x_t (B,4,H/8,W/8) at time t given the condition image y
        (B,3,H,W) in [0,1] or a precomputed condition map. Returns (v, cond[, VQ output])."""
        _, _, h, w = x_t.shape
        patches, cond, cond_tokens, rope, s, q = self._prepare(x_t, t, y, cond)
        x = self.decoder_embedder(torch.cat([patches, cond_tokens], dim=-1))
        for block in self.decoder_blocks:
            x = block(x, s, rope)  # token-wise adaLN from s (no extra SiLU)
        v = self.unpatchify(self.final_layer(x, s), h, w)
        return (v, cond, q) if return_quantized else (v, cond)


def build_latent_dit(config: dict[str, Any]) -> DDT:
    """DDT from a config dict (cod.zoo)."""
    args = common_config_args(config)
    if "num_blocks" in config:
        args["num_blocks"] = config["num_blocks"]
    return DDT(**args)
