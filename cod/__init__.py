"""cod: diffusion-based generative image compression (CoD, CoD-Lite).

    import cod
    codec = cod.load("codlite-0.0312", weights="codlite-0.0312.safetensors")
    data = codec.compress("photo.png")   # .cod bytes
    image = codec.decompress(data)       # PIL.Image

Every family (CoD-Lite, CoD pixel, CoD latent) loads through cod.load (cod.families);
cod.MODELS names every model of every family (cod.zoo). docs/architecture.md maps the package.
The names that need torch are imported on first use (PEP 562, lazy_loader), so that `import cod.errors`
or `cod --help` does not load torch.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import lazy_loader

# oneDNN's primitive cache and ideep's per-shape cache keep up to 1024 entries each (packed
# bf16 weights among them): a batch of many image sizes on the fast path grew by ~450 MiB over
# 500 files (docs/reliability.md §4). 64 entries keep a batch flat and cost no measurable speed;
# read on first use, so this holds unless the user set them or ran oneDNN before importing cod.
for _name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_name, "64")
# A thread-independent decode (cod.nn.determinism) runs its products on cod's own worker
# threads; torch's OpenMP threads, left spinning after the last ATen operator, would keep the
# cores from them (720x480 fast decode at 2 threads: 1.05-1.14 s spinning, 0.72-0.77 s not;
# docs/speed.md). GNU OpenMP (the PyPI torch) reads this when torch is imported: it holds
# when cod is imported first and the user set neither it nor OMP_WAIT_POLICY.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "0")

from cod.errors import BitstreamError, CheckpointError, CodError, ConfigError, ImageError, ModelMismatchError, UsageError
from cod.zoo import MODELS, RATES

if TYPE_CHECKING:  # what the lazy names below resolve to
    from cod.cod_codec import CoDCodec
    from cod.codec import CoDLiteCodec
    from cod.families import FAMILIES, installed_weights, load, load_cod, load_network

__version__ = "0.1.0"
_LAZY = {"cod_codec": ["CoDCodec"], "codec": ["CoDLiteCodec"], "families": ["FAMILIES", "installed_weights", "load", "load_cod", "load_network"]}
__all__ = [
    "load", "load_cod", "load_network", "installed_weights", "FAMILIES", "CoDLiteCodec", "CoDCodec", "MODELS", "RATES",
    "CodError", "UsageError", "BitstreamError", "CheckpointError", "ConfigError", "ImageError", "ModelMismatchError",
]

__getattr__, __dir__, _ = lazy_loader.attach(__name__, submod_attrs=_LAZY)
