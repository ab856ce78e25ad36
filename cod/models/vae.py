"""The SD VAE of the latent CoD model (CoD spec §6.1), through diffusers' AutoencoderKL.

The official ``LatentAE`` scales latents by sf**2, not sf (sf = config.scaling_factor =
0.18215 for stabilityai/sd-vae-ft-ema), so the diffusion latent has std ~0.18:

    encode(img01) = VAE.encode(2 * img01 - 1).latent_dist.sample() * sf**2
    decode(z)     = VAE.decode(z / sf**2).sample            (an image in [-1, 1])

A re-implementation that uses the usual *sf is incompatible with the checkpoints.
Only decoding is needed to decompress (the codec compresses the image itself); encoding
is for training. Weights come from a local folder (``--vae PATH`` or ``COD_VAE_DIR``)
holding ``config.json`` and ``diffusion_pytorch_model.safetensors`` (the layout of the
Hugging Face repo stabilityai/sd-vae-ft-ema); nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cod.errors import CodError

VAE_ENV = "COD_VAE_DIR"
VAE_REPO = "stabilityai/sd-vae-ft-ema"


class VAEMissingError(CodError):
    """The latent model needs the SD VAE and it was not given or cannot be loaded."""


def _missing(why: str) -> VAEMissingError:
    return VAEMissingError(
        f"latent CoD models decode (and DiffC-encode) through the SD VAE ({VAE_REPO}): {why}. Pass --vae PATH "
        f"(or vae=PATH in Python) or set {VAE_ENV} to a local folder holding config.json and "
        "diffusion_pytorch_model.safetensors, e.g. `huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir DIR`"
    )


class LatentVAE(nn.Module):
    """AutoencoderKL wrapper with CoD's sf**2 latent scaling."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder
        self.scaling_factor = float(getattr(autoencoder.config, "scaling_factor", 0.18215))

    @property
    def latent_scale(self) -> float:
        """sf**2 (0.0332 for sd-vae-ft-ema)."""
        return self.scaling_factor**2

    @torch.no_grad()
    def encode(self, image01: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """[0,1] image (B,3,H,W) -> diffusion latent (B,4,H/8,W/8); samples the posterior as the
        official code does (``sample=False`` takes its mean)."""
        dist = self.autoencoder.encode(2 * image01 - 1).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return z * self.latent_scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion latent -> image in [-1, 1] (unclipped)."""
        return self.autoencoder.decode(z / self.latent_scale).sample


def load_vae(vae: Any = None, device: torch.device | str = "cpu") -> LatentVAE:
    """A LatentVAE from an AutoencoderKL instance, a LatentVAE, a local folder, or (None) the
    folder named by COD_VAE_DIR. Raises VAEMissingError naming what is missing."""
    if isinstance(vae, LatentVAE):
        return vae.to(device).eval()
    if isinstance(vae, nn.Module):
        return LatentVAE(vae).to(device).eval()
    if vae is None:
        env = os.environ.get(VAE_ENV)
        if not env:
            raise _missing(f"no VAE given and {VAE_ENV} is not set")
        vae = env
    path = Path(vae)
    if not path.is_dir():
        raise _missing(f"VAE folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise _missing(f"{path} has no config.json")
    if not any((path / f).is_file() for f in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")):
        raise _missing(f"{path} has no diffusion_pytorch_model.safetensors")
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise VAEMissingError("latent CoD models need the `diffusers` package for the SD VAE: pip install diffusers") from None
    try:
        model = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many kinds
        raise _missing(f"cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return LatentVAE(model).to(device).eval()
