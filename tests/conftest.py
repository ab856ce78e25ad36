import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# The authors' conformance vectors: the full set in the project's shared folder where it is
# beside the clone; the smallest cases (A4, A6, B2: CoD-Lite at 0.0312 and 0.5, CoD pixel
# up2x, each with its official .cod file where there is one) are copied unchanged into
# tests/data/conformance so that every clone checks faithfulness (7.8 MB). COD_CONFORMANCE
# names another folder for the full set (a missing one: the subset alone, as in a fresh clone).
CONFORMANCE = Path(os.environ.get("COD_CONFORMANCE", ROOT.parent / "shared" / "conformance"))
CONFORMANCE_SUBSET = ROOT / "tests" / "data" / "conformance"
DATA = ROOT.parent / "shared" / "data"
# Training photos: the shared training set where present, else the few committed test photos
# (tests/data/photos, public domain / CC0) so that a fresh clone runs the training tests too.
TEST_PHOTOS = ROOT / "tests" / "data" / "photos"
TRAIN_PHOTOS = DATA / "train" if (DATA / "train").is_dir() else TEST_PHOTOS


def tiny_config(rate: str, **overrides):
    """A small random CoD-Lite of the given rate (same architecture, narrow)."""
    from cod.zoo import codlite_config

    cfg = codlite_config(
        rate,
        hidden_size=64,
        hidden_size_x=8,
        num_blocks=3,
        num_cond_blocks=2,
        encoder_channels=32,
        latent_channels=16,
        patch_bottleneck=16,
    )
    cfg["name"] = f"tiny-codlite-{rate}"
    cfg.update(overrides)
    return cfg


def make_tiny_weights(path: Path, rate: str, seed: int = 0, **overrides) -> Path:
    from cod.checkpoint import save_weights
    from cod.models.lite import build_codlite

    torch.manual_seed(seed)
    cfg = tiny_config(rate, **overrides)
    model = build_codlite(cfg)
    # random weights with non-trivial norms so that codes vary across the image
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn_like(p))
    save_weights(path, model.state_dict(), cfg)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """rate -> path of a tiny random model's .safetensors."""
    from cod.zoo import RATES

    d = tmp_path_factory.mktemp("weights")
    return {r: make_tiny_weights(d / f"tiny-{r}.safetensors", r) for r in RATES}


def conformance_case(name: str) -> Path:
    """The folder of conformance case ``name``: the shared full set where present, else the
    copy in tests/data/conformance; skips (with the reason) a case that neither holds."""
    for root in (CONFORMANCE, CONFORMANCE_SUBSET):
        if (root / name / "manifest.json").is_file():
            return root / name
    pytest.skip(f"conformance case {name} is not in {CONFORMANCE} (absent beside this clone) nor in the subset in {CONFORMANCE_SUBSET}")


@pytest.fixture(scope="module")
def one_thread():
    """Single-threaded torch for a module of many small ops (threads only add contention on
    the shared 2-core machine); the previous setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
