"""The CoD codec: image -> .cod bytes -> image through multi-step diffusion decoding.

    codec = cod.load("cod-pixel-0.0039", weights="cod-pixel-0.0039.safetensors")   # cod.families
    data = codec.compress(image)              # .cod bytes; decode settings inside
    image = codec.decompress(data)            # PIL.Image, original size, bit-identical every time
    image = codec.decompress(data, steps=50)  # override any stored setting

Same contract as :class:`cod.codec.CoDLiteCodec`: indices <-> bytes, condition maps,
sampling with the decode settings of :mod:`cod.diffusion.settings`, VAE, uint8.

Decoding follows the official decompress (CoD spec §9.1): x at t=0 is float32 noise from a
CPU generator seeded with ``seed``; the CFG null condition is the codec's output for an
all -1 image of the (padded) image size, computed per size (not cached once, bug B3; and
built at the image shape for latent models, bug B2); the batch [null; cond] goes through
the sampler; latent samples go through the SD VAE. Everything runs in float32.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from cod import bitstream as bs
from cod.codec import IndexCodec, Timing
from cod.diffusion.samplers import StepInfo, flow_timesteps, get_sampler, guided, initial_noise
from cod.diffusion.settings import DecodeSettings
from cod.entropy import IndexPrior
from cod.image_io import as_rgb_array
from cod.models.cod_dit import CoDDiTBase
from cod.tensor_io import PAD_MODES, image_to_tensor, pad_image, tensor_to_uint8


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """Round to bfloat16 and back, as the official conditioner does with the [0,1] image."""
    return x.to(torch.bfloat16).to(x.dtype)


def official_uint8(x: torch.Tensor) -> torch.Tensor:
    """The official saved pixels: cast to bf16, then clip((x+1)*127.5+0.5) computed in bf16
    and truncated (so values 128..254 are always even). Returns uint8 (B,3,H,W)."""
    return ((x.to(torch.bfloat16) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)


@dataclass
class CoDCodec(IndexCodec):
    """A loaded CoD model (pixel or latent) ready to compress and decompress.

    Decoded pixels use the float32 rounding trunc(clip((x+1)*127.5+0.5)) (spec §3); the
    official CLI rounds in bfloat16 (:func:`official_uint8`), which can differ by 2 LSB.
    """

    model: CoDDiTBase
    config: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    vae: Any = None  # latent models: LatentVAE, AutoencoderKL, a folder, or None (COD_VAE_DIR), loaded on first decode
    pad_mode: str = "replicate"
    progress: bool = False
    prior: IndexPrior | None = None  # the weights' index prior (cod.entropy); None: v1 files only
    entropy: bool = True  # write .cod v2 when there is a prior
    last_timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}")
        self.model.eval().requires_grad_(False).to(self.device)
        self.model_tag = self._tag()
        self._null_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._vae = None
        if self.latent and self.vae is not None:
            self._get_vae()  # a VAE given explicitly is checked now, not at the first decode

    official_floor_grid = False

    # ---------------------------------------------------------- properties
    @property
    def latent(self) -> bool:
        return self.family == "cod-latent"

    @property
    def ds(self) -> int:
        """Image pixels per index along a side (the header's ds field; ds/2 for stage-1 models)."""
        return self.model.index_stride

    @property
    def default_settings(self) -> DecodeSettings:
        """The model's decode defaults (its config's ``decode``, written by cod.zoo)."""
        return DecodeSettings(**self.config["decode"])

    # ---------------------------------------------------------- indices
    def _image01(self, image) -> tuple[torch.Tensor, int, int]:
        arr = as_rgb_array(image)
        H, W = arr.shape[:2]
        x = pad_image(image_to_tensor(arr, self.device), self.multiple, self.pad_mode)
        return bf16_round(x), H, W

    @torch.inference_mode()
    def encode(self, image) -> tuple[np.ndarray, int, int]:
        """Image -> (indices (h*w,) int64, original height, original width)."""
        x, H, W = self._image01(image)
        return self.model.condition.encode(x)[0].cpu().numpy(), H, W

    @torch.inference_mode()
    def null_condition(self, height: int, width: int) -> torch.Tensor:
        """Condition map of the all -1 image of this (padded) size, cached per size."""
        key = (height, width)
        if key not in self._null_cache:
            neg = torch.full((1, 3, height, width), -1.0, device=self.device)
            self._null_cache[key] = self.model.condition(neg)[0]
        return self._null_cache[key]

    @torch.inference_mode()
    def condition_from_indices(self, indices: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device).view(1, h * w)
        return self.model.condition.decode(idx, h, w)

    # ---------------------------------------------------------- sampling
    def noise_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of x at t=0 for a (padded) image size: (1,3,H,W) or (1,4,H/8,W/8)."""
        return (1, 4, height // 8, width // 8) if self.latent else (1, 3, height, width)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The network's velocity at (x, t) for a condition map (no guidance)."""
        return self.model(x, t, cond=cond)[0]

    @torch.inference_mode()
    def sample(self, cond: torch.Tensor, height: int, width: int, settings: DecodeSettings, progress: bool | None = None) -> torch.Tensor:
        """Run the sampler from the seeded noise with guidance against the null condition.
        Returns the sample at t=1 (pixels in [-1,1] or the diffusion latent)."""
        x = initial_noise(self.noise_shape(height, width), settings.seed).to(self.device)
        model_fn = guided(self.velocity, cond, self.null_condition(height, width), settings.cfg)
        sampler = get_sampler(settings.sampler)
        show = self.progress if progress is None else progress
        from tqdm.auto import tqdm

        with tqdm(total=settings.steps, desc=f"{self.name} {settings.sampler}", unit="step", disable=not show, leave=False, mininterval=0.0) as bar:

            def callback(info: StepInfo) -> None:
                bar.update(1)

            return sampler(model_fn, x, flow_timesteps(settings.steps), callback=callback)

    def _get_vae(self):
        if self._vae is None:
            from cod.models.vae import load_vae

            self._vae = load_vae(self.vae, self.device)
        return self._vae

    @torch.inference_mode()
    def to_image(self, sample: torch.Tensor) -> torch.Tensor:
        """Sample -> image in [-1, 1] (the SD VAE for latent models)."""
        return self._get_vae().decode(sample) if self.latent else sample

    @torch.inference_mode()
    def decode(self, indices: np.ndarray, height: int, width: int, settings: DecodeSettings | None = None, grid: tuple[int, int] | None = None, progress: bool | None = None) -> np.ndarray:
        """Indices of an image of the given original size -> HxWx3 uint8."""
        settings = settings or self.default_settings
        if self.latent:
            self._get_vae()  # fail before sampling when the VAE is missing
        h, w = grid or self.grid(height, width)
        cond = self.condition_from_indices(indices, (h, w))
        hp, wp = cond.shape[-2] * self.model.pixels_per_token, cond.shape[-1] * self.model.pixels_per_token
        x = self.to_image(self.sample(cond, hp, wp, settings, progress))
        return tensor_to_uint8(x[:, :, :height, :width])

    # ---------------------------------------------------------- bytes
    def compress(self, image, format: str = "cod", steps: int | None = None, cfg: float | None = None, sampler: str | None = None, seed: int | None = None) -> bytes:
        """Image (path, PIL, HxWx3 uint8 array or (3,H,W) tensor) -> file bytes. The decode
        settings (model defaults unless given) are stored in the header; the official
        format has no room for them."""
        t0 = time.perf_counter()
        settings = self.default_settings.override(steps, cfg, sampler, seed)
        idx, H, W = self.encode(image)
        data = self.write_file(idx, H, W, format, settings.to_bytes(), height_first=True)
        self.last_timing.encode_s = time.perf_counter() - t0
        return data

    def parse(self, data: bytes, format: str = "cod") -> tuple[np.ndarray, int, int, tuple[int, int], DecodeSettings]:
        """Check a file against this model: (indices, height, width, index grid, settings).

        ``format="official"`` reads the CoD CLI's 4-byte header as (height, width) (the
        official reader swaps them, bug B1) and uses the model's default settings."""
        idx, H, W, grid, raw = self.read_file(data, format, height_first=True)
        settings = DecodeSettings.from_bytes(raw) if raw else self.default_settings
        return idx, H, W, grid, settings

    def decompress(self, data: bytes, format: str = "cod", steps: int | None = None, cfg: float | None = None, sampler: str | None = None, seed: int | None = None, progress: bool | None = None) -> Image.Image:
        """File bytes -> PIL RGB image of the original size, decoded with the stored settings
        (any of steps, cfg, sampler, seed given here overrides the stored value)."""
        t0 = time.perf_counter()
        idx, H, W, grid, settings = self.parse(data, format)
        settings = settings.override(steps, cfg, sampler, seed)
        out = Image.fromarray(self.decode(idx, H, W, settings, grid, progress), "RGB")
        self.last_timing.decode_s = time.perf_counter() - t0
        return out

    @classmethod
    def describe_settings(cls, settings: bytes) -> dict[str, Any]:
        """The stored decode settings: steps, cfg, sampler, seed."""
        st = DecodeSettings.from_bytes(settings)
        return {"steps": st.steps, "cfg": st.cfg, "sampler": st.sampler, "seed": st.seed}

    def settings_of(self, data: bytes) -> DecodeSettings:
        """The decode settings stored in a .cod file (defaults when it has none)."""
        f = bs.read_cod(data)
        return DecodeSettings.from_bytes(f.header.settings) if f.header.settings else self.default_settings


__all__ = ["CoDCodec", "DecodeSettings", "official_uint8", "bf16_round"]
