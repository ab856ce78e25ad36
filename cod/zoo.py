"""Named models: the one table of rates, widths and decode defaults of every family.

Every fact about a rate (its downsampling factor ``ds`` and codebook bits) lives in
:data:`RATES` / :data:`COD_RATES`; every architecture's widths in ``*_FULL`` / ``CODLITE_SMALL``;
CoD's decode defaults in :data:`COD_DECODE` / :data:`COD_CFG`. Every named model of
:data:`MODELS` is built from them. Plain dicts, no torch: the weights files store the same
dicts (cod.checkpoint), and each family's typed config (cod.families) checks them.
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

# Options every codec takes; the CLI offers them as choices (cod.codec applies them).
PAD_MODES: tuple[str, ...] = ("replicate", "reflect", "constant")  # padding to the model's multiple
FORMATS: tuple[str, ...] = ("cod", "official")  # our container, or the original code's 4-byte header
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")  # auto: CUDA when available, else the CPU
PRECISIONS: tuple[str, ...] = ("fast", "fp32", "bf16")  # CoD-Lite compute (cod.inference); fp32 is the faithful path

# Model families (cod.families registers each) and their bitstream codes (the .cod header's
# family field, docs/format.md).
FAMILY_CODES: dict[str, int] = {"codlite": 1, "cod-pixel": 2, "cod-latent": 3}
FAMILY_NAMES: dict[int, str] = {code: name for name, code in FAMILY_CODES.items()}
FAMILY_CODLITE, FAMILY_COD_PIXEL, FAMILY_COD_LATENT = (FAMILY_CODES[f] for f in ("codlite", "cod-pixel", "cod-latent"))

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


def index_stride(ds: int, up2x: bool) -> int:
    """Image pixels per index along a side: ds with the stride-2 stem (up2x), ds/2 without
    (CoD's 256 px stage-1 layout, CoD spec §2.2)."""
    return ds if up2x else ds // 2


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
# Small CoD-Lite: the same layout, narrower and shallower (~5.9 M parameters). The models
# shipped inside the package (cod/weights/, docs/models.md) have this size.
CODLITE_SMALL: dict[str, Any] = {
    "hidden_size": 128,
    "hidden_size_x": 16,
    "num_blocks": 8,  # 6 DiCo blocks + 2 pixel-head blocks
    "num_cond_blocks": 6,
    "encoder_channels": 64,
    "latent_channels": 64,
}
SMALL_RATES = ("0.0312", "0.125")
# Block side of the chroma side information the small models write (cod.chroma), in indices: their
# codebooks carry little colour, so the original's mean Cb/Cr per (4 ds) x (4 ds) block travels
# beside the indices (64 px at 0.0312, 32 px at 0.125: ~5 % of the file at either rate). The
# published models write none (chroma_block 0).
CHROMA_BLOCK_INDICES = 4

# ----------------------------------------------------------------------------------------
# CoD (the diffusion foundation model; CoD spec §2). Rates of the released checkpoints:
# (ds, codebook bits). 0.0039 is the same rate as CoD-Lite's; 0.00024 is 64 bits per
# 512x512 image (ds 128).
COD_RATES: dict[str, tuple[int, int]] = {
    "0.0039": RATES["0.0039"],
    "0.00024": (128, 4),
}

# Decode settings the paper uses (25-step adam2, seed 0, CFG 3.0; CoD spec §9.1, §15.1), and
# the models whose guidance differs (latent 0.0039: 1.25). Written into every .cod file
# (docs/format.md); cod.diffusion.settings.DecodeSettings defaults to COD_DECODE.
COD_DECODE: dict[str, Any] = {"steps": 25, "cfg": 3.0, "sampler": "adam2", "seed": 0}
COD_CFG: dict[tuple[str, str], float] = {("cod-latent", "0.0039"): 1.25}

# Architectures (cod/configs/{pixel,latent}/*_xl.yaml).
COD_PIXEL_FULL: dict[str, Any] = {
    "family": "cod-pixel",
    "in_channels": 3,
    "patch_size": 16,
    "hidden_size": 1152,
    "num_groups": 16,
    "hidden_size_x": 64,
    "nerf_mlpratio": 2,
    "num_blocks": 30,  # 26 transformer blocks + 4 NeRF pixel blocks
    "num_cond_blocks": 26,
    "light": False,
    "up2x": True,
    "encoder_channels": 128,
    "latent_channels": 128,
}
COD_LATENT_FULL: dict[str, Any] = {
    "family": "cod-latent",
    "in_channels": 4,
    "patch_size": 2,
    "hidden_size": 1152,
    "num_groups": 16,
    "num_blocks": 28,  # 22 encoder + 6 decoder transformer blocks
    "num_cond_blocks": 22,
    "light": False,
    "up2x": True,
    "encoder_channels": 128,
    "latent_channels": 128,
}
COD_FAMILIES: dict[str, dict[str, Any]] = {"cod-pixel": COD_PIXEL_FULL, "cod-latent": COD_LATENT_FULL}


def cod_config(family: str, rate: str, stage1: bool = False, **overrides: Any) -> dict[str, Any]:
    """Config dict of a CoD model: ``family`` "cod-pixel" or "cod-latent", ``rate`` a key of
    COD_RATES. ``stage1=True`` gives the 256x256 stage-1 layout (up2x False: same bits per
    image at 4x the bpp, no ``ada`` upsampler in the condition decoder)."""
    if family not in COD_FAMILIES:
        raise KeyError(f"unknown CoD family {family!r}; known: {', '.join(COD_FAMILIES)}")
    if rate not in COD_RATES:
        raise KeyError(f"unknown CoD rate {rate!r}; known: {', '.join(COD_RATES)}")
    ds, bits = COD_RATES[rate]
    cfg = copy.deepcopy(COD_FAMILIES[family])
    cfg.update(ds=ds, codebook_bits=bits, up2x=not stage1, rate=rate)
    cfg["decode"] = dict(COD_DECODE, cfg=COD_CFG.get((family, rate), COD_DECODE["cfg"]))
    cfg.update(overrides)
    return cfg


def cod_model_names() -> list[str]:
    """Names of the CoD configs: cod-{pixel,latent}-{rate} (512, released layout) and the
    ...-256 stage-1 variants."""
    return [f"{fam}-{rate}{suffix}" for fam in COD_FAMILIES for rate in COD_RATES for suffix in ("", "-256")]


def _cod_named(name: str) -> dict[str, Any]:
    stage1 = name.endswith("-256")
    base = name[: -len("-256")] if stage1 else name
    fam, _, rate = base.rpartition("-")
    return cod_config(fam, rate, stage1=stage1)


# ----------------------------------------------------------------------------------------
# Every named model, all families: name -> config dict.
MODELS: dict[str, dict[str, Any]] = {f"codlite-{r}": codlite_config(r) for r in RATES}
MODELS.update({f"codlite-small-{r}": codlite_config(r, **CODLITE_SMALL, chroma_block=CHROMA_BLOCK_INDICES * RATES[r][0]) for r in SMALL_RATES})
MODELS.update({n: _cod_named(n) for n in cod_model_names()})

# What `cod compress` uses when neither --model nor --weights is given.
DEFAULT_MODEL = "codlite-small-0.0312"

# Default models that earlier releases shipped and this one no longer carries, by the model tag
# their files hold (the .cod header's CRC-16 of the codebook): `cod decompress` names them when
# a file of theirs meets no installed model. Their weights stay in the git history.
RETIRED_MODELS: dict[tuple[int, int, int], str] = {
    # (ds, codebook bits, model tag): what wrote such files
    (16, 8, 0xD94D): "codlite-small-0.0312 v1 (the default model of cod 0.1, commit 64e5a09: `git show 64e5a09:cod/weights/codlite-small-0.0312.safetensors > old.safetensors`)",
    (8, 8, 0x685A): "codlite-small-0.125 v1 (cod 0.1, commit 64e5a09: `git show 64e5a09:cod/weights/codlite-small-0.125.safetensors > old.safetensors`)",
    (16, 8, 0x7EE8): "codlite-small-0.0312 v2 (commit 6590540: `git show 6590540:cod/weights/codlite-small-0.0312.safetensors > old.safetensors`)",
    (8, 8, 0x71F3): "codlite-small-0.125 v2 (g125, before its longer GAN phase; commit e227f7c: `git show e227f7c:cod/weights/codlite-small-0.125.safetensors > old.safetensors`)",
    (16, 8, 0xE302): "codlite-small-0.0312 v2c (g0c, before its longer GAN phase; commit 351f611: `git show 351f611:cod/weights/codlite-small-0.0312.safetensors > old.safetensors`)",
    (16, 8, 0xFA9F): "codlite-small-0.0312 v2e (g0e, before the grid term; commit a6862e9: `git show a6862e9:cod/weights/codlite-small-0.0312.safetensors > old.safetensors`)",
    (8, 8, 0x5A58): "codlite-small-0.125 v2b (g125b, before the grid term; commit 351f611: `git show 351f611:cod/weights/codlite-small-0.125.safetensors > old.safetensors`)",
    (8, 8, 0x2E46): "codlite-small-0.125 v2c (g125c, before its GAN continuation g125e; commit bb4d2d9: `git show bb4d2d9:cod/weights/codlite-small-0.125.safetensors > old.safetensors`)",
    (16, 8, 0x33A8): "codlite-small-0.0312 v2h (g0h, before the doubled adversarial weight; commit a047b99: `git show a047b99:cod/weights/codlite-small-0.0312.safetensors > old.safetensors`)",
    (16, 8, 0x32E3): "codlite-small-0.0312 v2i (g0i, before its continuation g0n/g0o with adversarial 0.3; commit e6192a9: `git show e6192a9:cod/weights/codlite-small-0.0312.safetensors > old.safetensors`)",
}


def get_config(name: str) -> dict[str, Any]:
    """A copy of the config of the named model (any family), with its name."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    cfg = copy.deepcopy(MODELS[name])
    cfg["name"] = name
    return cfg
