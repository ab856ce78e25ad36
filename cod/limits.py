"""Resource limits of decoding (docs/reliability.md): a pixel limit and a memory budget.

A .cod file states the image size in its header, so a file of a few bytes can claim any size
(up to 2**32 - 1 a side). These limits are checked from the header alone, before any index is
unpacked or any tensor allocated:

- **pixels**: claims above ``max_pixels`` are refused (default :data:`DEFAULT_MAX_PIXELS`,
  Pillow's decompression-bomb error threshold, so that a decode refuses what ``cod compress``
  could never have read; ``$COD_MAX_PIXELS`` changes the default);
- **steps** (CoD models): a file asking for more than ``max_steps`` network evaluations
  (sampling steps, DiffC steps) is refused (default :data:`DEFAULT_MAX_STEPS`);
- **memory**: a decode whose estimated working memory (activations, kernel scratch, the decoded
  image's buffers; the loaded model's weights come on top) exceeds ``max_memory`` is refused
  (default :data:`DEFAULT_MAX_MEMORY`, 4 GiB; ``$COD_MAX_MEMORY``). A codec that can decode in
  tiles decodes within the budget instead (:meth:`cod.codec.IndexCodec.fit_decode_to_budget`).

Pure Python (no torch): the image reader and the `cod` command use it too.
"""
from __future__ import annotations

import os
import re

from cod.errors import CodError, LimitError, UsageError

# The estimate of a decode's working memory (cod.codec.IndexCodec.decode_memory) is
#   SCRATCH_FACTOR x traced tensor peak + MEMORY_CONSTANT + IMAGE_BYTES_PER_PIXEL x pixels,
# the constants set above the peak RSS growth of `cod decompress` measured from 256x256 to
# 4096x4096 (docs/reliability.md, "Calibration"):
#: what kernels allocate inside an operator (oneDNN scratch, im2col), allocator slack;
SCRATCH_FACTOR = 1.25
#: worker threads' stacks and arenas, libraries' first-use buffers (bytes);
MEMORY_CONSTANT = 64 * 2**20
#: the decoded image after the network: the uint8 array, PIL's copy (4 bytes a pixel), the
#: writer's copy and the PNG buffer.
IMAGE_BYTES_PER_PIXEL = 16

#: Pillow's DecompressionBombError threshold (2 x PIL.Image.MAX_IMAGE_PIXELS), about 13377 x 13377.
PILLOW_BOMB_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)
MIN_MEMORY = 64 * 2**20


def parse_count(text: str | int, what: str = "--max-pixels") -> int:
    """'179M', '12000000', '16384x8192' -> a positive pixel count (k, M, G are powers of 1000)."""
    if isinstance(text, int):
        n = text
    else:
        s = str(text).strip().lower()
        m = re.fullmatch(r"([0-9]+)\s*x\s*([0-9]+)", s)
        if m:
            n = int(m.group(1)) * int(m.group(2))
        else:
            m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([kmg]?)", s)
            if not m:
                raise UsageError(f"{what} {text!r}: expected a pixel count like 179M, 12000000 or 16384x8192")
            n = int(float(m.group(1)) * 1000 ** " kmg".index(m.group(2) or " "))
    if n < 1:
        raise UsageError(f"{what} must be positive, got {text!r}")
    return n


def parse_memory(text: str | int, what: str = "--max-memory") -> int:
    """'4G', '1.5G', '800M', '2GiB', '1073741824' -> bytes (binary units); at least 64 MiB."""
    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
        if not m:
            raise UsageError(f"{what} {text!r}: expected a size like 4G, 1.5G or 800M")
        n = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
    if n < MIN_MEMORY:
        raise UsageError(f"{what}: {n} bytes is below the minimum of {MIN_MEMORY // 2**20} MiB")
    return n


def _env(name: str, parse, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return parse(value, f"${name}")
    except CodError:
        return default  # a bad environment value must not break `import cod`; the default holds


#: Largest image a file may claim (and `cod compress` may read), in pixels.
DEFAULT_MAX_PIXELS = _env("COD_MAX_PIXELS", parse_count, PILLOW_BOMB_PIXELS)
#: Working memory a decode may need, in bytes (the loaded model's weights come on top).
DEFAULT_MAX_MEMORY = _env("COD_MAX_MEMORY", parse_memory, 4 * 2**30)
#: Network evaluations a file may ask for (CoD sampling steps; DiffC coded + finishing steps):
#: the flow's resolution, 40x the models' 25-step default (a 16-bit field could ask for 65535).
DEFAULT_MAX_STEPS = _env("COD_MAX_STEPS", lambda v, w: parse_count(v, w), 1000)


def format_bytes(n: float) -> str:
    """1536 * 2**20 -> '1.5 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def pixels_text(n: int) -> str:
    """A pixel count for a message: 179.0 Mpx, or 3000 pixels below 0.1 Mpx."""
    return f"{n / 1e6:.1f} Mpx" if n >= 100_000 else f"{n} pixels"


def check_pixels(height: int, width: int, max_pixels: int | None, what: str = "file claims") -> None:
    """LimitError when a width x height image is above ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and height * width > max_pixels:
        raise LimitError(
            f"{what} a {width}x{height} image ({pixels_text(height * width)}), above the limit of {pixels_text(max_pixels)} "
            "(--max-pixels / max_pixels=, $COD_MAX_PIXELS)"
        )


def check_memory(need: int, max_memory: int | None, width: int, height: int) -> None:
    """LimitError when a decode's estimated working memory is above ``max_memory`` (None: no budget)."""
    if max_memory is not None and need > max_memory:
        raise LimitError(
            f"decoding this {width}x{height} image needs an estimated {format_bytes(need)} or more, above the memory budget of {format_bytes(max_memory)} "
            "(--max-memory / max_memory=, $COD_MAX_MEMORY)"
        )


def check_steps(steps: int, max_steps: int | None, what: str) -> None:
    """LimitError when a decode would run more network evaluations than ``max_steps``."""
    if max_steps is not None and steps > max_steps:
        raise LimitError(f"{what} {steps} network evaluations, above the limit of {max_steps} (max_steps=, $COD_MAX_STEPS)")


__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_MEMORY", "DEFAULT_MAX_STEPS", "check_steps", "SCRATCH_FACTOR", "MEMORY_CONSTANT", "IMAGE_BYTES_PER_PIXEL", "PILLOW_BOMB_PIXELS", "parse_count", "parse_memory", "format_bytes", "check_pixels", "check_memory", "pixels_text"]
