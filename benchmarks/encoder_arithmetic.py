"""Cheaper arithmetic for the encoder's convolutions: how fast, and do the indices stay? (docs/speed.md)

    python benchmarks/encoder_arithmetic.py [codlite-small-0.0312 ...] [--limit 24] [--threads 1] [--rates-only]

Two tables:
  * the rate of one 3x3 convolution of the full-size encoder's first block (128 -> 128
    channels, 360x240: a 720x480 photo after the stride-2 stem), channels-last, in float32,
    bf16 and int8 (torch's x86 quantized engine: oneDNN, VNNI where the CPU has it): the int8
    kernel alone, and with the quantisation of its float input and the dequantisation of its
    output that an encoder whose norms and activations stay in float would pay around every
    int8 convolution; and Winograd F(2x2, 3x3) written with torch operations (2.25x fewer
    multiplications; products in float32 or bf16); all alternating, median of 5;
  * how many Kodak-512 indices stay those of the float32 encoder when its inner convolutions
    (the residual blocks, the 1x1 shortcuts, the downsampling convolutions and the attention
    blocks' q/k/v/output 1x1 convolutions; not the attention products, the RGB stem or the
    output layer) see quantised weights and inputs, simulated in float32 (outputs, bias and
    everything between the convolutions stay float32, so a real int8 encoder would move at
    least as many indices): bf16 (the
    `--precision bf16` encoder's rounding), int8 (int8 weights per output channel, uint8 inputs
    per tensor from the tensor's own min/max: what an int8 kernel can use) and an upper bound
    for any per-channel smoothing of the inputs (uint8 per input channel, which no int8 kernel
    takes directly). The accuracy budget is >= 99 % (docs/speed.md "Accuracy budget").
"""
from __future__ import annotations

import argparse
import copy
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cod
from cod.eval.bench import load_images
from cod.eval.speed import cpu_model

BLOCKS = ("down_block_0", "down_block_1", "down_block_2", "down_block_3", "down_block_4", "mid_block")
SCOPES = {"first block": BLOCKS[:1], "all blocks": BLOCKS}
ROUNDINGS = ("bf16", "int8", "int8 per-channel bound")


# ---------------------------------------------------------------- quantisation, simulated in float32
def round_input(x: torch.Tensor, rounding: str) -> torch.Tensor:
    if rounding == "bf16":
        return x.bfloat16().float()
    dims = (0, 2, 3) if rounding == "int8 per-channel bound" else None
    lo = (x.amin(dims, keepdim=True) if dims else x.amin()).clamp(max=0)
    hi = (x.amax(dims, keepdim=True) if dims else x.amax()).clamp(min=0)
    scale = (hi - lo).clamp(min=1e-8) / 255
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def round_weight(w: torch.Tensor, rounding: str) -> torch.Tensor:
    if rounding == "bf16":
        return w.bfloat16().float()
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) / 127
    return torch.round(w / scale).clamp(-127, 127) * scale


class RoundedConv(nn.Module):
    def __init__(self, conv: nn.Conv2d, rounding: str):
        super().__init__()
        self.conv, self.rounding = conv, rounding
        self.weight = round_weight(conv.weight.detach(), rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(round_input(x, self.rounding), self.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


def rounded_encoder(encoder: nn.Module, blocks: tuple[str, ...], rounding: str) -> nn.Module:
    enc = copy.deepcopy(encoder)
    for name in blocks:
        for module in list(getattr(enc, name).modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Conv2d):
                    setattr(module, child_name, RoundedConv(child, rounding))
    return enc


# ---------------------------------------------------------------- Winograd F(2x2, 3x3)
WINOGRAD_G = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1.0]])


def winograd_weights(w: torch.Tensor) -> torch.Tensor:
    """(O, C, 3, 3) -> the 16 transformed (C, O) matrices G g G^T."""
    o, c = w.shape[:2]
    return torch.einsum("ik,ockl,jl->ijco", WINOGRAD_G, w, WINOGRAD_G).reshape(16, c, o).contiguous()


def winograd_conv(x_hwc: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, of an (H, W, C) map (H, W even) by F(2x2, 3x3):
    4x4 input tiles at stride 2 transformed by B^T d B, 16 products (T, C) @ (C, O) in u's dtype,
    2x2 outputs by A^T m A."""
    h, w, _ = x_hwc.shape
    xp = F.pad(x_hwc, (0, 0, 1, 1, 1, 1))
    r = [xp[k : k + h : 2] for k in range(4)]
    rows = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]
    v = []
    for row in rows:
        t = [row[:, k : k + w : 2] for k in range(4)]
        v += [t[0] - t[2], t[1] + t[2], t[2] - t[1], t[1] - t[3]]
    m = torch.bmm(torch.stack(v).reshape(16, -1, x_hwc.shape[2]).to(u.dtype), u).float().reshape(4, 4, h // 2, w // 2, -1)
    a, b = m[0] + m[1] + m[2], m[1] - m[2] - m[3]
    y = [[a[0] + a[1] + a[2], a[1] - a[2] - a[3]], [b[0] + b[1] + b[2], b[1] - b[2] - b[3]]]
    return torch.stack([torch.stack(y[0], 2), torch.stack(y[1], 2)], 1).reshape(h, w, -1)


# ---------------------------------------------------------------- the two tables
def conv_rates(threads: int, rounds: int = 5) -> dict[str, float]:
    """Seconds of one 128->128 3x3 convolution on 360x240 per precision (alternating, median)."""
    from torch.ao.nn import quantized as nnq

    torch.manual_seed(0)
    c, h, w = 128, 240, 360
    x = torch.randn(1, c, h, w).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(c, c, 3, padding=1).eval().to(memory_format=torch.channels_last)
    conv_bf16 = copy.deepcopy(conv).bfloat16()
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks quantized tensors deprecated; this is a measurement
        weight = conv.weight.detach()
        q = nnq.Conv2d(c, c, 3, padding=1)
        q.set_weight_bias(torch.quantize_per_channel(weight, weight.abs().amax((1, 2, 3)) / 127, torch.zeros(c, dtype=torch.long), 0, torch.qint8), conv.bias.detach())
        with torch.inference_mode():
            y = conv(x)
        q.scale, q.zero_point = float((y.amax() - y.amin()) / 255), int(round(float(-y.amin() / ((y.amax() - y.amin()) / 255))))
        xq = torch.quantize_per_tensor(x, float((x.amax() - x.amin()) / 255), int(round(float(-x.amin() / ((x.amax() - x.amin()) / 255)))), torch.quint8)
    x_scale, x_zero = xq.q_scale(), xq.q_zero_point()

    def int8_in_float(a: torch.Tensor) -> torch.Tensor:
        return q(torch.quantize_per_tensor(a, x_scale, x_zero, torch.quint8)).dequantize()

    x_hwc = x[0].permute(1, 2, 0).contiguous()
    u = winograd_weights(conv.weight.detach())
    with torch.inference_mode():
        ref = conv(x)[0].permute(1, 2, 0)
        err = float((winograd_conv(x_hwc, u) + conv.bias - ref).norm() / ref.norm())
    if err > 1e-5:
        raise AssertionError(f"Winograd convolution differs from the direct one (relative error {err:.1e})")
    runs = {"fp32": (conv, x), "bf16": (conv_bf16, x.bfloat16()), "int8": (q, xq), "int8 in float": (int8_in_float, x),
            "winograd fp32": (lambda a: winograd_conv(a, u), x_hwc), "winograd bf16": (lambda a: winograd_conv(a, u.bfloat16()), x_hwc)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for f, a in runs.values():
            f(a)  # warm-up
        for r in range(rounds):
            for k in (list(runs) if r % 2 == 0 else list(reversed(runs))):
                f, a = runs[k]
                t0 = time.perf_counter()
                f(a)
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def index_agreement(model: str, images, blocks: tuple[str, ...], rounding: str) -> float:
    codec = cod.load(model, precision="fp32")
    cond = codec.model.condition
    enc = rounded_encoder(cond.encoder, blocks, rounding)
    same = total = 0
    with torch.inference_mode():
        for _, img in images:
            x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
            a, b = cond.quantizer.indices(cond.encoder(x)), cond.quantizer.indices(enc(x))
            same += int((a == b).sum())
            total += a.numel()
    return same / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["codlite-small-0.0312", "codlite-small-0.125"])
    ap.add_argument("--kodak", default=os.environ.get("KODAK", "../shared/data/kodak"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rates-only", action="store_true", help="only the convolution rates (seconds, not minutes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} thread(s)")
    t = conv_rates(args.threads)
    flop = 2 * 128 * 128 * 9 * 240 * 360
    cols = ("fp32", "bf16", "int8", "int8 in float", "winograd fp32", "winograd bf16")
    print("| one 3x3 conv, 128 ch, 360x240 | fp32 | bf16 | int8 kernel | int8 + (de)quantise | Winograd, fp32 | Winograd, bf16 products |")
    print("|---|---|---|---|---|---|---|")
    print("| ms | " + " | ".join(f"{t[k] * 1e3:.0f}" for k in cols) + " |")
    print("| direct-conv GFLOP/s equivalent | " + " | ".join(f"{flop / t[k] / 1e9:.0f}" for k in cols) + " |")
    print("| × fp32 | " + " | ".join(f"{t['fp32'] / t[k]:.2f}" for k in cols) + " |")
    if args.rates_only:
        return
    images = load_images(args.kodak, limit=args.limit, crop=512)
    print(f"\n# indices equal to the fp32 encoder's, Kodak-512 ({len(images)} images)")
    print("| model | rounded convolutions | " + " | ".join(ROUNDINGS) + " |")
    print("|---|---|" + "---|" * len(ROUNDINGS))
    for m in args.models:
        for scope, blocks in SCOPES.items():
            cells = [f"{index_agreement(m, images, blocks, r):.2%}" for r in ROUNDINGS]
            print(f"| {m} | {scope} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
