"""DiffC through the CoD codec, the .cod v3 file and the CLI (cod.cod_codec, cod.cli; issue 13):
small random-weight pixel and latent models, real files, bit-exact decodes, target rates,
`cod info`, refusals and corrupt files."""
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from cod import bitstream as bs
from cod.checkpoint import save_weights
from cod.cli import main
from cod.diffc import DiffCConfig, DiffCPayload
from cod.entropy import fit_prior
from cod.errors import BitstreamError, CodError, ModelMismatchError
from cod.families import build_network, load_cod
from tests.test_cod_codec import randomise, smooth_image, tiny_cod_config, tiny_vae

pytestmark = pytest.mark.usefixtures("one_thread")

CHUNK = 6  # max_chunk_size of the tests: 4x less encoder work than the default 8
PIXEL, LATENT = "cod-pixel", "cod-latent"


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("diffc-weights")
    out = {}
    for i, family in enumerate([PIXEL, LATENT]):
        cfg = tiny_cod_config(family)
        torch.manual_seed(0)
        out[family] = d / f"{family}.safetensors"
        save_weights(out[family], randomise(build_network(cfg), seed=i).state_dict(), cfg)
    return out


@pytest.fixture(scope="module")
def codecs(weights, vae):
    return {f: load_cod(weights=p, vae=vae if f == LATENT else None) for f, p in weights.items()}


def file_bpp(data: bytes, h: int, w: int) -> float:
    """bpp as everywhere in the project: the whole file, header included, per original pixel."""
    return 8 * len(data) / (h * w)


def encoder_image(codec, h, w):
    """What the encoder says the file decodes to (its reconstruction, through the VAE)."""
    return codec.diffc_image(codec.last_diffc.reconstruction, h, w)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("family,h,w,steps", [(PIXEL, 40, 72, 3), (PIXEL, 64, 32, 5), (LATENT, 48, 80, 6), (LATENT, 32, 32, 0)])
def test_file_decodes_to_the_encoder_reconstruction_bit_exactly(codecs, family, h, w, steps, tmp_path):
    codec = codecs[family]
    img = smooth_image(h, w, seed=h + w)
    path = tmp_path / "x.cod"
    path.write_bytes(codec.compress(img, diffc=True, diffc_step=steps, diffc_chunk=CHUNK))
    data = path.read_bytes()
    f = bs.read_cod(data)
    assert f.header.version == 3 and f.header.family_name == family and (f.header.height, f.header.width) == (h, w)
    assert f.header.coding == 0 and f.header.settings == b"" and len(f.payload) == bs.packed_size(np.prod(codec.grid(h, w)), 4)
    p = DiffCPayload.from_bytes(f.diffc)
    assert p.n_steps == steps == codec.last_diffc.n_steps and p.config == DiffCConfig.for_family(family, max_chunk_size=CHUNK)
    assert f.diffc == codec.last_diffc.payload
    out = np.asarray(codec.decompress(data))
    assert out.shape == (h, w, 3)
    assert np.array_equal(out, encoder_image(codec, h, w))
    # the same indices as a plain CoD file of the image
    assert np.array_equal(codec.parse(data)[0], codec.parse(codec.compress(img))[0])


@pytest.mark.parametrize("family,h,w,every", [(PIXEL, 32, 32, 12), (LATENT, 48, 80, 6)])
def test_more_steps_cost_more_and_come_closer(codecs, family, h, w, every):
    """Stopping later costs more bits and gives a more faithful image, measured in pixels
    against the original (a short schedule keeps it fast; random weights, so the PSNR itself
    means little: the tiny random VAE caps the latent one near 12 dB)."""
    codec = codecs[family]
    img = smooth_image(h, w)
    config = DiffCConfig.for_family(family, encoding_timesteps=DiffCConfig.for_family(family).encoding_timesteps[::every], max_chunk_size=CHUNK)
    n_sched = len(config.encoding_timesteps)
    sizes, psnrs = [], []
    for n in (0, n_sched // 2, n_sched):
        sizes.append(len(codec.compress(img, diffc=config, diffc_step=n)))
        mse = float(np.square(encoder_image(codec, h, w).astype(float) - img).mean())
        psnrs.append(10 * np.log10(255**2 / mse))
    print(family, sizes, [round(p, 2) for p in psnrs])
    assert sizes[0] < sizes[1] < sizes[2] and psnrs[0] < psnrs[1] < psnrs[2]


def test_entropy_coded_indices_in_a_diffc_file(weights, vae):
    """With an index prior in the weights the indices are range-coded (v2's mechanism) inside
    the v3 file; the decode is the same as with fixed-length indices."""
    codec = load_cod(weights=weights[PIXEL])
    grids = [codec.encode(smooth_image(256, 256, seed=s))[0].reshape(8, 8) for s in range(4)]
    with_prior = load_cod(weights=weights[PIXEL])
    with_prior.prior = fit_prior(grids, codec.bits, groups=2)[0]
    img = smooth_image(40, 72)
    data = with_prior.compress(img, diffc=True, diffc_step=2, diffc_chunk=CHUNK)
    plain = codec.compress(img, diffc=True, diffc_step=2, diffc_chunk=CHUNK)
    f = bs.read_cod(data)
    assert f.header.version == 3 and f.header.coding in (1, 2) and f.header.prior_tag == with_prior.prior.tag
    assert f.diffc == bs.read_cod(plain).diffc
    assert np.array_equal(np.asarray(with_prior.decompress(data)), np.asarray(codec.decompress(plain)))
    with pytest.raises(ModelMismatchError, match="no index prior"):
        codec.decompress(data)


# ------------------------------------------------------------------ rate control
@pytest.mark.parametrize("family,h,w,bpp", [(PIXEL, 40, 72, 1.0), (LATENT, 48, 80, 0.2), (LATENT, 48, 80, 0.5)])
def test_target_bpp_lands_within_ten_percent_of_the_file(codecs, family, h, w, bpp):
    """The target is the whole file's rate (header, indices and DiffC payload); it lands on
    the step count whose file is nearest, so within half a step's bits (random weights make
    big steps: a pixel step here is ~0.1 bpp)."""
    codec = codecs[family]
    img = smooth_image(h, w, seed=1)
    data = codec.compress(img, diffc=True, bpp=bpp, diffc_chunk=CHUNK)
    real = file_bpp(data, h, w)
    n = codec.last_diffc.n_steps
    print(f"{family} {w}x{h}: target {bpp} bpp, file {real:.4f} bpp ({real / bpp - 1:+.1%}), {n} steps")
    assert abs(real - bpp) <= 0.1 * bpp
    assert np.array_equal(np.asarray(codec.decompress(data)), encoder_image(codec, h, w))
    if family == LATENT:  # one step more or fewer would land further away
        for alt in (n - 1, n + 1):
            other = file_bpp(codec.compress(img, diffc=True, diffc_step=alt, diffc_chunk=CHUNK), h, w)
            assert abs(other - bpp) >= abs(real - bpp)


def test_rates_out_of_reach(codecs):
    codec = codecs[LATENT]
    img = smooth_image(32, 32)
    least = file_bpp(codec.compress(img, diffc=True, diffc_step=0, diffc_chunk=CHUNK), 32, 32)
    with pytest.raises(CodError, match=f"below the least .* {least:.4f} bpp"):
        codec.compress(img, diffc=True, bpp=0.9 * least, diffc_chunk=CHUNK)
    short = DiffCConfig.for_family(LATENT, encoding_timesteps=(900, 500), max_chunk_size=CHUNK)
    with pytest.warns(UserWarning, match=r"whole DiffC chain \(2 steps\) reaches only"):
        data = codec.compress(img, diffc=short, bpp=50.0)
    assert codec.last_diffc.n_steps == 2 and DiffCPayload.from_bytes(bs.read_cod(data).diffc).config == short


@pytest.mark.parametrize("kw,msg", [
    (dict(bpp=0.1), "apply to DiffC"),
    (dict(diffc=True), "needs one rate"),
    (dict(diffc=True, bpp=0.1, diffc_step=3), "needs one rate"),
    (dict(diffc=True, diffc_step=143), r"0\.\.142"),
    (dict(diffc=True, bpp=-1.0), "positive"),
    (dict(diffc=True, bpp=float("nan")), "positive"),
    (dict(diffc=True, diffc_step=1, diffc_chunk=21), "max_chunk_size"),
    (dict(diffc=True, diffc_step=1, steps=10), "sampler"),
    (dict(diffc=True, diffc_step=1, format="official"), "official format"),
])
def test_bad_options_are_one_line_errors(codecs, kw, msg):
    with pytest.raises(CodError, match=msg):
        codecs[PIXEL].compress(smooth_image(32, 32), **kw)


def test_cfg_and_seed_set_the_diffc_finish_and_randomness(codecs):
    codec = codecs[PIXEL]
    img = smooth_image(32, 32)
    data = codec.compress(img, diffc=True, diffc_step=2, diffc_chunk=CHUNK, cfg=2.0, seed=9)
    c = DiffCPayload.from_bytes(bs.read_cod(data).diffc).config
    assert (c.decoding_guidance, c.seed) == (2.0, 9)
    assert np.array_equal(np.asarray(codec.decompress(data)), encoder_image(codec, 32, 32))
    with pytest.raises(CodError, match="settings it carries"):
        codec.decompress(data, steps=4)


def test_latent_diffc_needs_the_vae(weights, monkeypatch):
    monkeypatch.delenv("COD_VAE_DIR", raising=False)
    codec = load_cod(weights=weights[LATENT])
    with pytest.raises(CodError, match="SD VAE"):
        codec.compress(smooth_image(32, 32), diffc=True, diffc_step=1)


# ------------------------------------------------------------------ corrupt files
def _recrc(data: bytes) -> bytes:
    """A v3 file (no decode settings) with its CRC recomputed after tampering."""
    d = bytearray(data)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[33:]), zlib.crc32(bytes(d[:29]))))
    return bytes(d)


@pytest.fixture(scope="module")
def diffc_file(codecs):
    return codecs[PIXEL].compress(smooth_image(32, 48), diffc=True, diffc_step=3, diffc_chunk=CHUNK)


def test_every_bit_flip_and_truncation_is_refused_before_decoding(codecs, diffc_file):
    codec = codecs[PIXEL]
    for i in range(len(diffc_file) * 8):
        bad = bytearray(diffc_file)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            codec.read_file(bytes(bad))
    for n in range(len(diffc_file)):
        with pytest.raises(BitstreamError):
            codec.decompress(diffc_file[:n])


def test_crc_fixed_mutations_decode_or_fail_cleanly(codecs, diffc_file):
    """Past the CRC (recomputed), damage to the DiffC payload gives a one-line error or some
    image of the right size; crafted fields are refused by name."""
    codec = codecs[PIXEL]
    head = 33 + len(bs.read_cod(diffc_file).payload)  # the DiffC payload starts here
    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(12):
        bad = bytearray(diffc_file)
        for pos in rng.integers(head, len(bad), 2):
            bad[pos] = int(rng.integers(0, 256))
        try:
            out = codec.decompress(_recrc(bytes(bad)))
            assert out.size == (48, 32)
            outcomes.append("image")
        except BitstreamError as exc:
            assert "\n" not in str(exc)
            outcomes.append("error")
    print(outcomes)
    for field, value, msg in [
        (head, b"\x01", "payload version 1"),  # the old payload layout
        (head + 1, b"\x31", "schedule id"),
        (head + 3, struct.pack(">H", 143), "143 coded steps"),
        (21, struct.pack(">I", 7), "payload is 7 bytes"),  # index length != the grid's
        (18, b"\x01", "no index prior"),  # range-coded indices without a prior
        (4, b"\x01", "codlite"),  # a DiffC file for a CoD-Lite model
    ]:
        bad = bytearray(diffc_file)
        bad[field : field + len(value)] = value
        with pytest.raises(BitstreamError, match=msg):
            codec.decompress(_recrc(bytes(bad)))
    bad = bytearray(diffc_file)
    bad[21:25] = struct.pack(">I", len(diffc_file) - 33)  # no DiffC payload at all
    with pytest.raises(BitstreamError):
        codec.decompress(_recrc(bytes(bad)))


# ------------------------------------------------------------------ the CLI
@pytest.fixture()
def photo(tmp_path):
    p = tmp_path / "in" / "photo.png"
    p.parent.mkdir()
    Image.fromarray(smooth_image(40, 72, seed=1)).save(p)
    return p


def test_cli_compress_info_decompress(photo, weights, codecs, tmp_path, monkeypatch, capsys):
    """`cod compress --diffc --bpp`; `cod info` describes the file; `cod decompress FILE` needs
    no flag (the installed model that wrote it is found from the header)."""
    import shutil

    import cod.families

    w = weights[PIXEL]
    assert main(["compress", str(photo), "--weights", str(w), "--diffc", "--bpp", "1.0", "--diffc-chunk", str(CHUNK)]) == 0
    cod_file = photo.with_name("photo.png.cod")
    out = capsys.readouterr().out
    size = cod_file.stat().st_size
    assert f"{size} bytes" in out and "DiffC" in out and "steps" in out
    assert abs(file_bpp(cod_file.read_bytes(), 40, 72) - 1.0) <= 0.1
    assert main(["info", str(cod_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    p = DiffCPayload.from_bytes(bs.read_cod(cod_file.read_bytes()).diffc)
    assert info["format_version"] == 3 and info["file_bytes"] == size and info["bpp"] == pytest.approx(file_bpp(cod_file.read_bytes(), 40, 72), abs=1e-6)
    assert (info["diffc_steps"], info["diffc_stop_timestep"], info["diffc_max_chunk_size"]) == (p.n_steps, p.stop_timestep, CHUNK)
    assert info["diffc_bits"] == 8 * info["diffc_bytes"] and info["index_bytes"] + info["diffc_bytes"] == info["payload_bytes"]
    assert main(["info", str(cod_file)]) == 0
    assert "diffc_stop_timestep" in capsys.readouterr().out
    inst = tmp_path / "installed"
    inst.mkdir()
    shutil.copy(w, inst / "cod-pixel-0.0039.safetensors")
    monkeypatch.setattr(cod.families, "WEIGHTS_DIR", inst)
    assert main(["decompress", str(cod_file)]) == 0
    dec = np.asarray(Image.open(photo.with_name("photo.decoded.png")))
    expected = codecs[PIXEL].compress(np.asarray(Image.open(photo)), diffc=True, diffc_step=p.n_steps, diffc_chunk=CHUNK)
    assert expected == cod_file.read_bytes() and np.array_equal(dec, encoder_image(codecs[PIXEL], 40, 72))


def test_cli_evaluate_diffc(photo, weights, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", str(photo), "--weights", str(weights[LATENT]), "--vae", "unused", "--diffc", "--diffc-step", "3", "--diffc-chunk", str(CHUNK), "--json", str(out)]) != 0
    assert "SD VAE" in capsys.readouterr().err  # the folder does not exist: the usual error
    assert main(["evaluate", str(photo), "--weights", str(weights[PIXEL]), "--diffc", "--diffc-step", "3", "--diffc-chunk", str(CHUNK), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["images"][0]
    plain = load_cod(weights=weights[PIXEL])
    data = plain.compress(np.asarray(Image.open(photo)), diffc=True, diffc_step=3, diffc_chunk=CHUNK)
    assert row["bytes"] == len(data) and row["bpp"] == pytest.approx(file_bpp(data, 40, 72))


def test_cli_refusals(photo, weights, tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COD_VAE_DIR", raising=False)
    out = tmp_path / "o.cod"
    cases = [
        (["--weights", tiny_weights["0.0039"], "--diffc", "--bpp", "0.1"], "decodes in one step; DiffC runs on the CoD models"),
        (["--weights", weights[PIXEL], "--bpp", "0.1"], "--bpp: apply to DiffC; add --diffc"),
        (["--weights", weights[PIXEL], "--diffc"], "needs one rate"),
        (["--weights", weights[PIXEL], "--diffc", "--diffc-step", "999"], "0..142"),
        (["--weights", weights[PIXEL], "--diffc", "--diffc-step", "1", "--format", "official"], "official format"),
        (["--weights", weights[LATENT], "--diffc", "--diffc-step", "1"], "SD VAE"),
    ]
    for args, msg in cases:
        assert main(["compress", str(photo), "-o", str(out), *map(str, args)]) != 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_cli_corrupt_diffc_files(photo, weights, tmp_path, capsys):
    """Flipped bits, truncations and CRC-fixed damage: one error line per file, no output."""
    w = weights[PIXEL]
    src = tmp_path / "good.cod"
    assert main(["compress", str(photo), "-o", str(src), "--weights", str(w), "--diffc", "--diffc-step", "2", "--diffc-chunk", str(CHUNK), "-q"]) == 0
    data = src.read_bytes()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    rng = np.random.default_rng(1)
    variants = {}
    for i in rng.choice(len(data) * 8, 40, replace=False):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        variants[f"flip{i}"] = bytes(bad)
    variants.update({f"trunc{n}": data[:n] for n in rng.choice(len(data), 20, replace=False)})
    head = 33 + len(bs.read_cod(data).payload)
    variants["steps"] = _recrc(data[: head + 3] + struct.pack(">H", 143) + data[head + 5 :])
    variants["version"] = _recrc(data[:head] + b"\x07" + data[head + 1 :])
    for name, blob in variants.items():
        (bad_dir / f"{name}.cod").write_bytes(blob)
    out = tmp_path / "decoded"
    capsys.readouterr()
    assert main(["decompress", str(bad_dir), "-o", str(out) + "/", "--weights", str(w), "-q"]) != 0
    *err, summary = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(variants) and all(line.startswith("error: ") for line in err), err[:3]
    assert summary == f"decompress: 0 ok, {len(variants)} failed", summary  # the batch summary, even with -q
    assert not out.exists() or not any(out.iterdir())
