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

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from cod.models.cod_dit import CoDConfig, CoDDiTBase
from cod.nn.transformer import AdaLNFinalLayer, FlattenDiTBlock


@dataclass(frozen=True, kw_only=True)
class CoDLatentConfig(CoDConfig):
    """A DDT (family ``cod-latent``): the shared CoD fields only."""


class DDT(CoDDiTBase):
    """CoD latent-space velocity network (official ``cod.models.latent_dit.DDT``)."""

    def __init__(self, config: CoDLatentConfig):
        super().__init__(config)
        in_channels, patch_size, hidden_size, num_groups = config.in_channels, config.patch_size, config.hidden_size, config.num_groups
        patch_dim = in_channels * patch_size**2
        # 5. decoder tower
        self.decoder_embedder = nn.Linear(patch_dim + hidden_size, hidden_size)
        self.decoder_blocks = nn.ModuleList(FlattenDiTBlock(hidden_size, num_groups) for _ in range(config.num_blocks - config.num_cond_blocks))
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


def build_latent_dit(config: CoDLatentConfig | Mapping[str, Any]) -> DDT:
    """DDT from its typed config or a config dict (cod.zoo)."""
    return DDT(CoDLatentConfig.coerce(config))
