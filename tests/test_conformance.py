"""Official conformance vectors A1-A6 (CoD-Lite), run through our converter and models."""
import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import cod
from cod.bitstream import pack_indices
from cod.cli import main
from tests.conformance import load_manifest, official_state_dict

CASES = ["A1_codlite_0.0039", "A2_codlite_0.0078", "A3_codlite_0.0156", "A4_codlite_0.0312", "A5_codlite_0.1250", "A6_codlite_0.5000"]


def _official_files(case_dir, tmp_path):
    """Write the case as an official release would ship it: .pt (net.-prefixed, with a
    training leftover) + .yaml holding model.net.init_args."""
    man = load_manifest(case_dir)
    sd = {f"net.{k}": v for k, v in official_state_dict(man).items()}
    sd["codec_trainer.net_loss.proj.0.weight"] = torch.zeros(2, 2)  # ignored leftover
    ckpt = tmp_path / "model.pt"
    torch.save({"state_dict": sd}, ckpt)
    cfg = tmp_path / "model.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"net": {"class_path": man["deployed_class"], "init_args": man["constructor_args"]}}}))
    return man, ckpt, cfg


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
def test_conformance_case(case, conformance_dir, tmp_path):
    torch.set_num_threads(2)
    case_dir = conformance_dir / case
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


def test_official_pt_loads_directly(conformance_dir, tmp_path):
    """--weights accepts the official .pt when its .yaml lies beside it."""
    case_dir = conformance_dir / "A4_codlite_0.0312"
    man, ckpt, cfg = _official_files(case_dir, tmp_path)
    codec = cod.load(weights=ckpt, precision="fp32")
    inputs = load_file(case_dir / "inputs.safetensors")
    image = inputs["image_u8"][0].permute(1, 2, 0).numpy()
    assert codec.compress(image, format="official") == (case_dir / "expected_file.bin").read_bytes()
    # our container carries the same payload
    ours = cod.bitstream.read_cod(codec.compress(image))
    assert ours.payload == (case_dir / "expected_file.bin").read_bytes()[4:]
    assert (ours.header.height, ours.header.width) == (96, 128)


def test_expected_file_header_is_width_first(conformance_dir):
    from cod.bitstream import read_official

    data = (conformance_dir / "A4_codlite_0.0312" / "expected_file.bin").read_bytes()
    man = json.loads((conformance_dir / "A4_codlite_0.0312" / "manifest.json").read_text())
    h, w, payload = read_official(data)
    assert (h, w) == (man["image_size"]["H"], man["image_size"]["W"])
    assert len(payload) == man["cod_file"]["reader_returns"]["payload_len"]
