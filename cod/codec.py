"""The codec layer: what every codec shares (:class:`IndexCodec`), and the CoD-Lite codec.

    codec = cod.load("codlite-0.0312", weights="model.safetensors")   # cod.families
    data = codec.compress(image)        # bytes of a .cod file (header + CRC + indices)
    image = codec.decompress(data)      # PIL.Image, original size

Any image size works: the image is padded to the model's multiple (lcm(ds, 16)) and the
decoded image cropped back; the original size travels in the header. Loading (weights,
families, the installed models) is cod.families, one layer up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from cod import bitstream as bs
from cod import chroma as chroma_info
from cod.entropy import IndexPrior
from cod.errors import BitstreamError, ModelMismatchError, UsageError
from cod.image_io import as_rgb_array
from cod.inference import FaithfulCoDLite, FastCoDLite, PrecisionPlan, resolve_precision
from cod.limits import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, IMAGE_BYTES_PER_PIXEL, MEMORY_CONSTANT, SCRATCH_FACTOR, check_memory, check_pixels
from cod.lite_pipeline import decode_indices, encode_image
from cod.models.lite import CoDLite
from cod.nn.determinism import thread_independent_method
from cod.nn.memory import meta_twin, peak_bytes
from cod.tiling import DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET
from cod.zoo import DEVICES, FAMILY_CODES, FORMATS, PAD_MODES, nominal_bpp, pad_multiple


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The one device rule: ``auto`` (or None) is CUDA when available, else the CPU; asking for
    CUDA without a GPU is a one-line error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} asked for, but no CUDA GPU is available")
    return dev


class IndexFile(NamedTuple):
    """A file checked against a model (:meth:`IndexCodec.read_file`)."""

    indices: np.ndarray  # (h*w,) int64
    height: int  # original image size
    width: int
    grid: tuple[int, int]  # index grid (h, w)
    settings: bytes  # the header's decode-settings field
    diffc: bytes | None = None  # .cod v3: the DiffC payload (cod.diffc)
    chroma: bytes | None = None  # .cod v4: the chroma side information (cod.chroma)


@dataclass
class Timing:
    encode_s: float = 0.0
    decode_s: float = 0.0


class IndexCodec:
    """What every codec of this package shares: a model with a VQ codebook whose indices,
    fixed-length packed, go into a .cod container; images padded to ``multiple`` and cropped.
    Subclasses define ``model``, ``config`` (its ``family`` a key of cod.zoo.FAMILY_CODES)
    and ``ds``; cod.families builds them with ``cls(model, config, device, **options)``."""

    model: Any
    config: dict[str, Any]
    # official files whose sides are not multiples of the padding multiple: CoD-Lite decodes
    # the floor(H/ds) grid with a grey remainder (as the original); CoD refuses them.
    official_floor_grid: bool = True
    # the codebook's key in the state dict: its CRC is the model tag of the .cod header
    CODEBOOK_KEY = "condition.quantizer.codebook.weight"
    # whether the family decodes DiffC files (.cod v3: the CoD models)
    diffc_capable: bool = False
    # whether the family decodes files with chroma side information (.cod v4: CoD-Lite)
    chroma_capable: bool = False

    @property
    def name(self) -> str:
        return self.config.get("name", self.family)

    @property
    def family(self) -> str:
        return self.config["family"]

    @property
    def family_code(self) -> int:
        return FAMILY_CODES[self.family]

    @property
    def bits(self) -> int:
        return self.model.codebook_bits

    @property
    def multiple(self) -> int:
        return pad_multiple(self.ds, 16)

    @property
    def nominal_bpp(self) -> float:
        return nominal_bpp(self.ds, self.bits)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return bs.grid_size(height, width, self.ds, self.multiple)

    def __repr__(self) -> str:
        """One line: what the codec is, not its network (``print(codec)``)."""
        fields = {"name": self.name, "family": self.family, "ds": self.ds, "bits": self.bits, "nominal_bpp": round(self.nominal_bpp, 5), "device": str(getattr(self, "device", "cpu"))}
        fields.update(self._repr_extra())
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    def _repr_extra(self) -> dict[str, Any]:
        """Family-specific fields of the repr (CoD: its decode defaults)."""
        return {}

    @classmethod
    def describe_settings(cls, settings: bytes) -> dict[str, Any]:
        """The .cod header's settings field as `cod info` shows it (family specific)."""
        return {"settings": settings.hex()} if settings else {}

    def _tag(self) -> int:
        return bs.model_tag_of(self.model.state_dict()[self.CODEBOOK_KEY].detach().cpu().float().numpy())

    @property
    def entropy_coded(self) -> bool:
        """Whether ``compress`` writes .cod v2 (indices range-coded under the model's prior):
        the model has a prior and ``entropy`` is on."""
        return getattr(self, "prior", None) is not None and getattr(self, "entropy", True)

    def write_file(self, indices: np.ndarray, height: int, width: int, format: str, settings: bytes = b"", height_first: bool = False, diffc: bytes | None = None, chroma: bytes | None = None) -> bytes:
        """Pack indices into our container (original size, settings; v2 with range-coded indices
        when :attr:`entropy_coded`, else v1; v3 with a DiffC payload ``diffc`` after them, v4
        with chroma side information ``chroma`` after them) or the official layout
        (fixed-length indices at the padded size: it has no field for the original size, nor
        for DiffC or chroma)."""
        if format == "official":
            if diffc is not None:
                raise UsageError("the official format has no room for DiffC: use --format cod")
            if chroma is not None:
                raise UsageError("the official format has no room for chroma side information: use --format cod")
            h, w = self.grid(height, width)
            return bs.write_official(h * self.ds, w * self.ds, bs.pack_indices(indices, self.bits), height_first=height_first)
        if format == "cod":
            head = dict(family=self.family_code, ds=self.ds, bits=self.bits, model_tag=self.model_tag, height=height, width=width, settings=settings, diffc=diffc is not None, chroma=chroma is not None)
            if self.entropy_coded:
                h, w = self.grid(height, width)
                coding = self.prior.best_coding
                payload = self.prior.encode(np.asarray(indices).reshape(h, w), coding)
                return bs.write_cod(bs.CodHeader(**head, coding=coding, prior_tag=self.prior.tag), payload, diffc, chroma)
            return bs.write_cod(bs.CodHeader(**head), bs.pack_indices(indices, self.bits), diffc, chroma)
        raise ValueError(f"unknown format {format!r} ({' or '.join(FORMATS)})")

    def read_file(self, data: bytes, format: str = "cod", height_first: bool = False) -> IndexFile:
        """Check a file against this model: indices, original size, index grid, settings bytes
        and, for a DiffC file, its DiffC payload, for a v4 file its chroma side information
        (:class:`IndexFile`).

        ``format="official"`` reads the original code's 4-byte header; it is never guessed,
        since any 4 bytes parse as such a header. Its grid is floor(H/ds) x floor(W/ds), as
        the official decoder computes it."""
        diffc = chroma = None
        if format == "official":
            H, W, payload = bs.read_official(data, height_first=height_first)
            check_pixels(H, W, self.max_pixels)
            h, w = H // self.ds, W // self.ds
            if not self.official_floor_grid and (H % self.multiple or W % self.multiple):
                raise BitstreamError(f"official file of size {H}x{W} cannot be decoded: sides must be multiples of {self.multiple} (the official decoder fails on it too)")
            if h == 0 or w == 0 or (h * self.ds) % 16 or (w * self.ds) % 16:
                raise BitstreamError(f"official file of size {H}x{W} cannot be decoded at ds={self.ds} (the official decoder fails on it too)")
            settings = b""
        elif format == "cod":
            f = bs.read_cod(data)
            bs.check_model(f.header, self.family_code, self.ds, self.bits, self.model_tag, self.name)
            if f.diffc is not None and not self.diffc_capable:
                raise BitstreamError(f"file is DiffC-coded (.cod v3), which {self.name} cannot decode: DiffC files are for CoD models")
            if f.chroma is not None and not self.chroma_capable:
                raise BitstreamError(f"file carries chroma side information (.cod v4), which {self.name} cannot decode: such files are for CoD-Lite models")
            H, W, payload, settings, diffc, chroma = f.header.height, f.header.width, f.payload, f.header.settings, f.diffc, f.chroma
            check_pixels(H, W, self.max_pixels)  # before the grid: sides up to 2**32 - 1
            h, w = self.grid(H, W)
            if f.header.coding:
                self.fit_decode_to_budget(H, W, (h, w))
                return IndexFile(self._decode_entropy(f.header, payload, h, w), H, W, (h, w), settings, diffc, chroma)
        else:
            raise ValueError(f"unknown format {format!r} ({' or '.join(FORMATS)})")
        need = bs.packed_size(h * w, self.bits)
        if len(payload) != need:
            raise BitstreamError(f"corrupt file: payload is {len(payload)} bytes, a {H}x{W} image at ds={self.ds} needs {need}")
        self.fit_decode_to_budget(H, W, (h, w))
        return IndexFile(bs.unpack_indices(payload, h * w, self.bits), H, W, (h, w), settings, diffc, chroma)

    # ---------------------------------------------------------- limits (cod.limits)
    # The pixel limit and the memory budget, checked from the header before any index is
    # unpacked; the codecs take them as ``max_pixels`` and ``max_memory`` (None: no limit).
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_memory: int | None = DEFAULT_MAX_MEMORY

    def fit_decode_to_budget(self, height: int, width: int, grid: tuple[int, int]) -> None:
        """THE memory hook of decoding, called once the header is read and nothing allocated.

        A codec that decodes whole images refuses (LimitError) a decode whose estimated working
        memory (:meth:`decode_memory`) is above ``max_memory``. A codec that can decode in
        tiles overrides this to size its tiles from ``max_memory`` instead, and refuses only
        when even the smallest tiles and the image buffers do not fit."""
        if self.max_memory is not None:
            check_memory(self.decode_memory(height, width, grid, self.max_memory), self.max_memory, width, height)

    def decode_memory(self, height: int, width: int, grid: tuple[int, int], budget: int | None = None) -> int:
        """Estimated working memory (bytes) of decoding a ``width`` x ``height`` image on index
        ``grid``: the traced tensor peak of :meth:`_decode_trace` (cod.nn.memory) times
        cod.limits.SCRATCH_FACTOR, plus MEMORY_CONSTANT and the image buffers
        (IMAGE_BYTES_PER_PIXEL a pixel). With a ``budget``, an upper bound may answer when it
        is below the budget: the bytes per pixel of a small decode (they only fall with the
        size), before any trace of the full size on the meta device (which is abandoned once it
        passes the budget: the answer is then some value above the budget)."""
        image = MEMORY_CONSTANT + IMAGE_BYTES_PER_PIXEL * height * width
        pixels = grid[0] * grid[1] * self.ds * self.ds
        if budget is not None:
            bound = int(SCRATCH_FACTOR * self._bytes_per_pixel_bound() * pixels) + image
            if bound <= budget:
                return bound
        if budget is not None and image > budget:
            return image  # the buffers alone do not fit: no trace needed
        stop = None if budget is None else int((budget - image) / SCRATCH_FACTOR)
        twins = self.__dict__.setdefault("_meta_twins", {})
        return int(SCRATCH_FACTOR * peak_bytes(lambda: self._decode_trace(grid, twins, "meta"), stop)) + image

    def _bytes_per_pixel_bound(self) -> float:
        """Traced bytes per pixel of decoding a small image (about 128 x 128), measured once."""
        if getattr(self, "_bpp_bound", None) is None:
            side = max(128, self.multiple)
            grid = self.grid(side, side)
            self._bpp_bound = peak_bytes(lambda: self._decode_trace(grid, None, self.device)) / (grid[0] * grid[1] * self.ds * self.ds)
        return self._bpp_bound

    def _decode_trace(self, grid: tuple[int, int], twins: dict | None, device) -> Any:
        """The tensor work of decoding an index ``grid`` (one sampling step for multi-step
        codecs), with the codec's networks (``twins`` None) or their meta twins (cached in
        ``twins``) on ``device``: what :meth:`decode_memory` measures."""
        raise NotImplementedError

    @staticmethod
    def _traced(module: torch.nn.Module, twins: dict | None) -> torch.nn.Module:
        """``module`` itself, or its meta twin (made once, kept in ``twins``)."""
        if twins is None:
            return module
        if id(module) not in twins:
            twins[id(module)] = meta_twin(module)
        return twins[id(module)]

    def _decode_entropy(self, header: bs.CodHeader, payload: bytes, h: int, w: int) -> np.ndarray:
        """Indices of a v2 file: its prior must be this model's; the payload is bounded by the
        most a symbol can cost (24 bits) before any decoding."""
        prior = getattr(self, "prior", None)
        if prior is None:
            raise ModelMismatchError(f"file is entropy-coded (.cod v2, prior tag {header.prior_tag:04x}), but {self.name} has no index prior: use the weights that wrote it (`cod fit-prior` adds a prior)")
        if header.prior_tag != prior.tag:
            raise ModelMismatchError(f"file was coded with another index prior (tag {header.prior_tag:04x}; {self.name} has {prior.tag:04x})")
        if len(payload) > 3 * h * w + 8:
            raise BitstreamError(f"corrupt file: entropy-coded payload of {len(payload)} bytes is larger than {h * w} indices can need")
        return prior.decode(payload, h, w, header.coding).ravel()


@dataclass(repr=False)  # IndexCodec's one-line repr, not the network's
class CoDLiteCodec(IndexCodec):
    """A loaded CoD-Lite one-step codec ready to compress and decompress."""

    chroma_capable = True

    model: CoDLite
    config: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pad_mode: str = "replicate"
    prior: IndexPrior | None = None  # the weights' index prior (cod.entropy); None: v1 files only
    entropy: bool = True  # write .cod v2 when there is a prior
    chroma: bool | int = True  # chroma side information (.cod v4): True: the config's chroma_block; an int: that block side; False/0: none
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # largest image a file may claim (cod.limits)
    max_memory: int | None = DEFAULT_MAX_MEMORY  # working-memory budget of a decode, bytes
    precision: str = "fast"  # fast (chosen at run time), bf16, or fp32 (faithful): cod.inference
    memory_budget: int | None = None  # bytes of activations before tiling; None: from max_memory (activation_budget)
    compile: bool = False  # torch.compile the fast form (CUDA graphs on a GPU): pays off over many same-size images
    last_timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}")
        self.model.eval().requires_grad_(False).to(self.device)
        self.model.set_attention(windowed=True)
        if not self.model.time_folded:
            self.model.fold_time_modulation(0.0)
        if not isinstance(self.chroma, bool) and self.chroma:
            chroma_info.check_block(int(self.chroma))
        self.model_tag = self._tag()
        self._engine: tuple[tuple[PrecisionPlan, bool], FaithfulCoDLite | FastCoDLite] | None = None
        self.plan  # check the precision now

    @property
    def ds(self) -> int:
        return self.model.ds

    @property
    def chroma_block(self) -> int:
        """Block side of the chroma side information ``compress`` writes (cod.chroma): the
        config's ``chroma_block`` (the shipped small models: 64) while ``chroma`` is True, the
        block side ``chroma`` gives when it is an int; 0: none."""
        if isinstance(self.chroma, bool):
            return int(self.config.get("chroma_block", 0)) if self.chroma else 0
        return int(self.chroma)

    @property
    def plan(self) -> PrecisionPlan:
        """What ``precision`` means on this device (cod.inference.resolve_precision)."""
        return resolve_precision(self.precision, self.device)

    @property
    def engine(self) -> FaithfulCoDLite | FastCoDLite:
        """The network in the form ``precision`` asks for (the fast form is built on first use)."""
        plan = self.plan
        key = (plan, self.compile)
        if self._engine is None or self._engine[0] != key:
            self._engine = (key, FaithfulCoDLite(self.model, self.device) if plan.faithful else FastCoDLite(self.model, plan, self.device, self.compile))
        return self._engine[1]

    # ---------------------------------------------------------- memory (cod.limits, cod.tiling)
    def activation_budget(self, height: int, width: int) -> int:
        """Bytes the network's activations may take for a ``width`` x ``height`` image; larger
        work is done in blended tiles (cod.lite_pipeline). ``memory_budget`` when set; else
        3/8 of ``max_memory`` (the default 4 GiB gives 1.5 GiB, which keeps an 8K image
        within 4 GB of peak RSS: docs/speed.md), at most what ``max_memory`` leaves beside the
        image buffers. Raises LimitError when not even the smallest tiles fit."""
        if self.memory_budget is not None:
            return self.memory_budget
        if self.max_memory is None:
            return DEFAULT_MEMORY_BUDGET
        buffers = MEMORY_CONSTANT + IMAGE_BYTES_PER_PIXEL * height * width
        check_memory(buffers + MIN_MEMORY_BUDGET, self.max_memory, width, height)
        return max(MIN_MEMORY_BUDGET, min(self.max_memory * 3 // 8, self.max_memory - buffers))

    def fit_decode_to_budget(self, height: int, width: int, grid: tuple[int, int]) -> None:
        """CoD-Lite decodes in tiles sized from ``max_memory``: refused (LimitError) only when
        the image buffers and the smallest tiles do not fit (:meth:`activation_budget`)."""
        self.activation_budget(height, width)

    # ---------------------------------------------------------- indices
    def encode(self, image) -> tuple[np.ndarray, int, int]:
        """Image -> (indices (h*w,) int64, original height, original width)."""
        arr = as_rgb_array(image)
        return self._encode_array(arr)

    def _encode_array(self, arr: np.ndarray) -> tuple[np.ndarray, int, int]:
        H, W = arr.shape[:2]
        idx = encode_image(self.engine, arr, self.ds, self.multiple, self.pad_mode, self.model.attention_window, self.activation_budget(H, W))
        return idx, H, W

    @thread_independent_method
    @torch.inference_mode()
    def decode(self, indices: np.ndarray, height: int, width: int, grid: tuple[int, int] | None = None) -> np.ndarray:
        """Indices of an image of the given original size -> HxWx3 uint8, the same at any
        torch thread count (cod.nn.determinism).

        ``grid`` overrides the index grid (official files, whose grid is floor(H/ds)); the
        area the grid does not cover is mid-grey, as the official decoder leaves it.
        """
        h, w = grid or self.grid(height, width)
        out = decode_indices(self.engine, indices, (h, w), height, width, self.ds, self.multiple, self.model.attention_window, self.activation_budget(height, width))
        if out.shape[:2] != (height, width):
            full = np.full((height, width, 3), 128, dtype=np.uint8)
            full[: out.shape[0], : out.shape[1]] = out
            out = full
        return out

    def _decode_trace(self, grid: tuple[int, int], twins: dict | None, device) -> torch.Tensor:
        net = self._traced(self.model, twins)
        idx = torch.zeros(1, grid[0] * grid[1], dtype=torch.long, device=device)
        return net.decode_one_step(net.condition.decode(idx, *grid))

    # ---------------------------------------------------------- bytes
    def compress(self, image, format: str = "cod") -> bytes:
        """Image (path, PIL, HxWx3 uint8 array or (3,H,W) tensor) -> file bytes: .cod v4 with
        the chroma side information when :attr:`chroma_block` (cod.chroma), else v2 or v1; the
        official layout carries the indices alone."""
        t0 = time.perf_counter()
        arr = as_rgb_array(image)
        idx, H, W = self._encode_array(arr)
        side = chroma_info.encode(chroma_info.measure(arr, self.chroma_block)) if format == "cod" and self.chroma_block else None
        data = self.write_file(idx, H, W, format, chroma=side)
        self.last_timing.encode_s = time.perf_counter() - t0
        return data

    def parse(self, data: bytes, format: str = "cod") -> tuple[np.ndarray, int, int, tuple[int, int]]:
        """Check a file against this model: (indices, height, width, index grid)."""
        return self.read_file(data, format)[:4]

    def decompress(self, data: bytes, format: str = "cod") -> Image.Image:
        """File bytes -> PIL RGB image of the original size (its colours moved to the file's
        chroma side information, when it has some: cod.chroma)."""
        t0 = time.perf_counter()
        f = self.read_file(data, format)
        side = chroma_info.decode(f.chroma, f.height, f.width) if f.chroma is not None else None
        arr = self.decode(f.indices, f.height, f.width, f.grid)
        if side is not None:
            chroma_info.apply(arr, side, out=arr)
        out = Image.fromarray(arr, "RGB")
        self.last_timing.decode_s = time.perf_counter() - t0
        return out
