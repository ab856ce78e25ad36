"""Seconds per sampling step and peak memory of a full-size CoD model (random weights are fine).

    python benchmarks/cod_speed.py                          # cod-pixel-0.0039, 512x512, CPU fp32, 2 steps
    python benchmarks/cod_speed.py --model cod-latent-0.0039 --steps 2 --device cuda

Times, for one image: compress (image -> .cod bytes: the condition encoder), the condition
maps (decoder on the indices + the all -1 null image), and every sampling step (one network
call on the CFG batch of 2 + the update), measured with the sampler callback. Memory: the
process RSS sampled every 5 ms (cod.eval.speed.PeakRss; CPU) or the CUDA allocator peak,
reported as the peak and as the peak above the RSS with the weights loaded. The VAE decode of latent models is not
included (it needs the sd-vae-ft-ema weights).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cod.cliargs import add_device_arg, parse_size  # noqa: E402
from cod.codec import resolve_device  # noqa: E402
from cod.diffusion import flow_timesteps, get_sampler, guided, initial_noise  # noqa: E402
from cod.diffusion.settings import DecodeSettings  # noqa: E402
from cod.eval.speed import PeakRss, rss_bytes  # noqa: E402
from cod.families import load_cod  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cod-pixel-0.0039")
    ap.add_argument("--weights", default=None, help="weights file (default: random weights of the full-size model)")
    ap.add_argument("--size", default="512x512", help="WIDTHxHEIGHT")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--sampler", default="adam2")
    add_device_arg(ap)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = parse_size(args.size)
    args.device = str(resolve_device(args.device))
    cuda = args.device.startswith("cuda")

    t0 = time.perf_counter()
    codec = load_cod(args.model, weights=args.weights, device=args.device, random_init=args.weights is None)
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in codec.model.parameters())
    rss_loaded = rss_bytes() / 2**20
    print(f"model {codec.name} ({'random' if args.weights is None else args.weights}), {params / 1e6:.1f} M parameters, "
          f"device {args.device}, float32, {torch.get_num_threads()} threads, torch {torch.__version__}; built in {load_s:.1f} s")
    print(f"image {w}x{h}, {args.steps} {args.sampler} steps; RSS with weights loaded {rss_loaded:.0f} MiB")

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakRss(interval_s=0.005) as mem:
        t0 = time.perf_counter()
        data = codec.compress(image)
        t_enc = time.perf_counter() - t0
        idx, H, W, grid, _ = codec.parse(data)
        settings = DecodeSettings(steps=args.steps, cfg=codec.default_settings.cfg, sampler=args.sampler)
        with torch.inference_mode():
            t0 = time.perf_counter()
            cond = codec.condition_from_indices(idx, grid)
            hp, wp = cond.shape[-2] * 16, cond.shape[-1] * 16
            null = codec.null_condition(hp, wp)
            if cuda:
                torch.cuda.synchronize()
            t_cond = time.perf_counter() - t0
            x = initial_noise(codec.noise_shape(hp, wp), settings.seed).to(codec.device)
            model_fn = guided(codec.velocity, cond, null, settings.cfg)
            stamps = [time.perf_counter()]

            def callback(info):
                if cuda:
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

            get_sampler(settings.sampler)(model_fn, x, flow_timesteps(settings.steps), callback=callback)
    steps_s = np.diff(stamps)
    print(f"compress (condition encoder + packing): {t_enc:.2f} s, {len(data)} bytes ({8 * len(data) / (h * w):.4f} bpp with header)")
    print(f"condition maps (decoder on indices + null image): {t_cond:.2f} s")
    print("seconds per sampling step: " + ", ".join(f"{s:.2f}" for s in steps_s) + f" (mean {steps_s.mean():.2f})")
    print(f"estimated 25-step decode: {t_cond + 25 * steps_s.mean():.0f} s")
    if cuda:
        print(f"CUDA peak allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"peak RSS during compress+decode: {mem.peak / 2**20:.0f} MiB ({mem.peak / 2**20 - rss_loaded:+.0f} MiB above the loaded weights); "
          f"process lifetime peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
