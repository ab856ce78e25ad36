"""Classical image codecs as baselines, hit at a target bpp by a search on their quality knob.

Each baseline has ``name``, ``compress(img_uint8, quality) -> bytes`` and
``decompress(bytes) -> HxWx3 uint8``. Backends are maintained Python bindings: Pillow (JPEG,
WebP, AVIF, JPEG 2000), imagecodecs (JPEG XL, libjxl) and pillow-heif (HEVC intra, x265).
Rates are always measured from the real encoded bytes: bpp = 8 * len(data) / (H * W).

``NAME-downK`` (e.g. ``avif-down4``) encodes the image downscaled K times (Lanczos) and
upscales it again on decode, to reach rates below the codec's lowest quality; its 4-byte
size header is part of the bytes and so of the rate.
"""
from __future__ import annotations

import io
import math
import re
import struct
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image

from cod.errors import CodError, UsageError
from cod.eval.schema import BASELINE_NAMES


def bits_per_pixel(data: bytes, height: int, width: int) -> float:
    """Rate of an encoded image from its real byte length."""
    return 8.0 * len(data) / (height * width)


class Baseline(ABC):
    """A classical codec with a monotone quality knob (higher quality = more bytes)."""

    name: str = "baseline"
    quality_range: tuple[float, float] = (0, 100)
    integer_quality: bool = True

    @abstractmethod
    def compress(self, img: np.ndarray, quality: float) -> bytes:
        """HxWx3 uint8 RGB -> encoded bytes at the given quality."""

    @abstractmethod
    def decompress(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> HxWx3 uint8 RGB."""

    def describe(self) -> str:
        """Library, version and settings, for the results' description."""
        return self.name


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class PillowBaseline(Baseline):
    """A codec through a Pillow plugin: ``Image.save(format=..., quality=q, **options)``."""

    def __init__(self, name: str, pil_format: str, feature: str, quality_range: tuple[int, int], **options: Any) -> None:
        from PIL import features

        if not features.check(feature):
            raise CodError(f"{name}: this Pillow ({Image.__version__}) was built without {feature} support")
        self.name = name
        self.pil_format = pil_format
        self.feature = feature
        self.quality_range = quality_range
        self.options = options

    def compress(self, img: np.ndarray, quality: float) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format=self.pil_format, quality=int(quality), **self.options)
        return buf.getvalue()

    def decompress(self, data: bytes) -> np.ndarray:
        return _pil_decode(data)

    def describe(self) -> str:
        from PIL import features

        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        if self.feature == "jpg" and features.check_feature("libjpeg_turbo"):
            lib = f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
        else:
            lib = f"lib{self.feature} {features.version(self.feature)}"
        return f"{self.pil_format} via Pillow {Image.__version__} ({lib}){', ' + opts if opts else ''}"


class Jpeg2000Baseline(Baseline):
    """JPEG 2000 (OpenJPEG through Pillow): 9/7 wavelet, colour transform, raw codestream (no JP2 boxes).

    The knob is OpenJPEG's own rate target in bpp.
    """

    name = "jpeg2000"
    quality_range = (0.002, 24.0)
    integer_quality = False

    def __init__(self) -> None:
        from PIL import features

        if not features.check("jpg_2000"):
            raise CodError(f"jpeg2000: this Pillow ({Image.__version__}) was built without OpenJPEG")

    def compress(self, img: np.ndarray, quality: float) -> bytes:
        buf = io.BytesIO()
        ratio = 24.0 / float(quality)  # 24 bits per RGB pixel uncompressed
        Image.fromarray(img, "RGB").save(
            buf, format="JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True, mct=1, no_jp2=True
        )
        return buf.getvalue()

    def decompress(self, data: bytes) -> np.ndarray:
        return _pil_decode(data)

    def describe(self) -> str:
        from PIL import features

        return f"JPEG 2000 via Pillow {Image.__version__} (OpenJPEG {features.version('jpg_2000')}), irreversible 9/7 + ICT, J2K codestream, rate control"


class JpegXLBaseline(Baseline):
    """JPEG XL (libjxl through imagecodecs); the knob is libjxl's quality 0..100 (distance 25..0)."""

    name = "jpegxl"
    quality_range = (0, 100)

    def __init__(self, effort: int = 7) -> None:
        try:
            import imagecodecs
        except ImportError:
            raise CodError("jpegxl needs the imagecodecs package (pip install imagecodecs)") from None
        if not imagecodecs.JPEGXL.available:
            raise CodError("jpegxl: this imagecodecs build has no JPEG XL codec")
        self._ic = imagecodecs
        self.effort = effort

    def compress(self, img: np.ndarray, quality: float) -> bytes:
        return bytes(self._ic.jpegxl_encode(np.ascontiguousarray(img), level=int(quality), effort=self.effort))

    def decompress(self, data: bytes) -> np.ndarray:
        out = np.asarray(self._ic.jpegxl_decode(data))
        if out.ndim == 2:
            out = np.repeat(out[:, :, None], 3, axis=2)
        return np.ascontiguousarray(out[:, :, :3], dtype=np.uint8)

    def describe(self) -> str:
        return f"JPEG XL via imagecodecs {self._ic.__version__} ({self._ic.jpegxl_version()}), effort {self.effort}"


class HevcBaseline(Baseline):
    """HEVC intra in HEIF (x265 encoder, libde265 decoder, through pillow-heif), 4:2:0."""

    name = "hevc"
    quality_range = (0, 100)

    def __init__(self) -> None:
        try:
            import pillow_heif
        except ImportError:
            raise CodError("hevc needs the pillow-heif package (pip install pillow-heif)") from None
        info = pillow_heif.libheif_info()
        if not info.get("HEIF"):
            raise CodError("hevc: this pillow-heif build has no HEVC encoder")
        self._ph = pillow_heif
        self._encoder = str(info["HEIF"])

    def compress(self, img: np.ndarray, quality: float) -> bytes:
        buf = io.BytesIO()
        self._ph.from_pillow(Image.fromarray(img, "RGB")).save(buf, quality=int(quality))
        return buf.getvalue()

    def decompress(self, data: bytes) -> np.ndarray:
        heif = self._ph.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        return np.asarray(heif.to_pillow().convert("RGB"), dtype=np.uint8).copy()

    def describe(self) -> str:
        return f"HEVC intra (HEIF) via pillow-heif {self._ph.__version__} ({self._encoder})"


class DownscaledBaseline(Baseline):
    """Encode the image downscaled ``factor`` times, upscale it back on decode (Lanczos both ways).

    The bytes start with the original height and width (2 x uint16, big endian), counted in the rate.
    """

    def __init__(self, inner: Baseline, factor: int) -> None:
        if factor < 2:
            raise UsageError(f"downscale factor must be at least 2, got {factor}")
        self.inner = inner
        self.factor = factor
        self.name = f"{inner.name}-down{factor}"
        self.quality_range = inner.quality_range
        self.integer_quality = inner.integer_quality

    def compress(self, img: np.ndarray, quality: float) -> bytes:
        h, w = img.shape[:2]
        if h > 65535 or w > 65535:
            raise CodError(f"{self.name}: image {w}x{h} too large for the size header")
        size = (max(1, math.ceil(w / self.factor)), max(1, math.ceil(h / self.factor)))
        small = np.asarray(Image.fromarray(img, "RGB").resize(size, Image.Resampling.LANCZOS))
        return struct.pack(">HH", h, w) + self.inner.compress(small, quality)

    def decompress(self, data: bytes) -> np.ndarray:
        h, w = struct.unpack(">HH", data[:4])
        small = self.inner.decompress(data[4:])
        return np.asarray(Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)

    def describe(self) -> str:
        return f"{self.inner.describe()}; encoded at 1/{self.factor} size, Lanczos down/up-scaling"


_FACTORIES: dict[str, Callable[[], Baseline]] = {
    "jpeg": lambda: PillowBaseline("jpeg", "JPEG", "jpg", (1, 100), optimize=True, subsampling="4:2:0"),
    "webp": lambda: PillowBaseline("webp", "WEBP", "webp", (0, 100), method=6),
    "avif": lambda: PillowBaseline("avif", "AVIF", "avif", (0, 100), speed=6, subsampling="4:2:0"),
    "jpegxl": JpegXLBaseline,
    "jpeg2000": Jpeg2000Baseline,
    "hevc": HevcBaseline,
}


def is_baseline_name(name: str) -> bool:
    """Whether ``name`` names a classical baseline (``jpeg``, ``avif-down4``, ...)."""
    m = re.fullmatch(r"([a-z0-9]+)(?:-down(\d+))?", name)
    return bool(m) and m.group(1) in _FACTORIES


def get_baseline(name: str) -> Baseline:
    """A baseline by name (see :data:`BASELINE_NAMES`, optionally ``-downK``); CodError if unknown or unavailable."""
    m = re.fullmatch(r"([a-z0-9]+)(?:-down(\d+))?", name)
    if not m or m.group(1) not in _FACTORIES:
        raise UsageError(f"unknown baseline codec {name!r}; choose from {', '.join(BASELINE_NAMES)} (optionally NAME-downK)")
    codec = _FACTORIES[m.group(1)]()
    return DownscaledBaseline(codec, int(m.group(2))) if m.group(2) else codec


def available_baselines() -> list[str]:
    """The baseline names whose backend is installed here."""
    out = []
    for name in BASELINE_NAMES:
        try:
            get_baseline(name)
        except CodError:
            continue
        out.append(name)
    return out


@dataclass
class Encoded:
    """One image encoded by a baseline at a chosen quality."""

    quality: float
    data: bytes
    bpp: float
    encode_s: float
    target_reached: bool


EncodeCache = dict  # quality -> (bytes, encode seconds), per image


def encode_at_bpp(codec: Baseline, img: np.ndarray, target_bpp: float, cache: EncodeCache | None = None, float_steps: int = 24) -> Encoded:
    """Encode ``img`` at the highest rate not above ``target_bpp`` (closest from below).

    Bisection on the quality knob; the answer is the best of every quality tried, so a codec
    whose size is not strictly monotone in quality is still never above the target. When even
    the lowest quality is above the target, that lowest-quality encoding is returned with
    ``target_reached=False``. ``cache`` (one dict per image) is shared across targets.
    """
    if target_bpp <= 0:
        raise UsageError(f"target bpp must be positive, got {target_bpp}")
    h, w = img.shape[:2]
    cache = {} if cache is None else cache

    def rate(q: float) -> float:
        if q not in cache:
            t0 = time.perf_counter()
            data = codec.compress(img, q)
            cache[q] = (data, time.perf_counter() - t0)
        return bits_per_pixel(cache[q][0], h, w)

    lo, hi = codec.quality_range
    if rate(lo) > target_bpp:
        data, secs = cache[lo]
        return Encoded(lo, data, bits_per_pixel(data, h, w), secs, False)
    if rate(hi) > target_bpp:
        if codec.integer_quality:
            lo, hi = int(lo), int(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if rate(mid) <= target_bpp else (lo, mid)
        else:
            geometric = lo > 0
            for _ in range(float_steps):
                if hi - lo <= 1e-4 * hi:
                    break
                mid = math.sqrt(lo * hi) if geometric else (lo + hi) / 2
                lo, hi = (mid, hi) if rate(mid) <= target_bpp else (lo, mid)
    below = [(bits_per_pixel(d, h, w), q) for q, (d, _) in cache.items() if bits_per_pixel(d, h, w) <= target_bpp]
    best_bpp, best_q = max(below)
    data, secs = cache[best_q]
    return Encoded(best_q, data, best_bpp, secs, True)


def lowest_bpp(codec: Baseline, img: np.ndarray) -> float:
    """The lowest rate the codec reaches on this image (its lowest quality setting)."""
    h, w = img.shape[:2]
    return bits_per_pixel(codec.compress(img, codec.quality_range[0]), h, w)


class FixedQuality:
    """A baseline pinned to one quality: the fixed-rate contract ``compress(img) -> bytes``."""

    def __init__(self, baseline: Baseline, quality: float) -> None:
        lo, hi = baseline.quality_range
        if not lo <= quality <= hi:
            raise CodError(f"{baseline.name}: quality {quality:g} outside [{lo:g}, {hi:g}]")
        self.baseline = baseline
        self.quality = quality
        self.name = f"{baseline.name}-q{quality:g}"

    def compress(self, img: np.ndarray) -> bytes:
        return self.baseline.compress(np.asarray(img), self.quality)

    def decompress(self, data: bytes) -> np.ndarray:
        return self.baseline.decompress(data)

    def describe(self) -> str:
        return f"{self.baseline.describe()}, quality {self.quality:g}"
