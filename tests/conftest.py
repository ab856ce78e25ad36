import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT.parent / "shared" / "conformance"
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


@pytest.fixture(scope="session")
def conformance_dir():
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance vectors not found at {CONFORMANCE} (they live in the project's shared/ folder)")
    return CONFORMANCE


@pytest.fixture(scope="module")
def one_thread():
    """Single-threaded torch for a module of many small ops (threads only add contention on
    the shared 2-core machine); the previous setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
