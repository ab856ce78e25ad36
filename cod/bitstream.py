"""The .cod container (versions 1 and 2) and the official 4-byte layout; index packing.

Container v1 (all integers big-endian; docs/format.md is the normative description)::

    offset  size  field
    0       3     magic b"CoD"
    3       1     format version (1)
    4       1     family (1 CoD-Lite, 2 CoD pixel, 3 CoD latent)
    5       1     ds, pixels per index along a side
    6       1     codebook bits per index
    7       2     model tag: low 16 bits of CRC-32 of the model's codebook
    9       4     original image height
    13      4     original image width
    17      1     n, length of the decode-settings field
    18      n     decode settings (family specific; empty for CoD-Lite)
    18+n    4     payload length in bytes
    22+n    4     CRC-32 of bytes [0, 22+n) followed by the payload
    26+n    ...   payload: fixed-length MSB-first packed indices (as in the official files)

Version 2 (entropy-coded indices, cod.entropy) inserts three bytes before the payload length:
the index coding (1 static prior, 2 context prior) and the 16-bit tag of the model's prior;
its payload is the range coder's output.

Version 3 (DiffC, cod.diffc; CoD models only) is version 2's layout with index coding 0
allowed (fixed-length indices, prior tag 0) and a 4-byte index length before the payload
length; its payload is the indices (that many bytes) followed by the DiffC payload. One
CRC-32 covers everything.

Version 4 (chroma side information, cod.chroma; CoD-Lite models) is version 3's layout, the
payload being the indices followed by the chroma side information instead of DiffC's.

The official layout is 2-byte little-endian width and height followed by the same payload
(CoD-Lite writes width first; the CoD parent model's CLI swaps them, spec §10).
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cod.errors import BitstreamError, ModelMismatchError
from cod.zoo import FAMILY_NAMES

if TYPE_CHECKING:
    import numpy as np  # imported where used: reading a header (`cod info`) needs no numpy

MAGIC = b"CoD"
VERSION = 1  # fixed-length indices
VERSION_ENTROPY = 2  # range-coded indices (cod.entropy)
VERSION_DIFFC = 3  # indices (fixed-length or range-coded) + a DiffC payload (cod.diffc)
VERSION_CHROMA = 4  # indices (fixed-length or range-coded) + chroma side information (cod.chroma)
VERSIONS = (VERSION, VERSION_ENTROPY, VERSION_DIFFC, VERSION_CHROMA)
_CODING = struct.Struct(">BH")  # v2, v3, v4: index coding, prior tag
_INDEX_LEN = struct.Struct(">I")  # v3, v4: bytes of indices at the start of the payload
_FIXED = struct.Struct(">3sBBBBHIIB")  # magic..n_settings (18 bytes)
_TAIL = struct.Struct(">II")  # payload length, CRC-32
HEADER_MIN = _FIXED.size + _TAIL.size  # 26 bytes
MAX_SIDE = 2**32 - 1
#: Index codings written in a v2/v3 header (docs/format.md; cod.entropy codes them).
CODING_STATIC = 1
CODING_CONTEXT = 2
CODING_NAMES = {CODING_STATIC: "static", CODING_CONTEXT: "context"}


# ----------------------------------------------------------------- packing
def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Concatenate ``bits``-bit indices MSB-first, fill bytes MSB-first, zero-pad the last byte.

    >>> pack_indices(np.array([1, 2, 3, 15, 0, 7]), 4).hex()
    '123f07'
    """
    import numpy as np

    idx = np.asarray(indices, dtype=np.int64).ravel()
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    if idx.size and (idx.min() < 0 or idx.max() >= 2**bits):
        raise ValueError(f"index out of range for {bits} bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bitarr = ((idx[:, None] >> shifts[None, :]) & 1).astype(np.uint8).ravel()
    return np.packbits(bitarr).tobytes()


def unpack_indices(payload: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`; reads exactly ``count`` indices."""
    import numpy as np

    need = packed_size(count, bits)
    if len(payload) < need:
        raise BitstreamError(f"payload holds {len(payload)} bytes, {need} needed for {count} indices")
    bitarr = np.unpackbits(np.frombuffer(payload, dtype=np.uint8, count=need))[: count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))[None, :]
    return (bitarr.reshape(count, bits).astype(np.int64) * weights).sum(1)


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


# ---------------------------------------------------------------- container
@dataclass(frozen=True)
class CodHeader:
    """Everything in a v1 header except the lengths and CRC."""

    family: int
    ds: int
    bits: int
    model_tag: int
    height: int
    width: int
    settings: bytes = b""
    coding: int = 0  # 0: fixed-length (v1); cod.entropy.CODING_* (v2)
    prior_tag: int = 0
    diffc: bool = False  # v3: a DiffC payload follows the indices
    chroma: bool = False  # v4: chroma side information follows the indices

    @property
    def version(self) -> int:
        if self.diffc and self.chroma:
            raise ValueError("a .cod file carries DiffC or chroma side information, not both")
        return VERSION_DIFFC if self.diffc else VERSION_CHROMA if self.chroma else VERSION_ENTROPY if self.coding else VERSION

    @property
    def has_index_length(self) -> bool:
        """v3 and v4: something follows the indices in the payload."""
        return self.diffc or self.chroma

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, f"unknown({self.family})")


@dataclass(frozen=True)
class CodFile:
    header: CodHeader
    payload: bytes  # the indices
    size: int  # bytes of the whole file, header included
    diffc: bytes | None = None  # v3: the DiffC payload after the indices
    chroma: bytes | None = None  # v4: the chroma side information after the indices

    @property
    def bpp(self) -> float:
        """Bits per pixel of the original image, counted from the whole file."""
        return 8 * self.size / (self.header.height * self.header.width)


def write_cod(header: CodHeader, payload: bytes, diffc: bytes | None = None, chroma: bytes | None = None) -> bytes:
    """Serialise a container: v1, v2 when the header names an index coding, v3 when it is a
    DiffC file (``diffc``: the DiffC payload, written after the indices ``payload``), v4 with
    chroma side information (``chroma``, after the indices)."""
    h = header
    if h.diffc != (diffc is not None):
        raise ValueError("a DiffC payload goes with a DiffC header (diffc=True), and only there")
    if h.chroma != (chroma is not None):
        raise ValueError("chroma side information goes with a chroma header (chroma=True), and only there")
    version = h.version
    if not (1 <= h.height <= MAX_SIDE and 1 <= h.width <= MAX_SIDE):
        raise ValueError(f"image size {h.height}x{h.width} out of range")
    if len(h.settings) > 255:
        raise ValueError("decode settings longer than 255 bytes")
    head = _FIXED.pack(MAGIC, version, h.family, h.ds, h.bits, h.model_tag & 0xFFFF, h.height, h.width, len(h.settings))
    head += h.settings
    if version != VERSION:
        head += _CODING.pack(h.coding, h.prior_tag & 0xFFFF)
    if h.has_index_length:
        head += _INDEX_LEN.pack(len(payload))
        payload += diffc if h.diffc else chroma
    head += struct.pack(">I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack(">I", crc) + payload


def read_cod(data: bytes) -> CodFile:
    """Parse and check a v1, v2, v3 or v4 container: magic, version, lengths, CRC. One-line errors."""
    if len(data) < 4 or data[:3] != MAGIC:
        if len(data) < 3 and MAGIC.startswith(data):
            raise BitstreamError(f"truncated .cod file ({len(data)} bytes)")
        raise BitstreamError("not a .cod file (bad magic); for files of the original code use --format official")
    if data[3] not in VERSIONS:
        raise BitstreamError(f"unsupported .cod format version {data[3]} (this reader knows versions {', '.join(map(str, VERSIONS))})")
    if len(data) < HEADER_MIN:
        raise BitstreamError(f"truncated .cod file: {len(data)} bytes, the header alone needs {HEADER_MIN}")
    magic, version, family, ds, bits, tag, height, width, nset = _FIXED.unpack_from(data, 0)
    split = version in (VERSION_DIFFC, VERSION_CHROMA)  # an index length, then something after the indices
    extra = 0 if version == VERSION else _CODING.size + (_INDEX_LEN.size if split else 0)
    head_len = _FIXED.size + nset + extra + _TAIL.size
    if len(data) < head_len:
        raise BitstreamError(f"truncated .cod file: {len(data)} bytes, header needs {head_len}")
    settings = bytes(data[_FIXED.size : _FIXED.size + nset])
    coding, prior_tag = _CODING.unpack_from(data, _FIXED.size + nset) if extra else (0, 0)
    (index_len,) = _INDEX_LEN.unpack_from(data, _FIXED.size + nset + _CODING.size) if split else (None,)
    payload_len, crc = _TAIL.unpack_from(data, _FIXED.size + nset + extra)
    body = len(data) - head_len
    if body != payload_len:
        what = "truncated" if body < payload_len else "has trailing bytes"
        raise BitstreamError(f"corrupt .cod file: {what} (payload {body} bytes, header says {payload_len})")
    payload = bytes(data[head_len:])
    if zlib.crc32(payload, zlib.crc32(data[: head_len - 4])) != crc:
        raise BitstreamError("corrupt .cod file: CRC-32 mismatch")
    if height == 0 or width == 0 or ds == 0 or not 1 <= bits <= 16:
        raise BitstreamError(f"corrupt .cod file: invalid header (size {height}x{width}, ds {ds}, bits {bits})")
    if extra and coding not in (tuple(CODING_NAMES) if version == VERSION_ENTROPY else (0, *CODING_NAMES)):
        raise BitstreamError(f"corrupt .cod file: unknown index coding {coding}")
    header = CodHeader(family, ds, bits, tag, height, width, settings, coding, prior_tag, diffc=version == VERSION_DIFFC, chroma=version == VERSION_CHROMA)
    if index_len is None:
        return CodFile(header, payload, len(data))
    if index_len > len(payload):
        raise BitstreamError(f"corrupt .cod file: {index_len} bytes of indices in a payload of {len(payload)}")
    rest = payload[index_len:]
    if version == VERSION_DIFFC:
        return CodFile(header, payload[:index_len], len(data), diffc=rest)
    return CodFile(header, payload[:index_len], len(data), chroma=rest)


def check_model(header: CodHeader, family: int, ds: int, bits: int, model_tag: int, model_name: str) -> None:
    """Refuse a file written by another model, naming both."""
    got = (header.family, header.ds, header.bits)
    if got != (family, ds, bits):
        raise ModelMismatchError(
            f"file is for a {header.family_name} model with ds={header.ds}, {header.bits}-bit codebook; "
            f"{model_name} is {FAMILY_NAMES.get(family, family)} with ds={ds}, {bits}-bit codebook"
        )
    if header.model_tag != model_tag & 0xFFFF:
        raise ModelMismatchError(
            f"file was written with other weights (model tag {header.model_tag:04x}, "
            f"{model_name} has {model_tag & 0xFFFF:04x})"
        )


# ----------------------------------------------------------- official layout
def write_official(height: int, width: int, payload: bytes, height_first: bool = False) -> bytes:
    """Official 4-byte header (LE16 x2) + payload. CoD-Lite writes width first;
    the CoD parent CLI writes height first (``height_first=True``)."""
    if not (0 < height <= 0xFFFF and 0 < width <= 0xFFFF):
        raise BitstreamError(f"the official format stores sides up to 65535, image is {height}x{width}")
    a, b = (height, width) if height_first else (width, height)
    return struct.pack("<HH", a, b) + payload


def read_official(data: bytes, height_first: bool = False) -> tuple[int, int, bytes]:
    """(height, width, payload) of an official file."""
    if len(data) < 4:
        raise BitstreamError(f"truncated official .cod file ({len(data)} bytes)")
    a, b = struct.unpack_from("<HH", data, 0)
    height, width = (a, b) if height_first else (b, a)
    if height == 0 or width == 0:
        raise BitstreamError("corrupt official .cod file: zero image size")
    return height, width, bytes(data[4:])


def model_tag_of(codebook: np.ndarray) -> int:
    """16-bit fingerprint of a model's weights: CRC-32 of its float32 codebook, low 16 bits."""
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(codebook, dtype="<f4"))
    return zlib.crc32(arr.tobytes()) & 0xFFFF


def grid_size(height: int, width: int, ds: int, multiple: int) -> tuple[int, int]:
    """Index grid of an image padded up to ``multiple``."""
    hp, wp = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    return hp // ds, wp // ds
