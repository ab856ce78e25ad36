"""The models shipped inside the package (cod/weights/, docs/models.md): they load strictly,
fit the size budget, and decode the stored sample bitstreams to the stored images."""
import numpy as np
import pytest
from PIL import Image

import cod
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
    assert total <= 25_000_000, f"{total / 1e6:.1f} MB of weights in the package"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_strictly_as_the_zoo_model(name):
    from cod.checkpoint import read_weights
    from cod.families import load_network as load_model

    config, state = read_weights(installed_weights()[name])
    model, _ = load_model(name)  # strict: every tensor present, no extra, right shapes
    want = dict(MODELS[name])
    assert {k: config[k] for k in want} == want
    assert len(state) == len(model.state_dict())


@pytest.mark.parametrize("name", SHIPPED)
def test_stored_sample_bitstream_decodes_to_the_stored_image(name):
    """Decoding is pinned: the sample file made at release time decodes to the stored PNG
    (within 1 level: other CPUs may round differently), and encoding the sample image again
    gives (almost) the same indices."""
    data = (SAMPLES / f"sample.{name}.cod").read_bytes()
    want = np.asarray(Image.open(SAMPLES / f"sample.{name}.png").convert("RGB")).astype(int)
    codec = cod.load(name)
    got = np.asarray(codec.decompress(data)).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1
    from cod import bitstream as bs

    again = bs.read_cod(codec.compress(np.asarray(Image.open(SAMPLES / "sample.png").convert("RGB"))))
    stored = bs.read_cod(data)
    assert again.header == stored.header  # size, rate, model tag
    assert len(again.payload) == len(stored.payload)
    same = np.mean(np.frombuffer(again.payload, np.uint8) == np.frombuffer(stored.payload, np.uint8))
    assert same >= 0.98, f"only {same:.1%} of the payload bytes agree"


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
    assert 8 * len(data) / (img.shape[0] * img.shape[1]) < 0.04
