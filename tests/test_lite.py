"""CoD-Lite network: parameter counts of the published sizes, t=0 folding, training forward."""
import pytest
import torch

from cod.models.lite import build_codlite
from cod.zoo import RATES, codlite_config
from tests.conftest import tiny_config

# spec §2.1 / §2.9: (encoder + codebook, dec side after folding incl. t-embedder)
PUBLISHED = {
    "0.0039": (28_710_272, 54_660_931),
    "0.0312": (28_150_912, 52_035_139),
    "0.5": (27_413_248, 56_019_139),
}


@pytest.mark.parametrize("rate", list(PUBLISHED))
def test_full_size_parameter_counts(rate):
    model = build_codlite(codlite_config(rate))
    enc = sum(p.numel() for p in model.condition.encoder.parameters()) + model.condition.quantizer.codebook.weight.numel()
    t_emb = sum(p.numel() for p in model.time_embedder.parameters())
    adaln = sum(p.numel() for b in model.blocks for p in b.adaLN_modulation.parameters())
    total = sum(p.numel() for p in model.parameters())
    want_enc, want_dec = PUBLISHED[rate]
    assert enc == want_enc
    assert total - adaln - enc + model.condition.quantizer.codebook.weight.numel() == want_dec
    if rate == "0.0312":
        assert total == 98_781_123
    model.fold_time_modulation()
    assert sum(p.numel() for p in model.parameters()) == total - adaln - t_emb


def test_folding_equals_unfolded_at_t0_and_allows_batches():
    torch.manual_seed(0)
    model = build_codlite(tiny_config("0.0312")).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-zero adaLN so the folding matters
            p.add_(0.05 * torch.randn_like(p))
        y = torch.rand(3, 3, 32, 48)
        cond, _ = model.condition(y)
        x0 = torch.zeros(3, 3, 32, 48)
        want = model.predict(x0, torch.zeros(3), cond)
        other_t = model.predict(x0, torch.full((3,), 0.5), cond)
        model.fold_time_modulation(0.0)
        assert model.time_folded and all(b.folded for b in model.blocks)
        got = model.predict(x0, None, cond)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(other_t, want, atol=1e-3)  # t matters, so the test can fail
    keys = model.state_dict().keys()
    assert "blocks.0.modulation" in keys and not any("adaLN_modulation" in k and k.startswith("blocks") for k in keys)


def test_eval_does_not_fold():
    model = build_codlite(tiny_config("0.125"))
    model.eval()
    assert not model.time_folded


def test_training_forward_gives_gradients():
    torch.manual_seed(0)
    model = build_codlite(tiny_config("0.0156"))
    y = torch.rand(2, 3, 32, 32)
    out = model(y)
    assert out.reconstruction.shape == (2, 3, 32, 32)
    assert out.indices.shape == (2, 4)
    loss = (out.reconstruction - (2 * y - 1)).abs().mean() + 0.25 * out.vq_loss
    loss.backward()
    enc = model.condition.encoder.conv_in.weight.grad
    assert enc is not None and enc.abs().sum() > 0  # straight-through reaches the encoder
    assert model.condition.quantizer.codebook.weight.grad.abs().sum() > 0


def test_windowed_attention_matches_global_on_small_maps():
    torch.manual_seed(0)
    model = build_codlite(tiny_config("0.5")).eval()
    small = torch.rand(1, 3, 64, 64)  # index grid 16x16 <= 32: both modes global
    big = torch.rand(1, 3, 160, 144)  # 40x36 > 32: windows differ
    with torch.no_grad():
        a = model.set_attention(windowed=True).condition.encoder(small)
        b = model.set_attention(windowed=False).condition.encoder(small)
        c = model.set_attention(windowed=True).condition.encoder(big)
        d = model.set_attention(windowed=False).condition.encoder(big)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(c, d, atol=1e-4)


@pytest.mark.parametrize("rate", list(RATES))
def test_condition_grid_is_h_over_16(rate):
    model = build_codlite(tiny_config(rate)).eval()
    ds = RATES[rate][0]
    m = max(ds, 16)
    with torch.no_grad():
        idx = model.condition.encode(torch.rand(1, 3, 2 * m, 3 * m))
        assert idx.shape == (1, (2 * m // ds) * (3 * m // ds))
        cond = model.condition.decode(idx, 2 * m // ds, 3 * m // ds)
    assert cond.shape[-2:] == (2 * m // 16, 3 * m // 16)
