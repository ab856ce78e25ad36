"""Lightning module for the CoD-Lite stages (CoD-Lite spec §4).

stage ``pretrain`` (I): compression-oriented diffusion pre-training of the lite network:
    rectified-flow velocity loss at logit-normal t, codec reconstruction head, alignment of
    DiCo block 8 and of the condition tokens to a frozen backbone, VQ loss, 10 % condition
    dropout to the null image (all -1); optional one-step t=0 term (unified post-training).
stage ``onestep`` (II-1): one-step reconstruction fine-tuning: L1 + perceptual (LPIPS-VGG +
    0.5 LPIPS-Alex, or MS-SSIM in the backbone-free recipe) + alignment + VQ; optional LoRA;
    optionally (the small recipe, not in the papers) a chroma term and an adversarial term
    against a multi-scale PatchGAN trained from scratch (``adversarial: {...}``), trained with
    manual optimisation: per batch one generator step (the global step) and one
    discriminator step.

Randomness (noise, t, dropout) comes from a generator seeded by (seed, global step, rank),
so a resumed run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from cod.diffusion.flow import add_noise, one_step_loss, x_flow_matching_loss
from cod.families import build_network
from cod.models.lite import CoDLite
from cod.train.backbones import build_token_backbone
from cod.train.discriminator import MultiScaleDiscriminator, hinge_d_loss, hinge_g_loss, load_discriminator
from cod.train.losses import CodecReconHead, alignment_loss, chroma_corrected, chroma_loss, grid_loss, map_to_tokens, ms_ssim_loss, projection_mlp

DEFAULT_LOSS: dict[str, Any] = {
    # stage I (CoD-Lite spec §4.2)
    "fm": 1.0,
    "codec_recon": 1.0,
    "align": 0.5,
    "codec_align": 0.5,
    "vq": 0.25,
    "one_step": 0.0,
    "cfg_dropout": 0.1,
    "align_block": 7,  # output of the 8th DiCo block
    "v_clamp_min": 0.05,
    # stage II-1 (CoD-Lite spec §4.4)
    "l1": 1.0,
    "perceptual": "ms-ssim",  # "lpips" (VGG + 0.5 Alex, needs backbone weights) or "ms-ssim"
    "perceptual_weight": 1.0,
    "color": 0.0,  # chroma L1 on thumbnails (the small recipe; not in the papers)
    "color_scale": 8,
    # train on the decode as the codec's chroma side information corrects it (cod.chroma; the
    # block side in pixels, 0: off); the small recipe, not in the papers
    "chroma_block": 0,
    # fixed-pattern penalty against the token grid (cod.train.losses.grid_loss; the small
    # recipe, not in the papers): weight, and the period in pixels (the network's patch size)
    "grid": 0.0,
    "grid_period": 16,
}


# The adversarial option of stage II-1 (``adversarial:`` in a run config; the small recipe).
DEFAULT_ADVERSARIAL: dict[str, Any] = {
    "weight": 0.1,  # generator hinge term weight
    "start": 0,  # generator steps before the term is switched on (the discriminator trains from step 0)
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "scales": 3,
    "width": 32,
    "layers": 3,
    # before ``start``: False, the generator trains on the reconstruction terms alone; True, it
    # is held fixed while the discriminator warms up against it (a warm-started continuation
    # whose discriminator is new, without drifting towards reconstruction meanwhile)
    "hold_generator": False,
    # discriminator weights to start from (a previous run's discriminator.safetensors)
    "init_from": None,
}


def log_losses(module: pl.LightningModule, losses: dict[str, torch.Tensor], total: torch.Tensor) -> None:
    """Log every loss term and the total per step (a no-op outside a Trainer, e.g. in benchmarks)."""
    if module._trainer is not None:
        module.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=False, on_step=True)
        module.log("train/loss", total.detach(), prog_bar=True, on_step=True)


def block_tokens(feats: list[torch.Tensor], index: int) -> torch.Tensor:
    """Tokens of the DiCo block output used for alignment (the last one in shallow nets)."""
    return map_to_tokens(feats[min(index, len(feats) - 1)])


def reconstruction_losses(module: pl.LightningModule, y01: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    """The one-step reconstruction terms of stages II-1 and II-2 (spec §4.4, §4.5):
    L1, perceptual (LPIPS-VGG + 0.5 LPIPS-Alex, or 1 - MS-SSIM), alignment of a DiCo block
    to the frozen backbone, and the VQ loss. ``module`` holds ``net``, ``loss_cfg``,
    ``lpips``, ``backbone`` and ``proj``. Returns (losses, network output)."""
    c = module.loss_cfg
    x = 2 * y01 - 1
    out = module.net(y01, return_features=module.backbone is not None)
    if c.get("chroma_block"):  # every term (and the discriminator) sees the corrected decode
        out.reconstruction = chroma_corrected(out.reconstruction, x, int(c["chroma_block"]))
    rec = out.reconstruction
    losses = {"l1": (rec - x).abs().mean(), "vq": out.vq_loss}
    if c["perceptual"] == "lpips":
        losses["perceptual"] = module.lpips["vgg"](rec, x).mean() + 0.5 * module.lpips["alex"](rec, x).mean()
    elif c["perceptual"] == "ms-ssim":
        losses["perceptual"] = ms_ssim_loss(rec, x)
    if c.get("color"):
        losses["color"] = chroma_loss(rec, x, int(c["color_scale"]))
    if c.get("grid"):
        losses["grid"] = grid_loss(rec, x, int(c["grid_period"]))
    if module.backbone is not None:
        losses["align"] = alignment_loss(module.proj(block_tokens(out.features, c["align_block"])), module.backbone(y01))
    return losses, out


class CoDLiteModule(pl.LightningModule):
    """Trains a CoDLite network; ``self.net`` is the network that gets exported."""

    def __init__(self, model_config: dict[str, Any], stage: str = "pretrain", lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, loss: dict[str, Any] | None = None, backbone: str = "none", backbone_weights: str | None = None, seed: int = 0, lpips_weights_dir: str | None = None, vq_restart: dict[str, int] | None = None, lr_decay_steps: int = 0, adversarial: dict[str, Any] | None = None, fresh_lr_scale: float = 1.0):
        super().__init__()
        if stage not in ("pretrain", "onestep"):
            raise ValueError(f"unknown stage {stage!r}")
        if adversarial and stage != "onestep":
            raise ValueError("the adversarial term belongs to stage onestep")
        self.save_hyperparameters()
        self.stage, self.seed = stage, seed
        # names (in self.net) of the parameters a warm start did not supply (cod.train.run sets
        # them after init_from); they train at lr x fresh_lr_scale
        self.fresh_parameters: set[str] = set()
        self.loss_cfg = {**DEFAULT_LOSS, **(loss or {})}
        self.net: CoDLite = build_network(model_config, family="codlite", where="model")
        self.net.set_attention(windowed=False)  # training attends globally (spec §2.7)
        self.backbone = build_token_backbone(backbone, backbone_weights)
        hidden = model_config.get("hidden_size", 384)
        if self.backbone is not None:
            self.proj = projection_mlp(hidden, self.backbone.dim)
            if stage == "pretrain":
                self.proj_codec = projection_mlp(hidden, self.backbone.dim)
        if stage == "pretrain":
            self.recon_codec = CodecReconHead(hidden, 3, model_config.get("patch_size", 16))
        self.lpips = None
        if stage == "onestep" and self.loss_cfg["perceptual"] == "lpips":
            from cod.eval.metrics import build_lpips, load_lpips  # local backbone weights, clear error when absent

            make = (lambda net: build_lpips(net, None)) if lpips_weights_dir == "random" else (lambda net: load_lpips(net, lpips_weights_dir))
            self.lpips = torch.nn.ModuleDict({"vgg": make("vgg"), "alex": make("alex")}).requires_grad_(False)
        self.adv = None
        if adversarial:
            unknown = sorted(set(adversarial) - set(DEFAULT_ADVERSARIAL))
            if unknown:
                raise ValueError(f"unknown adversarial setting {unknown[0]!r}; known: {', '.join(DEFAULT_ADVERSARIAL)}")
            self.adv = {**DEFAULT_ADVERSARIAL, **adversarial}
            self.disc = MultiScaleDiscriminator(int(self.adv["scales"]), int(self.adv["width"]), int(self.adv["layers"]))
            if self.adv["init_from"]:
                load_discriminator(self.disc, str(self.adv["init_from"]))
            self.automatic_optimization = False
        # dead-code restarts (a training aid, not in the papers): see _restart_dead_codes
        self.vq_restart = {"every": int((vq_restart or {}).get("every", 0)), "until": int((vq_restart or {}).get("until", 0))}
        self.register_buffer("code_usage", torch.zeros(2 ** int(model_config["codebook_bits"]), dtype=torch.long))
        self._last_latents: torch.Tensor | None = None
        if self.vq_restart["every"] > 0:
            self.net.condition.quantizer.register_forward_hook(self._record_codes)

    # ------------------------------------------------------------------ helpers
    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + self.global_step * 1009 + self.global_rank)
        return g

    def _block_tokens(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return block_tokens(feats, self.loss_cfg["align_block"])

    # ------------------------------------------------------------------ codebook restarts
    def _record_codes(self, quantizer: torch.nn.Module, inputs: tuple[torch.Tensor], q: Any) -> None:
        if self.training:
            self._last_latents = inputs[0].detach()
            self.code_usage += torch.bincount(q.indices.flatten(), minlength=self.code_usage.numel())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every, until = self.vq_restart["every"], self.vq_restart["until"]
        step = self.global_step
        if every <= 0 or self._last_latents is None or step == 0 or step % every or (until and step > until):
            return
        if getattr(self, "_restarted_at", -1) == step:  # once per optimiser step under accumulation
            return
        self._restarted_at = step
        self._restart_dead_codes()

    @torch.no_grad()
    def _restart_dead_codes(self) -> None:
        """Codes unused since the last restart are moved onto encoder outputs of the current
        batch (random picks, seeded by step), the usual cure for codebook collapse in short
        VQ training; usage is summed over ranks and rank 0's codebook is broadcast."""
        import torch.distributed as dist

        usage = self.code_usage.clone()
        dist_on = dist.is_available() and dist.is_initialized()
        if dist_on:
            dist.all_reduce(usage)
        dead = (usage == 0).nonzero().flatten()
        book = self.net.condition.quantizer.codebook.weight
        self.log("train/codes_used", 1.0 - dead.numel() / usage.numel(), on_step=True)
        if dead.numel():
            z = self._last_latents.permute(0, 2, 3, 1).reshape(-1, book.shape[1])
            pick = torch.randint(0, z.shape[0], (dead.numel(),), generator=self._generator(), device=z.device)
            book.data[dead] = z[pick].to(book.dtype)
        if dist_on:
            dist.broadcast(book.data, 0)
        self.code_usage.zero_()

    # ------------------------------------------------------------------ stage I
    def _pretrain_losses(self, y01: torch.Tensor) -> dict[str, torch.Tensor]:
        c, g = self.loss_cfg, self._generator()
        b = y01.shape[0]
        x = 2 * y01 - 1
        drop = torch.rand(b, generator=g, device=self.device) < c["cfg_dropout"]
        cond_in = torch.where(drop.view(-1, 1, 1, 1), torch.full_like(y01, -1.0), y01)
        cond, q = self.net.condition(cond_in)
        x_t, t, noise = add_noise(x, g)
        pred, feats = self.net.predict(x_t, t, cond, return_features=True)
        losses = {"fm": x_flow_matching_loss(pred, x, x_t, t, c["v_clamp_min"]), "vq": q.loss}
        keep = (~drop).float()
        losses["codec_recon"] = ((self.recon_codec(cond) - x).pow(2).mean(dim=(1, 2, 3)) * keep).sum() / keep.sum().clamp(min=1)
        if self.backbone is not None:
            target = self.backbone(y01)
            losses["align"] = alignment_loss(self.proj(self._block_tokens(feats)), target)
            losses["codec_align"] = alignment_loss(self.proj_codec(map_to_tokens(cond))[~drop], target[~drop]) if keep.sum() > 0 else cond.sum() * 0
        if c["one_step"]:
            x0 = self.net.predict(noise, torch.zeros(b, device=self.device), cond)
            losses["one_step"] = one_step_loss(x0, x)
        return losses

    # ------------------------------------------------------------------ stage II-1
    def _onestep_losses(self, y01: torch.Tensor) -> dict[str, torch.Tensor]:
        return reconstruction_losses(self, y01)[0]

    # ------------------------------------------------------------------ adversarial (II-1 option)
    def _adversarial_step(self, y01: torch.Tensor) -> torch.Tensor:
        """One generator step (reconstruction terms + weighted hinge term once ``start`` steps
        are done) and one discriminator step on the same batch. Only the generator's
        optimiser counts as Lightning's global step, so step-based settings keep their meaning."""
        opt_g, opt_d = self.optimizers()
        before = self.global_step < int(self.adv["start"])
        hold = before and bool(self.adv["hold_generator"])
        with torch.set_grad_enabled(not hold):
            losses, out = reconstruction_losses(self, y01)
            rec, x = out.reconstruction, 2 * y01 - 1
            w = {**self._weights(), "gan": 0.0 if before else float(self.adv["weight"])}
            losses["gan"] = hinge_g_loss(self.disc(rec))
            total = sum(w[k] * v for k, v in losses.items())
        opt_g.zero_grad(set_to_none=True)
        if not hold:
            self.manual_backward(total)
        opt_g.step()  # held: no gradients, so nothing moves, but the step (and the lr schedule) counts
        raw_d = opt_d.optimizer  # stepping the raw optimiser does not advance global_step
        raw_d.zero_grad(set_to_none=True)  # drops the D gradients of the generator's term
        d_loss = hinge_d_loss(self.disc(x), self.disc(rec.detach()))
        self.manual_backward(d_loss)
        raw_d.step()
        raw_d.zero_grad(set_to_none=True)
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()
        losses["d_hinge"] = d_loss
        log_losses(self, losses, total)
        return total.detach()

    def _weights(self) -> dict[str, float]:
        c = self.loss_cfg
        if self.stage == "pretrain":
            return {"fm": c["fm"], "codec_recon": c["codec_recon"], "align": c["align"], "codec_align": c["codec_align"], "vq": c["vq"], "one_step": c["one_step"]}
        return {"l1": c["l1"], "perceptual": c["perceptual_weight"], "align": c["align"], "vq": c["vq"], "color": c["color"], "grid": c["grid"]}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.adv is not None:
            return self._adversarial_step(batch)
        losses = self._pretrain_losses(batch) if self.stage == "pretrain" else self._onestep_losses(batch)
        w = self._weights()
        total = sum(w[k] * v for k, v in losses.items())
        log_losses(self, losses, total)
        return total

    def configure_optimizers(self):
        h = self.hparams
        disc = set(self.disc.parameters()) if self.adv is not None else set()
        params = [p for p in self.parameters() if p.requires_grad and p not in disc]
        scale = float(h.get("fresh_lr_scale", 1.0))
        fresh = {id(p) for n, p in self.net.named_parameters() if n in self.fresh_parameters} if scale != 1.0 else set()
        groups = [{"params": [p for p in params if id(p) not in fresh]}]
        if fresh:  # new modules beside warm-started ones (e.g. output_refine): a larger lr
            groups.append({"params": [p for p in params if id(p) in fresh], "lr": h.lr * scale})
        opt = torch.optim.AdamW(groups, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        opts = [opt]
        if self.adv is not None:
            opts.append(torch.optim.AdamW(self.disc.parameters(), lr=float(self.adv["lr"]), betas=tuple(self.adv["betas"])))
        if not h.lr_decay_steps:  # the papers: constant lr
            return opts if len(opts) > 1 else opt
        # optim.decay_steps (not in the papers; the small recipe's fine-tuning): half-cosine from
        # lr to 0 over that many optimiser steps, then 0 (the generator's lr only, every group)
        n = int(h.lr_decay_steps)
        sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, n) / n)))
        return opts, [{"scheduler": sch, "interval": "step"}]
