"""Classical baselines: round trips at three target bpps, the bpp search, lowest rates, names."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cod.errors import CodError
from cod.eval.baselines import (
    BASELINE_NAMES,
    DownscaledBaseline,
    FixedQuality,
    available_baselines,
    bits_per_pixel,
    encode_at_bpp,
    get_baseline,
    is_baseline_name,
    lowest_bpp,
)
from cod.eval.metrics import psnr

SAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "cod" / "samples" / "parrots.png"  # kodim23
TARGETS = (0.35, 0.7, 1.4)


@pytest.fixture(scope="module")
def image():
    """kodim23 downscaled to 192x128 (the package's sample photo is the same image)."""
    return np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB").resize((192, 128), Image.Resampling.LANCZOS))


def baseline_or_skip(name):
    try:
        return get_baseline(name)
    except CodError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", list(BASELINE_NAMES) + ["avif-down2"])
def test_round_trip_at_three_target_bpps(image, name):
    codec = baseline_or_skip(name)
    h, w = image.shape[:2]
    cache: dict = {}
    quality_psnr = []
    for target in TARGETS:
        enc = encode_at_bpp(codec, image, target, cache)
        assert enc.target_reached, (name, target)
        assert enc.bpp == bits_per_pixel(enc.data, h, w) == 8 * len(enc.data) / (h * w)
        assert enc.bpp <= target
        rec = codec.decompress(enc.data)
        assert rec.shape == image.shape and rec.dtype == np.uint8
        quality_psnr.append(psnr(image, rec))
        # closest from below: one quality step up is above the target, or (sizes are not
        # always monotone in quality, e.g. JPEG XL) no closer to it from below
        lo, hi = codec.quality_range
        if codec.integer_quality and enc.quality < hi:
            up = bits_per_pixel(codec.compress(image, enc.quality + 1), h, w)
            assert up > target or up <= enc.bpp
        elif not codec.integer_quality:
            assert enc.bpp > 0.97 * target
    assert quality_psnr == sorted(quality_psnr), quality_psnr  # more bits, higher PSNR
    assert quality_psnr[0] > 20
    assert name in codec.describe() or codec.describe()  # a non-empty description


@pytest.mark.parametrize("name", ["jpeg", "webp", "jpeg2000"])
def test_unreachable_target_reports_the_lowest_rate(image, name):
    codec = baseline_or_skip(name)
    enc = encode_at_bpp(codec, image, 0.001)
    assert not enc.target_reached
    assert enc.quality == codec.quality_range[0]
    assert enc.bpp == pytest.approx(lowest_bpp(codec, image))
    assert enc.bpp > 0.001


def test_search_reuses_encodings_across_targets(image):
    codec = get_baseline("jpeg")
    cache: dict = {}
    for t in TARGETS:
        encode_at_bpp(codec, image, t, cache)
    # bisection over 1..100 needs at most ~9 encodings per target; shared ends make it fewer in total
    assert len(cache) < 3 * 9


def test_downscaled_codec_counts_its_size_header(image):
    inner = baseline_or_skip("avif")
    down = get_baseline("avif-down4")
    assert isinstance(down, DownscaledBaseline) and down.name == "avif-down4"
    data = down.compress(image, 30)
    small = np.asarray(Image.fromarray(image).resize((48, 32), Image.Resampling.LANCZOS))
    assert len(data) == 4 + len(inner.compress(small, 30))
    assert down.decompress(data).shape == image.shape
    # it reaches lower rates than the full-size codec
    assert lowest_bpp(down, image) < lowest_bpp(inner, image)


def test_names_and_errors():
    assert is_baseline_name("jpeg") and is_baseline_name("avif-down4")
    assert not is_baseline_name("codlite-0.0312") and not is_baseline_name("jpeg-0.1")
    with pytest.raises(CodError, match="unknown baseline codec 'png'"):
        get_baseline("png")
    with pytest.raises(CodError, match="at least 2"):
        get_baseline("jpeg-down1")
    with pytest.raises(CodError, match="positive"):
        encode_at_bpp(get_baseline("jpeg"), np.zeros((8, 8, 3), np.uint8), 0)
    assert {"jpeg", "webp"} <= set(available_baselines())


def test_fixed_quality_adapter(image):
    codec = FixedQuality(get_baseline("webp"), 50)
    assert codec.name == "webp-q50"
    data = codec.compress(Image.fromarray(image))
    assert data == get_baseline("webp").compress(image, 50)
    assert codec.decompress(data).shape == image.shape
    with pytest.raises(CodError, match="outside"):
        FixedQuality(get_baseline("jpeg2000"), 75)
