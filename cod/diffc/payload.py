"""DiffC settings and the DiffC payload: the bytes after the CoD indices (docs/diffc.md).

Payload version 1 (integers big-endian)::

    offset  size  field
    0       1     payload version (1)
    1       1     schedules: high nibble encoding schedule id, low nibble finishing schedule
                  id (1 = the original's pixel / latent encoding schedule, 1 = its denoising
                  schedule; 0 = an explicit list follows)
    2       1     chunking: low 5 bits max_chunk_size, high 3 bits chunk_padding
    3       2     coded steps S (0 .. length of the encoding schedule)
    5       2     encoding guidance (float16)
    7       2     decoding guidance (float16)
    9       4     seed of the shared randomness
    13      ...   [explicit encoding schedule: uint16 count, count x uint16]
                  [explicit finishing schedule: uint16 count, count x uint16]
    ...     4w    range-coded stream (32-bit words, :mod:`cod.diffc.coding`)
    end-4   4     CRC-32 of every byte before it
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from cod.diffc.bridge import DENOISING_TIMESTEPS, LATENT_ENCODING_TIMESTEPS, PIXEL_ENCODING_TIMESTEPS, check_schedule
from cod.errors import BitstreamError

PAYLOAD_VERSION = 1
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 2, 20  # 2**20 candidates: constriction's 24-bit models still fit
ORIGINAL_MAX_CHUNK_SIZE = 16  # the original's setting (GPU)
CPU_MAX_CHUNK_SIZE = 8  # our default: see docs/diffc.md, "Choosing max_chunk_size"
ENCODING_SCHEDULES = {1: PIXEL_ENCODING_TIMESTEPS, 2: LATENT_ENCODING_TIMESTEPS}
FINISHING_SCHEDULES = {1: DENOISING_TIMESTEPS}
DECODING_GUIDANCE = {"cod-pixel": 3.0, "cod-latent": 1.25}  # the original's decoding CFG
_HEAD = struct.Struct(">BBBHeeI")
_CRC = 4


def _f16(x: float, what: str) -> float:
    if not (math.isfinite(x) and 0 <= x <= 65504):
        raise ValueError(f"{what} must be in 0..65504 (a float16), got {x}")
    return float(np.float16(x))


@dataclass(frozen=True)
class DiffCConfig:
    """How a DiffC chain is run and coded; everything here travels in the payload, so the
    decoder needs no settings. Guidance scales are stored as float16 and rounded to it here."""

    encoding_timesteps: tuple[int, ...] = PIXEL_ENCODING_TIMESTEPS
    finishing_timesteps: tuple[int, ...] = DENOISING_TIMESTEPS
    max_chunk_size: int = CPU_MAX_CHUNK_SIZE
    chunk_padding: int = 2
    encoding_guidance: float = 1.0  # the chain's model (1 = the conditional branch only)
    decoding_guidance: float = 3.0  # the DDIM finish's CFG scale
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoding_timesteps", check_schedule(self.encoding_timesteps))
        object.__setattr__(self, "finishing_timesteps", check_schedule(self.finishing_timesteps, finish=True))
        if len(self.encoding_timesteps) > 0xFFFF or len(self.finishing_timesteps) > 0xFFFF:
            raise ValueError("schedules longer than 65535 steps")
        if not MIN_CHUNK_SIZE <= self.max_chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"max_chunk_size must be in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}, got {self.max_chunk_size}")
        if not 0 <= self.chunk_padding <= min(7, self.max_chunk_size - 1):
            raise ValueError(f"chunk_padding must be in 0..{min(7, self.max_chunk_size - 1)}, got {self.chunk_padding}")
        if not 0 <= self.seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be in 0..2**32-1, got {self.seed}")
        object.__setattr__(self, "encoding_guidance", _f16(self.encoding_guidance, "encoding guidance"))
        object.__setattr__(self, "decoding_guidance", _f16(self.decoding_guidance, "decoding guidance"))

    @classmethod
    def for_family(cls, family: str, **overrides) -> "DiffCConfig":
        """The original's settings for a CoD family ("cod-pixel" / "cod-latent": schedules,
        guidance 1.0 while coding and 3.0 / 1.25 for the finish), with our CPU chunk size."""
        if family not in DECODING_GUIDANCE:
            raise ValueError(f"DiffC runs on CoD models (cod-pixel, cod-latent), not {family!r}")
        sched = PIXEL_ENCODING_TIMESTEPS if family == "cod-pixel" else LATENT_ENCODING_TIMESTEPS
        return replace(cls(encoding_timesteps=sched, decoding_guidance=DECODING_GUIDANCE[family]), **overrides)


def _schedule_id(schedule: tuple[int, ...], known: dict[int, tuple[int, ...]]) -> int:
    return next((i for i, s in known.items() if s == schedule), 0)


@dataclass(frozen=True)
class DiffCPayload:
    """A parsed payload: the settings, the number of coded steps and the coded stream."""

    config: DiffCConfig
    n_steps: int
    stream: bytes

    def to_bytes(self) -> bytes:
        c = self.config
        enc_id = _schedule_id(c.encoding_timesteps, ENCODING_SCHEDULES)
        fin_id = _schedule_id(c.finishing_timesteps, FINISHING_SCHEDULES)
        if not 0 <= self.n_steps <= len(c.encoding_timesteps):
            raise ValueError(f"{self.n_steps} coded steps for a {len(c.encoding_timesteps)}-step schedule")
        out = _HEAD.pack(PAYLOAD_VERSION, enc_id << 4 | fin_id, c.chunk_padding << 5 | c.max_chunk_size, self.n_steps, c.encoding_guidance, c.decoding_guidance, c.seed)
        for sid, sched in ((enc_id, c.encoding_timesteps), (fin_id, c.finishing_timesteps)):
            if sid == 0:
                out += struct.pack(f">H{len(sched)}H", len(sched), *sched)
        out += self.stream
        return out + struct.pack(">I", zlib.crc32(out))

    @classmethod
    def from_bytes(cls, data: bytes) -> "DiffCPayload":
        data = bytes(data)
        if len(data) < _HEAD.size + _CRC:
            raise BitstreamError(f"truncated DiffC payload: {len(data)} bytes, at least {_HEAD.size + _CRC} needed")
        if data[0] != PAYLOAD_VERSION:
            raise BitstreamError(f"unsupported DiffC payload version {data[0]} (this reader knows {PAYLOAD_VERSION})")
        (crc,) = struct.unpack_from(">I", data, len(data) - _CRC)
        if zlib.crc32(data[:-_CRC]) != crc:
            raise BitstreamError("corrupt DiffC payload: CRC-32 mismatch")
        _, ids, chunking, n_steps, g_enc, g_dec, seed = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        schedules = []
        for sid, known in ((ids >> 4, ENCODING_SCHEDULES), (ids & 15, FINISHING_SCHEDULES)):
            if sid == 0:
                if pos + 2 > len(data) - _CRC:
                    raise BitstreamError("truncated DiffC payload: schedule length missing")
                (count,) = struct.unpack_from(">H", data, pos)
                if pos + 2 + 2 * count > len(data) - _CRC:
                    raise BitstreamError(f"truncated DiffC payload: a schedule of {count} steps does not fit")
                schedules.append(struct.unpack_from(f">{count}H", data, pos + 2))
                pos += 2 + 2 * count
            elif sid in known:
                schedules.append(known[sid])
            else:
                raise BitstreamError(f"corrupt DiffC payload: unknown schedule id {sid}")
        try:
            config = DiffCConfig(schedules[0], schedules[1], chunking & 31, chunking >> 5, g_enc, g_dec, seed)
        except ValueError as exc:
            raise BitstreamError(f"corrupt DiffC payload: {exc}") from None
        if n_steps > len(config.encoding_timesteps):
            raise BitstreamError(f"corrupt DiffC payload: {n_steps} coded steps, the schedule has {len(config.encoding_timesteps)}")
        return cls(config, n_steps, data[pos:-_CRC])

    @staticmethod
    def overhead_bytes(config: DiffCConfig) -> int:
        """Bytes of a payload besides the coded stream (header, explicit schedules, CRC)."""
        return len(DiffCPayload(config, 0, b"").to_bytes())


__all__ = ["DiffCConfig", "DiffCPayload", "PAYLOAD_VERSION", "CPU_MAX_CHUNK_SIZE", "ORIGINAL_MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "MAX_CHUNK_SIZE"]
