"""Named model configurations: the one table of CoD-Lite rates and sizes.

Every fact about a rate (its downsampling factor ``ds`` and codebook bits) lives in
:data:`RATES`; every named model is built from it by :func:`codlite_config`.
Nominal bpp = bits / ds**2 (CoD-Lite spec §2.1): no entropy coding, every index costs
exactly ``bits`` bits.
"""
from __future__ import annotations

import copy
import math
from typing import Any

# rate label -> (ds, codebook bits).  The single source of truth for rates.
RATES: dict[str, tuple[int, int]] = {
    "0.0039": (32, 4),
    "0.0078": (32, 8),
    "0.0156": (16, 4),
    "0.0312": (16, 8),
    "0.125": (8, 8),
    "0.5": (4, 8),
}

# Bitstream family codes (written into the .cod header, see docs/format.md).
FAMILY_CODLITE = 1
FAMILY_COD_PIXEL = 2
FAMILY_COD_LATENT = 3
FAMILY_NAMES = {FAMILY_CODLITE: "codlite", FAMILY_COD_PIXEL: "cod-pixel", FAMILY_COD_LATENT: "cod-latent"}

# Architecture of the published CoD-Lite one-step codec (spec §2, stage1/2.yaml).
CODLITE_FULL: dict[str, Any] = {
    "family": "codlite",
    "in_channels": 3,
    "patch_size": 16,
    "hidden_size": 384,
    "hidden_size_x": 32,
    "num_blocks": 24,  # 21 DiCo blocks + 3 pixel-head blocks
    "num_cond_blocks": 21,
    "mlp_ratio": 4.0,
    "light": True,
    "up2x": True,
    "encoder_channels": 128,
    "latent_channels": 128,
    "attention_window": 32,
    "noise_level": 0.0,
}


def nominal_bpp(ds: int, bits: int) -> float:
    """Bits per pixel of the index payload alone (no header, no padding)."""
    return bits / (ds * ds)


def pad_multiple(ds: int, patch_size: int = 16) -> int:
    """Image sides must be multiples of this for the model to run exactly.

    The encoder needs H % ds == 0 (one index per ds x ds block) and the diffusion net a
    token grid of H/patch_size, so the multiple is lcm(ds, patch_size).
    """
    return ds * patch_size // math.gcd(ds, patch_size)


def rate_label(ds: int, bits: int) -> str:
    for label, (d, b) in RATES.items():
        if (d, b) == (ds, bits):
            return label
    return f"{nominal_bpp(ds, bits):.4g}"


def codlite_config(rate: str, **overrides: Any) -> dict[str, Any]:
    """Config dict of the CoD-Lite one-step codec at ``rate`` (a key of RATES)."""
    if rate not in RATES:
        raise KeyError(f"unknown CoD-Lite rate {rate!r}; known: {', '.join(RATES)}")
    ds, bits = RATES[rate]
    cfg = copy.deepcopy(CODLITE_FULL)
    cfg.update(ds=ds, codebook_bits=bits)
    cfg.update(overrides)
    return cfg


# Named-size factory (DiT style): name -> config.
MODELS: dict[str, dict[str, Any]] = {f"codlite-{r}": codlite_config(r) for r in RATES}


def get_config(name: str) -> dict[str, Any]:
    """A copy of the config of the named model."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    cfg = copy.deepcopy(MODELS[name])
    cfg["name"] = name
    return cfg
