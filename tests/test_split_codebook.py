"""tools/split_codebook.py: LBG growth of a trained codebook (the children start in their parent's cell)."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cod.checkpoint import read_weights, save_weights
from cod.families import build_network
from cod.models.condition import nearest_codes
from tests.conftest import tiny_config

spec = importlib.util.spec_from_file_location("split_codebook", Path(__file__).resolve().parents[1] / "tools" / "split_codebook.py")
split_codebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(split_codebook)


def _clusters(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Data with 3 groups of 4 tight sub-clusters, and a 4-code codebook at the 3 group centres
    plus one code far from every point (unused)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    z = torch.cat([c + o + 0.05 * torch.randn(200, 2, generator=g) for c in centres for o in offsets])
    old = torch.cat([centres, torch.tensor([[100.0, 100.0]])])
    return z, old


def test_split_finds_the_sub_clusters_and_keeps_unused_codes():
    z, old = _clusters()
    new = split_codebook.split_codebook(z, old, 4, iters=10, seed=0)
    assert new.shape == (16, 2)
    _, d_old = nearest_codes(z, old)
    _, d_new = nearest_codes(z, new)
    assert d_new.mean() < 0.05 * d_old.mean()  # 2.0 -> ~0.005: every sub-cluster got its own code
    assert torch.equal(new[12:], old[3].expand(4, 2))  # an unused code's children copy it


def test_children_start_inside_their_parents_cell():
    z, old = _clusters(1)
    new = split_codebook.split_codebook(z, old, 4, iters=0, seed=0)
    assert torch.equal(new[::4], old)  # child 0 is the parent
    parent_of_child, _ = nearest_codes(new, old)
    assert torch.equal(parent_of_child, torch.arange(4).repeat_interleave(4))


def test_nearest_codes_matches_cdist_in_chunks():
    torch.manual_seed(0)
    z, cb = torch.randn(1000, 8), torch.randn(64, 8)
    idx, dist = nearest_codes(z, cb, chunk=77)
    assert torch.equal(idx, torch.cdist(z, cb).argmin(1))
    assert torch.allclose(dist, torch.cdist(z, cb).min(1).values.pow(2), atol=1e-4)


def test_command_writes_a_wider_model(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_config("0.0312", codebook_bits=4)
    save_weights(tmp_path / "old.safetensors", build_network(cfg).state_dict(), cfg)
    data = tmp_path / "train"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(data / f"p{i}.png")
    out = tmp_path / "new.safetensors"
    argv = ["split_codebook.py", str(tmp_path / "old.safetensors"), str(out), "--bits", "6", "--data", str(data), "--crop", "64"]
    monkeypatch.setattr(sys, "argv", argv)
    split_codebook.main()
    new_cfg, state = read_weights(out)
    assert new_cfg["codebook_bits"] == 6 and state["condition.quantizer.codebook.weight"].shape[0] == 64
    build_network(new_cfg).load_state_dict(state)  # loads as a 6-bit model
    monkeypatch.setattr(sys, "argv", argv[:3] + ["--bits", "4"] + argv[5:])
    with pytest.raises(SystemExit, match="--bits must be above"):
        split_codebook.main()
    (data / "Kodak").mkdir()
    Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(data / "Kodak" / "k.png")
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="evaluation set"):  # the training-data rule of `cod fit-prior`
        split_codebook.main()
