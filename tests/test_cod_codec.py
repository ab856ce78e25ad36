"""The public CoD codec on small random models: round trips through bytes (pixel and latent,
square and non-square), reproducible decodes, decode settings in the header, the VAE."""
import struct

import numpy as np
from PIL import Image
import pytest
import torch

from cod import bitstream as bs
from cod.checkpoint import save_weights
from cod.cod_codec import CoDCodec, DecodeSettings
from cod.errors import BitstreamError, CheckpointError, CodError, ModelMismatchError
from cod.families import build_network as build_cod
from cod.families import load_cod
from cod.models.vae import VAE_ENV, LatentVAE, VAEMissingError
from cod.zoo import FAMILY_COD_LATENT, FAMILY_COD_PIXEL, cod_config

TINY = dict(hidden_size=64, num_groups=4, num_blocks=3, num_cond_blocks=2, encoder_channels=32, latent_channels=16)
STEPS = 3  # short decodes keep the tests fast; the settings travel in the file anyway


def tiny_cod_config(family, rate="0.0039", stage1=False, **kw):
    extra = dict(hidden_size_x=8, nerf_mlpratio=2) if family == "cod-pixel" else {}
    cfg = cod_config(family, rate, stage1=stage1, **TINY, **extra, **kw)
    cfg["name"] = f"tiny-{family}-{rate}{'-256' if stage1 else ''}"
    cfg["decode"]["steps"] = STEPS
    return cfg


def randomise(model, seed=0):
    """Every parameter non-trivial (zero-initialised output layers included), like the
    conformance weight rule: weights N(0, 1/fan_in), gains 1 + 0.1 N, biases 0.1 N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(n / np.sqrt(np.prod(p.shape[1:])))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * n)
            else:
                p.copy_(0.1 * n)
    return model


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    ).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(family, rate, stage1) -> path of a tiny random model in our format."""
    d = tmp_path_factory.mktemp("cod-weights")
    out = {}
    for i, key in enumerate([("cod-pixel", "0.0039", False), ("cod-latent", "0.0039", False), ("cod-pixel", "0.0039", True), ("cod-latent", "0.00024", False)]):
        cfg = tiny_cod_config(*key)
        torch.manual_seed(0)
        model = randomise(build_cod(cfg), seed=i)
        path = d / f"{cfg['name']}.safetensors"
        save_weights(path, model.state_dict(), cfg)
        out[key] = path
    return out


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


@pytest.fixture(scope="module")
def codecs(weights, vae):
    torch.set_num_threads(1)
    return {k: load_cod(weights=p, vae=vae if k[0] == "cod-latent" else None) for k, p in weights.items()}


def smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 100 * np.sin(xx / 37 + c) * np.cos(yy / 23 - c) for c in range(3)], axis=2)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("family", ["cod-pixel", "cod-latent"])
@pytest.mark.parametrize("size", [(256, 256), (72, 120)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_roundtrip_through_bytes(codecs, family, size, tmp_path):
    codec = codecs[(family, "0.0039", False)]
    h, w = size
    img = smooth_image(h, w)
    data = codec.compress(img)
    path = tmp_path / "x.cod"
    path.write_bytes(data)
    f = bs.read_cod(path.read_bytes())
    assert f.header.family == (FAMILY_COD_PIXEL if family == "cod-pixel" else FAMILY_COD_LATENT)
    assert (f.header.height, f.header.width, f.header.ds, f.header.bits) == (h, w, 32, 4)
    gh, gw = codec.grid(h, w)
    assert (gh, gw) == (-(-h // 32), -(-w // 32))
    assert len(f.payload) == bs.packed_size(gh * gw, 4)
    assert DecodeSettings.from_bytes(f.header.settings) == codec.default_settings
    out = codec.decompress(path.read_bytes())
    assert out.size == (w, h) and out.mode == "RGB"
    arr = np.asarray(out)
    assert arr.std() > 1  # a real image, not a constant
    # deterministic: the same bytes again, the same image again (bit-identical)
    assert codec.compress(img) == data
    assert np.array_equal(np.asarray(codec.decompress(data)), arr)


def test_decodes_are_bit_identical_across_loads(codecs, weights, vae):
    """A second codec loaded from the same weights decodes the file to the same pixels: the
    noise comes from the seed in the file, the null condition is recomputed per size."""
    key = ("cod-pixel", "0.0039", False)
    data = codecs[key].compress(smooth_image(64, 96, seed=3))
    a = np.asarray(codecs[key].decompress(data))
    fresh = load_cod(weights=weights[key])
    assert np.array_equal(np.asarray(fresh.decompress(data)), a)
    # sizes change between calls without breaking the null-condition cache (bug B3)
    other = codecs[key].decompress(codecs[key].compress(smooth_image(32, 32)))
    assert other.size == (32, 32)
    assert np.array_equal(np.asarray(codecs[key].decompress(data)), a)


def test_settings_stored_and_overridden(codecs):
    codec = codecs[("cod-pixel", "0.0039", False)]
    img = smooth_image(64, 64, seed=1)
    data = codec.compress(img, steps=2, cfg=1.5, sampler="euler", seed=7)
    s = codec.settings_of(data)
    assert s == DecodeSettings(steps=2, cfg=1.5, sampler="euler", seed=7)
    stored = np.asarray(codec.decompress(data))
    explicit = np.asarray(codec.decompress(codec.compress(img), steps=2, cfg=1.5, sampler="euler", seed=7))
    assert np.array_equal(stored, explicit)
    assert not np.array_equal(np.asarray(codec.decompress(data, seed=8)), stored)
    assert not np.array_equal(np.asarray(codec.decompress(data, sampler="adam2")), stored)


def test_settings_bytes_layout():
    s = DecodeSettings(steps=25, cfg=1.25, sampler="adam2", seed=0)
    raw = s.to_bytes()
    assert len(raw) == 12
    assert raw == struct.pack(">BBHfI", 1, 1, 25, 1.25, 0)
    assert raw.hex() == "01010019" + "3fa00000" + "00000000"
    assert DecodeSettings.from_bytes(raw) == s
    assert DecodeSettings(cfg=0.1).cfg == float(np.float32(0.1))  # stored as float32: what a reader sees
    with pytest.raises(BitstreamError, match="version"):
        DecodeSettings.from_bytes(b"\x02" + raw[1:])
    with pytest.raises(BitstreamError, match="corrupt"):
        DecodeSettings.from_bytes(raw[:1] + b"\x09" + raw[2:])
    with pytest.raises(BitstreamError):
        DecodeSettings.from_bytes(raw[:-1])
    with pytest.raises(ValueError):
        DecodeSettings(sampler="heun")
    with pytest.raises(ValueError):
        DecodeSettings(seed=2**32)


def test_paper_defaults():
    assert cod_config("cod-pixel", "0.0039")["decode"] == {"steps": 25, "cfg": 3.0, "sampler": "adam2", "seed": 0}
    assert cod_config("cod-latent", "0.0039")["decode"]["cfg"] == 1.25
    assert cod_config("cod-latent", "0.00024")["decode"]["cfg"] == 3.0


def test_stage1_and_ds128_models(codecs):
    """Stage-1 (up2x off): 16 image pixels per index, the header's ds is 16. ds 128: the
    64-bit model, 4x4 indices at 512x512 (here 1x2 at 128x256)."""
    s1 = codecs[("cod-pixel", "0.0039", True)]
    data = s1.compress(smooth_image(48, 80))
    f = bs.read_cod(data)
    assert f.header.ds == 16 and s1.grid(48, 80) == (3, 5)
    assert s1.decompress(data).size == (80, 48)
    lat = codecs[("cod-latent", "0.00024", False)]
    data = lat.compress(smooth_image(128, 256))
    f = bs.read_cod(data)
    assert (f.header.ds, len(f.payload)) == (128, 1)
    assert lat.decompress(data).size == (256, 128)


def test_official_format_round_trip(codecs):
    """The CoD CLI layout: 2-byte LE height then width (bug B1), padded size, no settings."""
    codec = codecs[("cod-pixel", "0.0039", False)]
    data = codec.compress(smooth_image(64, 96), format="official")
    assert data[:4] == struct.pack("<HH", 64, 96) and len(data) == 4 + 3  # 2x3 indices of 4 bits
    assert codec.decompress(data, format="official").size == (96, 64)
    with pytest.raises(BitstreamError, match="multiples of 32"):
        codec.decompress(struct.pack("<HH", 48, 64) + bytes(2), format="official")


def test_file_for_another_model_is_refused(codecs):
    pixel, latent = codecs[("cod-pixel", "0.0039", False)], codecs[("cod-latent", "0.0039", False)]
    data = pixel.compress(smooth_image(32, 32))
    with pytest.raises(ModelMismatchError, match="cod-pixel"):
        latent.decompress(data)


def test_progress_bar(codecs, capsys):
    codec = codecs[("cod-pixel", "0.0039", False)]
    codec.decompress(codec.compress(smooth_image(32, 32)), progress=True)
    assert f"{STEPS}/{STEPS}" in capsys.readouterr().err


# ------------------------------------------------------------------ the VAE
def test_latent_without_vae_compresses_but_names_what_is_missing(weights, monkeypatch, tmp_path):
    monkeypatch.delenv(VAE_ENV, raising=False)
    codec = load_cod(weights=weights[("cod-latent", "0.0039", False)])
    data = codec.compress(smooth_image(32, 32))  # the encoder needs no VAE
    with pytest.raises(VAEMissingError, match=f"{VAE_ENV} is not set") as e:
        codec.decompress(data)
    assert isinstance(e.value, CodError) and "--vae" in str(e.value)
    monkeypatch.setenv(VAE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(VAEMissingError, match="nowhere does not exist"):
        load_cod(weights=weights[("cod-latent", "0.0039", False)]).decompress(data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAEMissingError, match="has no config.json"):
        load_cod(weights=weights[("cod-latent", "0.0039", False)], vae=tmp_path / "empty")


def test_vae_folder_and_env(weights, vae, codecs, monkeypatch, tmp_path):
    """A diffusers folder (save_pretrained layout) loads through --vae PATH and COD_VAE_DIR
    and decodes exactly like the in-memory AutoencoderKL."""
    folder = tmp_path / "sd-vae"
    vae.save_pretrained(folder)
    key = ("cod-latent", "0.0039", False)
    data = codecs[key].compress(smooth_image(32, 64))
    want = np.asarray(codecs[key].decompress(data))
    by_path = load_cod(weights=weights[key], vae=folder)
    assert np.array_equal(np.asarray(by_path.decompress(data)), want)
    monkeypatch.setenv(VAE_ENV, str(folder))
    assert np.array_equal(np.asarray(load_cod(weights=weights[key]).decompress(data)), want)


def test_latent_scaling_is_sf_squared(vae):
    """encode = sample * sf**2, decode(z) = VAE.decode(z / sf**2) (spec §6.1)."""
    lv = LatentVAE(vae)
    sf = vae.config.scaling_factor
    assert lv.latent_scale == pytest.approx(sf**2)
    img = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        mean = vae.encode(2 * img - 1).latent_dist.mean
        z = lv.encode(img, sample=False)
        assert z.shape == (1, 4, 4, 4) and torch.allclose(z, mean * sf**2)
        assert torch.allclose(lv.decode(z), vae.decode(mean).sample, atol=1e-5)


# ------------------------------------------------------------------ loading
def test_load_refuses_wrong_family_and_name(weights, tmp_path):
    from tests.conftest import make_tiny_weights

    with pytest.raises(CheckpointError, match="not CoD"):
        load_cod(weights=make_tiny_weights(tmp_path / "lite.safetensors", "0.0039"))
    with pytest.raises(CheckpointError, match="not cod-latent-0.0039"):
        load_cod("cod-latent-0.0039", weights=weights[("cod-pixel", "0.0039", False)])
    with pytest.raises(CheckpointError, match="no weights installed"):
        load_cod("cod-pixel-0.0039")


def test_contract(codecs):
    codec = codecs[("cod-pixel", "0.0039", False)]
    assert isinstance(codec, CoDCodec)
    assert codec.name == "tiny-cod-pixel-0.0039" and codec.device == torch.device("cpu")
    assert 0 <= codec.model_tag < 2**16 and codec.nominal_bpp == 4 / 32**2


@pytest.mark.parametrize("name,family,args", [
    ("cod-pixel-0.0039", "cod-pixel", dict(in_channels=3, patch_size=16, num_groups=16, hidden_size=1152, hidden_size_x=64, nerf_mlpratio=2, num_blocks=30, num_cond_blocks=26, ds=32, codebook_bits=4, up2x=True)),
    ("cod-latent-0.00024", "cod-latent", dict(in_channels=4, patch_size=2, num_groups=16, hidden_size=1152, num_blocks=28, num_cond_blocks=22, ds=128, codebook_bits=4, up2x=True)),
    ("cod-latent-0.0039-256", "cod-latent", dict(in_channels=4, patch_size=2, num_groups=16, hidden_size=1152, num_blocks=28, num_cond_blocks=22, ds=32, codebook_bits=4, up2x=False)),
])
def test_official_yaml_args_give_the_named_config(name, family, args, tmp_path):
    """The init_args of the official yamls (cod/configs/*/bpp_*_xl.yaml) map to our named configs."""
    import yaml

    from cod.official import cod_config_from_official_args, convert_official_cod, read_official_cod_yaml
    from cod.zoo import get_config as get_cod_config

    cls = "cod.models.pixel_dit.PixNerDiT" if family == "cod-pixel" else "cod.models.latent_dit.DDT"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"latent": family == "cod-latent", "denoiser": {"class_path": cls, "init_args": args}}}))
    assert read_official_cod_yaml(path) == (family, args)
    assert cod_config_from_official_args(family, args) == get_cod_config(name)
    path.write_text(yaml.safe_dump({"model": {"latent": family != "cod-latent", "denoiser": {"class_path": cls, "init_args": args}}}))
    with pytest.raises(CheckpointError, match="contradicts"):
        convert_official_cod(tmp_path / "none.pt", path)


def test_cli_round_trip_with_stored_settings(weights, tmp_path, capsys):
    """`cod compress --steps 2 --cfg 2.0` stores the settings; `cod decompress FILE` needs no
    flags and gives the same image every time; `cod info` shows the settings."""
    import json

    from cod.cli import main

    w = str(weights[("cod-pixel", "0.0039", False)])
    img = tmp_path / "p.png"
    Image.fromarray(smooth_image(40, 72)).save(img)
    assert main(["compress", str(img), "--weights", w, "--steps", "2", "--cfg", "2.0", "--seed", "7", "-q"]) == 0
    assert main(["info", str(tmp_path / "p.png.cod"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (info["family"], info["steps"], info["cfg"], info["seed"], info["sampler"]) == ("cod-pixel", 2, 2.0, 7, "adam2")
    outs = []
    for i in range(2):
        assert main(["decompress", str(tmp_path / "p.png.cod"), "--weights", w, "-o", str(tmp_path / f"d{i}.png"), "-q"]) == 0
        outs.append(np.asarray(Image.open(tmp_path / f"d{i}.png")))
    assert outs[0].shape == (40, 72, 3) and np.array_equal(outs[0], outs[1])
    assert main(["decompress", str(tmp_path / "p.png.cod"), "--weights", w, "-o", str(tmp_path / "e.png"), "--steps", "1", "-q"]) == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "e.png")), outs[0])


def test_cli_refuses_diffusion_flags_for_codlite(tiny_weights, tmp_path, capsys):
    from cod.cli import main

    img = tmp_path / "p.png"
    Image.fromarray(smooth_image(32, 32)).save(img)
    assert main(["compress", str(img), "--weights", str(tiny_weights["0.0312"]), "--steps", "3"]) == 2
    assert "one deterministic step" in capsys.readouterr().err
