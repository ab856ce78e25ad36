"""DiffC settings and the DiffC payload: the bytes after the CoD indices in a DiffC .cod file
(container version 3, cod.bitstream; docs/diffc.md).

Payload version 2 (integers big-endian)::

    offset  size  field
    0       1     payload version (2)
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
    ...     4w    range-coded stream (32-bit words, :mod:`cod.diffc.coding`), to the end

Version 1 ended with its own CRC-32; version 2 drops it: the container's CRC-32 covers the
payload, so a payload on its own is not checked for corruption (a corrupt stream decodes to
some other image or fails, in bounded time).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cod.diffc.bridge import DENOISING_TIMESTEPS, LATENT_ENCODING_TIMESTEPS, PIXEL_ENCODING_TIMESTEPS, check_schedule
from cod.errors import BitstreamError

PAYLOAD_VERSION = 2  # 1 had a CRC-32 of its own (redundant inside the container)
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 2, 20  # 2**20 candidates: constriction's 24-bit models still fit
ORIGINAL_MAX_CHUNK_SIZE = 16  # the original's setting (GPU)
CPU_MAX_CHUNK_SIZE = 8  # our default: see docs/diffc.md, "Choosing max_chunk_size"
ENCODING_SCHEDULES = {1: PIXEL_ENCODING_TIMESTEPS, 2: LATENT_ENCODING_TIMESTEPS}
FINISHING_SCHEDULES = {1: DENOISING_TIMESTEPS}
DECODING_GUIDANCE = {"cod-pixel": 3.0, "cod-latent": 1.25}  # the original's decoding CFG
_HEAD = struct.Struct(">BBBHeeI")


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
        return out + self.stream

    @classmethod
    def from_bytes(cls, data: bytes) -> "DiffCPayload":
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise BitstreamError(f"truncated DiffC payload: {len(data)} bytes, at least {_HEAD.size} needed")
        if data[0] != PAYLOAD_VERSION:
            raise BitstreamError(f"unsupported DiffC payload version {data[0]} (this reader knows {PAYLOAD_VERSION})")
        _, ids, chunking, n_steps, g_enc, g_dec, seed = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        schedules = []
        for sid, known in ((ids >> 4, ENCODING_SCHEDULES), (ids & 15, FINISHING_SCHEDULES)):
            if sid == 0:
                if pos + 2 > len(data):
                    raise BitstreamError("truncated DiffC payload: schedule length missing")
                (count,) = struct.unpack_from(">H", data, pos)
                if pos + 2 + 2 * count > len(data):
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
        return cls(config, n_steps, data[pos:])

    @property
    def stop_timestep(self) -> int:
        """tau where the coded chain stops and the DDIM finish starts (1000: nothing coded)."""
        return self.config.encoding_timesteps[self.n_steps - 1] if self.n_steps else 1000

    def describe(self) -> dict[str, Any]:
        """The payload's fields as `cod info` shows them."""
        c = self.config
        return {
            "diffc_steps": self.n_steps, "diffc_schedule_steps": len(c.encoding_timesteps), "diffc_stop_timestep": self.stop_timestep,
            "diffc_max_chunk_size": c.max_chunk_size, "diffc_chunk_padding": c.chunk_padding, "diffc_encoding_guidance": c.encoding_guidance,
            "diffc_decoding_guidance": c.decoding_guidance, "diffc_seed": c.seed, "diffc_stream_bytes": len(self.stream),
        }

    @staticmethod
    def overhead_bytes(config: DiffCConfig) -> int:
        """Bytes of a payload besides the coded stream (header, explicit schedules)."""
        return len(DiffCPayload(config, 0, b"").to_bytes())


__all__ = ["DiffCConfig", "DiffCPayload", "PAYLOAD_VERSION", "CPU_MAX_CHUNK_SIZE", "ORIGINAL_MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "MAX_CHUNK_SIZE"]
