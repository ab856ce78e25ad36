"""Lightning module for the CoD (DiT) compression-oriented diffusion stages (CoD spec §8).

``stage: cod-pretrain`` trains a PixNerDiT (pixel) or DDT (latent) from a config of the
``cod-pixel`` / ``cod-latent`` family (spec §8.1). Per batch (y01 the crop in [0, 1]; x the
target in diffusion space: 2·y01 − 1 for pixel models, VAE.encode(2·y01 − 1)·sf² for latent
models through a frozen SD VAE):

  1. CFG dropout: with p = 0.1 a sample conditions on the all −1 image;
  2. t = sigmoid(N(0, 1)), ε ~ N(0, I), x_t = t·x + (1 − t)·ε, target velocity v = x − ε;
  3. one forward ``net(x_t, t, y=cond image)`` -> (v̂, condition map, VQ); a hook keeps the
     tokens of encoder block 8 (``encoder_blocks[7]``) for alignment;
  4. L_fm = ‖v̂ − v‖²; L_repa = 1 − cos(proj(h_8), backbone tokens); L_repa_codec =
     1 − cos(proj_codec(condition tokens), backbone tokens); L_rec =
     ‖pixel_shuffle_p(recon_codec(cond)) − x‖² (p = 16 pixel, 2 latent); L_vq; stage 3:
     L_os = ‖(ε + net(ε, t=0, cond)) − x‖² (second forward, same noise and condition map);
     total = fm + rec + 0.5·(repa + repa_codec) + 0.25·vq + w_os·os.

Deviations from the official trainer (docs/training.md):
  - L_rec and L_repa_codec are averaged over the conditional samples only (the official mask
    is broadcast wrongly, bug B4, and scales both terms by the conditional fraction of the
    batch instead; not reproduced). With every sample dropped both terms are 0.
  - the target velocity is x − ε directly, not (x − x_t)/(1 − t) (equal in exact arithmetic;
    the division loses precision in bf16 near t = 1).

Randomness (dropout, t, noise, VAE posterior sample) comes from a generator seeded by
(seed, global step, rank), so a resumed run repeats the uninterrupted one.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from cod.diffusion.flow import add_noise, flow_matching_loss, one_step_loss, x0_from_velocity
from cod.errors import CodError
from cod.families import COD, build_network
from cod.train.backbones import build_token_backbone
from cod.train.lite_module import log_losses
from cod.train.losses import CodecReconHead, alignment_loss, map_to_tokens, projection_mlp

DEFAULT_COD_LOSS: dict[str, Any] = {
    "fm": 1.0,
    "codec_recon": 1.0,
    "align": 0.5,  # feat_loss_weight
    "codec_align": 0.5,
    "vq": 0.25,
    "one_step": 0.0,  # stage 3: 1.0
    "cfg_dropout": 0.1,
    "align_block": 7,  # output of the 8th encoder block
}


def tiny_random_vae(seed: int = 0):
    """A tiny random diffusers AutoencoderKL (/8, 4 latent channels) for tests and smoke runs."""
    from diffusers import AutoencoderKL

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        )
    finally:
        torch.random.set_rng_state(state)
    return vae.eval()


class CoDPretrainModule(pl.LightningModule):
    """Trains a CoD PixNerDiT / DDT; ``self.net`` is the network that gets exported.

    ``vae`` (latent models): a folder with the SD VAE, an AutoencoderKL / LatentVAE, or the
    string ``"random"`` (tiny random VAE). It is frozen and held outside the module's
    parameters (not checkpointed, not EMA-averaged)."""

    def __init__(self, model_config: dict[str, Any], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, eps: float = 1e-8, loss: dict[str, Any] | None = None, backbone: str = "none", backbone_weights: str | None = None, seed: int = 0, vae: Any = None):
        super().__init__()
        self.save_hyperparameters(ignore=["vae"])
        self.seed = seed
        self.loss_cfg = {**DEFAULT_COD_LOSS, **(loss or {})}
        self.net = build_network(model_config, family=COD, where="model")
        self.latent = model_config["family"] == "cod-latent"
        hidden = self.net.hidden_size
        self.backbone = build_token_backbone(backbone, backbone_weights)
        if self.backbone is not None:
            self.proj = projection_mlp(hidden, self.backbone.dim)
            self.proj_codec = projection_mlp(hidden, self.backbone.dim)
        # depth-to-space by 16 (pixels) or 2 (latent): one DiT token each way
        self.recon_codec = CodecReconHead(hidden, self.net.in_channels, 2 if self.latent else 16)
        self._vae_holder: list[Any] = []
        if self.latent:
            from cod.models.vae import load_vae

            if vae is None:
                raise CodError("latent CoD training needs the SD VAE: set `vae: PATH` (or COD_VAE_DIR via vae: env) or `vae_random: true` for tests")
            self._vae_holder.append(load_vae(tiny_random_vae() if vae == "random" else (None if vae == "env" else vae)).requires_grad_(False))

    # ------------------------------------------------------------------ helpers
    @property
    def vae(self):
        """The frozen LatentVAE (latent models), moved to this module's device on use."""
        if not self._vae_holder:
            return None
        v = self._vae_holder[0]
        if next(v.parameters()).device != self.device:
            v.to(self.device)
        return v

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + self.global_step * 1009 + self.global_rank)
        return g

    def target(self, y01: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """The diffusion-space target: pixels in [-1, 1] or the sf²-scaled VAE latent."""
        if not self.latent:
            return 2 * y01 - 1
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return self.vae.encode(y01.float(), generator=g).float()

    # ------------------------------------------------------------------ objective
    def compute_losses(self, y01: torch.Tensor, drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (unweighted). ``drop``: force the CFG-dropout mask (tests)."""
        c, g = self.loss_cfg, self._generator()
        b = y01.shape[0]
        dev = y01.device
        x = self.target(y01, g)
        if drop is None:
            drop = torch.rand(b, generator=g, device=dev) < c["cfg_dropout"]
        drop = drop.to(dev)
        cond_in = torch.where(drop.view(-1, 1, 1, 1), torch.full_like(y01, -1.0), y01)
        x_t, t, noise = add_noise(x, g)

        feats: list[torch.Tensor] = []
        block = self.net.encoder_blocks[min(int(c["align_block"]), len(self.net.encoder_blocks) - 1)]
        handle = block.register_forward_hook(lambda _m, _i, out: feats.append(out)) if self.backbone is not None else None
        try:
            v, cond, q = self.net(x_t, t, y=cond_in, return_quantized=True)
        finally:
            if handle is not None:
                handle.remove()
        losses = {"fm": flow_matching_loss(v, x, noise), "vq": q.loss.float()}

        keep = (~drop).float()
        n_keep = keep.sum().clamp(min=1)
        rec = (self.recon_codec(cond).float() - x.float()).pow(2).mean(dim=(1, 2, 3))
        losses["codec_recon"] = (rec * keep).sum() / n_keep  # conditional samples only (not bug B4)
        if self.backbone is not None:
            with torch.autocast(self.device.type, enabled=False):
                target = self.backbone(y01.float())
            losses["align"] = alignment_loss(self.proj(feats[0]), target)
            per_sample = 1 - F.cosine_similarity(self.proj_codec(map_to_tokens(cond)).float()[:, : target.shape[1]], target[:, : cond.shape[-2] * cond.shape[-1]].float(), dim=-1).mean(dim=1)
            losses["codec_align"] = (per_sample * keep).sum() / n_keep
        if c["one_step"]:
            t0 = torch.zeros(b, device=dev)
            v0 = self.net(noise, t0, cond=cond)[0]
            losses["one_step"] = one_step_loss(x0_from_velocity(noise, v0, t0), x)
        return losses

    def _weights(self) -> dict[str, float]:
        c = self.loss_cfg
        return {k: float(c[k]) for k in ("fm", "codec_recon", "align", "codec_align", "vq", "one_step")}

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self._weights()
        return sum(w[k] * v for k, v in losses.items())

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        total = self.total(losses)
        log_losses(self, losses, total)
        return total

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        h = self.hparams
        return torch.optim.AdamW(params, lr=h.lr, betas=tuple(h.betas), eps=h.eps, weight_decay=h.weight_decay)


def build_cod_module(cfg: dict[str, Any], mc: dict[str, Any], seed: int) -> CoDPretrainModule:
    """The module of a ``stage: cod-pretrain`` config."""
    if mc.get("family") not in COD:
        raise CodError(f"stage cod-pretrain trains CoD models: model.name must be cod-pixel-* or cod-latent-*, got family {mc.get('family')!r}")
    opt = cfg.get("optim", {})
    vae = None
    if mc["family"] == "cod-latent":
        vae = "random" if cfg.get("vae_random") else (cfg.get("vae") or "env")
    return CoDPretrainModule(
        mc, lr=float(opt.get("lr", 1e-4)), betas=tuple(opt.get("betas", (0.9, 0.999))), weight_decay=float(opt.get("weight_decay", 0.0)),
        eps=float(opt.get("eps", 1e-8)), loss=cfg.get("loss"), backbone=cfg.get("backbone", "none"), backbone_weights=cfg.get("backbone_weights"), seed=seed, vae=vae,
    )
