"""Stage II-2 of CoD-Lite: DMD distillation from a CoD teacher + projected GAN (CoD-Lite spec §4.5).

Student: the one-step CoD-Lite of stage II-1 (``init_from``); its encoder and codebook are
frozen, the condition decoder and the diffusion CNN are trained. Teacher ("real score"): a
frozen CoD pixel v-prediction PixNerDiT (spec §4.3). Fake score: a trainable copy of the
teacher (its codec frozen). Teacher and fake are conditioned on the *teacher's own* codec of
the original image; the CFG null condition is the teacher codec of the all -1 image.

Discriminator: a frozen token backbone (DINOv2 ViT-B/14 in the paper, intermediate tokens of
blocks 2, 5, 8, 11 after the final norm, un-normalised [-1, 1] input resized by 14/16) with one
spectral-norm conv head per layer.

Schedule (manual optimisation, one optimiser step per global step g): if (g + 1) % 5 == 0 a
generator step (student + alignment projector), otherwise a critic ("guidance") step (fake
score + discriminator heads).

    critic:    x̂ = student(y) (no grad); x_t = t x̂ + (1-t) ε;
               L = mean((fake(x_t, t, c_T) - (x̂ - ε))²) + 0.5 (relu(1 - D(x)) + relu(1 + D(x̂)))
    generator: v_T = v_u + 3 (v_c - v_u); x0_real = x_t + (1-t) v_T; x0_fake = x_t + (1-t) v_fake
               g = (x0_fake - x0_real) / mean|x̂ - x0_real|;  dmd = mean((x̂ - sg(x̂ - g))²)
               L = L1 + perceptual + 2 dmd + 0.01 mean(-D(x̂)) + align + vq   (as stage II-1)

Randomness comes from a generator seeded by (seed, global step, rank, micro-batch), as in
:class:`cod.train.lite_module.CoDLiteModule`. Gradient accumulation is done here (Lightning's
is unavailable with manual optimisation).

Deviations from the official code (docs/training.md): the frozen discriminator backbone and
the student encoder are never switched to requires_grad (spec §9.12); the teacher is held
outside the module's parameters (not checkpointed, not EMA-averaged, reloaded from its file);
the alignment projector starts fresh (stage II-1 exports only the network).
"""
from __future__ import annotations

import copy
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cod.diffusion.flow import add_noise, flow_matching_loss, x0_from_velocity
from cod.diffusion.samplers import guided
from cod.errors import CodError
from cod.families import build_network, load_network
from cod.models.lite import CoDLite
from cod.train.backbones import DinoV2Backbone, RandomTokenBackbone, build_token_backbone
from cod.train.lite_module import DEFAULT_LOSS, log_losses, reconstruction_losses
from cod.train.losses import projection_mlp
from cod.zoo import cod_config

DEFAULT_DISTILL_LOSS: dict[str, Any] = {
    **DEFAULT_LOSS,
    "perceptual": "lpips",
    "dmd": 2.0,
    "gan": 0.01,
    "d_hinge": 0.5,  # weight of the hinge D loss in the critic step
    "fake_fm": 1.0,
    "cfg_scale": 3.0,
    "generator_every": 5,  # (g + 1) % 5 == 0 -> generator step
}
DINOV2_DISC_LAYERS = (2, 5, 8, 11)


# ------------------------------------------------------------------ teacher
def load_teacher(cfg: dict[str, Any], seed: int = 0) -> nn.Module:
    """The CoD pixel v-pred teacher from ``teacher_weights`` (our .safetensors or an official
    .pt + .yaml; ``unsafe_pickle: true`` allows pickled objects in a .pt you trust) / the
    installed weights of ``teacher`` (default cod-pixel-0.0039), or, for tests, a random one of
    the ``teacher_random`` overrides (its zero-initialised final layer and condition output are
    re-drawn N(0, 0.02) so the DMD signal is not identically zero)."""
    if cfg.get("teacher_random") is not None:
        over = dict(cfg["teacher_random"] or {})
        over.setdefault("name", "cod-pixel-random-teacher")
        tcfg = cod_config("cod-pixel", "0.0039", **over)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7919)
            model = build_network(tcfg, where="teacher_random")
            with torch.no_grad():
                for p in list(model.final_layer.linear.parameters()) + list(model.condition.decoder.conv_out.parameters()):
                    p.normal_(0, 0.02)
    else:
        model, tcfg = load_network(cfg.get("teacher", "cod-pixel-0.0039"), cfg.get("teacher_weights"), unsafe_pickle=bool(cfg.get("unsafe_pickle", False)))
    if tcfg.get("family") != "cod-pixel":
        raise CodError(f"the DMD teacher must be a CoD pixel (v-pred PixNerDiT) model, got {tcfg.get('family')}")
    return model


# ------------------------------------------------------------------ discriminator
def _sn(conv: nn.Conv2d) -> nn.Module:
    return spectral_norm(conv, n_power_iterations=1)


class DiscHead(nn.Module):
    """SN-conv3x3 C->C, LeakyReLU(0.2), SN-conv1x1 C->C/2, LeakyReLU(0.2), SN-conv1x1 ->1."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.net = nn.Sequential(_sn(nn.Conv2d(c, c, 3, padding=1)), nn.LeakyReLU(0.2), _sn(nn.Conv2d(c, c // 2, 1)), nn.LeakyReLU(0.2), _sn(nn.Conv2d(c // 2, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProjectedDiscriminator(nn.Module):
    """Frozen backbone features -> one SN head per layer -> logits (B, n_layers, H/16, W/16).

    The input is the image in [-1, 1], fed raw (no ImageNet normalisation, spec §4.5/§9.9).
    ``dinov2``: intermediate tokens of blocks ``layers`` after the final norm, input resized
    by 14/16. ``random``: the test backbone's final feature map (one layer)."""

    def __init__(self, kind: str = "dinov2", weights: str | None = None, layers: tuple[int, ...] = DINOV2_DISC_LAYERS):
        super().__init__()
        self.backbone = build_token_backbone(kind, weights)
        if self.backbone is None:
            raise CodError("the distillation discriminator needs a backbone (dinov2 or random)")
        if isinstance(self.backbone, DinoV2Backbone):
            self.layers = tuple(int(i) for i in layers)
        elif isinstance(self.backbone, RandomTokenBackbone):
            self.layers = (0,)
        else:
            raise CodError(f"no discriminator features for backbone {kind!r}")
        self.backbone.requires_grad_(False)
        self.heads = nn.ModuleList(DiscHead(self.backbone.dim) for _ in self.layers)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps (B, C, H/16, W/16), differentiable w.r.t. x."""
        bb = self.backbone
        if isinstance(bb, RandomTokenBackbone):
            return [bb.net(x)]
        h, w = x.shape[-2:]
        x = F.interpolate(x, size=(h // 16 * 14, w // 16 * 14), mode="bicubic", align_corners=False)
        return list(bb.net.forward_intermediates(x, indices=list(self.layers), norm=True, output_fmt="NCHW", intermediates_only=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(f) for head, f in zip(self.heads, self.features(x))], dim=1)


# ------------------------------------------------------------------ module
class DistillModule(pl.LightningModule):
    """Stage II-2; ``self.net`` is the student that gets exported."""

    def __init__(
        self,
        model_config: dict[str, Any],
        teacher: nn.Module,
        lr: float = 1e-5,
        critic_lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_milestones: tuple[int, ...] = (100_000,),
        lr_gamma: float = 0.1,
        loss: dict[str, Any] | None = None,
        backbone: str = "none",
        backbone_weights: str | None = None,
        disc_backbone: str = "dinov2",
        disc_weights: str | None = None,
        disc_layers: tuple[int, ...] = DINOV2_DISC_LAYERS,
        seed: int = 0,
        accumulate: int = 1,
        lpips_weights_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["teacher"])
        self.automatic_optimization = False
        self.seed, self.accumulate, self._micro = seed, max(1, int(accumulate)), 0
        self.loss_cfg = {**DEFAULT_DISTILL_LOSS, **(loss or {})}
        # student: encoder + codebook frozen (spec §4.5, fix_encoder=True)
        self.net: CoDLite = build_network(model_config, family="codlite", where="model")
        self.net.set_attention(windowed=False)
        self.net.condition.encoder.requires_grad_(False)
        self.net.condition.quantizer.requires_grad_(False)
        # teacher: frozen, kept out of the registered modules (not checkpointed / EMA-averaged)
        teacher = teacher.float().eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)
        # fake score: trainable copy of the teacher, its codec frozen
        self.fake = copy.deepcopy(teacher).train()
        self.fake.requires_grad_(True)
        self.fake.condition.requires_grad_(False)
        self.disc = ProjectedDiscriminator(disc_backbone, disc_weights, tuple(disc_layers))
        self.backbone = build_token_backbone(backbone, backbone_weights)
        if self.backbone is not None:
            self.proj = projection_mlp(model_config.get("hidden_size", 384), self.backbone.dim)
        self.lpips = None
        if self.loss_cfg["perceptual"] == "lpips":
            from cod.eval.metrics import build_lpips, load_lpips

            make = (lambda net: build_lpips(net, None)) if lpips_weights_dir == "random" else (lambda net: load_lpips(net, lpips_weights_dir))
            self.lpips = nn.ModuleDict({"vgg": make("vgg"), "alex": make("alex")}).requires_grad_(False)
        self._null_cache: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def generator_params(self) -> list[nn.Parameter]:
        ps = [p for p in self.net.parameters() if p.requires_grad]
        if self.backbone is not None:
            ps += list(self.proj.parameters())
        return ps

    def critic_params(self) -> list[nn.Parameter]:
        return [p for p in self.fake.parameters() if p.requires_grad] + list(self.disc.heads.parameters())

    def is_generator_step(self, step: int | None = None) -> bool:
        step = self.global_step if step is None else step
        return (step + 1) % int(self.loss_cfg["generator_every"]) == 0

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + self.global_step * 1009 + self.global_rank + self._micro * 7_919_017)
        return g

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)
        self._null_cache.clear()

    def __deepcopy__(self, memo: dict) -> "DistillModule":
        # copies (EMA's AveragedModel) share the frozen teacher instead of duplicating it
        memo[id(self.teacher)] = self.teacher
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def train(self, mode: bool = True) -> "DistillModule":
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_condition(self, y01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition of y, null condition) from the teacher's own codec."""
        self.teacher.to(y01.device)
        cond = self.teacher.condition(y01)[0]
        key = (tuple(y01.shape[-2:]), str(y01.device))
        if key not in self._null_cache:
            self._null_cache[key] = self.teacher.condition(torch.full_like(y01[:1], -1.0))[0]
        return cond, self._null_cache[key].expand_as(cond)

    # ------------------------------------------------------------------ steps
    def critic_losses(self, y01: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        x = 2 * y01 - 1
        with torch.no_grad():
            rec = self.net(y01).reconstruction.detach()
            cond, _ = self.teacher_condition(y01)
        x_t, t, eps = add_noise(rec, g)
        fake_fm = flow_matching_loss(self.fake(x_t, t, cond=cond)[0], rec, eps)
        d_real = F.relu(1 - self.disc(x).float()).mean()
        d_fake = F.relu(1 + self.disc(rec).float()).mean()
        return {"fake_fm": fake_fm, "d_real": d_real, "d_fake": d_fake}

    def generator_losses(self, y01: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.loss_cfg
        losses, out = reconstruction_losses(self, y01)
        rec = out.reconstruction
        with torch.no_grad():
            cond, null = self.teacher_condition(y01)
            x_t, t, _ = add_noise(rec.detach(), g)
            teacher = guided(lambda x, tt, cm: self.teacher(x, tt, cond=cm)[0].float(), cond, null, c["cfg_scale"], interval=None)
            v_fake = self.fake(x_t, t, cond=cond)[0].float()
            x0_real = x0_from_velocity(x_t.float(), teacher(x_t, t), t)
            x0_fake = x0_from_velocity(x_t.float(), v_fake, t)
            rec32 = rec.detach().float()
            grad = (x0_fake - x0_real) / (rec32 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
            grad = torch.nan_to_num(grad, nan=0.0)
        with torch.autocast(device_type=rec.device.type, enabled=False):
            losses["dmd"] = F.mse_loss(rec.float(), (rec32 - grad).detach())
        losses["gan"] = (-self.disc(rec)).float().mean()
        return losses

    def _weights(self, generator: bool) -> dict[str, float]:
        c = self.loss_cfg
        if generator:
            return {"l1": c["l1"], "perceptual": c["perceptual_weight"], "align": c["align"], "vq": c["vq"], "dmd": c["dmd"], "gan": c["gan"], "color": c["color"]}
        return {"fake_fm": c["fake_fm"], "d_real": c["d_hinge"], "d_fake": c["d_hinge"]}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        opt_g, opt_c = self.optimizers()
        gen = self.is_generator_step()
        losses = (self.generator_losses if gen else self.critic_losses)(batch, self._generator())
        w = self._weights(gen)
        total = sum(w[k] * v for k, v in losses.items())
        opt, other = (opt_g, opt_c) if gen else (opt_c, opt_g)
        self.manual_backward(total / self.accumulate)
        other.zero_grad(set_to_none=True)  # e.g. D-head grads from the generator's GAN term
        self._micro += 1
        if self._micro >= self.accumulate:
            self._micro = 0
            opt.step()
            opt.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # opt_g has not stepped yet during the first critic steps
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                self.lr_schedulers().step()  # on every global step (spec §4.5)
        log_losses(self, losses, total)
        if self._trainer is not None:
            self.log("train/generator_step", float(gen), on_step=True)
        return total.detach()

    def configure_optimizers(self):
        h = self.hparams
        opt_g = torch.optim.AdamW(self.generator_params(), lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        opt_c = torch.optim.AdamW(self.critic_params(), lr=h.critic_lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        sch = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones=list(h.lr_milestones), gamma=h.lr_gamma)
        return [opt_g, opt_c], [{"scheduler": sch, "interval": "step"}]


def build_distill_module(cfg: dict[str, Any], mc: dict[str, Any], seed: int, accumulate: int = 1) -> DistillModule:
    """The stage II-2 module of a run config (cod.train.run)."""
    opt, disc = cfg.get("optim", {}), cfg.get("discriminator", {}) or {}
    return DistillModule(
        mc,
        load_teacher(cfg, seed),
        lr=float(opt.get("lr", 1e-5)),
        critic_lr=float(opt.get("critic_lr", opt.get("lr", 1e-5))),
        betas=tuple(opt.get("betas", (0.9, 0.999))),
        weight_decay=float(opt.get("weight_decay", 0.0)),
        lr_milestones=tuple(int(m) for m in opt.get("lr_milestones", (100_000,))),
        lr_gamma=float(opt.get("lr_gamma", 0.1)),
        loss=cfg.get("loss"),
        backbone=cfg.get("backbone", "none"),
        backbone_weights=cfg.get("backbone_weights"),
        disc_backbone=disc.get("backbone", "dinov2"),
        disc_weights=disc.get("weights", cfg.get("backbone_weights")),
        disc_layers=tuple(disc.get("layers", DINOV2_DISC_LAYERS)),
        seed=seed,
        accumulate=accumulate,
        lpips_weights_dir=cfg.get("lpips_weights_dir"),
    )
