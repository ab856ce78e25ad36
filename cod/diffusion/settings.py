"""How a multi-step decode runs (sampler, steps, guidance scale, seed) and its 12-byte form in
the .cod header's settings field (docs/format.md), so that decoding a file needs no flags.

The defaults are the paper's (cod.zoo.COD_DECODE); each CoD model's own defaults are in its
config (``decode``), written by cod.zoo.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace

from cod.errors import BitstreamError
from cod.zoo import COD_DECODE

SETTINGS_VERSION = 1
_SETTINGS = struct.Struct(">BBHfI")  # version, sampler id, steps, cfg (float32), seed (uint32): 12 bytes
SAMPLER_IDS = {"euler": 0, "adam2": 1}  # the names of cod.diffusion.samplers.SAMPLERS, as stored
_SAMPLER_NAMES = {v: k for k, v in SAMPLER_IDS.items()}


@dataclass(frozen=True)
class DecodeSettings:
    """How a CoD file is decoded; stored in the .cod header so decoding needs no flags."""

    steps: int = COD_DECODE["steps"]
    cfg: float = COD_DECODE["cfg"]
    sampler: str = COD_DECODE["sampler"]
    seed: int = COD_DECODE["seed"]

    def __post_init__(self) -> None:
        if not 1 <= int(self.steps) <= 0xFFFF:
            raise ValueError(f"steps must be in 1..65535, got {self.steps}")
        if self.sampler not in SAMPLER_IDS:
            raise ValueError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLER_IDS)}")
        if not 0 <= int(self.seed) <= 0xFFFFFFFF:
            raise ValueError(f"seed must be in 0..2**32-1, got {self.seed}")
        if not math.isfinite(self.cfg):
            raise ValueError(f"cfg must be finite, got {self.cfg}")
        # cfg is stored as float32: use exactly the value a reader will see
        try:
            as_f32 = struct.unpack(">f", struct.pack(">f", self.cfg))[0]
        except OverflowError:
            raise ValueError(f"cfg must fit a float32, got {self.cfg}") from None
        object.__setattr__(self, "cfg", as_f32)
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "seed", int(self.seed))

    def to_bytes(self) -> bytes:
        return _SETTINGS.pack(SETTINGS_VERSION, SAMPLER_IDS[self.sampler], self.steps, self.cfg, self.seed)

    @classmethod
    def from_bytes(cls, data: bytes) -> "DecodeSettings":
        if len(data) != _SETTINGS.size:
            raise BitstreamError(f"corrupt CoD decode settings: {len(data)} bytes, expected {_SETTINGS.size}")
        version, sampler, steps, cfg, seed = _SETTINGS.unpack(data)
        if version != SETTINGS_VERSION:
            raise BitstreamError(f"unsupported CoD decode-settings version {version} (this reader knows {SETTINGS_VERSION})")
        if sampler not in _SAMPLER_NAMES or steps == 0 or not math.isfinite(cfg):
            raise BitstreamError(f"corrupt CoD decode settings (sampler id {sampler}, steps {steps}, cfg {cfg})")
        return cls(steps=steps, cfg=cfg, sampler=_SAMPLER_NAMES[sampler], seed=seed)

    def override(self, steps: int | None = None, cfg: float | None = None, sampler: str | None = None, seed: int | None = None) -> "DecodeSettings":
        """A copy with the given fields replaced (None keeps the stored value)."""
        kw = {k: v for k, v in dict(steps=steps, cfg=cfg, sampler=sampler, seed=seed).items() if v is not None}
        return replace(self, **kw)
