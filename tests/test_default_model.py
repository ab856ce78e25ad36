"""The models shipped inside the package (cod/weights/, docs/models.md): they load strictly,
fit the size budget, and decode the stored sample bitstreams to the stored images."""
import numpy as np
import pytest
from PIL import Image

import cod
from cod import bitstream
from cod.families import WEIGHTS_DIR, installed_weights
from cod.zoo import DEFAULT_MODEL, MODELS, SMALL_RATES
from tests.conftest import ROOT

SAMPLES = ROOT / "tests" / "data"
SHIPPED = [f"codlite-small-{r}" for r in SMALL_RATES]


def test_every_small_model_is_shipped_within_the_size_budget():
    inst = installed_weights()
    assert set(SHIPPED) <= set(inst), f"missing from {WEIGHTS_DIR}: {sorted(set(SHIPPED) - set(inst))}"
    assert DEFAULT_MODEL in inst
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert total <= 60_000_000, f"{total / 1e6:.1f} MB of weights in the package"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_strictly_as_the_zoo_model(name):
    from cod.checkpoint import read_weights
    from cod.families import load_network as load_model

    config, state = read_weights(installed_weights()[name])
    model, _ = load_model(name)  # strict: every tensor present, no extra, right shapes
    want = dict(MODELS[name])
    assert {k: config[k] for k in want} == want
    from cod.entropy import split_prior

    prior = split_prior(state)  # the index prior (cod fit-prior): the files are entropy-coded (.cod v2)
    assert sorted(prior) == ["entropy_prior.classes", "entropy_prior.context", "entropy_prior.static"]
    assert len(state) == len(model.state_dict())


@pytest.mark.parametrize("name", SHIPPED)
def test_stored_sample_bitstream_decodes_to_the_stored_image(name):
    """Decoding is pinned: the sample file made at release time decodes to the stored PNG
    (within 1 level: other CPUs may round differently), and encoding the sample image again
    gives (almost) the same indices."""
    data = (SAMPLES / f"sample.{name}.cod").read_bytes()
    want = np.asarray(Image.open(SAMPLES / f"sample.{name}.png").convert("RGB")).astype(int)
    codec = cod.load(name, precision="fp32")  # the faithful path is the pinned one
    got = np.asarray(codec.decompress(data)).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1
    # the default (fast) path keeps the accuracy budget of docs/speed.md: >= 40 dB from fp32
    fast = np.asarray(cod.load(name).decompress(data)).astype(float)
    mse = np.mean((fast - got) ** 2)
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40
    from cod import bitstream as bs

    fresh = codec.compress(np.asarray(Image.open(SAMPLES / "sample.png").convert("RGB")))
    again, stored = bs.read_cod(fresh), bs.read_cod(data)
    assert (again.header.family, again.header.ds, again.header.bits, again.header.model_tag, again.header.height, again.header.width) == \
        (stored.header.family, stored.header.ds, stored.header.bits, stored.header.model_tag, stored.header.height, stored.header.width)
    # entropy-coded indices and the chroma side information (.cod v4, cod.chroma): the same colour data
    assert again.header.version == stored.header.version == 4 and again.header.coding and again.header.prior_tag == stored.header.prior_tag
    assert again.chroma == stored.chroma and again.chroma[0] == MODELS[name]["chroma_block"]
    same = np.mean(codec.parse(fresh)[0] == codec.parse(data)[0])
    assert same >= 0.98, f"only {same:.1%} of the indices agree"


def test_default_model_reconstructs_a_photo():
    """Not a fake: the shipped default model carries the photo's content (clearly above the
    PSNR of the flat mean colour; the model is weak, docs/models.md) at its nominal rate."""
    from cod.eval.metrics import psnr

    img = np.asarray(Image.open(SAMPLES / "sample.png").convert("RGB"))
    codec = cod.load()
    data = codec.compress(img)
    rec = np.asarray(codec.decompress(data))
    flat = np.broadcast_to(img.reshape(-1, 3).mean(0).round().astype(np.uint8), img.shape)
    assert psnr(img, rec) > psnr(img, flat) + 3
    # entropy-coded: the indices take at least 10 % less than the nominal 0.03125 bpp of
    # fixed-length codes; the file adds its header and the chroma side information (on this
    # 256x256 sample ~50 bytes, ~0.006 bpp; on a 768x512 photo ~5 % of the file)
    indices_bpp = 8 * len(bitstream.read_cod(data).payload) / (img.shape[0] * img.shape[1])
    assert indices_bpp < 0.9 * 0.03125, indices_bpp
    assert 8 * len(data) / (img.shape[0] * img.shape[1]) < 0.03125 + 0.008


@pytest.mark.parametrize("model, version", [("0.0312", "v1"), ("0.0312", "v2"), ("0.0312", "v2c"), ("0.0312", "v2e"), ("0.0312", "v2h"), ("0.0312", "v2i"), ("0.125", "v2"), ("0.125", "v2b"), ("0.125", "v2c")])
def test_files_of_the_retired_models_are_named(model, version):
    """A .cod file of an earlier shipped model (v1: cod 0.1; 0.0312 v2, v2c, v2e and v2h (g0, g0c, g0e, g0h) and
    0.125 v2, v2b and v2c (g125, g125b, g125c): before their longer GAN phases, the grid term or the GAN continuation) meets no installed model: the error names the
    retired model and where its weights are."""
    from cod.errors import ModelMismatchError
    from cod.families import installed_codec_for

    data = (SAMPLES / f"retired.codlite-small-{model}-{version}.cod").read_bytes()
    with pytest.raises(ModelMismatchError, match=f"retired model codlite-small-{model} {version}.*git show"):
        installed_codec_for(data)
