"""CoD-Lite encoding and decoding of any image size within a memory budget (issue 16).

    engine = FastCoDLite(model, plan) or FaithfulCoDLite(model)          # cod.inference
    idx = encode_image(engine, rgb_uint8, ds, multiple, window, budget)   # (h*w,) int64
    rgb = decode_indices(engine, idx, (h, w), height, width, ds, window, budget)

What does not fit the budget is cut, the rest runs whole:

* **encoder**: overlapping tiles of the (padded) image, each encoded on its own, the encoder
  outputs blended across the overlaps (cod.tiling) and quantised band by band. Tiles start
  on the grid of the encoder's attention windows. A tile's GroupNorm statistics are its own,
  so a tiled encoding is close to, not equal to, the whole one (docs/speed.md: figures).
* **condition decoder**: the same, over the index grid, blended at H/16.
* **DiCo blocks**: whole (their channel attention averages over the whole image), with the
  4x-wide MLP in row chunks; 1.5 KB per 16x16 token in bf16, 120 MB at 7680x4320.
* **pixel head**: bands of token rows, each turned into 8-bit pixels at once (with a token
  row of context for the optional refinement convolutions, so bands are exact).

An image that fits the budget takes exactly the untiled path; the faithful engine then
computes what ``CoDLite.decode_one_step`` computes. Windows are independent: a later
version may run them in parallel, one thread each (thread-count independent results).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from cod.tensor_io import image_to_tensor, pad_array, pad_image, tensor_to_uint8
from cod.tiling import Band, SharedGroupNorm, TilePlan, blend_tiles, cores, plan_tiles

# Working memory per unit of work, in units of the compute dtype's bytes (generous estimates,
# checked end to end by benchmarks/memory.py; docs/speed.md). Encoder: per input pixel
# and encoder channel; condition decoder: per index position and decoder channel; pixel
# head: per output pixel.
ENCODER_BYTES_PER_PIXEL_CHANNEL = 3.0
CONDITION_BYTES_PER_INDEX_CHANNEL = 24.0
PIXEL_BAND_BYTES_PER_PIXEL = 64.0
# overlap of encoder / condition-decoder tiles, in index positions
OVERLAP_INDICES = 8
# extra passes over the condition decoder's tiles that refine the shared GroupNorm statistics.
# 0: one recording pass, then the blended pass. A refining pass fixes one more layer's
# statistics but records the later ones from a mix (trained small model, 1920x1080 in two
# strips: 55.2 dB -> 57.4 dB against the whole decode; random tiny weights: 34.8 -> 23.3 dB)
CONDITION_REFINE_PASSES = 0


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def encoder_bytes_per_pixel(engine) -> float:
    # the products' dtype: the mixed encoder's float32 stream takes its bf16 branches in place,
    # and peaks where the bf16 encoder does (1920x1024, whole: 654 vs 629 MiB; fp32 1480 MiB)
    return ENCODER_BYTES_PER_PIXEL_CHANNEL * engine.encoder_channels * _dtype_bytes(engine.enc_dtype)


def condition_bytes_per_index(engine) -> float:
    return CONDITION_BYTES_PER_INDEX_CHANNEL * engine.hidden * _dtype_bytes(engine.dtype)


def blend_shared(fn, plan: TilePlan, module, channels: int, scale: int, refine: int = 0) -> Iterator[Band]:
    """:func:`cod.tiling.blend_tiles` with the GroupNorm statistics of ``module`` shared by all
    tiles (cod.tiling.SharedGroupNorm): a first pass over the tiles collects them."""
    sync = SharedGroupNorm(module)
    rc, cc = cores(plan.rows), cores(plan.cols)
    for k in range(1 + refine):
        with sync.recording() if k == 0 else sync.refining():
            for (y0, y1), (a, b) in zip(plan.rows, rc):
                for (x0, x1), (c, d) in zip(plan.cols, cc):
                    sync.set_core((a - y0) / (y1 - y0), (b - y0) / (y1 - y0), (c - x0) / (x1 - x0), (d - x0) / (x1 - x0))
                    fn(y0, y1, x0, x1)
    with sync.applying():
        yield from blend_tiles(fn, plan, channels, scale)


def _window_units(ds: int, multiple: int, window: int | None) -> int:
    """Attention window of the codec, in units of ``multiple`` pixels (1 if none)."""
    return max(1, (window or 1) * ds // multiple)


def encode_plan(engine, height: int, width: int, ds: int, multiple: int, window: int | None, budget: int) -> TilePlan:
    """Tiles (in units of ``multiple`` pixels) for encoding a padded ``height`` x ``width`` image."""
    overlap = max(1, math.ceil(OVERLAP_INDICES * ds / multiple))
    per_unit = encoder_bytes_per_pixel(engine) * multiple * multiple
    return plan_tiles(height // multiple, width // multiple, per_unit, budget, overlap, _window_units(ds, multiple, window))


@torch.inference_mode()
def encode_image(engine, arr: np.ndarray, ds: int, multiple: int, pad_mode: str, window: int | None, budget: int) -> np.ndarray:
    """HxWx3 uint8 -> indices (h*w,) int64 of the image padded to ``multiple``."""
    H, W = arr.shape[:2]
    hp, wp = -(-H // multiple) * multiple, -(-W // multiple) * multiple
    plan = encode_plan(engine, hp, wp, ds, multiple, window, budget)
    if not plan.tiled:
        x = pad_image(image_to_tensor(arr, engine.device), multiple, pad_mode)
        return engine.indices(engine.encode_z(x))[0].cpu().numpy()
    padded = pad_array(arr, hp, wp, pad_mode)
    per = multiple // ds  # z positions per unit

    def tile(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        m = multiple
        return engine.encode_z(image_to_tensor(padded[y0 * m : y1 * m, x0 * m : x1 * m], engine.device), tile=True)

    out = np.empty((hp // ds) * (wp // ds), dtype=np.int64)
    for band in blend_tiles(tile, plan, engine.latent_channels, per):
        rows = band.values.shape[2]
        idx = engine.indices(band.values.to(engine.device))[0].cpu().numpy()
        out[band.row0 * (wp // ds) : (band.row0 + rows) * (wp // ds)] = idx
    return out


def condition_plan(engine, grid: tuple[int, int], ds: int, multiple: int, window: int | None, budget: int) -> TilePlan:
    """Tiles (in units of ``multiple`` pixels) of the condition decoder over an index grid."""
    h, w = grid
    k = multiple // ds  # index positions per unit
    if h % k or w % k:  # a grid not of the codec's own making: one tile
        return TilePlan.whole(h // k, w // k)
    overlap = max(1, math.ceil(OVERLAP_INDICES / k))
    per_unit = condition_bytes_per_index(engine) * k * k
    return plan_tiles(h // k, w // k, per_unit, budget, overlap, _window_units(ds, multiple, window))


@torch.inference_mode()
def condition_map(engine, indices: np.ndarray, grid: tuple[int, int], ds: int, multiple: int, window: int | None, budget: int) -> torch.Tensor:
    """Indices on an (h, w) grid -> condition map (1, C, H/16, W/16), tiled when it must be."""
    h, w = grid
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).view(h, w)
    plan = condition_plan(engine, grid, ds, multiple, window, budget)
    if not plan.tiled:
        return engine.condition(idx.view(1, h * w).to(engine.device), h, w)
    k = multiple // ds
    per = multiple // 16  # condition positions per unit

    def tile(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        sub = idx[y0 * k : y1 * k, x0 * k : x1 * k].reshape(1, -1).to(engine.device)
        return engine.condition(sub, (y1 - y0) * k, (x1 - x0) * k, tile=True)

    bands = [b.values for b in blend_shared(tile, plan, engine.condition_module, engine.hidden, per, refine=CONDITION_REFINE_PASSES)]
    return torch.cat(bands, dim=2).to(engine.device, engine.dtype).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def decode_indices(engine, indices: np.ndarray, grid: tuple[int, int], height: int, width: int, ds: int, multiple: int, window: int | None, budget: int) -> np.ndarray:
    """Indices on ``grid`` -> the decoded image's top-left ``height`` x ``width`` pixels
    (at most the grid's extent), HxWx3 uint8."""
    cond = condition_map(engine, indices, grid, ds, multiple, window, budget)
    s = engine.trunk(cond)
    _, _, th, tw = cond.shape
    p = engine.patch_size
    height, width = min(height, th * p), min(width, tw * p)
    need = -(-height // p)  # token rows that reach the output
    band = max(1, int(budget // (PIXEL_BAND_BYTES_PER_PIXEL * p * p * tw)))
    if band >= th:
        x = engine.pixels(s, cond)
        return tensor_to_uint8(x[:, :, :height, :width])
    out = np.empty((height, width, 3), dtype=np.uint8)
    ctx = 1 if engine.has_refine else 0  # a token row of context for the refinement
    for r0 in range(0, need, band):
        r1 = min(need, r0 + band)
        a, b = max(0, r0 - ctx), min(th, r1 + ctx)
        x = engine.pixels(s, cond, (a, b))
        y0 = (r0 - a) * p
        rows = min(r1 * p, height) - r0 * p
        out[r0 * p : r0 * p + rows] = tensor_to_uint8(x[:, :, y0 : y0 + rows, :width])
    return out


__all__ = ["encode_image", "decode_indices", "condition_map", "encode_plan", "condition_plan"]
