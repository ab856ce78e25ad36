"""CoD (DiT) training stages (CoD spec §8): tiny pixel and latent runs export weights that
`cod.load` decodes; the loss terms are finite and the codec terms masked to the conditional
samples; the paper configs build."""
import numpy as np
import pytest
import torch

from cod.train.run import load_config, model_config, train
from tests.conftest import TRAIN_PHOTOS



def _cfg(name, tmp_path, *sets):
    return load_config(name, [f"data.sources=[{TRAIN_PHOTOS}]", f"output={tmp_path}", *sets])


def _logged(out):
    import csv

    rows = [r for f in (out / "logs").rglob("metrics.csv") for r in csv.DictReader(f.open())]
    return {k: float(v) for r in rows for k, v in r.items() if k.startswith("train/") and v}


def test_tiny_pixel_runs_exports_loads_and_chains(tmp_path):
    import cod

    path = train(_cfg("tiny-cod-pixel", tmp_path / "s1"))
    logged = _logged(tmp_path / "s1")
    for k in ("fm", "codec_recon", "align", "codec_align", "vq", "one_step"):
        assert np.isfinite(logged[f"train/{k}"]), k
    codec = cod.load(weights=path)
    assert codec.family == "cod-pixel" and codec.name == "tiny-cod-pixel"
    out = codec.decompress(codec.compress(np.full((64, 64, 3), 120, np.uint8), steps=2))
    assert out.size == (64, 64)
    # stage 2 layout (up2x on) from the stage-1 export; the new `ada` upsampler stays fresh
    s2 = train(_cfg("tiny-cod-pixel", tmp_path / "s2", "model.name=cod-pixel-0.0039", f"init_from={path}", "init_strict=false", "trainer.max_steps=1"))
    codec2 = cod.load(weights=s2)
    assert codec2.config["up2x"] is True
    assert codec2.decompress(codec2.compress(np.full((64, 64, 3), 60, np.uint8), steps=2)).size == (64, 64)


def test_tiny_latent_runs_exports_and_loads(tmp_path):
    import cod
    from cod.train.cod_module import tiny_random_vae

    path = train(_cfg("tiny-cod-latent", tmp_path))
    assert all(np.isfinite(v) for v in _logged(tmp_path).values())
    codec = cod.load(weights=path, vae=tiny_random_vae())
    assert codec.family == "cod-latent"
    out = codec.decompress(codec.compress(np.full((64, 64, 3), 120, np.uint8), steps=2))
    assert out.size == (64, 64)


def _module(family, **loss):
    from cod.train.cod_module import CoDPretrainModule

    cfg = load_config(f"tiny-cod-{family}")
    return CoDPretrainModule(model_config(cfg), loss={**cfg["loss"], **loss}, backbone="random", vae="random" if family == "latent" else None)


@pytest.mark.parametrize("family", ["pixel", "latent"])
def test_codec_terms_masked_to_conditional_samples(family):
    torch.manual_seed(0)
    m = _module(family)
    y = torch.rand(2, 3, 64, 64)
    # every sample dropped: the codec terms are exactly 0 and give no gradient to the codec head
    losses = m.compute_losses(y, drop=torch.tensor([True, True]))
    assert set(losses) == {"fm", "vq", "codec_recon", "align", "codec_align", "one_step"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["codec_recon"].item() == 0 and losses["codec_align"].item() == 0
    m.total(losses).backward()
    assert all(p.grad is None or not p.grad.any() for p in m.recon_codec.parameters())
    assert all(p.grad is None or not p.grad.any() for p in m.proj_codec.parameters())
    # one sample dropped: the codec reconstruction is the kept sample's alone (not scaled, bug B4)
    losses = m.compute_losses(y, drop=torch.tensor([False, True]))
    with torch.no_grad():
        x = m.target(y[:1]) if family == "pixel" else None
        cond = m.net.condition_map(y[:1])[0]
        if family == "pixel":
            want = (m.recon_codec(cond) - x).pow(2).mean()
            assert losses["codec_recon"].item() == pytest.approx(want.item(), rel=1e-4)
        else:  # the latent target is a VAE posterior sample: check the shape of the head instead
            assert m.recon_codec(cond).shape == (1, 4, 8, 8)
    assert losses["codec_recon"].item() > 0


def test_one_step_term_only_in_stage3():
    m = _module("pixel", one_step=0.0)
    assert "one_step" not in m.compute_losses(torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("name", [f"cod-{f}-stage{s}" for f in ("pixel", "latent") for s in (1, 2, 3)])
def test_paper_configs_build(name):
    from cod.families import build_network as build_cod

    cfg = load_config(name)
    mc = model_config(cfg)
    assert cfg["stage"] == "cod-pretrain" and cfg["trainer"]["precision"] == "auto"
    assert cfg["trainer"]["strategy"] == "ddp_find_unused_parameters_true" and cfg["backbone"] == "dinov2"
    stage = int(name[-1])
    assert mc["up2x"] is (stage > 1) and cfg["data"]["size"] == (256 if stage == 1 else 512)
    assert cfg["data"]["global_batch"] == (128 if stage == 1 else 64)
    assert cfg["optim"]["lr"] == (1e-4 if stage == 1 else 2e-5)
    steps = {1: 400_000, 2: 100_000 if "pixel" in name else 800_000, 3: 50_000}[stage]
    assert cfg["trainer"]["max_steps"] == steps
    assert cfg["loss"]["one_step"] == (1.0 if stage == 3 else 0.0)
    if stage > 1:
        assert cfg["init_from"].endswith(f"stage{stage - 1}/model.safetensors") and cfg["init_strict"] is (stage == 3)
    with torch.device("meta"):
        model = build_cod(mc)
    assert sum(p.numel() for p in model.parameters()) > 500e6
    fsdp = load_config(name, ["trainer.strategy=fsdp"])
    assert fsdp["trainer"]["strategy"] == "fsdp"


def test_latent_needs_a_vae():
    from cod.errors import CodError
    from cod.train.cod_module import CoDPretrainModule

    with pytest.raises(CodError, match="VAE"):
        CoDPretrainModule(model_config(load_config("tiny-cod-latent")))
