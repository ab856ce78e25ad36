"""Chroma side information: the original's coarse colour, sent beside the indices (ours, not the papers').

A small codec's codebook spends itself on lightness: at 0.03 bpp a code explains three
quarters of a 16-px block's L* but only a third of its a* (benchmarks/code_colour.py), and
the decoder guesses the rest, often wrongly (green or sepia faces, brown parrots). This
module sends what the code misses, cheaply: the mean Cb and Cr (BT.601 full range, the JPEG
YCbCr) of every ``block`` x ``block`` block of the original, quantised with ``step``. The
decoder measures the same block means on its own decode and adds the difference, bilinearly
interpolated between block centres, to every pixel (luma untouched). At 64-px blocks and
step 4 this costs ~5 % of a 0.03 bpp file (~44 bytes for 512 x 512) and takes the shipped
0.0312 model's mean CIEDE2000 error on Kodak from 12.2 to 9.2 (docs/models.md).

Payload (all in one .cod v4 field, docs/format.md)::

    byte 0   block side in pixels (8..255)
    byte 1   quantisation step (1..32), in Cb/Cr units of the 0..255 scale
    byte 2   scale classes: Cb's in the high nibble, Cr's in the low one
    3...     range-coded residuals: all Cb, then all Cr, raster order

Each channel's quantised means ``q`` (|q| <= ceil(128 / step)) are predicted by the median
edge detector (LOCO-I: the median of left, up and left + up - upper-left; 0 outside the
image) and the residuals coded under a two-sided geometric table of one of 16 fixed
scales, chosen by the encoder per channel. The tables are built with integer arithmetic
only and handed to ``constriction`` with ``perfect=True``, so both sides build them
identically on any machine (as cod.entropy's).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from cod.entropy import TOTAL
from cod.errors import BitstreamError

#: Defaults of :func:`measure` (the shipped small models' blocks are in their configs: cod.zoo).
DEFAULT_BLOCK = 64
DEFAULT_STEP = 4
MIN_BLOCK, MAX_BLOCK = 8, 255
MAX_STEP = 32
#: BT.601 full-range RGB -> (Cb, Cr) rows (each sums to 0: no offset), and the RGB change of a
#: unit Cb / Cr change. The one copy of these numbers (cod.train.losses uses them too).
RGB_TO_CBCR = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
CBCR_TO_RGB = np.array([[0.0, 1.402], [-0.344136, -0.714136], [1.772, 0.0]])
#: Ratios of the two-sided geometric tables, as numerators over 2**16 (fixed integers).
_RATIOS = tuple(round(r * 65536) for r in (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.62, 0.68, 0.73, 0.78, 0.82, 0.86, 0.89, 0.92, 0.95, 0.97))
_STRIP_ROWS = 256  # image rows corrected at once (bounds memory)


@dataclass(frozen=True)
class ChromaInfo:
    """Decoded side information: block side, step and the (nh, nw, 2) quantised Cb/Cr means."""

    block: int
    step: int
    levels: np.ndarray  # int64 (nh, nw, 2): mean Cb, Cr = levels * step

    @property
    def cbcr(self) -> np.ndarray:
        return self.levels.astype(np.float64) * self.step


def grid_of(height: int, width: int, block: int) -> tuple[int, int]:
    """Blocks along each side (the last ones may be partial)."""
    return math.ceil(height / block), math.ceil(width / block)


def block_means(image: np.ndarray, block: int) -> np.ndarray:
    """Mean RGB of every ``block`` x ``block`` block of an HxWx3 image (partial blocks at the
    right and bottom edges average the pixels they have): (nh, nw, 3) float64, in strips."""
    H, W = image.shape[:2]
    nh, nw = grid_of(H, W, block)
    cols = np.arange(0, W, block)
    out = np.empty((nh, nw, 3))
    widths = np.minimum(block, W - cols).astype(np.float64)
    for i in range(nh):
        rows = image[i * block : (i + 1) * block]
        sums = np.add.reduceat(rows.sum(0, dtype=np.int64), cols, axis=0)  # (nw, 3)
        out[i] = sums / (rows.shape[0] * widths)[:, None]
    return out


def max_level(step: int) -> int:
    return math.ceil(128 / step)


# ------------------------------------------------------------------ coding
@functools.lru_cache(maxsize=None)
def _table(ratio: int, radius: int) -> np.ndarray:
    """Integer frequencies of a two-sided geometric law on [-radius, radius] (``ratio`` / 2**16
    per unit of |r|), each >= 1, summing to 2**PRECISION, by integer arithmetic alone (largest
    remainders, ties to the lower symbol), so every machine builds the same table."""
    one_side = [1 << 62]
    for _ in range(radius):
        one_side.append(one_side[-1] * ratio >> 16)
    weights = one_side[:0:-1] + one_side
    k = len(weights)
    budget, total = TOTAL - k, sum(weights)
    q = [w * budget // total for w in weights]
    rema = [w * budget % total for w in weights]
    for i in sorted(range(k), key=lambda i: (-rema[i], i))[: budget - sum(q)]:
        q[i] += 1
    table = np.array(q, dtype=np.int64) + 1
    table.setflags(write=False)
    return table


def _med(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """LOCO-I median edge detector: the prediction from the left (a), upper (b) and upper-left
    (c) levels, element-wise. The one predictor of both sides (encoder and decoder)."""
    return np.where(c >= np.maximum(a, b), np.minimum(a, b), np.where(c <= np.minimum(a, b), np.maximum(a, b), a + b - c))


def _residuals(levels: np.ndarray) -> np.ndarray:
    """Prediction residuals of one channel (0 outside the grid)."""
    levels = levels.astype(np.int64)
    p = np.pad(levels, ((1, 0), (1, 0)))
    return levels - _med(p[1:, :-1], p[:-1, 1:], p[:-1, :-1])


def _reconstruct(res: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_residuals`, one anti-diagonal at a time: every level on diagonal
    i + j = d depends only on diagonals d - 1 and d - 2, so each is one vector step."""
    nh, nw = res.shape
    p = np.zeros((nh + 1, nw + 1), dtype=np.int64)  # row/column 0: outside the grid
    for d in range(nh + nw - 1):
        i = np.arange(max(0, d - nw + 1), min(nh, d + 1))
        j = d - i
        p[i + 1, j + 1] = _med(p[i + 1, j], p[i, j + 1], p[i, j]) + res[i, j]
    return p[1:, 1:]


def _model(ratio_class: int, radius: int):
    import constriction

    return constriction.stream.model.Categorical(_table(_RATIOS[ratio_class], radius) / TOTAL, perfect=True)


def _bits(residuals: np.ndarray, ratio_class: int, radius: int) -> float:
    t = _table(_RATIOS[ratio_class], radius)
    return float(-np.log2(t[residuals + radius] / TOTAL).sum())


def check_block(block: int) -> None:
    """ValueError unless ``block`` is a block side the payload can carry."""
    if not MIN_BLOCK <= block <= MAX_BLOCK:
        raise ValueError(f"chroma block must be in {MIN_BLOCK}..{MAX_BLOCK} pixels, got {block}")


def measure(image: np.ndarray, block: int = DEFAULT_BLOCK, step: int = DEFAULT_STEP) -> ChromaInfo:
    """The side information of an HxWx3 uint8 original (before coding)."""
    check_block(block)
    if not 1 <= step <= MAX_STEP:
        raise ValueError(f"chroma step must be in 1..{MAX_STEP}, got {step}")
    cbcr = block_means(image, block) @ RGB_TO_CBCR.T
    m = max_level(step)
    return ChromaInfo(block, step, np.clip(np.round(cbcr / step), -m, m).astype(np.int64))


def encode(info: ChromaInfo) -> bytes:
    """Payload bytes of the side information (module docstring)."""
    import constriction

    m = max_level(info.step)
    radius = 2 * m
    res = [_residuals(info.levels[..., k]).ravel() for k in range(2)]
    classes = [min(range(len(_RATIOS)), key=lambda c: _bits(r, c, radius)) for r in res]
    enc = constriction.stream.queue.RangeEncoder()
    for r, c in zip(res, classes):
        enc.encode((r + radius).astype(np.int32), _model(c, radius))
    words = enc.get_compressed().astype(">u4").tobytes().rstrip(b"\0")
    return bytes([info.block, info.step, classes[0] << 4 | classes[1]]) + words


def decode(payload: bytes, height: int, width: int) -> ChromaInfo:
    """Inverse of :func:`encode` for an image of the given size; BitstreamError on a payload
    that cannot be one."""
    import constriction

    if len(payload) < 3:
        raise BitstreamError(f"corrupt chroma side information ({len(payload)} bytes)")
    block, step, classes = payload[0], payload[1], payload[2]
    if not (MIN_BLOCK <= block <= MAX_BLOCK and 1 <= step <= MAX_STEP):
        raise BitstreamError(f"corrupt chroma side information (block {block}, step {step})")
    nh, nw = grid_of(height, width, block)
    n = nh * nw
    if len(payload) > 3 + 8 * n + 8:  # at most 24 bits a symbol, two channels
        raise BitstreamError(f"corrupt chroma side information: {len(payload)} bytes for {n} blocks")
    m = max_level(step)
    radius = 2 * m
    words = payload[3:]
    words = np.frombuffer(bytes(words) + b"\0" * (-len(words) % 4 + 4), dtype=">u4").astype(np.uint32)
    levels = np.empty((nh, nw, 2), dtype=np.int64)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        for k, c in enumerate((classes >> 4, classes & 15)):
            res = np.asarray(dec.decode(_model(c, radius), n), dtype=np.int64).reshape(nh, nw) - radius
            levels[..., k] = _reconstruct(res)
    except Exception as exc:  # constriction's complaint about invalid compressed data
        raise BitstreamError(f"corrupt chroma side information ({exc})") from None
    if np.abs(levels).max(initial=0) > m:
        raise BitstreamError("corrupt chroma side information: a colour out of range")
    return ChromaInfo(block, step, levels)


# ------------------------------------------------------------------ applying
def _interp(n_out: int, n_blocks: int, block: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear weights between block centres for output positions start..start+n_out."""
    x = (np.arange(start, start + n_out) + 0.5) / block - 0.5
    x = np.clip(x, 0, n_blocks - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_blocks - 1)
    return i0, i1, (x - i0)[:, None]


def apply(decoded: np.ndarray, info: ChromaInfo, out: np.ndarray | None = None) -> np.ndarray:
    """``decoded`` (HxWx3 uint8) with its block-mean Cb/Cr moved to the side information's:
    the per-block difference, interpolated between block centres, is added to every pixel
    (a pure chroma change) and the result rounded and clipped. Works in row strips; ``out``
    may be ``decoded`` itself (in place: no second image in memory)."""
    H, W = decoded.shape[:2]
    nh, nw = grid_of(H, W, info.block)
    if info.levels.shape[:2] != (nh, nw):
        raise BitstreamError(f"chroma side information is for a {info.levels.shape[0]}x{info.levels.shape[1]} block grid, the image has {nh}x{nw}")
    own = block_means(decoded, info.block) @ RGB_TO_CBCR.T
    delta = ((info.cbcr - own) @ CBCR_TO_RGB.T).astype(np.float32)  # (nh, nw, 3)
    j0, j1, wx = _interp(W, nw, info.block)
    cols0, cols1 = delta[:, j0], delta[:, j1]  # (nh, W, 3)
    across = cols0 * (1 - wx[None]).astype(np.float32) + cols1 * wx[None].astype(np.float32)
    out = np.empty_like(decoded) if out is None else out
    for top in range(0, H, _STRIP_ROWS):
        rows = min(_STRIP_ROWS, H - top)
        i0, i1, wy = _interp(rows, nh, info.block, top)
        wy = wy.astype(np.float32)[:, :, None]
        field = across[i0] * (1 - wy) + across[i1] * wy
        strip = decoded[top : top + rows].astype(np.float32) + field
        out[top : top + rows] = np.clip(np.rint(strip), 0, 255).astype(np.uint8)
    return out


__all__ = ["ChromaInfo", "DEFAULT_BLOCK", "DEFAULT_STEP", "measure", "encode", "decode", "apply", "block_means", "grid_of"]
