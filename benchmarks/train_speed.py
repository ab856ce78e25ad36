"""Training throughput (images/s) of each CoD-Lite stage with the full-size model.

    python benchmarks/train_speed.py [--device cuda] [--steps 3] [--batch 1]

Times forward + backward + AdamW step of the stage's loss at its paper resolution
(stage I run 1: 256 px, runs 2-3 and II-1: 512 px), after one warm-up step. The frozen
alignment backbone and LPIPS are left out (``backbone: none``, MS-SSIM perceptual term):
their weights are not on this machine, and they are frozen forward passes only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cod.cliargs import add_device_arg  # noqa: E402
from cod.codec import resolve_device  # noqa: E402
from cod.train.lite_module import CoDLiteModule  # noqa: E402
from cod.train.run import load_config, model_config  # noqa: E402

STAGES = [
    ("I-1 pretrain (256, up2x off)", "codlite-pretrain-stage1", 256),
    ("I-2 pretrain (512)", "codlite-pretrain-stage2", 512),
    ("I-3 unified post (512)", "codlite-pretrain-stage3", 512),
    ("II-1 one-step 0.0312 (512)", "codlite-onestep", 512),
]
# CoD (DiT, ~0.9 B parameters): AdamW state alone is ~14 GB, so opt in with --cod
COD_STAGES = [
    ("CoD pixel stage 1 (256)", "cod-pixel-stage1", 256),
    ("CoD pixel stage 2 (512)", "cod-pixel-stage2", 512),
    ("CoD latent stage 1 (256)", "cod-latent-stage1", 256),
    ("CoD latent stage 2 (512)", "cod-latent-stage2", 512),
]
# II-2: student + 0.9 B teacher + trainable 0.9 B fake score + DINOv2: ~22 GB on CPU, opt in
DISTILL_STAGES = [
    ("II-2 distill 0.0312 (512)", "codlite-distill", 512),
]


def sd_vae_random():
    """The SD VAE's architecture (sd-vae-ft-ema: 4 levels 128-512, 4 latent channels) with
    random weights: the frozen encoder's cost without its weights file."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=256,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
    ).eval()


def dinov2_random_file() -> str:
    """A DINOv2 ViT-B/14 file in the release layout with random values (timing only)."""
    import tempfile

    import timm

    net = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True)
    path = Path(tempfile.mkdtemp()) / "dinov2_vitb14_pretrain.pth"
    torch.save(dict(net.state_dict(), mask_token=torch.zeros(1, 768)), path)
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_arg(ap)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (as the paper's bf16-mixed)")
    ap.add_argument("--cod", action="store_true", help="also the CoD pixel DiT stage 1 (needs ~16 GB of memory)")
    ap.add_argument("--only-cod", action="store_true", help="only the CoD stages")
    ap.add_argument("--distill", action="store_true", help="also stage II-2 (needs ~22 GB of memory)")
    ap.add_argument("--only", default=None, help="only the stages whose label contains this text")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    print(f"device {dev}, {torch.get_num_threads()} threads, batch {args.batch}, {'bf16 autocast' if args.bf16 else 'fp32'}, timed steps {args.steps} after 1 warm-up")
    print(f"{'stage':<30} {'res':>5} {'params M':>9} {'s/step':>8} {'img/s':>8}")
    stages = ([] if args.only_cod else STAGES) + (COD_STAGES if args.cod or args.only_cod else []) + (DISTILL_STAGES if args.distill else [])
    stages = [s for s in stages if args.only is None or args.only in s[0]]
    for label, name, res in stages:
        cfg = load_config(name)
        distill = cfg["stage"] == "distill"
        if cfg["stage"] == "cod-pretrain":
            from cod.train.cod_module import CoDPretrainModule, build_cod_module

            cfg["backbone"] = "none"
            if cfg["model"]["name"].startswith("cod-latent"):
                mc = model_config(cfg)
                module = CoDPretrainModule(mc, loss=cfg.get("loss"), backbone="none", vae=sd_vae_random()).to(dev)
            else:
                module = build_cod_module(cfg, model_config(cfg), 0).to(dev)
        elif distill:
            from cod.train.distill import build_distill_module

            cfg.update(teacher_random={}, backbone="none", init_from=None)
            cfg["discriminator"] = dict(cfg["discriminator"], weights=dinov2_random_file())
            cfg["loss"] = dict(cfg["loss"], perceptual="ms-ssim", align=0.0)
            module = build_distill_module(cfg, model_config(cfg), 0, 1).to(dev)
        else:
            loss = dict(cfg.get("loss", {}), perceptual="ms-ssim", align=0.0, codec_align=0.0)
            module = CoDLiteModule(model_config(cfg), stage=cfg["stage"], loss=loss, backbone="none").to(dev)
        opt = None
        if distill:
            opts = {True: torch.optim.AdamW(module.generator_params(), lr=1e-5), False: torch.optim.AdamW(module.critic_params(), lr=1e-5)}
        else:
            opt = module.configure_optimizers()
        y = torch.rand(args.batch, 3, res, res, device=dev)
        times = []
        for i in range((5 if distill else args.steps) + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                if distill:  # one generator step in five, critic steps otherwise (spec §4.5)
                    gen = i % 5 == 0
                    losses = (module.generator_losses if gen else module.critic_losses)(y, torch.Generator(device=dev).manual_seed(i))
                    w = module._weights(gen)
                    loss_v = sum(w[k] * v for k, v in losses.items())
                else:
                    loss_v = module.training_step(y, 0)
            loss_v.backward()
            if distill:
                opts[gen].step()
                for o in opts.values():
                    o.zero_grad(set_to_none=True)
            else:
                opt.step()
                opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        s = sum(times) / len(times) if distill else sorted(times)[len(times) // 2]  # II-2: mean over the 1:4 cycle
        n = sum(p.numel() for p in module.net.parameters()) / 1e6
        print(f"{label:<30} {res:>5} {n:>9.1f} {s:>8.2f} {args.batch / s:>8.3f}")
        del module, opt  # free the full-size model before building the next one
    return 0


if __name__ == "__main__":
    sys.exit(main())
