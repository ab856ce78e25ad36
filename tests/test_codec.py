"""Round trips of the public codec through real files at every rate and awkward sizes."""

import numpy as np
import pytest
import torch
from PIL import Image

import cod
from cod import bitstream as bs
from cod.errors import BitstreamError, CheckpointError, ModelMismatchError
from cod.zoo import RATES, pad_multiple


def smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 100 * np.sin(xx / 37 + c) * np.cos(yy / 23 - c) for c in range(3)], axis=2)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def codecs(tiny_weights):
    return {r: cod.load(weights=p) for r, p in tiny_weights.items()}


SIZES = [(1, 1), (17, 4000), (4000, 17), (33, 47), (480, 720), (1080, 1920)]


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_roundtrip_through_file(codecs, rate, size, tmp_path):
    codec = codecs[rate]
    h, w = size
    img = smooth_image(h, w)
    data = codec.compress(img)
    path = tmp_path / "x.cod"
    path.write_bytes(data)
    f = bs.read_cod(path.read_bytes())
    gh, gw = codec.grid(h, w)
    m = pad_multiple(RATES[rate][0])
    assert (gh, gw) == (-(-h // m) * m // RATES[rate][0], -(-w // m) * m // RATES[rate][0])
    assert len(f.payload) == bs.packed_size(gh * gw, RATES[rate][1])
    assert (f.header.height, f.header.width) == (h, w)
    out = codec.decompress(path.read_bytes())
    assert out.size == (w, h) and out.mode == "RGB"
    if h * w <= 500_000:  # deterministic: same bytes again, same image again
        assert codec.compress(img) == data
        assert np.array_equal(np.asarray(codec.decompress(data)), np.asarray(out))


@pytest.mark.parametrize("rate", ["0.0039", "0.0312"])
def test_roundtrip_4k(codecs, rate):
    img = smooth_image(2160, 3840)
    out = codecs[rate].decompress(codecs[rate].compress(img))
    assert out.size == (3840, 2160)


@pytest.mark.slow
@pytest.mark.parametrize("rate", ["0.0078", "0.0156", "0.125", "0.5"])
def test_roundtrip_4k_other_rates(codecs, rate):
    img = smooth_image(2160, 3840)
    assert codecs[rate].decompress(codecs[rate].compress(img)).size == (3840, 2160)


def test_input_kinds(codecs, tmp_path):
    codec = codecs["0.0312"]
    rgb = smooth_image(40, 56)
    ref = codec.compress(rgb)
    # grayscale file -> 3 equal channels
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    gray = codec.compress(tmp_path / "g.png")
    assert gray == codec.compress(np.repeat(rgb[:, :, :1], 3, axis=2))
    # RGBA: alpha dropped with a warning, same bytes as RGB
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "RGBA").save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha"):
        assert codec.compress(tmp_path / "a.png") == ref
    # 16-bit grayscale PNG
    g16 = (rgb[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    assert codec.compress(tmp_path / "g16.png") == gray
    # JPEG
    Image.fromarray(rgb).save(tmp_path / "j.jpg", quality=90)
    out = codec.decompress(codec.compress(tmp_path / "j.jpg"))
    assert out.size == (56, 40)
    # PIL image and float tensor inputs
    assert codec.compress(Image.fromarray(rgb)) == ref
    assert codec.compress(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255) == ref


def test_padding_modes_agree_on_exact_sizes(tiny_weights):
    img = smooth_image(64, 96)
    outs = [cod.load(weights=tiny_weights["0.0312"], pad_mode=m).compress(img) for m in ("replicate", "reflect", "constant")]
    assert outs[0] == outs[1] == outs[2]
    odd = smooth_image(50, 70)
    assert len({cod.load(weights=tiny_weights["0.0312"], pad_mode=m).compress(odd) for m in ("replicate", "constant")}) == 2


def test_decode_matches_unpadded_model_call(tiny_weights):
    """At exact multiples the faithful (fp32) codec is the bare model: encode -> decode_one_step."""
    codec = cod.load(weights=tiny_weights["0.125"], precision="fp32")
    img = smooth_image(64, 48)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        idx = codec.model.condition.encode(x)
        y = codec.model.decode_one_step(codec.model.condition.decode(idx, 8, 6))
    want = ((y + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(codec.decompress(codec.compress(img))), want)


def test_wrong_model_is_refused(codecs, tiny_weights, tmp_path):
    data = codecs["0.0312"].compress(smooth_image(32, 32))
    with pytest.raises(ModelMismatchError, match="ds=16"):
        codecs["0.125"].decompress(data)
    from tests.conftest import make_tiny_weights

    other = cod.load(weights=make_tiny_weights(tmp_path / "o.safetensors", "0.0312", seed=5))
    with pytest.raises(ModelMismatchError, match="other weights"):
        other.decompress(data)


def test_official_format_roundtrip(codecs):
    codec = codecs["0.0156"]
    img = smooth_image(64, 80)
    data = codec.compress(img, format="official")
    assert data[:4] == (80).to_bytes(2, "little") + (64).to_bytes(2, "little")
    assert np.array_equal(np.asarray(codec.decompress(data, "official")), np.asarray(codec.decompress(codec.compress(img))))
    with pytest.raises(BitstreamError, match="bad magic"):
        codec.decompress(data)  # never guessed
    # an odd size is stored padded (the official header has no original size)
    padded = codec.decompress(codec.compress(smooth_image(50, 70), format="official"), "official")
    assert padded.size == (80, 64)
    with pytest.raises(BitstreamError, match="payload"):
        codec.decompress(data[:-1], format="official")


def test_official_file_with_floor_grid_gets_grey_border(codecs):
    """The original decoder reads floor(H/ds) rows and leaves the rest 0 (=128 grey)."""
    codec = codecs["0.0312"]
    h, w = 40, 48  # 40 = 2*16 + 8
    payload = bs.pack_indices(np.zeros(2 * 3, dtype=np.int64), 8)
    out = np.asarray(codec.decompress(bs.write_official(h, w, payload), "official"))
    assert out.shape == (40, 48, 3)
    assert (out[32:] == 128).all()


def test_missing_weights_message():
    with pytest.raises(CheckpointError, match="no weights installed for codlite-0.0312"):
        cod.load("codlite-0.0312")
    with pytest.raises(CheckpointError, match="not found"):
        cod.load("codlite-0.0312", weights="/nonexistent.safetensors")


def test_name_must_match_weights(tiny_weights):
    with pytest.raises(CheckpointError, match="not codlite-0.5"):
        cod.load("codlite-0.5", weights=tiny_weights["0.0312"])


def test_crafted_header_with_valid_crc_is_refused(codecs):
    """A well-formed file whose header claims an absurd size is refused before decoding."""
    codec = codecs["0.0312"]
    header = bs.CodHeader(1, 16, 8, codec.model_tag, 1_000_000, 1_000_000)
    with pytest.raises(BitstreamError, match="above the limit"):
        codec.decompress(bs.write_cod(header, b"\0" * 10))
    header = bs.CodHeader(1, 16, 8, codec.model_tag, 64, 64)
    with pytest.raises(BitstreamError, match="payload is 10 bytes"):
        codec.decompress(bs.write_cod(header, b"\0" * 10))


# ------------------------------------------------------------------ chroma side information (.cod v4)
@pytest.fixture(scope="module")
def chroma_weights(tmp_path_factory):
    """The tiny 0.0312 model of ``codecs`` (same seed, same codebook) with a chroma block in its config."""
    from tests.conftest import make_tiny_weights

    return make_tiny_weights(tmp_path_factory.mktemp("chroma") / "c.safetensors", "0.0312", chroma_block=32)


@pytest.fixture(scope="module")
def chroma_codec(chroma_weights):
    return cod.load(weights=chroma_weights)


def test_chroma_file_is_v4_and_decodes_to_the_corrected_image(chroma_codec, codecs):
    from cod import chroma

    img = smooth_image(100, 140, seed=3)
    data = chroma_codec.compress(img)
    f = bs.read_cod(data)
    assert f.header.version == 4 and (f.chroma[0], f.chroma[1]) == (32, chroma.DEFAULT_STEP)
    plain = codecs["0.0312"]  # no chroma block: v1 (no prior), the same indices
    assert plain.compress(img)[3] == 1
    np.testing.assert_array_equal(chroma_codec.parse(data)[0], plain.parse(plain.compress(img))[0])
    decoded = np.asarray(chroma_codec.decompress(data))
    expected = chroma.apply(np.asarray(plain.decompress(plain.compress(img))), chroma.measure(img, 32))
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(np.asarray(plain.decompress(data)), expected)  # any CoD-Lite codec reads v4
    # the decode's block colours are the original's (the random model's own are not)
    own = chroma.block_means(np.asarray(plain.decompress(plain.compress(img))), 32) @ chroma.RGB_TO_CBCR.T
    fixed = chroma.block_means(decoded, 32) @ chroma.RGB_TO_CBCR.T
    want = chroma.measure(img, 32).cbcr
    assert np.abs(fixed - want).mean() < 0.25 * np.abs(own - want).mean()


def test_chroma_off_and_official_format_write_indices_only(chroma_codec, chroma_weights, codecs):
    img = smooth_image(64, 64)
    off = cod.load(weights=chroma_weights, chroma=False)
    assert off.chroma_block == 0 and chroma_codec.chroma_block == 32
    assert off.compress(img) == codecs["0.0312"].compress(img)  # v1: indices only, same bytes
    official = chroma_codec.compress(img, format="official")
    assert official == codecs["0.0312"].compress(img, format="official")
    with pytest.raises(Exception, match="no room for chroma"):
        chroma_codec.write_file(np.zeros(16, np.int64), 64, 64, "official", chroma=b"\x40\x04\x00")


def test_chroma_block_given_as_an_int_overrides_the_config(chroma_weights):
    """cod.load(chroma=N): N-pixel blocks whatever the config says (benchmarks, tools/ship_weights);
    a block outside cod.chroma's range is refused when the codec is made."""
    img = smooth_image(100, 140, seed=3)
    c16 = cod.load(weights=chroma_weights, chroma=16)
    assert c16.chroma_block == 16 and bs.read_cod(c16.compress(img)).chroma[0] == 16
    with pytest.raises(ValueError, match="chroma block must be in"):
        cod.load(weights=chroma_weights, chroma=1000)


def test_chroma_file_with_corrupt_side_information_is_refused(chroma_codec):
    import dataclasses

    data = chroma_codec.compress(smooth_image(64, 64))
    f = bs.read_cod(data)
    bad = bs.write_cod(f.header, f.payload, chroma=b"\x02\x04\x00")  # block 2: not a valid payload
    with pytest.raises(BitstreamError, match="corrupt chroma"):
        chroma_codec.decompress(bad)
    assert dataclasses.replace(f.header, chroma=False).version == 1
