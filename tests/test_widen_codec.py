"""tools/widen_codec.py: the 2x-wider encoder and latent encode and decode as the narrow model."""
import importlib.util
from pathlib import Path

import torch

from cod.families import build_network
from tests.conftest import tiny_config

spec = importlib.util.spec_from_file_location("widen_codec", Path(__file__).resolve().parents[1] / "tools" / "widen_codec.py")
widen_codec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(widen_codec)


def test_widening_preserves_indices_and_condition():
    torch.manual_seed(0)
    cfg = tiny_config("0.0312")  # encoder 32, latent 16
    narrow = build_network(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, as a trained model has
        for name, p in narrow.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    wide_cfg = {**cfg, "encoder_channels": 64, "latent_channels": 32}
    wide = build_network(wide_cfg).eval()
    state, changed = widen_codec.widen_state(narrow.state_dict(), {k: v.shape for k, v in wide.state_dict().items()})
    wide.load_state_dict(state)
    assert any("codebook" in n for n in changed) and any(n.endswith(".q.weight") for n in changed)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        i_n, i_w = narrow.condition.encode(x), wide.condition.encode(x)
        assert torch.equal(i_n, i_w)
        z_n, z_w = narrow.condition.encoder(x), wide.condition.encoder(x)
        assert torch.allclose(z_w[:, ::2], z_n, atol=1e-5) and torch.allclose(z_w[:, 1::2], z_n, atol=1e-5)
        c_n, c_w = narrow.condition.decode(i_n, 4, 6), wide.condition.decode(i_n, 4, 6)
        assert torch.allclose(c_n, c_w, atol=1e-5)
