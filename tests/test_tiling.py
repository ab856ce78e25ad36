"""cod.tiling: window geometry, blending, bands, memory sizes."""
import pytest
import torch

from cod.errors import CodError
from cod.tiling import TilePlan, axis_windows, blend_tiles, plan_tiles, ramp, tile_shape


@pytest.mark.parametrize("n,tile,overlap,align", [(10, 20, 2, 1), (100, 30, 6, 1), (100, 30, 6, 8), (257, 64, 8, 32), (65, 64, 8, 32), (33, 8, 2, 2)])
def test_windows_cover_overlap_and_align(n, tile, overlap, align):
    wins = axis_windows(n, tile, overlap, align)
    assert wins[0][0] == 0 and wins[-1][1] == n
    for (a0, a1), (b0, b1) in zip(wins, wins[1:]):
        assert a0 < b0 and a1 < b1, wins  # increasing
        assert a1 - b0 >= min(overlap, a1 - a0), wins  # consecutive windows overlap enough
    for lo, hi in wins:
        assert lo % align == 0
        assert hi - lo <= max(tile + align - 1, n if n <= tile else 0) or len(wins) == 1
    if n <= tile:
        assert wins == [(0, n)]


def test_window_errors():
    with pytest.raises(ValueError):
        axis_windows(100, 8, 8, 1)  # no room to advance
    with pytest.raises(ValueError):
        axis_windows(0, 8, 1, 1)


def test_ramps_sum_to_one_in_overlaps():
    wins = tuple(axis_windows(100, 30, 10, 1))
    total = torch.zeros(100)
    for i, (lo, hi) in enumerate(wins):
        total[lo:hi] += ramp(wins, i)
    # where two windows meet with the same overlap the ramps are complementary; never zero
    assert total.min() > 0.5 and total.max() < 1.5


@pytest.mark.parametrize("scale", [1, 2])
def test_blend_reproduces_a_consistent_map(scale):
    """Tiles that agree where they overlap blend back to the map itself, delivered in ordered
    bands that cover every row once."""
    torch.manual_seed(0)
    h, w = 23, 37
    full = torch.randn(1, 3, h * scale, w * scale)
    plan = TilePlan.cover(h, w, tile=8, overlap=3, align=2)
    assert plan.tiled and plan.count == len(plan.rows) * len(plan.cols)
    calls = []

    def fn(y0, y1, x0, x1):
        calls.append((y0, y1, x0, x1))
        return full[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale].clone()

    bands = list(blend_tiles(fn, plan, 3, scale))
    assert len(calls) == plan.count
    assert [b.row0 for b in bands] == sorted(b.row0 for b in bands)
    out = torch.cat([b.values for b in bands], dim=2)
    assert bands[0].row0 == 0 and out.shape == full.shape
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)


def test_blend_whole_plan_is_one_call():
    full = torch.arange(12.0).view(1, 1, 3, 4)
    bands = list(blend_tiles(lambda y0, y1, x0, x1: full, TilePlan.whole(3, 4), 1))
    assert len(bands) == 1 and torch.equal(bands[0].values, full)


def test_blend_smooths_disagreeing_tiles():
    """Tiles that disagree (an offset per tile, as per-tile statistics give) blend without a
    step: neighbouring output samples never differ by more than the offset / overlap."""
    plan = TilePlan.cover(1, 40, tile=16, overlap=8)

    def fn(y0, y1, x0, x1):
        return torch.full((1, 1, y1 - y0, x1 - x0), float(x0 // 8))  # tile k is offset by k

    out = torch.cat([b.values for b in blend_tiles(fn, plan, 1)], dim=2)[0, 0, 0]
    steps = out.diff().abs()
    assert steps.max() <= 1.0 / 4 + 1e-6  # no seam: at most offset / (overlap / 2)


def test_tile_shape_fits_the_budget():
    assert tile_shape(10, 20, unit_bytes=1.0, budget=200) == (10, 20)  # fits whole
    assert tile_shape(10, 100, unit_bytes=1.0, budget=400) == (10, 40)  # a full-height strip
    assert tile_shape(100, 10, unit_bytes=1.0, budget=400) == (40, 10)  # a full-width strip
    th, tw = tile_shape(1000, 1000, unit_bytes=1000.0, budget=10**8)
    assert th == tw and th * tw * 1000 <= 10**8 < (th + 1) ** 2 * 1000
    assert tile_shape(100, 100, unit_bytes=1e12, budget=10, minimum=8) == (8, 8)


def test_plan_tiles_aligns_and_falls_back():
    assert not plan_tiles(24, 72, 1.0, 24 * 72, overlap=8, align=32).tiled
    p = plan_tiles(24, 96, 1.0, 24 * 64, overlap=8, align=32)
    assert p.rows == ((0, 24),) and p.cols == ((0, 64), (32, 96))
    p = plan_tiles(24, 100, 1.0, 24 * 40, overlap=8, align=32)  # at least two windows, over the budget
    assert p.cols == ((0, 64), (32, 100))
    p = plan_tiles(24, 72, 1.0, 24 * 40, overlap=8)  # no windows to keep
    assert p.cols == ((0, 40), (32, 72))
    p = plan_tiles(300, 300, 1.0, 100 * 100, overlap=8, align=32)
    assert all(lo % 32 == 0 for lo, _ in p.rows + p.cols) and p.rows == ((0, 96), (64, 160), (128, 224), (192, 300))
