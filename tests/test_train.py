"""Training: every stage's tiny config runs, resume equals an uninterrupted run, loss goes
down on real crops, 2-process DDP (gloo, CPU) keeps the ranks identical."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cod.train.run import StepSampler, load_config, model_config, train
from tests.conftest import ROOT, TRAIN_PHOTOS


def _cfg(name, tmp_path, *sets):
    cfg = load_config(name, [f"data.sources=[{TRAIN_PHOTOS}]", f"output={tmp_path}", *sets])
    return cfg


def test_tiny_stages_run_and_chain(tmp_path):
    pre = train(_cfg("tiny-pretrain", tmp_path / "pre"))
    one = train(_cfg("tiny-onestep", tmp_path / "one", f"init_from={pre}"))
    import cod

    codec = cod.load(weights=one)
    out = codec.decompress(codec.compress(np.full((40, 50, 3), 120, np.uint8)))
    assert out.size == (50, 40)
    # LoRA was merged: plain names only
    assert not any("lora" in k or "base_model" in k for k in load_file(one))


@pytest.mark.parametrize("extra", [[], ["vq_restart={every: 2}", "data.scale=[0.5, 1.0]", "data.cache=true", "optim.decay_steps=6"]], ids=["plain", "restarts-scale-cache-decay"])
def test_resume_equals_uninterrupted(tmp_path, extra):
    # 3 steps, then resumed to 7 (more steps left than done: a repeated batch would show);
    # with codebook restarts the usage counts travel in the checkpoint, with lr decay the
    # scheduler's position
    full = train(_cfg("tiny-pretrain", tmp_path / "a", "trainer.max_steps=7", "trainer.checkpoint_every=3", *extra))
    train(_cfg("tiny-pretrain", tmp_path / "b", "trainer.max_steps=3", "trainer.checkpoint_every=3", *extra))
    resumed = train(_cfg("tiny-pretrain", tmp_path / "b", "trainer.max_steps=7", "trainer.checkpoint_every=3", *extra))
    a, b = load_file(full), load_file(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the logged losses of steps 3-4 agree
    import csv

    def losses(d):
        rows = []
        for f in sorted((d / "logs").rglob("metrics.csv")):
            rows += [r for r in csv.DictReader(f.open()) if r.get("train/loss")]
        return {int(r["step"]): float(r["train/loss"]) for r in rows}

    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    for step in range(7):
        assert la[step] == pytest.approx(lb[step], rel=1e-6), step


def test_lr_decay_is_a_half_cosine_to_zero():
    from cod.train.lite_module import CoDLiteModule
    from tests.conftest import tiny_config

    module = CoDLiteModule(tiny_config("0.0312"), stage="onestep", lr=1e-3, lr_decay_steps=4)
    (opt,), (sch,) = module.configure_optimizers()
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch["scheduler"].step()
    assert lrs == pytest.approx([1e-3, 0.5e-3 * (1 + 2**-0.5), 0.5e-3, 0.5e-3 * (1 - 2**-0.5), 0.0, 0.0], abs=1e-12)
    assert isinstance(CoDLiteModule(tiny_config("0.0312"), stage="onestep").configure_optimizers(), torch.optim.AdamW)  # default: constant


def test_fresh_parameters_train_at_a_scaled_lr(tmp_path):
    """optim.fresh_lr_scale: the tensors init_from did not supply (a new output refinement beside
    warm-started weights) form their own group at lr x scale, decayed by the same cosine."""
    from cod.checkpoint import save_weights
    from cod.train.lite_module import CoDLiteModule
    from cod.train.run import _init_weights
    from tests.conftest import tiny_config

    old = CoDLiteModule(tiny_config("0.0312"), stage="onestep")
    path = tmp_path / "old.safetensors"
    save_weights(path, old.net.state_dict(), tiny_config("0.0312"))
    module = CoDLiteModule({**tiny_config("0.0312"), "output_refine": 4}, stage="onestep", lr=1e-3, lr_decay_steps=4, fresh_lr_scale=10.0)
    module.fresh_parameters = _init_weights(module, str(path), strict=False)
    assert module.fresh_parameters == {f"output_refine.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    (opt,), (sch,) = module.configure_optimizers()
    warm, fresh = opt.param_groups
    assert [p for p in fresh["params"]] == [p for n, p in module.net.named_parameters() if n.startswith("output_refine")]
    assert len(warm["params"]) + len(fresh["params"]) == sum(1 for p in module.parameters() if p.requires_grad)
    assert (warm["lr"], fresh["lr"]) == pytest.approx((1e-3, 1e-2))
    opt.step()
    sch["scheduler"].step()
    opt.step()
    sch["scheduler"].step()
    assert (warm["lr"], fresh["lr"]) == pytest.approx((0.5e-3, 0.5e-2))
    # without a scale: one group, as before
    plain = CoDLiteModule({**tiny_config("0.0312"), "output_refine": 4}, stage="onestep", lr=1e-3)
    plain.fresh_parameters = _init_weights(plain, str(path), strict=False)
    assert len(plain.configure_optimizers().param_groups) == 1


def test_train_wires_fresh_lr_scale_and_needs_a_warm_start(tmp_path):
    import lightning.pytorch as pl

    from cod.errors import CodError

    with pytest.raises(CodError, match="fresh_lr_scale"):
        train(_cfg("tiny-onestep", tmp_path / "x", "optim.fresh_lr_scale=10", "init_from=null"))
    pre = train(_cfg("tiny-pretrain", tmp_path / "pre", "trainer.max_steps=1"))
    seen = {}

    class Groups(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["lrs"] = [g["lr"] for g in trainer.optimizers[0].param_groups]
            seen["fresh"] = set(module.fresh_parameters)

    sets = (f"init_from={pre}", "init_strict=false", "lora=null", "model.overrides.output_refine=4", "optim.lr=0.001", "optim.fresh_lr_scale=10", "trainer.max_steps=1")
    train(_cfg("tiny-onestep", tmp_path / "one", *sets), callbacks=[Groups()])
    assert seen["fresh"] == {f"output_refine.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    assert seen["lrs"] == pytest.approx([1e-3, 1e-2])


def test_fifty_steps_lower_the_loss(tmp_path):
    import csv

    train(_cfg("tiny-onestep", tmp_path, "trainer.max_steps=50", "optim.lr=0.001", "trainer.checkpoint_every=1000", "lora=null", "data.batch_size=4"))
    rows = [r for f in (tmp_path / "logs").rglob("metrics.csv") for r in csv.DictReader(f.open()) if r.get("train/loss")]
    loss = [float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))]
    assert len(loss) == 50
    assert np.mean(loss[-10:]) < 0.8 * np.mean(loss[:10]), (np.mean(loss[:10]), np.mean(loss[-10:]))


def test_step_sampler_splits_ranks_and_resumes():
    s0 = list(StepSampler(2, 2, 3, rank=0, world=2))
    s1 = list(StepSampler(2, 2, 3, rank=1, world=2))
    assert not set(s0) & set(s1) and len(s0) == len(s1) == 12
    resumed = StepSampler(2, 2, 3, rank=0, world=2, start_step=1)
    assert list(resumed) == s0[4:] and len(resumed) == len(s0)  # length counts from step 0


@pytest.mark.slow
def test_ddp_two_processes_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "cod", "train", "tiny-pretrain", "-o", str(tmp_path), "--set", f"data.sources=[{TRAIN_PHOTOS}]",
           "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp", "--set", "trainer.accelerator=cpu", "--set", "trainer.max_steps=3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    h0 = (tmp_path / "weights-rank0.sha256").read_text()
    h1 = (tmp_path / "weights-rank1.sha256").read_text()
    assert h0 == h1
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["codlite-pretrain-stage1", "codlite-pretrain-stage2", "codlite-pretrain-stage3", "codlite-onestep", "codlite-free-pretrain", "codlite-free-onestep"])
def test_shipped_paper_configs_build(name):
    """Every shipped stage config resolves to a buildable full-size model."""
    from cod.models.lite import build_codlite
    from cod.train.run import model_config

    cfg = load_config(name)
    mc = model_config(cfg)
    assert cfg["stage"] in ("pretrain", "onestep") and cfg["trainer"]["max_steps"] >= 50_000
    with torch.device("meta"):
        model = build_codlite(mc)
    assert sum(p.numel() for p in model.parameters()) > 90e6


def test_config_overrides_and_errors():
    from cod.errors import CodError

    cfg = load_config("tiny-pretrain", ["trainer.max_steps=7", "loss.vq=0.5", "model.overrides.hidden_size=32"])
    assert cfg["trainer"]["max_steps"] == 7 and cfg["loss"]["vq"] == 0.5 and cfg["model"]["overrides"]["hidden_size"] == 32
    with pytest.raises(CodError, match="not found"):
        load_config("no-such-config")
    with pytest.raises(CodError, match="key=value"):
        load_config("tiny-pretrain", ["oops"])


def test_cli_train_takes_its_data_from_the_command_line(tmp_path, monkeypatch, capsys):
    """No shipped config names a data folder: `cod train NAME` without --data (or
    --set data.sources) is a usage error saying what to pass; --data sets data.sources; a
    folder holding a finished run is refused unless --force."""
    import cod.train.run
    from cod.cli import main

    shipped = sorted((Path(cod.train.run.__file__).parent / "configs").glob("*.yaml"))
    assert shipped and not any("shared" in f.read_text() for f in shipped)
    assert main(["train", "tiny-pretrain", "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config tiny-pretrain: no training data; pass --data DIR") and "tests/data/photos" in err
    seen = []
    monkeypatch.setattr(cod.train.run, "train", lambda cfg: seen.append(cfg))
    assert main(["train", "tiny-pretrain", "--data", str(TRAIN_PHOTOS), "--data", "more.txt", "-o", str(tmp_path / "a")]) == 0
    assert seen[0]["data"]["sources"] == [str(TRAIN_PHOTOS), "more.txt"] and seen[0]["output"] == str(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").parent.mkdir(parents=True)
    (tmp_path / "a" / "model.safetensors").write_bytes(b"done")
    assert main(["train", "tiny-pretrain", "--data", str(TRAIN_PHOTOS), "-o", str(tmp_path / "a")]) == 2
    assert "exists (a finished run); pass --force" in capsys.readouterr().err
    assert main(["train", "tiny-pretrain", "--data", str(TRAIN_PHOTOS), "-o", str(tmp_path / "a"), "--force"]) == 0 and len(seen) == 2


def test_config_inheritance_and_overrides_through_omegaconf(tmp_path):
    """``base:`` chains merge mappings key by key and replace other values; ``--set`` replaces
    one value (a mapping too) after the merge; the result is plain dicts and lists."""
    from cod.errors import CodError

    cfg = load_config("tiny-distill", ["data.sources=[a, b]"])  # tiny-distill <- tiny-onestep <- tiny-pretrain
    assert "base" not in cfg and type(cfg) is dict and type(cfg["data"]["sources"]) is list
    assert cfg["stage"] == "distill" and cfg["lora"] is None and cfg["model"]["name"] == "codlite-0.0312"  # from tiny-pretrain
    assert cfg["loss"] == {"perceptual": "ms-ssim", "align_block": 1, "dmd": 2.0, "gan": 0.01, "cfg_scale": 3.0, "generator_every": 5}
    assert cfg["trainer"]["log_every"] == 1 and cfg["trainer"]["max_steps"] == 6  # merged: kept, replaced
    cfg = load_config("tiny-onestep", ["loss={vq: 0.5}", "data.scale=[0.5, 1.0]", "optim.lr=2.0e-4", "lora=null", "new.key.deep=3"])
    assert cfg["loss"] == {"vq": 0.5} and cfg["data"]["scale"] == [0.5, 1.0] and cfg["optim"]["lr"] == 2e-4
    assert cfg["lora"] is None and cfg["new"] == {"key": {"deep": 3}}
    child = tmp_path / "child.yaml"
    child.write_text("base: tiny-pretrain\nmodel: {overrides: {hidden_size: 32}}\n")
    cfg = load_config(str(child))
    assert cfg["model"]["name"] == "codlite-0.0312" and cfg["model"]["overrides"]["hidden_size"] == 32
    assert cfg["model"]["overrides"]["num_blocks"] == 3  # the rest of the base's overrides kept
    with pytest.raises(CodError, match="unknown key 'hidden_szie'"):
        model_config(load_config("tiny-pretrain", ["model.overrides.hidden_szie=32"]))


def test_training_on_kodak_is_refused(tmp_path):
    from cod.errors import CodError
    from cod.train.data import RandomCropDataset

    kodak = tmp_path / "data" / "Kodak"
    kodak.mkdir(parents=True)
    shutil.copy(next(TRAIN_PHOTOS.rglob("*.jpg")), kodak / "kodim01.jpg")
    with pytest.raises(CodError, match="evaluation set"):
        RandomCropDataset([tmp_path / "data"], 64)  # found anywhere below a source, any case
    elsewhere = tmp_path / "photos"  # Kodak's own file names outside a kodak folder: the same rule as `cod fit-prior`
    elsewhere.mkdir()
    shutil.copy(next(TRAIN_PHOTOS.rglob("*.jpg")), elsewhere / "KODIM07.jpg")
    with pytest.raises(CodError, match="evaluation set"):
        RandomCropDataset([elsewhere], 64)
    link = tmp_path / "link"  # a folder whose real path goes through a kodak folder
    link.symlink_to(kodak, target_is_directory=True)
    from cod.image_io import evaluation_image

    assert evaluation_image(link / "x.png") and not evaluation_image(tmp_path / "photos" / "x.png")


def test_bad_and_small_images_are_skipped_and_counted(tmp_path):
    from PIL import Image

    from cod.train.data import RandomCropDataset

    Image.new("RGB", (80, 90), (10, 20, 30)).save(tmp_path / "ok.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    ds = RandomCropDataset([tmp_path], 64)
    assert len(ds.files) == 1 and len(ds.stats.too_small) == 1 and len(ds.stats.unreadable) == 1
    a, b = ds[0], ds[0]
    assert a.shape == (3, 64, 64) and torch.equal(a, b)  # a crop is a function of its index


def test_scale_augmentation_is_antialiased_and_deterministic(tmp_path):
    from PIL import Image

    from cod.errors import CodError
    from cod.train.data import RandomCropDataset

    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    Image.fromarray(np.stack([board] * 3, -1)).save(tmp_path / "board.png")
    plain = RandomCropDataset([tmp_path], 64)
    half = RandomCropDataset([tmp_path], 64, scale=(0.5, 0.5), cache=True)
    assert plain[3].std() > 0.45  # the raw checkerboard
    crop = half[3]
    assert crop.shape == (3, 64, 64) and crop.std() < 0.05 and abs(crop.mean() - 0.5) < 0.02  # averaged, not aliased
    assert torch.equal(crop, half[3]) and half.cache  # a function of the index; decoded image kept
    mixed = RandomCropDataset([tmp_path], 64, scale=(0.25, 1.0), length=40)
    assert len({round(float(mixed[i].std()), 3) for i in range(40)}) > 5  # scales vary per crop
    with pytest.raises(CodError, match="data.scale"):
        RandomCropDataset([tmp_path], 64, scale=(0.0, 1.0))


def test_dead_codes_restart_on_encoder_outputs():
    """Codes unused since the last restart move onto latents of the current batch; used
    codes stay; the usage count starts again."""
    from cod.train.lite_module import CoDLiteModule
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    module = CoDLiteModule(tiny_config("0.0312"), stage="onestep", vq_restart={"every": 1})
    module.train()
    book = module.net.condition.quantizer.codebook.weight
    before = book.detach().clone()
    module._onestep_losses(torch.rand(2, 3, 64, 64))
    used = module.code_usage > 0
    assert 0 < used.sum() < used.numel()
    latents = module._last_latents.permute(0, 2, 3, 1).reshape(-1, book.shape[1])
    module._restart_dead_codes()
    after = book.detach()
    assert torch.equal(after[used], before[used])
    dead_rows = after[~used]
    assert (dead_rows[:, None] - latents[None]).abs().amax(-1).min(1).values.max() == 0  # each is a latent
    assert int(module.code_usage.sum()) == 0


def test_small_configs_name_the_shipped_architecture():
    """The recipe of the shipped default models builds exactly the zoo's small models."""
    from cod.train.run import model_config
    from cod.zoo import MODELS, SMALL_RATES

    for stage in ("codlite-small-pretrain", "codlite-small-onestep"):
        for rate in SMALL_RATES:
            mc = model_config(load_config(stage, [f"model.name=codlite-small-{rate}"]))
            mc.pop("name")
            assert mc == MODELS[f"codlite-small-{rate}"], (stage, rate)


def test_dinov2_backbone_from_local_file(tmp_path):
    """DINOv2 ViT-B/14 weights in the official release's layout load from a local file
    (random values here) and give one token per 16x16 patch; a missing file is a clear error."""
    import timm

    from cod.errors import CheckpointError
    from cod.train.backbones import DinoV2Backbone, build_token_backbone

    net = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True)
    state = dict(net.state_dict(), mask_token=torch.zeros(1, 768))
    torch.save(state, tmp_path / "dinov2_vitb14_pretrain.pth")
    bb = DinoV2Backbone(tmp_path / "dinov2_vitb14_pretrain.pth")
    tokens = bb(torch.rand(2, 3, 64, 96))
    assert tokens.shape == (2, 4 * 6, 768)
    with pytest.raises(CheckpointError, match="dinov2_vitb14_pretrain.pth"):
        build_token_backbone("dinov2", str(tmp_path / "nope" / "dinov2_vitb14_pretrain.pth"))


# ------------------------------------------------------------------ small recipe v2 levers
def test_chroma_loss_sees_colour_casts_not_luma_detail():
    from cod.train.losses import chroma_loss

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    grey = x.mean(1, keepdim=True).expand_as(x)  # same luma-ish, colour removed
    assert chroma_loss(x, x) == 0
    assert chroma_loss(grey, x) > 0.01
    # a luminance-only change (equal shift of R, G and B) costs nothing
    assert chroma_loss(x + 0.1, x) == pytest.approx(0.0, abs=1e-6)


def test_chroma_corrected_is_the_codec_correction_in_torch():
    """loss.chroma_block trains on the decode as .cod v4 files correct it: the torch form
    equals cod.chroma.apply (up to its final rounding), passes gradients, and checks sizes."""
    import numpy as np
    from PIL import Image

    from cod import chroma
    from cod.train.losses import chroma_corrected

    img = np.asarray(Image.open(ROOT / "cod" / "samples" / "parrots.png").convert("RGB"))[:256, :384]
    rng = np.random.default_rng(0)
    dec = np.clip(img.astype(int) + rng.integers(-40, 40, (1, 1, 3)) + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    want = chroma.apply(dec, chroma.measure(img, 64, 4)).astype(float)
    as_t = lambda a: torch.from_numpy(a.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]  # noqa: E731
    rec = as_t(dec).requires_grad_(True)
    out = chroma_corrected(rec, as_t(img), 64)
    got = np.clip(np.rint((out[0].detach().permute(1, 2, 0).numpy() + 1) * 127.5), 0, 255)
    assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 1e-3
    out.sum().backward()
    assert rec.grad is not None and torch.isfinite(rec.grad).all()
    with pytest.raises(ValueError, match="multiples of 64"):
        chroma_corrected(rec[..., :100], as_t(img)[..., :100], 64)


def test_onestep_losses_see_the_chroma_corrected_decode():
    from cod.train.lite_module import CoDLiteModule, reconstruction_losses
    from cod.train.losses import chroma_corrected
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    y01 = torch.rand(2, 3, 64, 64)
    losses = {}
    for block in (0, 32):
        torch.manual_seed(1)
        module = CoDLiteModule(tiny_config("0.0312"), stage="onestep", loss={"chroma_block": block})
        losses[block], out = reconstruction_losses(module, y01)
    x = 2 * y01 - 1
    plain = module.net(y01).reconstruction
    assert losses[0]["l1"].item() == pytest.approx((plain - x).abs().mean().item(), rel=1e-5)
    assert torch.allclose(out.reconstruction, chroma_corrected(plain, x, 32), atol=1e-5)
    assert losses[32]["l1"].item() == pytest.approx((chroma_corrected(plain, x, 32) - x).abs().mean().item(), rel=1e-5)
    assert losses[32]["l1"] < losses[0]["l1"]  # a random network's colours are wrong: the correction helps


def test_grid_loss_sees_a_fixed_pattern_not_content_or_sharpness():
    """loss.grid: zero on the target, small for content-free changes (noise, a global
    brightness shift, uniform blur), large for a pattern repeating with the 16-px patch;
    gradients flow; too-small images are refused."""
    from cod.train.losses import grid_loss

    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 132, 132), 5, 1) * 2 - 1  # smooth-ish, 128 px
    assert grid_loss(x, x) == 0
    pattern = torch.zeros(1, 3, 16, 16)
    pattern[..., 15, :] = pattern[..., :, 15] = 0.05  # a faint line on every patch border
    gridded = (x + pattern.repeat(1, 1, 8, 8)).requires_grad_(True)
    with_grid = grid_loss(gridded, x)
    assert with_grid > 0.2
    for other in (x + 0.02 * torch.randn_like(x), x + 0.1, 0.5 * x):
        assert grid_loss(other, x) < with_grid / 4
    with_grid.backward()
    assert gridded.grad is not None and torch.isfinite(gridded.grad).all()
    with pytest.raises(ValueError, match="at least 32x32"):
        grid_loss(x[..., :20, :20], x[..., :20, :20])


def test_onestep_losses_carry_the_grid_term_when_weighted():
    from cod.train.lite_module import CoDLiteModule, reconstruction_losses
    from cod.train.losses import grid_loss
    from tests.conftest import tiny_config

    y01 = torch.rand(2, 3, 64, 64)
    torch.manual_seed(1)
    off = CoDLiteModule(tiny_config("0.0312"), stage="onestep")
    assert "grid" not in reconstruction_losses(off, y01)[0]
    torch.manual_seed(1)
    on = CoDLiteModule(tiny_config("0.0312"), stage="onestep", loss={"grid": 0.5})
    losses, out = reconstruction_losses(on, y01)
    assert losses["grid"].item() == pytest.approx(grid_loss(out.reconstruction, 2 * y01 - 1).item(), rel=1e-6)
    assert on._weights()["grid"] == 0.5


def test_discriminator_scales_and_size_check():
    from cod.train.discriminator import MultiScaleDiscriminator, hinge_d_loss, hinge_g_loss

    d = MultiScaleDiscriminator(scales=2, width=8, layers=3)
    out = d(torch.zeros(1, 3, 64, 64))
    assert [o.shape[-1] for o in out] == [6, 2]
    real, fake = [torch.full((1, 1, 2, 2), 2.0)], [torch.full((1, 1, 2, 2), -2.0)]
    assert hinge_d_loss(real, fake) == 0  # both beyond the margin
    assert hinge_g_loss(fake) == 2.0
    with pytest.raises(ValueError, match="at least 48 px"):
        d(torch.zeros(1, 3, 40, 40))


def test_adversarial_stage_steps_generator_and_discriminator(tmp_path):
    """One generator step (the global step) and one discriminator step per batch; the
    generator's hinge term is off before `start`; the export holds the network only."""
    import csv

    import lightning.pytorch as pl

    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            self.d0 = [p.detach().clone() for p in module.disc.parameters()]
            self.g0 = [p.detach().clone() for p in module.net.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, idx):
            d_moved = any(not torch.equal(a, p) for a, p in zip(self.d0, module.disc.parameters()))
            g_moved = any(not torch.equal(a, p) for a, p in zip(self.g0, module.net.parameters()))
            seen.append((trainer.global_step, d_moved, g_moved))

    out = train(_cfg("tiny-onestep", tmp_path, "lora=null", "adversarial={weight: 0.5, start: 2, scales: 2, width: 8}", "loss.color=1.0", "trainer.max_steps=4"), callbacks=[Spy()])
    assert [s[0] for s in seen] == [1, 2, 3, 4]
    assert all(d and g for _, d, g in seen)
    rows = [r for f in (tmp_path / "logs").rglob("metrics.csv") for r in csv.DictReader(f.open()) if r.get("train/loss")]
    rows = {int(r["step"]): r for r in rows}
    for step in range(4):  # the total counts the hinge term only from step 2 on
        r = rows[step]
        rest = sum(float(r[f"train/{k}"]) * w for k, w in (("l1", 1), ("perceptual", 1), ("align", 0.5), ("vq", 0.25), ("color", 1.0)))
        gan = float(r["train/gan"]) * (0.5 if step >= 2 else 0.0)
        assert float(r["train/loss"]) == pytest.approx(rest + gan, rel=1e-4, abs=1e-5), step
    assert not any(k.startswith("disc") for k in load_file(out))


def test_adversarial_resume_equals_uninterrupted(tmp_path):
    sets = ("lora=null", "adversarial={weight: 0.5, start: 1, scales: 2, width: 8}", "trainer.checkpoint_every=2", "optim.decay_steps=5")
    full = train(_cfg("tiny-onestep", tmp_path / "a", "trainer.max_steps=5", *sets))
    train(_cfg("tiny-onestep", tmp_path / "b", "trainer.max_steps=2", *sets))
    resumed = train(_cfg("tiny-onestep", tmp_path / "b", "trainer.max_steps=5", *sets))
    a, b = load_file(full), load_file(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_adversarial_hold_generator_and_discriminator_round_trip(tmp_path):
    """hold_generator: before `start` only the discriminator moves (the global step and lr
    schedule still count); the run writes its online discriminator, which init_from loads
    into the next run; a missing or mismatched file is a clear error."""
    import lightning.pytorch as pl

    from cod.errors import CodError
    from cod.train.discriminator import MultiScaleDiscriminator, load_discriminator

    seen, last_disc = [], {}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            self.g0 = [p.detach().clone() for p in module.net.parameters()]
            self.d0 = [p.detach().clone() for p in module.disc.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, idx):
            g_moved = any(not torch.equal(a, p) for a, p in zip(self.g0, module.net.parameters()))
            d_moved = any(not torch.equal(a, p) for a, p in zip(self.d0, module.disc.parameters()))
            seen.append((trainer.global_step, g_moved, d_moved))
            last_disc.update({k: v.detach().clone() for k, v in module.disc.state_dict().items()})

    adv = "adversarial={weight: 0.5, start: 2, scales: 2, width: 8, hold_generator: true}"
    train(_cfg("tiny-onestep", tmp_path / "a", "lora=null", adv, "trainer.max_steps=4", "optim.decay_steps=4"), callbacks=[Spy()])
    assert seen == [(1, False, True), (2, False, True), (3, True, True), (4, True, True)]
    saved = load_file(tmp_path / "a" / "discriminator.safetensors")
    assert set(saved) == set(last_disc) and all(torch.equal(saved[k], last_disc[k].float()) for k in saved)  # online, not averaged
    d = MultiScaleDiscriminator(scales=2, width=8, layers=3)
    load_discriminator(d, tmp_path / "a" / "discriminator.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in d.state_dict().items())
    with pytest.raises(CodError, match="width=8"):
        load_discriminator(MultiScaleDiscriminator(scales=2, width=16, layers=3), tmp_path / "a" / "discriminator.safetensors")
    with pytest.raises(CodError, match="no such file"):
        load_discriminator(d, tmp_path / "missing.safetensors")
    # the next run starts from it: its discriminator before the first step is the saved one
    first = {}

    class First(pl.Callback):
        def on_train_start(self, trainer, module):
            first.update({k: v.detach().clone() for k, v in module.disc.state_dict().items()})

    init = f"adversarial={{weight: 0.5, start: 0, scales: 2, width: 8, init_from: {tmp_path / 'a' / 'discriminator.safetensors'}}}"
    train(_cfg("tiny-onestep", tmp_path / "b", "lora=null", init, "trainer.max_steps=1"), callbacks=[First()])
    assert all(torch.equal(first[k].float(), saved[k]) for k in saved)


def test_adversarial_config_errors(tmp_path):
    from cod.errors import CodError

    with pytest.raises(CodError, match="adversarial"):
        train(_cfg("tiny-onestep", tmp_path, "adversarial={weight: 0.1}"))  # with LoRA
    with pytest.raises(ValueError, match="unknown adversarial setting 'wieght'"):
        train(_cfg("tiny-onestep", tmp_path, "lora=null", "adversarial={wieght: 0.1}"))


@pytest.mark.slow
def test_train_default_script_runs_on_cpu(tmp_path):
    """benchmarks/train_default.sh end to end, capped at 2 steps per phase."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    env = dict(os.environ, SMOKE_STEPS="2", RATES="0.0312", DATA=str(TRAIN_PHOTOS), DEVICE="cpu", OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(root / "benchmarks" / "train_default.sh"), "2", str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    weights = tmp_path / "codlite-small-0.0312.safetensors"
    import cod

    codec = cod.load(weights=weights)
    assert codec.model.condition.quantizer.codebook.weight.shape == (256, 64)
    assert "phase 2 gets 2 steps" in (tmp_path / "train.log").read_text()
    r = subprocess.run(["bash", str(root / "benchmarks" / "train_default.sh"), "2", str(tmp_path / "x")], capture_output=True, text=True, env=dict(env, DATA=str(tmp_path / "missing")))
    assert r.returncode == 2 and "not found" in r.stderr


def test_precision_auto_is_bf16_only_where_bf16_is_native(monkeypatch):
    """`trainer.precision: auto` picks bf16 autocast on a GPU or a CPU with native bf16, float32 on
    an AVX2-only CPU (where bf16 is emulated and a step is ~13x slower); an explicit bf16 is kept
    there with a warning; anything else passes through."""
    import cod.inference
    from cod.train.run import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cod.inference, "cpu_native_bf16", lambda: False)
    assert resolve_precision({"precision": "auto"}) == ("32-true", "precision: 32-true (auto: no native bf16 on this CPU)")
    chosen, note = resolve_precision({"precision": "bf16-mixed"})
    assert chosen == "bf16-mixed" and note.startswith("warning: ") and "auto" in note
    assert resolve_precision({"precision": "32-true"}) == ("32-true", None)
    assert resolve_precision({}) == ("32-true", None)
    monkeypatch.setattr(cod.inference, "cpu_native_bf16", lambda: True)
    assert resolve_precision({"precision": "auto"})[0] == "bf16-mixed"
    assert resolve_precision({"precision": "bf16-mixed"}) == ("bf16-mixed", None)
    monkeypatch.setattr(cod.inference, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision({"precision": "auto"})[0] == "bf16-mixed"
    assert resolve_precision({"precision": "auto", "accelerator": "cpu"})[0] == "32-true"


@pytest.mark.parametrize("name", ["codlite-small-recon", "codlite-small-gan", "codlite-onestep", "codlite-pretrain-stage1", "codlite-distill", "cod-pixel-stage1"])
def test_shipped_configs_choose_their_precision_at_run_time(name):
    assert load_config(name)["trainer"]["precision"] == "auto"
