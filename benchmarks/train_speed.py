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
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (as the paper's bf16-mixed)")
    ap.add_argument("--cod", action="store_true", help="also the CoD pixel DiT stage 1 (needs ~16 GB of memory)")
    ap.add_argument("--only-cod", action="store_true", help="only the CoD stage")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"device {dev}, {torch.get_num_threads()} threads, batch {args.batch}, {'bf16 autocast' if args.bf16 else 'fp32'}, timed steps {args.steps} after 1 warm-up")
    print(f"{'stage':<30} {'res':>5} {'params M':>9} {'s/step':>8} {'img/s':>8}")
    stages = ([] if args.only_cod else STAGES) + (COD_STAGES if args.cod or args.only_cod else [])
    for label, name, res in stages:
        cfg = load_config(name)
        if cfg["stage"] == "cod-pretrain":
            from cod.train.cod_module import build_cod_module

            cfg["backbone"] = "none"
            module = build_cod_module(cfg, model_config(cfg), 0).to(dev)
        else:
            loss = dict(cfg.get("loss", {}), perceptual="ms-ssim", align=0.0, codec_align=0.0)
            module = CoDLiteModule(model_config(cfg), stage=cfg["stage"], loss=loss, backbone="none").to(dev)
        opt = module.configure_optimizers()
        y = torch.rand(args.batch, 3, res, res, device=dev)
        times = []
        for i in range(args.steps + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss_v = module.training_step(y, 0)
            loss_v.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        s = sorted(times)[len(times) // 2]
        n = sum(p.numel() for p in module.net.parameters()) / 1e6
        print(f"{label:<30} {res:>5} {n:>9.1f} {s:>8.2f} {args.batch / s:>8.3f}")
        del module, opt
    return 0


if __name__ == "__main__":
    sys.exit(main())
