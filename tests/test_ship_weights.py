"""tools/ship_weights.py: the shipped copy carries the config, and --pinned remakes the pinned
sample, keeping a file of the model it replaces only when asked (and never overwriting one)."""
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from cod import bitstream
from cod.families import load
from cod.image_io import read_image
from tests.conftest import ROOT, make_tiny_weights

spec = importlib.util.spec_from_file_location("ship_weights", ROOT / "tools" / "ship_weights.py")
ship_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ship_weights)


def ship(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["ship_weights.py", *args])
    ship_weights.main()


@pytest.fixture()
def pinned(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    image = np.asarray(read_image(ROOT / "tests" / "data" / "sample.png"))[:64, :96]
    from cod.image_io import write_image

    write_image(folder / "sample.png", image)
    return folder


def test_ship_remakes_the_pinned_sample_and_keeps_the_replaced_models_file(tmp_path, pinned, monkeypatch, capsys):
    old = make_tiny_weights(tmp_path / "old.safetensors", "0.0312", seed=0)
    new = make_tiny_weights(tmp_path / "new.safetensors", "0.0312", seed=1)
    ship(monkeypatch, str(old), "--name", "tiny-x", "--out", str(tmp_path / "a.safetensors"), "--pinned", str(pinned))
    first = (pinned / "sample.tiny-x.cod").read_bytes()
    old_tag = bitstream.read_cod(first).header.model_tag
    # the pinned pair decodes as written, with the shipped copy
    codec = load(weights=tmp_path / "a.safetensors", precision="fp32")
    assert np.array_equal(np.asarray(codec.decompress(first)), np.asarray(read_image(pinned / "sample.tiny-x.png")))

    # another model: refused without --retire-as, the old file untouched
    with pytest.raises(SystemExit, match="another model"):
        ship(monkeypatch, str(new), "--name", "tiny-x", "--out", str(tmp_path / "b.safetensors"), "--pinned", str(pinned))
    assert (pinned / "sample.tiny-x.cod").read_bytes() == first
    assert not list(tmp_path.glob("b*.safetensors"))  # nor are the weights installed

    capsys.readouterr()
    ship(monkeypatch, str(new), "--name", "tiny-x", "--out", str(tmp_path / "b.safetensors"), "--pinned", str(pinned), "--retire-as", "v1")
    out = capsys.readouterr().out
    assert (pinned / "retired.tiny-x-v1.cod").read_bytes() == first
    head = bitstream.read_cod(first).header
    assert f'({head.ds}, {head.bits}, 0x{old_tag:04X}): "tiny-x v1 (commit' in out
    assert bitstream.read_cod((pinned / "sample.tiny-x.cod").read_bytes()).header.model_tag != old_tag

    # a kept file is never overwritten
    shutil.copy(pinned / "retired.tiny-x-v1.cod", tmp_path / "keep.cod")
    second = (pinned / "sample.tiny-x.cod").read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        ship(monkeypatch, str(old), "--name", "tiny-x", "--out", str(tmp_path / "c.safetensors"), "--pinned", str(pinned), "--retire-as", "v1")
    assert (pinned / "retired.tiny-x-v1.cod").read_bytes() == (tmp_path / "keep.cod").read_bytes()
    assert (pinned / "sample.tiny-x.cod").read_bytes() == second
    assert not list(tmp_path.glob("c*.safetensors")) and not list(tmp_path.glob(".c.safetensors*"))


def test_ship_refuses_bad_arguments_before_writing(tmp_path, monkeypatch, capsys):
    weights = make_tiny_weights(tmp_path / "w.safetensors", "0.0312")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        (["--pinned", str(empty)], "no sample.png"),
        (["--retire-as", "v1"], "needs --pinned"),
        (["--pinned", str(empty), "--retire-as", 'v1"; x'], "letters, digits"),
    ]:
        with pytest.raises(SystemExit):
            ship(monkeypatch, str(weights), "--name", "tiny-y", "--out", str(tmp_path / "out.safetensors"), *args)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists() and not list(empty.iterdir())
