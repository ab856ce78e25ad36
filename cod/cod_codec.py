"""The CoD codec: image -> .cod bytes -> image through multi-step diffusion decoding.

    codec = cod.load("cod-pixel-0.0039", weights="cod-pixel-0.0039.safetensors")   # cod.families
    data = codec.compress(image)              # .cod bytes; decode settings inside
    image = codec.decompress(data)            # PIL.Image, original size, bit-identical every time
    image = codec.decompress(data, steps=50)  # override any stored setting
    data = codec.compress(image, diffc=True, bpp=0.1)   # DiffC (.cod v3): any rate above the indices'

Same contract as :class:`cod.codec.CoDLiteCodec`: indices <-> bytes, condition maps,
sampling with the decode settings of :mod:`cod.diffusion.settings`, VAE, uint8.

Decoding follows the official decompress (CoD spec §9.1): x at t=0 is float32 noise from a
CPU generator seeded with ``seed``; the CFG null condition is the codec's output for an
all -1 image of the (padded) image size, computed per size (not cached once, bug B3; and
built at the image shape for latent models, bug B2); the batch [null; cond] goes through
the sampler; latent samples go through the SD VAE. Everything runs in float32.

DiffC files (docs/diffc.md, spec §11) carry the indices and a DiffC payload; they decode
through the coded reverse chain and its DDIM finish (:mod:`cod.diffc`) instead of the sampler.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from cod import bitstream as bs
from cod.codec import IndexCodec, IndexFile, Timing
from cod.diffc import DiffCConfig, DiffCPayload, DiffCResult, payload_bits_for_bpp
from cod.diffc import decode as diffc_decode
from cod.diffc import encode as diffc_encode
from cod.diffusion.samplers import StepInfo, flow_timesteps, get_sampler, guided, initial_noise
from cod.diffusion.settings import DecodeSettings
from cod.entropy import IndexPrior
from cod.errors import CodError, UsageError
from cod.image_io import as_rgb_array
from cod.limits import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, DEFAULT_MAX_STEPS, check_steps
from cod.models.cod_dit import CoDDiTBase
from cod.nn.determinism import thread_independent_method
from cod.tensor_io import PAD_MODES, image_to_tensor, pad_image, tensor_to_uint8


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """Round to bfloat16 and back, as the official conditioner does with the [0,1] image."""
    return x.to(torch.bfloat16).to(x.dtype)


def official_uint8(x: torch.Tensor) -> torch.Tensor:
    """The official saved pixels: cast to bf16, then clip((x+1)*127.5+0.5) computed in bf16
    and truncated (so values 128..254 are always even). Returns uint8 (B,3,H,W)."""
    return ((x.to(torch.bfloat16) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)


@dataclass(repr=False)  # IndexCodec's one-line repr, not the network's
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
    last_diffc: DiffCResult | None = None  # what the last DiffC compress coded (steps, bits, reconstruction)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # largest image a file may claim (cod.limits)
    max_memory: int | None = DEFAULT_MAX_MEMORY  # working-memory budget of a decode, bytes
    max_steps: int | None = DEFAULT_MAX_STEPS  # network evaluations a file may ask for

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
    diffc_capable = True

    # ---------------------------------------------------------- properties
    @property
    def latent(self) -> bool:
        return self.family == "cod-latent"

    @property
    def ds(self) -> int:
        """Image pixels per index along a side (the header's ds field; ds/2 for stage-1 models)."""
        return self.model.index_stride

    def _repr_extra(self) -> dict[str, Any]:
        s = self.default_settings
        return {"steps": s.steps, "cfg": s.cfg, "sampler": s.sampler, "seed": s.seed}

    @property
    def default_settings(self) -> DecodeSettings:
        """The model's decode defaults (its config's ``decode``, written by cod.zoo)."""
        return DecodeSettings(**self.config["decode"])

    # ---------------------------------------------------------- indices
    def _image01(self, image) -> tuple[torch.Tensor, int, int]:
        """The padded image in [0, 1] (exact u8/255) and the original size."""
        arr = as_rgb_array(image)
        H, W = arr.shape[:2]
        return pad_image(image_to_tensor(arr, self.device), self.multiple, self.pad_mode), H, W

    @torch.inference_mode()
    def _indices(self, x01: torch.Tensor) -> np.ndarray:
        return self.model.condition.encode(bf16_round(x01))[0].cpu().numpy()

    @torch.inference_mode()
    def encode(self, image) -> tuple[np.ndarray, int, int]:
        """Image -> (indices (h*w,) int64, original height, original width)."""
        x, H, W = self._image01(image)
        return self._indices(x), H, W

    NULL_CACHE_SIZES = 4  # null conditions kept (the latest sizes): memory stays flat over a batch of many sizes

    @torch.inference_mode()
    def null_condition(self, height: int, width: int) -> torch.Tensor:
        """Condition map of the all -1 image of this (padded) size, cached for the latest sizes."""
        key = (height, width)
        if key not in self._null_cache:
            neg = torch.full((1, 3, height, width), -1.0, device=self.device)
            while len(self._null_cache) >= self.NULL_CACHE_SIZES:
                del self._null_cache[next(iter(self._null_cache))]
            self._null_cache[key] = self.model.condition(neg)[0]
        return self._null_cache[key]

    def _decode_trace(self, grid: tuple[int, int], twins: dict | None, device) -> torch.Tensor:
        """Condition map, null condition (the encoder at full size), one guided step on the
        batch [null; cond], the VAE for latent models: the peak of any sampler or DiffC step."""
        net = self._traced(self.model, twins)
        cond = net.condition.decode(torch.zeros(1, grid[0] * grid[1], dtype=torch.long, device=device), *grid)
        hp, wp = cond.shape[-2] * net.pixels_per_token, cond.shape[-1] * net.pixels_per_token
        null = net.condition(torch.full((1, 3, hp, wp), -1.0, device=device))[0]
        x = torch.zeros(self.noise_shape(hp, wp), device=device)
        x = x + guided(lambda xx, t, c: net(xx, t, cond=c)[0], cond, null, 2.0)(x, torch.tensor(0.5))
        return self._traced(self._get_vae(), twins).decode(x) if self.latent else x

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

    @thread_independent_method
    @torch.inference_mode()
    def decode(self, indices: np.ndarray, height: int, width: int, settings: DecodeSettings | None = None, grid: tuple[int, int] | None = None, progress: bool | None = None) -> np.ndarray:
        """Indices of an image of the given original size -> HxWx3 uint8, the same at any
        torch thread count (cod.nn.determinism)."""
        settings = settings or self.default_settings
        if self.latent:
            self._get_vae()  # fail before sampling when the VAE is missing
        h, w = grid or self.grid(height, width)
        cond = self.condition_from_indices(indices, (h, w))
        hp, wp = cond.shape[-2] * self.model.pixels_per_token, cond.shape[-1] * self.model.pixels_per_token
        x = self.to_image(self.sample(cond, hp, wp, settings, progress))
        return tensor_to_uint8(x[:, :, :height, :width])

    # ---------------------------------------------------------- DiffC
    def _show(self, progress: bool | None) -> bool:
        return self.progress if progress is None else progress

    def diffc_options(
        self, diffc: bool | DiffCConfig = True, bpp: float | None = None, diffc_step: int | None = None, diffc_chunk: int | None = None,
        cfg: float | None = None, seed: int | None = None, steps: int | None = None, sampler: str | None = None, format: str = "cod",
    ) -> DiffCConfig:
        """Check the DiffC options of :meth:`compress` (one-line UsageErrors) and return the
        DiffC settings: ``diffc`` itself when a DiffCConfig, else the original's for this family
        (DiffCConfig.for_family), with ``diffc_chunk`` (max_chunk_size), ``cfg`` (the finish's
        guidance) and ``seed`` (the shared randomness) applied."""
        if not diffc:
            raise UsageError("bpp, diffc_step and diffc_chunk apply to DiffC (diffc=True, --diffc)")
        if format != "cod":
            raise UsageError("the official format has no room for DiffC: use the .cod container (format cod)")
        if steps is not None or sampler is not None:
            raise UsageError("steps and sampler (--steps, --sampler) set CoD's sampler; a DiffC file decodes through its coded chain (cfg and seed apply)")
        if (bpp is None) == (diffc_step is None):
            raise UsageError("DiffC needs one rate: bpp (--bpp, of the whole file) or diffc_step (--diffc-step, coded steps)")
        config = diffc if isinstance(diffc, DiffCConfig) else DiffCConfig.for_family(self.family)
        over = {k: v for k, v in dict(max_chunk_size=diffc_chunk, decoding_guidance=cfg, seed=seed).items() if v is not None}
        try:
            config = replace(config, **over)
        except ValueError as exc:
            raise UsageError(f"DiffC: {exc}") from None
        n_sched = len(config.encoding_timesteps)
        if diffc_step is not None and not 0 <= diffc_step <= n_sched:
            raise UsageError(f"diffc_step (--diffc-step) must be in 0..{n_sched}, the steps of the {self.family} DiffC schedule; got {diffc_step}")
        if bpp is not None and not (math.isfinite(bpp) and bpp > 0):
            raise UsageError(f"bpp (--bpp) must be a positive number, got {bpp}")
        return config

    @torch.inference_mode()
    def _encode_diffc(self, image, config: DiffCConfig, bpp: float | None, n_steps: int | None, progress: bool | None) -> tuple[np.ndarray, int, int, DiffCResult]:
        """Image -> (indices, height, width, DiffC result) at a target rate ``bpp`` of the
        whole file (header included) or for ``n_steps`` coded steps (docs/diffc.md). The
        chain codes the padded image in [-1, 1], or for latent models the VAE's posterior mean
        of it, given the condition decoded from the indices (what the decoder has)."""
        vae = self._get_vae() if self.latent else None  # the encoder needs the VAE too: fail before any work
        x01, H, W = self._image01(image)
        idx = self._indices(x01)
        cond = self.condition_from_indices(idx, self.grid(H, W))
        hp, wp = x01.shape[-2:]
        target = vae.encode(x01, sample=False) if self.latent else x01 * 2 - 1
        kw = dict(uncond=self.null_condition(hp, wp), config=config, progress=self._show(progress))
        if n_steps is not None:
            return idx, H, W, diffc_encode(self.model, target, cond, n_steps=n_steps, **kw)
        other = len(self.write_file(idx, H, W, "cod", diffc=b""))  # header and indices
        budget = payload_bits_for_bpp(bpp, H, W, other)
        least = other + DiffCPayload.overhead_bytes(config)
        if budget < 8 * DiffCPayload.overhead_bytes(config):
            raise CodError(f"bpp {bpp:g} is below the least a DiffC file of this {W}x{H} image takes: {8 * least / (H * W):.4f} bpp (header, CoD indices, DiffC settings)")
        res = diffc_encode(self.model, target, cond, target_bits=budget, **kw)
        n_sched = len(config.encoding_timesteps)
        if res.n_steps == n_sched and 8 * len(res.payload) < 0.9 * budget:
            warnings.warn(f"the whole DiffC chain ({n_sched} steps) reaches only {8 * (other + len(res.payload)) / (H * W):.4f} bpp, below the {bpp:g} asked for")
        return idx, H, W, res

    @thread_independent_method
    @torch.inference_mode()
    def decode_diffc(self, indices: np.ndarray, height: int, width: int, payload: bytes, progress: bool | None = None) -> np.ndarray:
        """Indices and a DiffC payload of an image of the given original size -> HxWx3 uint8:
        the coded chain, then the DDIM finish, the VAE for latent models (docs/diffc.md)."""
        if self.latent:
            self._get_vae()  # fail before sampling when the VAE is missing
        h, w = self.grid(height, width)
        cond = self.condition_from_indices(indices, (h, w))
        hp, wp = h * self.ds, w * self.ds
        x = diffc_decode(self.model, payload, cond, self.noise_shape(hp, wp), self.null_condition(hp, wp), progress=self._show(progress))
        return self.diffc_image(x, height, width)

    @torch.inference_mode()
    def diffc_image(self, reconstruction: torch.Tensor, height: int, width: int) -> np.ndarray:
        """A DiffC reconstruction (the target's space) -> HxWx3 uint8 of the original size;
        ``diffc_image(codec.last_diffc.reconstruction, H, W)`` is what the file decodes to."""
        return tensor_to_uint8(self.to_image(reconstruction)[:, :, :height, :width])

    # ---------------------------------------------------------- bytes
    def compress(
        self, image, format: str = "cod", steps: int | None = None, cfg: float | None = None, sampler: str | None = None, seed: int | None = None,
        diffc: bool | DiffCConfig = False, bpp: float | None = None, diffc_step: int | None = None, diffc_chunk: int | None = None, progress: bool | None = None,
    ) -> bytes:
        """Image (path, PIL, HxWx3 uint8 array or (3,H,W) tensor) -> file bytes. The decode
        settings (model defaults unless given) are stored in the header; the official
        format has no room for them.

        DiffC (``diffc=True``, or a DiffCConfig; docs/diffc.md): a .cod v3 file whose rate is
        ``bpp`` for the whole file (header included) or ``diffc_step`` coded steps;
        ``diffc_chunk`` is max_chunk_size (default 8); ``cfg`` and ``seed`` set the DiffC
        finish's guidance and the shared randomness (``steps`` and ``sampler`` do not apply).
        :attr:`last_diffc` then holds what was coded."""
        t0 = time.perf_counter()
        if diffc or any(v is not None for v in (bpp, diffc_step, diffc_chunk)):
            config = self.diffc_options(diffc, bpp, diffc_step, diffc_chunk, cfg, seed, steps, sampler, format)
            idx, H, W, self.last_diffc = self._encode_diffc(image, config, bpp, diffc_step, progress)
            data = self.write_file(idx, H, W, format, diffc=self.last_diffc.payload)
        else:
            settings = self.default_settings.override(steps, cfg, sampler, seed)
            idx, H, W = self.encode(image)
            data = self.write_file(idx, H, W, format, settings.to_bytes(), height_first=True)
        self.last_timing.encode_s = time.perf_counter() - t0
        return data

    def parse(self, data: bytes, format: str = "cod") -> tuple[np.ndarray, int, int, tuple[int, int], DecodeSettings]:
        """Check a file against this model: (indices, height, width, index grid, settings).

        ``format="official"`` reads the CoD CLI's 4-byte header as (height, width) (the
        official reader swaps them, bug B1) and uses the model's default settings."""
        f = self.read_file(data, format, height_first=True)
        return f.indices, f.height, f.width, f.grid, self._settings(f)

    def _settings(self, f: IndexFile) -> DecodeSettings:
        return DecodeSettings.from_bytes(f.settings) if f.settings else self.default_settings

    def decompress(self, data: bytes, format: str = "cod", steps: int | None = None, cfg: float | None = None, sampler: str | None = None, seed: int | None = None, progress: bool | None = None) -> Image.Image:
        """File bytes -> PIL RGB image of the original size, decoded with the stored settings
        (any of steps, cfg, sampler, seed given here overrides the stored value). A DiffC
        file decodes with what it carries; overrides are refused."""
        t0 = time.perf_counter()
        f = self.read_file(data, format, height_first=True)
        if f.diffc is not None:
            given = [k for k, v in dict(steps=steps, cfg=cfg, sampler=sampler, seed=seed).items() if v is not None]
            if given:
                raise CodError(f"{', '.join(given)}: a DiffC file decodes with the settings it carries; these override CoD's sampler")
            p = DiffCPayload.from_bytes(f.diffc)
            check_steps(p.n_steps + len(p.config.finishing_timesteps), self.max_steps, "this DiffC file asks for")
            arr = self.decode_diffc(f.indices, f.height, f.width, f.diffc, progress)
        else:
            settings = self._settings(f).override(steps, cfg, sampler, seed)
            check_steps(settings.steps, self.max_steps, "this decode asks for")
            arr = self.decode(f.indices, f.height, f.width, settings, f.grid, progress)
        out = Image.fromarray(arr, "RGB")
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
