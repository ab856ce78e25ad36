"""Official conformance vectors A1-A6 (CoD-Lite), run through our converter and models."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cod
from cod.bitstream import pack_indices
from cod.cli import main
from tests.conformance import write_official_codlite
from tests.conftest import CONFORMANCE, CONFORMANCE_SUBSET, conformance_case

CASES = ["A1_codlite_0.0039", "A2_codlite_0.0078", "A3_codlite_0.0156", "A4_codlite_0.0312", "A5_codlite_0.1250", "A6_codlite_0.5000"]


def _official_files(case_dir, tmp_path):
    ckpt, cfg = tmp_path / "model.pt", tmp_path / "model.yaml"
    return write_official_codlite(case_dir, ckpt, cfg), ckpt, cfg


def _check(man, name, got, want):
    spec = man["tensors"][name]
    if want.dtype.is_floating_point:
        diff = (got.float() - want).abs().max().item()
        assert diff <= spec["suggested_atol"], f"{name}: max diff {diff:.3g} > {spec['suggested_atol']}"
    elif spec.get("exact"):
        assert torch.equal(got.to(want.dtype), want), f"{name}: {(got.to(want.dtype) != want).sum()} elements differ"
    else:
        d = (got.int() - want.int()).abs()
        assert d.max() <= spec.get("max_lsb", 1), f"{name}: off by {d.max()} LSB"
        assert (d > 0).float().mean() < 0.01, f"{name}: {(d > 0).sum()} pixels differ"


@pytest.mark.parametrize("case", CASES)
def test_conformance_case(case, tmp_path):
    torch.set_num_threads(2)
    case_dir = conformance_case(case)
    man, ckpt, cfg = _official_files(case_dir, tmp_path)
    out = tmp_path / "ours.safetensors"
    assert main(["convert", str(ckpt), str(cfg), "-o", str(out)]) == 0

    inputs = load_file(case_dir / "inputs.safetensors")
    expected = load_file(case_dir / "expected.safetensors")
    y, H, W = inputs["y"], man["image_size"]["H"], man["image_size"]["W"]
    assert tuple(y.shape[-2:]) == (H, W)

    # training form (fresh model, global attention, un-folded adaLN)
    model, _ = cod.load_network(weights=out)
    model.eval().set_attention(windowed=False)
    got = {}
    with torch.no_grad():
        cond, _ = model.condition(y)
        got["cond_train"] = cond
        got["pred_train"] = model.predict(inputs["x_train"], inputs["t_train"], cond)
        got["v_train"] = model.velocity(inputs["x_train"], inputs["t_train"], cond)

    # deployed form through the public codec (windowed attention, t=0 folded)
    codec = cod.load(weights=out, precision="fp32")  # the faithful path
    assert codec.model.time_folded
    m = codec.model
    with torch.no_grad():
        got["enc_out"] = m.condition.encoder(y)
        idx = m.condition.encode(y)[0]
        got["indices"] = idx
        got["bitstream"] = torch.frombuffer(bytearray(pack_indices(idx.numpy(), m.codebook_bits)), dtype=torch.uint8)
        h, w = man["index_grid_hw"]
        got["cond"] = m.condition.decode(idx[None], h, w)
        got["decoded"] = m.decode_one_step(got["cond"])
        m.noise_level = 1.0
        got["decoded_noise1"] = m.decode_one_step(got["cond"], inputs["noise"])
        m.noise_level = 0.0
        cond_st, _ = m.condition(y)
        got["evaluated"] = m.decode_one_step(cond_st)
    image = inputs["image_u8"][0].permute(1, 2, 0).numpy()
    # the public path: image -> bytes -> image
    data = codec.compress(image, format="official")
    got["decoded_u8"] = torch.from_numpy(np.array(codec.decompress(data, "official"))).permute(2, 0, 1)[None]

    assert set(got) == set(expected), set(expected) ^ set(got)
    for name, want in expected.items():
        _check(man, name, got[name], want)

    file_bin = case_dir / "expected_file.bin"
    if file_bin.exists():
        assert data == file_bin.read_bytes()
    else:
        assert data[4:] == expected["bitstream"].numpy().tobytes()


def test_official_pt_loads_directly(tmp_path):
    """--weights accepts the official .pt when its .yaml lies beside it."""
    case_dir = conformance_case("A4_codlite_0.0312")
    man, ckpt, cfg = _official_files(case_dir, tmp_path)
    codec = cod.load(weights=ckpt, precision="fp32")
    inputs = load_file(case_dir / "inputs.safetensors")
    image = inputs["image_u8"][0].permute(1, 2, 0).numpy()
    assert codec.compress(image, format="official") == (case_dir / "expected_file.bin").read_bytes()
    # our container carries the same payload
    ours = cod.bitstream.read_cod(codec.compress(image))
    assert ours.payload == (case_dir / "expected_file.bin").read_bytes()[4:]
    assert (ours.header.height, ours.header.width) == (96, 128)


def test_expected_file_header_is_width_first():
    from cod.bitstream import read_official

    case_dir = conformance_case("A4_codlite_0.0312")
    data = (case_dir / "expected_file.bin").read_bytes()
    man = json.loads((case_dir / "manifest.json").read_text())
    h, w, payload = read_official(data)
    assert (h, w) == (man["image_size"]["H"], man["image_size"]["W"])
    assert len(payload) == man["cod_file"]["reader_returns"]["payload_len"]


def test_the_subset_in_the_clone_is_an_unchanged_copy():
    """tests/data/conformance holds A4, A6 and B2 (a fresh clone runs them); where the full set
    is beside the clone, each copied file is byte-identical to the authors' original."""
    cases = sorted(p.name for p in CONFORMANCE_SUBSET.iterdir() if p.is_dir())
    assert {"A4_codlite_0.0312", "A6_codlite_0.5000", "B2_cod_pixel_up2x_192x256"} <= set(cases)
    for case in cases:
        assert {"manifest.json", "inputs.safetensors", "expected.safetensors"} <= {f.name for f in (CONFORMANCE_SUBSET / case).iterdir()}
    if not CONFORMANCE.is_dir():
        pytest.skip(f"the full set ({CONFORMANCE}) is not beside this clone: nothing to compare the copy with")
    copied = [f for f in CONFORMANCE_SUBSET.rglob("*") if f.is_file()]
    assert len(copied) >= 3 * 4
    for f in copied:
        assert f.read_bytes() == (CONFORMANCE / f.relative_to(CONFORMANCE_SUBSET)).read_bytes(), f
