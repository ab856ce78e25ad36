"""DiffC on CoD: encode an image's diffusion target into a payload and decode it (spec §11).

    cfg = DiffCConfig.for_family("cod-pixel")
    res = encode(network, target, cond, config=cfg, target_bits=20_000)   # or n_steps=40
    res.payload                                 # bytes (after the CoD indices in a file)
    x0 = decode(network, res.payload, cond, target.shape)   # == res.reconstruction, bit-exact

``target`` is what CoD diffuses: pixels in [-1, 1] (1, 3, H, W) for the pixel model, the
diffusion latent (1, 4, H/8, W/8) for the latent one (spec §3, §6.1); the reconstruction is
in the same space. ``cond`` is the condition map decoded from the CoD indices (the decoder
has it from the indices, so it is not part of the payload).

Reads top to bottom:
  1. the model as a flow velocity (conditional branch, or CFG against the null condition)
  2. the encoder chain: per step x0_hat, P, Q, KL -> budget -> chunks -> indices -> sample
  3. rate control (a number of steps, or a bit budget) and the payload
  4. the decoder chain and the DDIM finish
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import numpy as np
import torch

from cod.diffc import coding
from cod.diffc.bridge import FlowModelFn, ddim_finish, kl_bits, normalised_shift, posterior, predict_x0
from cod.diffc.payload import DiffCConfig, DiffCPayload
from cod.diffc.rcc import decode_step, encode_step, max_kl_bits, step_layout
from cod.diffc.rng import gaussian_noise
from cod.diffusion.samplers import guided

ALWAYS = (-math.inf, math.inf)  # DiffC guides at every time (the original's CoD wrapper has no interval)


# ------------------------------------------------------------------ 1. the model
def flow_model(network: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor | None = None, guidance: float = 1.0) -> FlowModelFn:
    """A CoD network (``network(x_t, t, cond=...)[0]`` is the velocity) as ``model_fn(x, t)``:
    the conditional branch alone for guidance 1 (as the original's encoder), otherwise CFG
    against ``uncond`` (the condition map of the all -1 image, computed here if not given)."""

    def velocity(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return network(x, t.reshape(-1).expand(x.shape[0]), cond=c)[0]

    if guidance == 1.0:
        return lambda x, t: velocity(x, t, cond)
    if uncond is None:
        uncond = null_condition(network, cond)
    return guided(velocity, cond, uncond, guidance, interval=ALWAYS)


def null_condition(network: torch.nn.Module, cond: torch.Tensor) -> torch.Tensor:
    """Condition map of the all -1 image of the size ``cond`` stands for (spec §3)."""
    ppt = network.pixels_per_token
    neg = torch.full((1, 3, cond.shape[-2] * ppt, cond.shape[-1] * ppt), -1.0, device=cond.device)
    return network.condition(neg)[0]


# ------------------------------------------------------------------ 2. the encoder chain
@dataclass
class StepStats:
    """What one coded step cost."""

    step: int
    tau: int
    tau_next: int
    kl_bits: float  # KL(Q || P) measured
    budget_bits: int  # n: the budget sent (>= ceil(KL) unless saturated)
    chunks: int
    coded_bits: float  # information content of the step under the models (side info included)
    saturated: bool  # KL above what max_chunk_size can carry for this size (budget capped)
    model_s: float
    rcc_s: float


@dataclass
class CodedStep:
    """A coded step: its stats, budget code, chunk indices and the state it leads to."""

    stats: StepStats
    code: int
    indices: np.ndarray
    x: torch.Tensor | None = field(repr=False)  # the state at tau_next (dropped when not needed)


def _budget(kl: float, dim: int, config: DiffCConfig) -> tuple[int, bool]:
    """The budget code for a measured KL: ceil(KL) rounded up to a code, capped."""
    cap = max_kl_bits(dim, config.max_chunk_size, config.chunk_padding)
    n = math.ceil(kl)
    code = coding.budget_code(min(n, cap))
    while coding.budget_value(code) > cap:
        code -= 1
    return code, n > cap


def _advance(model_fn: FlowModelFn, x: torch.Tensor, tau: int, tau_next: int):
    x0_hat = predict_x0(model_fn, x, tau)
    return x0_hat, posterior(tau, tau_next)


def _sample(x: torch.Tensor, x0_hat: torch.Tensor, post, z: torch.Tensor) -> torch.Tensor:
    """x' = mean_P + std z (float32, the same expression on both sides)."""
    return post.mean(x, x0_hat) + post.std * z.view_as(x)


@torch.inference_mode()
def code_step(model_fn: FlowModelFn, x: torch.Tensor, target: torch.Tensor, step: int, tau: int, tau_next: int, config: DiffCConfig, prev_code: int = 0) -> CodedStep:
    """One encoder step from the state ``x`` at ``tau``: x0_hat, P, Q, the KL, the budget, the
    chunk indices and the next state (what the decoder will compute from the indices)."""
    dim = target.numel()
    t0 = time.perf_counter()
    x0_hat, post = _advance(model_fn, x, tau, tau_next)
    t1 = time.perf_counter()
    mu = normalised_shift(target, x0_hat, post)
    kl = kl_bits(mu)
    code, saturated = _budget(kl, dim, config)
    layout = step_layout(step, config.seed, dim, coding.budget_value(code), config.max_chunk_size, config.chunk_padding, target.device)
    idx = encode_step(mu, layout)
    x_next = _sample(x, x0_hat, post, decode_step(idx, layout, dim, target.device))
    bits = coding.step_bits(prev_code, code, idx, config.max_chunk_size, config.chunk_padding)
    stats = StepStats(step, tau, tau_next, kl, coding.budget_value(code), len(idx), bits, saturated, t1 - t0, time.perf_counter() - t1)
    return CodedStep(stats, code, idx, x_next)


@torch.inference_mode()
def encoder_steps(model_fn: FlowModelFn, target: torch.Tensor, config: DiffCConfig, max_steps: int | None = None) -> Iterator[CodedStep]:
    """Run the encoder's chain from the seeded noise, one coded step at a time (at most
    ``max_steps``)."""
    target = target.float()
    x = gaussian_noise(tuple(target.shape), config.seed, target.device)
    tau, prev_code = 1000, 0
    for i, tau_next in enumerate(config.encoding_timesteps[:max_steps]):
        st = code_step(model_fn, x, target, i, tau, tau_next, config, prev_code)
        yield st
        x, tau, prev_code = st.x, tau_next, st.code


# ------------------------------------------------------------------ 3. rate control, payload
class DiffCResult(NamedTuple):
    payload: bytes
    reconstruction: torch.Tensor  # the decoder's output, in the target's space
    n_steps: int  # coded steps
    steps: list  # StepStats of the coded steps

    @property
    def kl_bits(self) -> float:
        return sum(s.kl_bits for s in self.steps)

    @property
    def stream_bits(self) -> int:
        """Bits of the payload's coded stream (the rest is header and CRC)."""
        return 8 * (len(self.payload) - DiffCPayload.overhead_bytes(DiffCPayload.from_bytes(self.payload).config))


def _payload(config: DiffCConfig, steps: list[CodedStep]) -> bytes:
    stream = coding.encode_stream([s.code for s in steps], [s.indices for s in steps], config.max_chunk_size, config.chunk_padding)
    return DiffCPayload(config, len(steps), stream).to_bytes()


def payload_bits_for_bpp(bpp: float, height: int, width: int, other_bytes: int) -> float:
    """The payload budget for a target rate of a whole file: bpp x H x W (the original
    image) minus the bits of everything else in it (container header, CoD indices)."""
    return bpp * height * width - 8 * other_bytes


def steps_for_timestep(config: DiffCConfig, tau: int) -> int:
    """Coded steps needed to reach the first schedule timestep <= tau (the original's
    ``recon_timestep`` option): e.g. tau=20 -> the whole pixel schedule."""
    for i, t in enumerate(config.encoding_timesteps):
        if t <= tau:
            return i + 1
    return len(config.encoding_timesteps)


@torch.inference_mode()
def encode(
    network: torch.nn.Module,
    target: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    config: DiffCConfig | None = None,
    n_steps: int | None = None,
    target_bits: float | None = None,
    progress: bool = False,
) -> DiffCResult:
    """Code ``target`` given the decoded CoD condition ``cond``.

    Rate: ``n_steps`` coded steps, or ``target_bits`` for the whole payload (the step count
    whose payload size is nearest; the caller subtracts what the container and CoD indices
    take), or neither: the whole schedule."""
    config = config or DiffCConfig()
    if n_steps is not None and target_bits is not None:
        raise ValueError("give n_steps or target_bits, not both")
    n_sched = len(config.encoding_timesteps)
    if n_steps is not None and not 0 <= n_steps <= n_sched:
        raise ValueError(f"n_steps must be in 0..{n_sched}, got {n_steps}")
    if target.ndim != 4 or target.shape[0] != 1:
        raise ValueError(f"target must be one image (1, C, H, W), got {tuple(target.shape)}")
    enc_fn = flow_model(network, cond, uncond, config.encoding_guidance)
    steps: list[CodedStep] = []
    from tqdm.auto import tqdm

    with tqdm(total=n_steps if n_steps is not None else n_sched, desc="DiffC encode", unit="step", disable=not progress, leave=False) as bar:
        if target_bits is None:
            for st in encoder_steps(enc_fn, target, config, n_steps):
                if steps:
                    steps[-1].x = None  # only the last state is finished
                steps.append(st)
                bar.update(1)
            chosen = steps
        else:
            total = 8 * DiffCPayload.overhead_bytes(config)  # + the steps' estimates: a lower bound of the real size (the stream adds < 64 bits)
            for st in encoder_steps(enc_fn, target, config):
                if len(steps) >= 2:
                    steps[-2].x = None  # the last two states are candidates
                steps.append(st)
                bar.update(1)
                total += st.stats.coded_bits
                if total >= target_bits:
                    break
            chosen = _nearest(config, steps, target_bits)
    payload = _payload(config, chosen)
    x = chosen[-1].x if chosen else gaussian_noise(tuple(target.shape), config.seed, target.device)
    tau = config.encoding_timesteps[len(chosen) - 1] if chosen else 1000
    dec_fn = flow_model(network, cond, uncond, config.decoding_guidance)
    recon = ddim_finish(dec_fn, x, tau, config.finishing_timesteps)
    return DiffCResult(payload, recon, len(chosen), [s.stats for s in chosen])


def _nearest(config: DiffCConfig, steps: list[CodedStep], target_bits: float) -> list[CodedStep]:
    """Of the last two step counts run (the encoder stops at the first whose estimate
    reaches the target), the one whose real payload size is nearest the target; ties go to
    fewer steps."""
    options = [len(steps) - 1, len(steps)] if steps else [0]
    best = min(options, key=lambda n: (abs(8 * len(_payload(config, steps[:n])) - target_bits), n))
    return steps[:best]


# ------------------------------------------------------------------ 4. the decoder
@torch.inference_mode()
def decode(network: torch.nn.Module, payload: bytes, cond: torch.Tensor, shape: tuple[int, ...], uncond: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """Payload -> reconstruction of shape ``shape`` (the target's), on ``cond``'s device,
    bit-identical to the encoder's on the same device and settings. Corrupt payloads raise
    BitstreamError."""
    if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
        raise ValueError(f"shape must be one image (1, C, H, W), got {tuple(shape)}")
    p = DiffCPayload.from_bytes(payload)
    c = p.config
    dim = int(np.prod(shape))
    codes, indices = coding.decode_stream(p.stream, p.n_steps, max_kl_bits(dim, c.max_chunk_size, c.chunk_padding), c.max_chunk_size, c.chunk_padding)
    device = cond.device
    enc_fn = flow_model(network, cond, uncond, c.encoding_guidance)
    x = gaussian_noise(tuple(shape), c.seed, device)
    tau = 1000
    from tqdm.auto import tqdm

    for i in tqdm(range(p.n_steps), desc="DiffC decode", unit="step", disable=not progress, leave=False):
        tau_next = c.encoding_timesteps[i]
        x0_hat, post = _advance(enc_fn, x, tau, tau_next)
        layout = step_layout(i, c.seed, dim, coding.budget_value(codes[i]), c.max_chunk_size, c.chunk_padding, device)
        x = _sample(x, x0_hat, post, decode_step(indices[i], layout, dim, device))
        tau = tau_next
    dec_fn = flow_model(network, cond, uncond, c.decoding_guidance)
    return ddim_finish(dec_fn, x, tau, c.finishing_timesteps)


__all__ = ["encode", "decode", "encoder_steps", "code_step", "CodedStep", "flow_model", "null_condition", "steps_for_timestep", "payload_bits_for_bpp", "DiffCResult", "StepStats", "ALWAYS"]
