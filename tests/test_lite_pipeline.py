"""cod.lite_pipeline: tiled encoding and decoding within a memory budget (issue 16)."""
import numpy as np
import pytest
import torch

import cod
from cod.lite_pipeline import condition_plan, encode_plan
from tests.conftest import ROOT
from tests.test_inference import _photo, psnr

SMALL = ROOT / "cod" / "weights" / "codlite-small-0.0312.safetensors"


@pytest.fixture(scope="module")
def small():
    return cod.load(weights=SMALL, precision="fp32")


def _tiny_budget(codec, area: int) -> int:
    """A budget whose condition-decoder tiles cover ``area`` index positions."""
    from cod.lite_pipeline import condition_bytes_per_index

    return int(condition_bytes_per_index(codec.engine) * area) + 1


@pytest.mark.parametrize("precision", ["fp32", "fast"])
def test_tiled_decode_is_close_to_the_whole_decode(small, precision):
    """A small image decoded with a tiny budget (condition decoder in window-aligned tiles with
    shared GroupNorm statistics, pixel head in bands) stays within 40 dB of the whole decode,
    and the pixel bands alone change nothing."""
    small.precision = precision
    img = _photo(384, 1536)  # index grid 24 x 96: strips 64 wide (two attention windows)
    data = small.compress(img)
    idx, H, W, grid = small.parse(data)
    whole = np.asarray(small.decompress(data))
    small.memory_budget = _tiny_budget(small, 24 * 64)
    try:
        plan = condition_plan(small.engine, grid, small.ds, small.multiple, small.model.attention_window, small.memory_budget)
        assert plan.rows == ((0, 24),) and plan.cols == ((0, 64), (32, 96))  # window-aligned
        tiled = np.asarray(small.decompress(data))
    finally:
        small.memory_budget = None  # back to the budget from max_memory
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 40.0, psnr(tiled, whole)


def test_pixel_bands_are_exact(small, monkeypatch):
    """Bands of token rows (the only cut when the condition map fits) give the same pixels."""
    from cod import lite_pipeline

    small.precision = "fp32"
    img = _photo(200, 136)  # odd crop: the last band is partial
    data = small.compress(img)
    whole = np.asarray(small.decompress(data))
    monkeypatch.setattr(lite_pipeline, "PIXEL_BAND_BYTES_PER_PIXEL", 1e9)  # one token row per band
    banded = np.asarray(small.decompress(data))
    assert np.array_equal(banded, whole)


@pytest.mark.parametrize("native_bf16", [False, True], ids=["fp32-encoder", "mixed-encoder"])
def test_tiled_encode_stays_close(small, native_bf16, monkeypatch):
    """Encoding in overlapping window-aligned strips (blended encoder outputs, each strip with
    its own GroupNorm statistics) keeps most indices and the reconstruction quality, with the
    fast path's float32 encoder and with its mixed one (CPUs with native bf16)."""
    from cod import inference
    from cod.lite_pipeline import encoder_bytes_per_pixel

    monkeypatch.setattr(inference, "cpu_native_bf16", lambda: native_bf16)
    small.precision = "fast"
    assert small.engine.plan.encoder_mixed == native_bf16
    img = _photo(256, 1536)  # 16 x 96 units of 16 pixels: two strips 64 wide (two attention windows)
    whole = small.compress(img)
    rec_whole = np.asarray(small.decompress(whole))
    small.memory_budget = int(encoder_bytes_per_pixel(small.engine) * 256 * 16 * 64) + 1
    try:
        plan = encode_plan(small.engine, 256, 1536, small.ds, small.multiple, small.model.attention_window, small.memory_budget)
        assert plan.cols == ((0, 64), (32, 96)), plan
        data = small.compress(img)
    finally:
        small.memory_budget = None  # back to the budget from max_memory
    same = (small.parse(data)[0] == small.parse(whole)[0]).mean()
    rec = np.asarray(small.decompress(data))
    assert same > 0.7, same
    assert psnr(rec, img) > psnr(rec_whole, img) - 0.5


@pytest.mark.parametrize("rate", ["0.5", "0.0039"])
def test_tiling_at_other_strides(tmp_path, rate):
    """ds 4 (four index positions per 16-pixel unit) and ds 32 (two condition positions per
    index): tiled and whole decodes agree closely, tiled encoding runs."""
    from tests.conftest import make_tiny_weights

    # a window of 2 positions: tiles stay window-aligned on a small image
    codec = cod.load(weights=make_tiny_weights(tmp_path / "w.safetensors", rate, attention_window=2), precision="fp32")
    img = _photo(128, 160) if rate == "0.5" else _photo(256, 640)  # index grids 32 x 40 (ds 4), 8 x 20 (ds 32)
    data = codec.compress(img)
    whole = np.asarray(codec.decompress(data))
    codec.memory_budget = _tiny_budget(codec, 28 * 28 if rate == "0.5" else 8 * 12)
    _, _, _, grid = codec.parse(data)
    assert condition_plan(codec.engine, grid, codec.ds, codec.multiple, codec.model.attention_window, codec.memory_budget).tiled
    tiled = np.asarray(codec.decompress(data))
    assert psnr(tiled, whole) >= 30.0, psnr(tiled, whole)
    codec.memory_budget = 64 * 2**10
    assert len(codec.parse(codec.compress(img))[0]) == grid[0] * grid[1]


def test_thread_count_does_not_change_the_plan(small):
    """Tiles come from the budget and the image alone (the same for any thread count)."""
    n = torch.get_num_threads()
    a = condition_plan(small.engine, (68, 120), 16, 16, 32, 10**7)
    torch.set_num_threads(1)
    try:
        assert condition_plan(small.engine, (68, 120), 16, 16, 32, 10**7) == a
    finally:
        torch.set_num_threads(n)
