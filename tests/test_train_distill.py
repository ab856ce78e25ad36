"""Stage II-2 (DMD + projected GAN, CoD-Lite spec §4.5): the tiny config alternates critic and
generator steps, each touching only its own parameters, keeps the student encoder/codebook and
the teacher frozen, and exports weights that `cod.load` reads."""
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from cod.train.run import load_config, model_config, train
from tests.conftest import TRAIN_PHOTOS


def _cfg(name, tmp_path, *sets):
    return load_config(name, [f"data.sources=[{TRAIN_PHOTOS}]", f"output={tmp_path}", *sets])


class _Spy(Callback):
    """Which parameter groups changed in each training batch."""

    def __init__(self):
        self.records = []

    @staticmethod
    def _snap(m):
        enc = list(m.net.condition.encoder.parameters()) + list(m.net.condition.quantizer.parameters())
        return {
            "gen": [p.detach().clone() for p in m.generator_params()],
            "decoder": [p.detach().clone() for p in m.net.condition.decoder.parameters()],
            "fake": [p.detach().clone() for p in m.fake.parameters() if p.requires_grad],
            "heads": [p.detach().clone() for p in m.disc.heads.parameters()],
            "frozen": [p.detach().clone() for p in enc + list(m.teacher.parameters()) + list(m.disc.backbone.parameters()) + list(m.fake.condition.parameters())],
        }

    def on_train_batch_start(self, trainer, m, batch, batch_idx):
        self.before, self.step, self.gen = self._snap(m), trainer.global_step, m.is_generator_step()

    def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
        after = self._snap(m)
        changed = {k: any(not torch.equal(a, b) for a, b in zip(self.before[k], after[k])) for k in after}
        self.records.append((self.step, self.gen, changed, trainer.global_step))


def test_tiny_distill_alternates_freezes_and_exports(tmp_path):
    from cod.checkpoint import save_weights
    from cod.models.lite import build_codlite

    cfg = _cfg("tiny-distill", tmp_path / "run", "trainer.max_steps=6")
    mc = model_config(cfg)
    torch.manual_seed(1)
    student = build_codlite(mc)
    save_weights(tmp_path / "student.safetensors", student.state_dict(), mc)
    cfg["init_from"] = str(tmp_path / "student.safetensors")
    spy = _Spy()
    out = train(cfg, callbacks=[spy])

    assert [r[0] for r in spy.records] == list(range(6))
    assert [r[3] for r in spy.records] == list(range(1, 7))  # one optimiser step per batch
    assert [r[1] for r in spy.records] == [False, False, False, False, True, False]  # (g+1) % 5 == 0
    for step, gen, changed, _ in spy.records:
        assert changed["gen"] == gen and changed["decoder"] == gen, (step, changed)
        assert changed["fake"] == (not gen) and changed["heads"] == (not gen), (step, changed)
        assert not changed["frozen"], step

    # the encoder and codebook are the initial ones; the decoder was trained
    init, final = load_file(tmp_path / "student.safetensors"), load_file(out)
    assert init.keys() == final.keys()
    for k in init:
        if k.startswith(("condition.encoder.", "condition.quantizer.")):
            assert torch.equal(init[k], final[k]), k
    assert any(not torch.equal(init[k], final[k]) for k in init if k.startswith("condition.decoder."))

    import cod

    codec = cod.load(weights=out)
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    rec = codec.decompress(codec.compress(img))
    assert rec.size == (64, 48)


def test_discriminator_and_losses_shapes():
    """D logits are per layer at H/16; the critic and generator losses are finite; the DMD
    term's gradient w.r.t. x̂ is 2 g / N (the normalised fake-minus-real direction)."""
    from cod.train.distill import build_distill_module

    cfg = load_config("tiny-distill")
    mc = model_config(cfg)
    m = build_distill_module(cfg, mc, seed=0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert m.disc(x).shape == (2, 1, 4, 4)
    assert all(hasattr(h.net[0], "parametrizations") for h in m.disc.heads)  # spectral norm
    y = torch.rand(2, 3, 64, 64)
    g = torch.Generator().manual_seed(0)
    crit = m.critic_losses(y, g)
    assert set(crit) == {"fake_fm", "d_real", "d_fake"} and all(torch.isfinite(v) for v in crit.values())
    gen = m.generator_losses(y, torch.Generator().manual_seed(0))
    assert {"l1", "perceptual", "vq", "dmd", "gan", "align"} <= set(gen) and all(torch.isfinite(v) for v in gen.values())
    assert gen["dmd"] > 0  # the random teacher and its copy disagree under CFG 3
    # null condition: teacher codec of the all -1 image, cached per size
    cond, null = m.teacher_condition(y)
    assert cond.shape == null.shape == (2, 64, 4, 4)
    assert torch.allclose(null[0], m.teacher.condition(torch.full((1, 3, 64, 64), -1.0))[0][0])


def test_paper_distill_config_builds():
    from cod.models.lite import build_codlite
    from cod.zoo import get_config as get_cod_config

    cfg = load_config("codlite-distill")
    assert cfg["stage"] == "distill" and cfg["trainer"]["max_steps"] == 200_000 and not cfg.get("lora")
    assert cfg["optim"]["lr"] == 1e-5 and cfg["optim"]["critic_lr"] == 1e-5 and cfg["optim"]["lr_milestones"] == [100_000]
    loss = cfg["loss"]
    assert (loss["dmd"], loss["gan"], loss["cfg_scale"], loss["generator_every"], loss["perceptual"]) == (2.0, 0.01, 3.0, 5, "lpips")
    assert cfg["discriminator"] == {"backbone": "dinov2", "weights": None, "layers": [2, 5, 8, 11]}
    t = get_cod_config(cfg["teacher"])
    assert (t["family"], t["ds"], t["codebook_bits"], t["up2x"]) == ("cod-pixel", 32, 4, True)
    with torch.device("meta"):
        model = build_codlite(model_config(cfg))
    assert sum(p.numel() for p in model.parameters()) > 90e6


def test_tiny_distill_resume_equals_uninterrupted(tmp_path):
    """Fake score, heads, optimiser and scheduler states travel in the checkpoint; the teacher is
    rebuilt from its source. Resuming at step 3 (before the generator step 4) changes nothing."""
    full = train(_cfg("tiny-distill", tmp_path / "a", "trainer.max_steps=6", "trainer.checkpoint_every=3"))
    train(_cfg("tiny-distill", tmp_path / "b", "trainer.max_steps=3", "trainer.checkpoint_every=3"))
    resumed = train(_cfg("tiny-distill", tmp_path / "b", "trainer.max_steps=6", "trainer.checkpoint_every=3"))
    a, b = load_file(full), load_file(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])  # teacher not checkpointed
    assert any(k.startswith("fake.") for k in ckpt["state_dict"]) and len(ckpt["optimizer_states"]) == 2


def test_dinov2_discriminator_uses_intermediate_blocks(monkeypatch):
    """With DINOv2 the heads see blocks 2, 5, 8, 11 (after the final norm) of the raw [-1, 1]
    image resized by 14/16: one logit map per layer at H/16, differentiable w.r.t. the image."""
    timm = pytest.importorskip("timm")
    from torch import nn

    import cod.train.distill as distill
    from cod.train.backbones import DinoV2Backbone

    bb = DinoV2Backbone.__new__(DinoV2Backbone)
    nn.Module.__init__(bb)
    bb.net = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True, embed_dim=32, num_heads=2, img_size=56)
    bb.dim = 32
    bb.requires_grad_(False)
    monkeypatch.setattr(distill, "build_token_backbone", lambda kind, weights=None: bb)
    d = distill.ProjectedDiscriminator("dinov2")
    assert d.layers == (2, 5, 8, 11) and len(d.heads) == 4
    x = (torch.rand(2, 3, 64, 96) * 2 - 1).requires_grad_(True)
    logits = d(x)
    assert logits.shape == (2, 4, 4, 6)
    logits.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.parameters())
