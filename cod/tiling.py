"""Overlapping tiles, blended, sized from a memory budget (issue 16).

Decoding or encoding a CoD-Lite image within a memory budget needs no call into this module:

    codec = cod.load("codlite-0.0312", memory_budget=parse_memory("800M"))  # or codec.memory_budget = ...
    data = codec.compress(image)          # the encoder in tiles when the image needs more
    image = codec.decompress(data)        # the condition decoder in tiles, the pixel head in bands
    # lower level, any engine (cod.inference): cod.lite_pipeline.encode_image / decode_indices

The budget counts the network's working memory (activations) in bytes; weights, the image
and the file come on top (docs/speed.md: 7680x4320 within 4 GB of peak RSS at the default
:data:`DEFAULT_MEMORY_BUDGET`). This module is the geometry, for any map-to-map function:

    plan = plan_tiles(h, w, unit_bytes=1e4, budget=2**30, overlap=8, align=32)  # TilePlan
    for band in blend_tiles(fn, plan, channels=128, scale=1):  # fn(y0, y1, x0, x1) -> (1, C, ...)
        consume(band.row0, band.values)                          # finished rows, top to bottom

A grid is covered by rows x columns of windows (full-height or full-width strips when one
side fits, else squares) that overlap by at least ``overlap`` units and start at multiples of
``align`` (a network's attention windows then fall on each tile as on the whole image: with
tiles out of step with the windows a tiled decode loses ~20 dB). Each window is computed on
its own; where windows overlap, their outputs are averaged with linear ramps (weights that
fall to zero at a window's inner edges, where a window sees least context), so no seam is
left where one window ends. Rows are handed on as soon as no later window touches them: the
blended output never exists in full, only a band a window high (an 8K image at ds 4 has a
1 GB encoder output). :class:`SharedGroupNorm` gives every tile the GroupNorm statistics of
the whole map (pooled over the tiles' cores), which GroupNorm layers need to match.

The geometry knows nothing about networks: the codecs (cod.lite_pipeline) say what a unit
is, how many bytes of working memory a unit costs, and what ``fn`` computes. Windows are
independent, so they could run in parallel, one thread each.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cod.errors import CodError
from cod.limits import MIN_MEMORY

# default working-memory budget for the network's activations (weights and image buffers come
# on top): an 8K image then stays within 4 GB of peak RSS with the full-size CoD-Lite models
DEFAULT_MEMORY_BUDGET = 1536 * 2**20
MIN_MEMORY_BUDGET = MIN_MEMORY  # the smallest --max-memory (cod.limits)


def axis_windows(n: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Cover [0, n) with windows [lo, hi) of ``tile`` units (the last one may be longer by up to
    align - 1), starting at multiples of ``align``, consecutive ones overlapping by >= ``overlap``."""
    if n <= 0 or tile <= 0:
        raise ValueError(f"need a positive length and tile, got n={n}, tile={tile}")
    if n <= tile:
        return [(0, n)]
    step = (tile - overlap) // align * align
    if step <= 0:
        raise ValueError(f"tile {tile} leaves no room for an overlap of {overlap} at alignment {align}")
    wins = []
    lo = 0
    while lo + tile < n:
        wins.append((lo, lo + tile))
        lo += step
    last = (n - tile) // align * align  # the last window ends at n, as long as a tile (or a bit more)
    if wins and last <= wins[-1][0]:
        wins[-1] = (wins[-1][0], n)
    else:
        wins.append((last, n))
    return wins


@dataclass(frozen=True)
class TilePlan:
    """Windows over an (h, w) grid: every pair of a row window and a column window is a tile."""

    height: int
    width: int
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]

    @classmethod
    def cover(cls, height: int, width: int, tile: int, overlap: int, align: int = 1) -> "TilePlan":
        return cls(height, width, tuple(axis_windows(height, tile, overlap, align)), tuple(axis_windows(width, tile, overlap, align)))

    @classmethod
    def whole(cls, height: int, width: int) -> "TilePlan":
        return cls(height, width, ((0, height),), ((0, width),))

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def tiled(self) -> bool:
        return self.count > 1


def ramp(windows: tuple[tuple[int, int], ...], i: int, scale: int = 1) -> torch.Tensor:
    """Blending weights of window ``i`` along one axis, at ``scale`` output samples per unit:
    1 inside, rising linearly over the overlap with the previous window and falling over the
    overlap with the next one (never exactly 0, so a lone sample still counts)."""
    lo, hi = windows[i]
    n = (hi - lo) * scale
    t = torch.arange(n, dtype=torch.float32) + 0.5
    w = torch.ones(n)
    if i > 0:
        ov = (windows[i - 1][1] - lo) * scale
        if ov > 0:
            w = torch.minimum(w, t / ov)
    if i + 1 < len(windows):
        ov = (hi - windows[i + 1][0]) * scale
        if ov > 0:
            w = torch.minimum(w, (n - t) / ov)
    return w


@dataclass
class Band:
    """Finished output rows [row0, row0 + values.shape[-2]) of a blended map."""

    row0: int
    values: torch.Tensor  # (1, C, rows, width * scale), float32


def blend_tiles(fn: Callable[[int, int, int, int], torch.Tensor], plan: TilePlan, channels: int, scale: int = 1) -> Iterator[Band]:
    """Run ``fn(y0, y1, x0, x1)`` (unit coordinates) on every tile of ``plan``, row of tiles by
    row of tiles; each call returns (1, channels, (y1-y0)*scale, (x1-x0)*scale). Yields the
    blended output in bands of finished rows, top to bottom (one band when the plan is whole)."""
    W = plan.width * scale
    if not plan.tiled:
        y0, y1 = plan.rows[0]
        x0, x1 = plan.cols[0]
        yield Band(0, fn(y0, y1, x0, x1).float())
        return
    acc: torch.Tensor | None = None  # rows [acc_lo, acc_lo + acc.shape[2]) of the blended sum
    wsum: torch.Tensor | None = None
    acc_lo = 0
    col_ramps = [ramp(plan.cols, j, scale) for j in range(len(plan.cols))]
    for i, (y0, y1) in enumerate(plan.rows):
        r_lo, r_hi = y0 * scale, y1 * scale
        # grow the accumulator down to r_hi (rows above acc_lo are already handed on)
        need = r_hi - acc_lo
        if acc is None:
            acc = torch.zeros(1, channels, need, W)
            wsum = torch.zeros(1, 1, need, W)
        elif need > acc.shape[2]:
            extra = need - acc.shape[2]
            acc = torch.cat([acc, torch.zeros(1, channels, extra, W)], dim=2)
            wsum = torch.cat([wsum, torch.zeros(1, 1, extra, W)], dim=2)
        row_w = ramp(plan.rows, i, scale)
        for j, (x0, x1) in enumerate(plan.cols):
            out = fn(y0, y1, x0, x1).float().cpu()
            wt = row_w[:, None] * col_ramps[j][None, :]
            a, b = r_lo - acc_lo, r_hi - acc_lo
            acc[:, :, a:b, x0 * scale : x1 * scale].add_(out * wt)
            wsum[:, :, a:b, x0 * scale : x1 * scale].add_(wt)
            del out
        done = (plan.rows[i + 1][0] * scale if i + 1 < len(plan.rows) else r_hi) - acc_lo
        if done > 0:
            yield Band(acc_lo, acc[:, :, :done] / wsum[:, :, :done])
            acc, wsum = acc[:, :, done:].clone(), wsum[:, :, done:].clone()
            acc_lo += done


def cores(windows: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """A partition of the axis into one core per window: each overlap is split at its middle."""
    out = []
    for i, (lo, hi) in enumerate(windows):
        a = (lo + windows[i - 1][1]) // 2 if i > 0 else lo
        b = (windows[i + 1][0] + hi) // 2 if i + 1 < len(windows) else hi
        out.append((a, b))
    return out


class SharedGroupNorm:
    """GroupNorm statistics of the whole image for every tile (two passes).

    GroupNorm normalises with the mean and variance of the whole map; a tile alone has its
    own, and its output shifts with them (a visible difference from tile to tile). Pass one
    (:meth:`recording`) runs every tile normally and collects, for every GroupNorm of
    ``module``, the statistics of the tile's core (the tiles' cores partition the image, so
    nothing counts twice); pass two (:meth:`applying`) runs the tiles again, each GroupNorm
    normalising with the pooled statistics. Pass one's statistics come from inputs normalised
    per tile, so they are close to, not equal to, the whole image's.
    """

    def __init__(self, module: nn.Module):
        self.norms = {name: m for name, m in module.named_modules() if isinstance(m, nn.GroupNorm)}
        self._sums: dict[str, list[torch.Tensor]] = {}
        self._core: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)
        self._mode = ""

    def set_core(self, fy0: float, fy1: float, fx0: float, fx1: float) -> None:
        """The current tile's core, as fractions of the tile's height and width."""
        self._core = (fy0, fy1, fx0, fx1)

    def _record(self, name: str, gn: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        self._record_only(name, gn, x)
        return F.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)

    def _record_only(self, name: str, gn: nn.GroupNorm, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        fy0, fy1, fx0, fx1 = self._core
        core = x[..., round(fy0 * h) : round(fy1 * h), round(fx0 * w) : round(fx1 * w)]
        if core.numel():
            var, mean = torch.var_mean(core, dim=(-2, -1), correction=0)  # per channel, float accumulation
            n = core.shape[-2] * core.shape[-1]
            m = mean.double().view(x.shape[0], gn.num_groups, -1)
            sq = var.double().view_as(m) + m * m  # E[x^2] per channel
            s = self._sums.setdefault(name, [torch.zeros(()), torch.zeros(()), torch.zeros(())])
            s[0] = s[0] + m.sum(-1).cpu() * n  # sum of x per group
            s[1] = s[1] + sq.sum(-1).cpu() * n  # sum of x^2 per group
            s[2] = s[2] + n * m.shape[-1]

    def _refine(self, name: str, gn: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        self._record_only(name, gn, x)
        return self._apply(name, gn, x, self._pooled)

    def _apply(self, name: str, gn: nn.GroupNorm, x: torch.Tensor, sums: dict | None = None) -> torch.Tensor:
        s1, s2, n = (sums or self._sums)[name]
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0)
        per = x.shape[1] // gn.num_groups
        inv = torch.rsqrt(var + gn.eps).repeat_interleave(per, dim=-1)  # (B, C)
        a = gn.weight.double().cpu() * inv
        c = gn.bias.double().cpu() - mean.repeat_interleave(per, dim=-1) * a
        a, c = (t.to(x.device, x.dtype)[..., None, None] for t in (a, c))
        return torch.addcmul(c, x, a)

    @contextmanager
    def _patched(self, mode: str) -> Iterator[None]:
        for name, gn in self.norms.items():
            fn = {"record": self._record, "refine": self._refine, "apply": self._apply}[mode]
            gn.forward = (lambda x, _n=name, _g=gn, _f=fn: _f(_n, _g, x))  # type: ignore[method-assign]
        try:
            yield
        finally:
            for gn in self.norms.values():
                del gn.forward  # back to the class's forward

    def recording(self):
        """Pass one: normal GroupNorm, the statistics of each tile's core summed."""
        self._sums = {}
        return self._patched("record")

    def refining(self):
        """Another pass one: every GroupNorm with the statistics pooled so far, new ones summed."""
        self._pooled, self._sums = self._sums, {}
        return self._patched("refine")

    def applying(self):
        """Pass two: every GroupNorm with the pooled statistics of pass one."""
        if not self._sums and self.norms:
            raise RuntimeError("SharedGroupNorm.applying() needs a recording pass first")
        return self._patched("apply")


def tile_shape(height: int, width: int, unit_bytes: float, budget: int, minimum: int = 1) -> tuple[int, int]:
    """The (rows, cols) of a tile, in units, whose working memory (``unit_bytes`` per unit of
    area) fits ``budget`` bytes: the whole grid when it fits; else a full-height (full-width)
    strip when the short side fits a square tile's side; else a square. Each side is at
    least ``minimum`` (which may exceed the budget: the smallest tile that still overlaps)."""
    area = max(budget, 1) / max(unit_bytes, 1e-9)
    if height * width <= area:
        return height, width
    side = math.sqrt(area)
    if height <= side:
        th, tw = height, int(area // height)
    elif width <= side:
        th, tw = int(area // width), width
    else:
        th = tw = int(side)
    return min(height, max(minimum, th)), min(width, max(minimum, tw))


def plan_tiles(height: int, width: int, unit_bytes: float, budget: int, overlap: int, align: int = 1) -> TilePlan:
    """Tiles over an ``height`` x ``width`` grid of units that fit ``budget`` bytes of working
    memory at ``unit_bytes`` per unit of area, overlapping by at least ``overlap`` units and
    starting at multiples of ``align`` (a network's attention windows then fall on each tile as
    on the whole grid). A tile is at least two aligns and 2 * overlap + 1 units long, which
    may exceed a tiny budget."""
    th, tw = tile_shape(height, width, unit_bytes, budget, max(2 * overlap + 1, 2 * align))
    if (th, tw) == (height, width):
        return TilePlan.whole(height, width)
    rows = axis_windows(height, th // align * align if th < height else th, overlap, align)
    cols = axis_windows(width, tw // align * align if tw < width else tw, overlap, align)
    return TilePlan(height, width, tuple(rows), tuple(cols))


__all__ = ["TilePlan", "Band", "blend_tiles", "axis_windows", "ramp", "cores", "SharedGroupNorm", "tile_shape", "plan_tiles", "DEFAULT_MEMORY_BUDGET", "MIN_MEMORY_BUDGET"]
