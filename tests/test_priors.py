"""Entropy-coded .cod v2 through the codecs and the CLI: fit-prior, identical decodes, smaller
files, v1 still read, clean refusals (cod.priors, cod.codec, cod.cli)."""
from __future__ import annotations


import numpy as np
import pytest

import cod
from cod import bitstream as bs
from cod.cli import main
from cod.errors import BitstreamError, CodError, ModelMismatchError
from cod.priors import fit_model_prior
from tests.conftest import TEST_PHOTOS
from tests.test_codec import smooth_image


@pytest.fixture(scope="module")
def fitted(tiny_weights, tmp_path_factory):
    """rate -> weights of a tiny model with a prior fitted on the test photos."""
    d = tmp_path_factory.mktemp("priors")
    return {r: fit_model_prior(tiny_weights[r], [TEST_PHOTOS], d / f"p-{r}.safetensors", groups=4, max_side=512)["output"] for r in ("0.0312", "0.125")}


@pytest.mark.parametrize("rate", ["0.0312", "0.125"])
@pytest.mark.parametrize("size", [(1, 1), (37, 61), (128, 96)])
def test_v2_decodes_exactly_as_v1(fitted, rate, size):
    v2 = cod.load(weights=fitted[rate])
    v1 = cod.load(weights=fitted[rate], entropy=False)
    img = smooth_image(*size, seed=sum(size))
    d2, d1 = v2.compress(img), v1.compress(img)
    assert d2[3] == 2 and d1[3] == 1
    assert np.array_equal(v2.parse(d2)[0], v1.parse(d1)[0])  # the same indices
    a, b = np.asarray(v2.decompress(d2)), np.asarray(v1.decompress(d1))
    assert np.array_equal(a, b)
    assert np.array_equal(np.asarray(v2.decompress(d1)), b)  # v1 files still decode


def test_v2_is_smaller_on_photos(fitted):
    from cod.image_io import list_images, read_image

    codec = cod.load(weights=fitted["0.0312"])
    plain = cod.load(weights=fitted["0.0312"], entropy=False)
    sizes = [(len(codec.compress(read_image(f))), len(plain.compress(read_image(f)))) for f in list_images([TEST_PHOTOS])]
    assert sum(a for a, _ in sizes) < 0.95 * sum(b for _, b in sizes), sizes


def test_official_format_stays_fixed_length(fitted, tiny_weights):
    codec = cod.load(weights=fitted["0.0312"])
    plain = cod.load(weights=tiny_weights["0.0312"])
    img = smooth_image(64, 64)
    assert codec.compress(img, format="official") == plain.compress(img, format="official")


def test_fit_prior_keeps_the_network_and_dtype(fitted, tiny_weights):
    from safetensors import safe_open

    with safe_open(str(tiny_weights["0.0312"]), "pt") as a, safe_open(str(fitted["0.0312"]), "pt") as b:
        extra = set(b.keys()) - set(a.keys())
        assert extra == {"entropy_prior.static", "entropy_prior.classes", "entropy_prior.context"}
        for k in a.keys():
            assert (a.get_tensor(k) == b.get_tensor(k)).all(), k
        assert a.metadata()["cod_config"] == b.metadata()["cod_config"]


def test_v2_refusals(fitted, tiny_weights, tmp_path):
    codec = cod.load(weights=fitted["0.0312"])
    data = codec.compress(smooth_image(64, 80))
    with pytest.raises(ModelMismatchError, match="no index prior"):
        cod.load(weights=tiny_weights["0.0312"]).decompress(data)  # same network, no prior
    other = fit_model_prior(tiny_weights["0.0312"], [TEST_PHOTOS], tmp_path / "other.safetensors", groups=2, max_side=256)["output"]
    if cod.load(weights=other).prior.tag != codec.prior.tag:
        with pytest.raises(ModelMismatchError, match="another index prior"):
            cod.load(weights=other).decompress(data)


def _recrc(data: bytes, payload: bytes) -> bytes:
    """A v2 file with another payload, its length and CRC fixed (what a fuzzer does)."""
    f = bs.read_cod(data)
    return bs.write_cod(f.header, payload)


def test_corrupt_v2_payloads_give_clean_errors_or_images(fitted):
    codec = cod.load(weights=fitted["0.0312"])
    data = codec.compress(smooth_image(64, 96))
    payload = bs.read_cod(data).payload
    rng = np.random.default_rng(0)
    for trial in range(40):
        p = bytearray(payload)
        if trial % 3 == 0 and p:
            p[rng.integers(len(p))] ^= 1 << int(rng.integers(8))
        elif trial % 3 == 1:
            p = p[: rng.integers(len(p) + 1)]
        else:
            p = bytearray(rng.integers(0, 256, rng.integers(0, 40)).astype(np.uint8).tobytes())
        try:
            img = codec.decompress(_recrc(data, bytes(p)))
            assert img.size == (96, 64)
        except CodError:
            pass
    with pytest.raises(BitstreamError, match="larger than"):
        codec.decompress(_recrc(data, b"\x01" * (3 * 24 + 9)))  # 4x6 indices
    # a flipped bit anywhere without the CRC fix is caught by the CRC
    bad = bytearray(data)
    bad[-1] ^= 4
    with pytest.raises(BitstreamError, match="CRC"):
        codec.decompress(bytes(bad))


def test_cli_fit_prior_compress_info(tiny_weights, tmp_path, capsys):
    out = tmp_path / "with-prior.safetensors"
    assert main(["fit-prior", str(TEST_PHOTOS), "--weights", str(tiny_weights["0.0312"]), "-o", str(out), "--groups", "4", "--max-side", "256"]) == 0
    assert "prior" in capsys.readouterr().out
    assert main(["fit-prior", str(TEST_PHOTOS), "--weights", str(tiny_weights["0.0312"]), "-o", str(out)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(smooth_image(64, 64)).save(img)
    for mode, version in (("on", 2), ("off", 1)):
        cod_file = tmp_path / f"x-{mode}.cod"
        assert main(["compress", str(img), "-o", str(cod_file), "--weights", str(out), "--entropy", mode, "-q"]) == 0
        assert cod_file.read_bytes()[3] == version
        assert main(["info", str(cod_file), "--json"]) == 0
        info = __import__("json").loads(capsys.readouterr().out)
        assert info["format_version"] == version
        assert info["index_coding"] == ("context" if mode == "on" else "fixed-length")
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    Image.fromarray(smooth_image(64, 64)).save(kodak / "k.png")
    assert main(["fit-prior", str(kodak), "--weights", str(tiny_weights["0.0312"]), "-o", str(tmp_path / "k.safetensors")]) == 2
    assert "evaluation set" in capsys.readouterr().err
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    Image.fromarray(smooth_image(64, 64)).save(elsewhere / "kodim05.png")  # a Kodak file outside a kodak folder
    assert main(["fit-prior", str(elsewhere), "--weights", str(tiny_weights["0.0312"]), "-o", str(tmp_path / "k.safetensors")]) == 2
    assert "evaluation set" in capsys.readouterr().err


def test_fit_prior_on_a_cod_model(tmp_path):
    from cod.checkpoint import save_weights
    from cod.families import build_network
    from tests.test_cod_codec import randomise, tiny_cod_config

    cfg = tiny_cod_config("cod-pixel")
    w = tmp_path / "tiny-cod.safetensors"
    save_weights(w, randomise(build_network(cfg)).state_dict(), cfg)
    r = fit_model_prior(w, [TEST_PHOTOS], tmp_path / "tiny-cod-prior.safetensors", groups=4, max_side=128)
    codec = cod.load(weights=r["output"])
    assert codec.prior is not None
    img = smooth_image(64, 64)
    data = codec.compress(img)
    assert data[3] == 2
    assert np.array_equal(codec.parse(data)[0], cod.load(weights=w).parse(cod.load(weights=w).compress(img))[0])
