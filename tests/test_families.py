"""The family registry and the one loader (cod.families), typed configs (cod.config): every
named model checks out through its family, unknown keys are errors naming the key, the
installed-model pick reads metadata only, and a new family plugs in through the registry."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import cod
from cod import bitstream as bs
from cod.checkpoint import read_config, read_weights, save_weights
from cod.codec import CoDLiteCodec
from cod.config import ModelConfig, from_dict
from cod.diffusion.samplers import SAMPLERS
from cod.diffusion.settings import SAMPLER_IDS, DecodeSettings
from cod.errors import CheckpointError, ConfigError, UsageError
from cod.families import FAMILIES, Family, build_network, check_config, family_of, family_of_code, installed_codec_for, load, load_network
from cod.models.lite import CoDLiteConfig, build_codlite
from cod.zoo import COD_CFG, COD_DECODE, FAMILY_CODES, FAMILY_NAMES, MODELS, get_config
from tests.conftest import make_tiny_weights, tiny_config
from tests.test_codec import smooth_image


def test_every_family_is_registered_with_its_code_config_and_codec():
    assert set(FAMILIES) == set(FAMILY_CODES) == {"codlite", "cod-pixel", "cod-latent"}
    for name, fam in FAMILIES.items():
        assert fam.code == FAMILY_CODES[name] and family_of_code(fam.code) is fam
        assert issubclass(fam.config_type, ModelConfig) and fam.official is not None
        assert {f.name for f in dataclasses.fields(fam.codec)} >= {"model", "config", "device", "pad_mode"}
    assert family_of_code(200) is None
    assert set(SAMPLER_IDS) == set(SAMPLERS)  # every sampler can be stored in a .cod header


@pytest.mark.parametrize("name", list(MODELS))
def test_every_named_model_checks_out_through_its_family(name):
    cfg = get_config(name)
    typed = check_config(cfg, name)
    assert isinstance(typed, FAMILIES[cfg["family"]].config_type)
    assert from_dict(type(typed), typed.to_dict()) == typed  # the stored form round-trips
    assert all(typed.to_dict()[k] == v for k, v in cfg.items() if k != "decode")
    if cfg["family"] != "codlite":
        assert typed.decode == DecodeSettings(**cfg["decode"])
        assert typed.decode.cfg == COD_CFG.get((cfg["family"], cfg["rate"]), COD_DECODE["cfg"])


def test_unknown_missing_and_mistyped_keys_are_errors_naming_the_key():
    cfg = tiny_config("0.0312")
    with pytest.raises(ConfigError, match="unknown key 'hidden_szie'"):
        build_codlite(dict(cfg, hidden_szie=64))
    with pytest.raises(ConfigError, match="missing key 'num_blocks'"):
        build_codlite({k: v for k, v in cfg.items() if k != "num_blocks"})
    with pytest.raises(ConfigError, match="'hidden_size' must be int"):
        build_codlite(dict(cfg, hidden_size="64"))
    with pytest.raises(ConfigError, match="decode.*unknown key 'stpes'"):
        check_config(dict(get_config("cod-pixel-0.0039"), decode={"stpes": 3}))
    with pytest.raises(ConfigError, match="decode.*unknown sampler 'heun'"):
        check_config(dict(get_config("cod-pixel-0.0039"), decode=dict(COD_DECODE, sampler="heun")))
    with pytest.raises(ConfigError, match="unknown model family 'dit'"):
        family_of({"family": "dit"})
    assert CoDLiteConfig.from_dict(dict(cfg, mlp_ratio=4)).mlp_ratio == 4.0  # an int is a float


def test_a_weights_file_with_an_unknown_key_is_refused_naming_key_and_file(tmp_path):
    path = make_tiny_weights(tmp_path / "t.safetensors", "0.0312")
    config, state = read_weights(path)
    save_weights(tmp_path / "typo.safetensors", state, dict(config, latent_chanels=16))
    with pytest.raises(ConfigError, match=r"typo\.safetensors.*unknown key 'latent_chanels'"):
        cod.load(weights=tmp_path / "typo.safetensors")


def test_config_is_read_from_the_metadata_alone(tmp_path):
    path = make_tiny_weights(tmp_path / "t.safetensors", "0.125")
    config, _ = read_weights(path)
    assert read_config(path) == config == json.loads(json.dumps(tiny_config("0.125")))
    with pytest.raises(CheckpointError, match="not found"):
        read_config(tmp_path / "none.safetensors")


def test_build_network_restricts_families():
    with pytest.raises(CheckpointError, match="a CoD-Lite model, not CoD pixel or CoD latent"):
        build_network(tiny_config("0.0312"), family=("cod-pixel", "cod-latent"))
    with torch.device("meta"):
        net = build_network(get_config("cod-latent-0.0039-256"), family="cod-latent")
    assert type(net).__name__ == "DDT" and net.index_stride == 16


def test_installed_pick_reads_metadata_and_loads_only_the_match(tmp_path, monkeypatch, tiny_weights):
    """`cod decompress` without flags: the installed candidates are told apart by metadata and
    codebook; only the model that wrote the file is read in full, once for several files."""
    import cod.families

    inst = tmp_path / "weights"
    inst.mkdir()
    shutil.copy(tiny_weights["0.0312"], inst / "a.safetensors")
    shutil.copy(tiny_weights["0.125"], inst / "b.safetensors")
    other = make_tiny_weights(tmp_path / "c.safetensors", "0.125", seed=3)  # same rate, other weights
    shutil.copy(other, inst / "c.safetensors")
    monkeypatch.setattr(cod.families, "WEIGHTS_DIR", inst)
    data = load(weights=other).compress(smooth_image(32, 48))
    read = []
    real = cod.families.read_weights
    monkeypatch.setattr(cod.families, "read_weights", lambda p: read.append(p.name) or real(p))
    cache = {}
    codec = installed_codec_for(data, cache=cache)
    assert codec.model_tag == bs.read_cod(data).header.model_tag and read == ["c.safetensors"]
    assert installed_codec_for(data, cache=cache) is codec and read == ["c.safetensors"]


def test_load_network_checks_name_against_the_weights(tiny_weights):
    with pytest.raises(CheckpointError, match="holds a model with family=codlite, ds=16, codebook_bits=8, up2x=True, not cod-pixel-0.0039"):
        load_network("cod-pixel-0.0039", weights=tiny_weights["0.0312"])
    with pytest.raises(UsageError, match="^unknown model codlite-9; known: codlite-0.0039, .*cod-pixel-0.0039"):
        load_network("codlite-9", random_init=True)
    with pytest.raises(UsageError, match="^unknown model codlite-9; known: "):
        load_network("codlite-9")  # no weights given: the same message, not "no weights installed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(CoDLiteConfig):
    """A new family for the test below: CoD-Lite with one extra field."""

    toy_gain: float = 1.0


@dataclasses.dataclass
class ToyCodec(CoDLiteCodec):
    """Its codec: CoD-Lite's, output scaled by the config's gain."""

    def decode(self, indices, height, width, grid=None):
        out = super().decode(indices, height, width, grid)
        return np.clip(out * self.config.get("toy_gain", 1.0), 0, 255).astype(np.uint8)


def test_a_new_family_plugs_in_through_the_registry(tmp_path, monkeypatch):
    """A family added with its own config, builder and codec and one registry entry (plus its
    bitstream code) loads, round-trips, is picked from the installed models by its header and
    described by `cod info`, with no other change."""
    import cod.families
    from cod.cli import main

    monkeypatch.setitem(FAMILY_CODES, "toy", 99)
    monkeypatch.setitem(FAMILY_NAMES, 99, "toy")
    monkeypatch.setitem(FAMILIES, "toy", Family("toy", "Toy", ToyConfig, lambda c: build_codlite(ToyConfig.coerce(c)), ToyCodec))
    cfg = dict(tiny_config("0.0312"), family="toy", name="toy-0.0312", toy_gain=0.5)
    torch.manual_seed(0)
    inst = tmp_path / "weights"
    save_weights(inst / "toy-0.0312.safetensors", build_network(cfg).state_dict(), cfg)
    codec = load(weights=inst / "toy-0.0312.safetensors")
    assert isinstance(codec, ToyCodec) and codec.family_code == 99
    data = codec.compress(smooth_image(40, 56))
    assert bs.read_cod(data).header.family_name == "toy"
    monkeypatch.setattr(cod.families, "WEIGHTS_DIR", inst)
    assert installed_codec_for(data).name == "toy-0.0312"
    out = np.asarray(codec.decompress(data))
    assert out.shape == (40, 56, 3) and out.max() <= 128  # the toy gain of 0.5 applied
    (tmp_path / "x.cod").write_bytes(data)
    assert main(["info", str(tmp_path / "x.cod")]) == 0
    with pytest.raises(ConfigError, match="unknown key 'toy_gain'"):
        build_codlite(cfg)  # the CoD-Lite config does not take the toy's field
