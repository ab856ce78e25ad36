"""Seconds and bits per DiffC step of a full-size CoD model (random weights) on one image.

    python benchmarks/diffc_speed.py                                   # cod-pixel-0.0039, 512x512, CPU
    python benchmarks/diffc_speed.py --chunk-sizes 6 8 10 --taus 1000 500 101 21 --threads 2

Every measured step codes the transition tau -> the next timestep of the original schedule
from a state drawn from q(x_tau | x0) (what the chain's state is distributed as), so any point
of the schedule can be timed without running the chain up to it. Per step: the network call
(the conditional branch, encoding guidance 1), the reverse-channel encoder (about
2**max_chunk_size x dim Gaussian draws), the decoder's regeneration of the chosen candidates,
the KL and the bits the step costs. The image is the packaged sample photo, centre-cropped.
With random weights the KL is that of a useless predictor, far above a trained model's;
seconds per step do not depend on the weights (the encoder's work is ~2**max x dim for any
KL above max bits), bits per step do.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cod.families import load_cod  # noqa: E402
from cod.diffc import DiffCConfig, code_step, flow_model  # noqa: E402
from cod.diffc.bridge import alpha_bar  # noqa: E402
from cod.diffc.rcc import decode_step, step_layout  # noqa: E402
from cod.diffc.rng import gaussian_noise  # noqa: E402
from cod.eval.speed import cpu_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cod-pixel-0.0039")
    ap.add_argument("--size", type=int, default=512, help="side of the square crop")
    ap.add_argument("--chunk-sizes", type=int, nargs="+", default=[6, 8, 10])
    ap.add_argument("--taus", type=int, nargs="+", default=[1000, 101])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    codec = load_cod(args.model, device=args.device, random_init=True)
    net = codec.model
    print(f"{codec.name}, random weights, {sum(p.numel() for p in net.parameters()) / 1e6:.0f} M parameters, built in {time.perf_counter() - t0:.0f} s")
    print(f"device {args.device} ({cpu_model() if args.device == 'cpu' else torch.cuda.get_device_name()}), {torch.get_num_threads()} threads, torch {torch.__version__}")

    img = Image.open(Path(__file__).resolve().parents[1] / "cod" / "samples" / "parrots.png").convert("RGB")
    w, h = img.size
    s = args.size
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    x01 = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().div(255).to(args.device)
    with torch.inference_mode():
        cond = net.condition(x01)[0]
        target = x01 * 2 - 1 if codec.family == "cod-pixel" else None
    if target is None:
        print("latent models need the SD VAE for the target; this benchmark measures pixel models")
        return 1
    dim = target.numel()
    base = DiffCConfig.for_family(codec.family)
    sched = (1000,) + base.encoding_timesteps
    enc_fn = flow_model(net, cond, None, base.encoding_guidance)
    print(f"image {s}x{s} ({dim} dimensions); steps tau -> next timestep of the original {len(base.encoding_timesteps)}-step schedule")
    print()
    print("| max_chunk_size | step | network s | encoder RCC s | decoder RCC s | KL bits | coded bits | coded/KL | chunks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in args.chunk_sizes:
        config = DiffCConfig.for_family(codec.family, max_chunk_size=k)
        for tau in args.taus:
            i = sched.index(tau)
            tau_next = sched[i + 1]
            ab = alpha_bar(tau)
            eps = gaussian_noise(tuple(target.shape), 1234, args.device)
            x = math.sqrt(ab) * target + math.sqrt(1 - ab) * eps
            st = code_step(enc_fn, x, target, i, tau, tau_next, config)
            t0 = time.perf_counter()
            lay = step_layout(i, config.seed, dim, st.stats.budget_bits, k, config.chunk_padding, args.device)
            decode_step(st.indices, lay, dim, args.device)
            t_dec = time.perf_counter() - t0
            c = st.stats
            print(f"| {k} | {tau}->{tau_next} | {c.model_s:.1f} | {c.rcc_s:.1f} | {t_dec:.2f} | {c.kl_bits:.0f} | {c.coded_bits:.0f} | {c.coded_bits / max(c.kl_bits, 1e-9):.3f} | {c.chunks} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
