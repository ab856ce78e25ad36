"""cod.chroma: the coarse colour sent beside the indices (.cod v4)."""
import numpy as np
import pytest

from cod import chroma
from cod.entropy import TOTAL
from cod.errors import BitstreamError
from tests.conftest import ROOT

PARROTS = ROOT / "cod" / "samples" / "parrots.png"


def _photo() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(PARROTS).convert("RGB"))


def _cbcr_means(image: np.ndarray, block: int) -> np.ndarray:
    """Reference block means in Cb/Cr, computed the slow, obvious way."""
    H, W = image.shape[:2]
    x = image.astype(np.float64)
    cb = -0.168736 * x[..., 0] - 0.331264 * x[..., 1] + 0.5 * x[..., 2]
    cr = 0.5 * x[..., 0] - 0.418688 * x[..., 1] - 0.081312 * x[..., 2]
    out = np.zeros((-(-H // block), -(-W // block), 2))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            sl = np.s_[i * block : (i + 1) * block, j * block : (j + 1) * block]
            out[i, j] = cb[sl].mean(), cr[sl].mean()
    return out


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 64), (130, 200)])
def test_block_means_match_the_obvious_computation(shape):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = chroma.block_means(img, 16) @ chroma.RGB_TO_CBCR.T
    np.testing.assert_allclose(got, _cbcr_means(img, 16), atol=1e-9)


@pytest.mark.parametrize("block,step", [(64, 4), (16, 1), (8, 32), (255, 3)])
@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (512, 768)])
def test_roundtrip_is_exact(block, step, shape):
    rng = np.random.default_rng(block + step)
    img = _photo()[: shape[0], : shape[1]] if shape[0] > 100 else rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    info = chroma.measure(img, block, step)
    back = chroma.decode(chroma.encode(info), *shape)
    assert (back.block, back.step) == (block, step)
    np.testing.assert_array_equal(back.levels, info.levels)
    np.testing.assert_allclose(info.cbcr, _cbcr_means(img, block), atol=step / 2 + 1e-9)  # quantised, not clipped here


def test_extreme_colours_roundtrip():
    """Saturated blue / red blocks reach the largest levels; they must survive the coder."""
    img = np.zeros((64, 256, 3), dtype=np.uint8)
    img[:, :64] = (0, 0, 255)
    img[:, 64:128] = (255, 255, 0)
    img[:, 128:192] = (255, 0, 0)
    img[:, 192:] = (0, 255, 255)
    for step in (1, 4, 32):
        info = chroma.measure(img, 64, step)
        assert np.abs(info.levels).max() == chroma.max_level(step) or step == 1
        np.testing.assert_array_equal(chroma.decode(chroma.encode(info), 64, 256).levels, info.levels)


def test_payload_is_pinned():
    """The coder's output for a fixed input is part of the file format (docs/format.md): a
    change of table, predictor or order must show here, not in users' files."""
    levels = np.array([[[0, 0], [3, -2], [5, -4]], [[1, 1], [4, -3], [-8, 7]]], dtype=np.int64)
    payload = chroma.encode(chroma.ChromaInfo(64, 4, levels))
    assert payload.hex() == PINNED
    np.testing.assert_array_equal(chroma.decode(payload, 128, 192).levels, levels)


PINNED = "4004888ccd225fa72b0c72"


def test_predictor_is_loco_i_and_the_wavefront_inverts_it():
    """_med is LOCO-I's median edge detector (checked against its scalar definition on every
    ordering of a, b, c); the decoder's anti-diagonal reconstruction inverts the encoder's
    residuals on grids of any shape."""
    def scalar(a, b, c):
        if c >= max(a, b):
            return min(a, b)
        if c <= min(a, b):
            return max(a, b)
        return a + b - c

    vals = np.array([-3, 0, 2, 5])
    a, b, c = (x.ravel() for x in np.meshgrid(vals, vals, vals, indexing="ij"))
    assert list(chroma._med(a, b, c)) == [scalar(*t) for t in zip(a.tolist(), b.tolist(), c.tolist())]
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (1, 7), (6, 1), (5, 9), (12, 4)):
        levels = rng.integers(-60, 61, shape)
        np.testing.assert_array_equal(chroma._reconstruct(chroma._residuals(levels)), levels)


def test_tables_are_valid_distributions():
    for ratio in chroma._RATIOS:
        for radius in (2, 64, 256):
            t = chroma._table(ratio, radius)
            assert t.sum() == TOTAL and t.min() >= 1 and len(t) == 2 * radius + 1
            assert np.abs(t - t[::-1]).max() <= 1  # symmetric up to the rounding's tie-break
            assert np.all(np.diff(t[radius:]) <= 0)  # mode at 0, falling with |r|


def test_encoder_picks_the_cheapest_scale():
    """A flat image costs next to nothing; a busy one costs more, and both decode."""
    flat = np.full((512, 512, 3), 120, dtype=np.uint8)
    colours = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    busy = np.repeat(np.repeat(colours, 64, 0), 64, 1)  # a random colour in every block
    sizes = {}
    for name, img in (("flat", flat), ("busy", busy)):
        info = chroma.measure(img)
        payload = chroma.encode(info)
        sizes[name] = len(payload)
        np.testing.assert_array_equal(chroma.decode(payload, 512, 512).levels, info.levels)
    assert sizes["flat"] <= 8 < 4 * 8 < sizes["busy"]


def test_apply_moves_block_colour_to_the_target_and_keeps_luma():
    """A decode with the wrong colours gets the original's block-mean Cb/Cr back (up to the
    step and rounding), its luma untouched."""
    rng = np.random.default_rng(0)
    original = np.clip(rng.normal(128, 20, (128, 192, 3)) + np.linspace(-40, 40, 192)[None, :, None] * np.array([1, -0.5, 0.3]), 0, 255).astype(np.uint8)
    luma = original.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = np.repeat(np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    info = chroma.measure(original, 32, 2)
    fixed = chroma.apply(grey, info)
    before = np.abs(_cbcr_means(grey, 32) - _cbcr_means(original, 32)).mean()
    after = np.abs(_cbcr_means(fixed, 32) - _cbcr_means(original, 32)).mean()
    assert before > 5 * after and after < 2.5, (before, after)
    luma_fixed = fixed.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma_fixed - grey[..., 0]).mean() < 0.6  # rounding only


def test_apply_on_a_decode_that_is_right_changes_little():
    img = _photo()[:256, :256]
    out = chroma.apply(img, chroma.measure(img, 64, 4))
    assert np.abs(out.astype(int) - img).mean() < 1.5


def test_apply_is_the_same_in_strips(monkeypatch):
    """Rows are corrected in strips (memory); the strip height must not change the result."""
    img = _photo()[:300, :200]
    target = chroma.measure(np.ascontiguousarray(img[:, ::-1]), 64, 4)
    whole = chroma.apply(img, target)
    monkeypatch.setattr(chroma, "_STRIP_ROWS", 7)
    np.testing.assert_array_equal(chroma.apply(img, target), whole)
    inplace = img.copy()
    assert chroma.apply(inplace, target, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, whole)


def test_apply_refuses_a_grid_of_another_size():
    info = chroma.measure(np.zeros((64, 64, 3), np.uint8), 32)
    with pytest.raises(BitstreamError, match="block grid"):
        chroma.apply(np.zeros((100, 64, 3), np.uint8), info)


@pytest.mark.parametrize("payload,match", [
    (b"", "corrupt chroma"),
    (b"\x40", "corrupt chroma"),
    (b"\x04\x04\x00", "block 4"),
    (b"\x40\x00\x00", "step 0"),
    (b"\x40\x04\x00" + b"\xff" * 100, "bytes for"),
])
def test_corrupt_payloads_are_refused(payload, match):
    with pytest.raises(BitstreamError, match=match):
        chroma.decode(payload, 64, 64)


def test_random_payloads_decode_or_fail_cleanly():
    rng = np.random.default_rng(5)
    for _ in range(300):
        payload = bytes([64, int(rng.integers(1, 33)), int(rng.integers(0, 256))]) + rng.bytes(int(rng.integers(0, 12)))
        try:
            info = chroma.decode(payload, 130, 200)
        except BitstreamError:
            continue
        assert np.abs(info.levels).max(initial=0) <= chroma.max_level(info.step)


def test_measure_refuses_bad_settings():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="block"):
        chroma.measure(img, 4)
    with pytest.raises(ValueError, match="step"):
        chroma.measure(img, 64, 33)
