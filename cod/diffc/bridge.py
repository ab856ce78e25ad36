"""DiffC's DDPM view of CoD's rectified flow (spec §11.2): times, posteriors P and Q, the
per-step KL, and the probability-flow (DDIM) finish.

DiffC works on a variance-preserving chain indexed by an integer timestep tau in 0..1000;
CoD's flow has x_t = t x + (1 - t) eps with t = 0 noise and t = 1 data (spec §3). With
sigma = tau / 1000 the two are the same process up to a scale:

    t = 1 - sigma                         (network time)
    snr = (1 - sigma) / sigma             (amplitude ratio; infinite at tau = 0)
    abar = snr**2 / (1 + snr**2) = (1000 - tau)**2 / ((1000 - tau)**2 + tau**2)
    x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps = x_flow / sqrt((1 - sigma)**2 + sigma**2)

Off-by-one (bug B8): the original looks the SNR up as ``snr_table[tau - 1]`` (sigma =
(tau - 1) / 1000) while it gives the network t = 1 - tau / 1000. We FIX it: both use sigma =
tau / 1000. Nothing forces the offset (our files are not the original's, whose encoder is
not reproducible anyway, B9), and it matters where DiffC stops: at the latent schedule's last
tau = 2 the original tells the VP conversion the noise is half what the network is told.

All schedule coefficients are computed from exact rationals (Fraction) and rounded once, so
they are the same numbers on every platform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import torch

from cod.diffc.rng import LN2
from cod.diffc.schedules import DENOISING_TIMESTEPS, LATENT_ENCODING_TIMESTEPS, PIXEL_ENCODING_TIMESTEPS, T_MAX, check_schedule

# Velocity of the (guided) flow model at flow time t (0-d float32 tensor): v = model_fn(x_flow, t).
FlowModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------ times
def _check_tau(tau: int) -> int:
    if not (isinstance(tau, int) and 0 <= tau <= T_MAX):
        raise ValueError(f"DiffC timesteps are integers in 0..{T_MAX}, got {tau!r}")
    return tau


def sigma(tau: int) -> float:
    """Flow noise level tau / 1000."""
    return _check_tau(tau) / T_MAX


def flow_time(tau: int) -> float:
    """The network's time t = 1 - tau / 1000 (t = 0 noise, t = 1 data)."""
    return (T_MAX - _check_tau(tau)) / T_MAX


def _abar(tau: int) -> Fraction:
    a = T_MAX - _check_tau(tau)
    return Fraction(a * a, a * a + tau * tau)


def alpha_bar(tau: int) -> float:
    """Variance-preserving signal fraction abar(tau) = snr**2 / (1 + snr**2)."""
    return float(_abar(tau))


def snr(tau: int) -> float:
    """Amplitude signal-to-noise ratio (1 - sigma) / sigma (inf at tau = 0)."""
    return math.inf if _check_tau(tau) == 0 else (T_MAX - tau) / tau


def vp_to_flow_scale(tau: int) -> float:
    """x_flow = x_vp * scale, scale = sigma / sqrt(1 - abar) = sqrt((1 - sigma)**2 + sigma**2)."""
    a = T_MAX - _check_tau(tau)
    return math.sqrt(a * a + tau * tau) / T_MAX


# ------------------------------------------------------------------ the network in VP terms
def predict_x0(model_fn: FlowModelFn, x_vp: torch.Tensor, tau: int) -> torch.Tensor:
    """The model's estimate of x0 from a VP state at tau (tau >= 1): x_flow = x_vp * scale,
    v = model_fn(x_flow, t), x0_hat = x_flow + sigma v (the flow moves x0 - eps per unit t)."""
    if tau < 1:
        raise ValueError("the network is never queried at tau = 0")
    x_flow = x_vp * vp_to_flow_scale(tau)
    t = torch.tensor(flow_time(tau), dtype=torch.float32, device=x_vp.device)
    v = model_fn(x_flow, t)
    return x_flow + sigma(tau) * v


def noise_from_x0(x_vp: torch.Tensor, x0: torch.Tensor, tau: int) -> torch.Tensor:
    """The DDPM noise prediction eps = (x_vp - sqrt(abar) x0) / sqrt(1 - abar) (the
    original's ``predict_noise`` returns this for x0 = x0_hat)."""
    ab = _abar(tau)
    return (x_vp - math.sqrt(ab) * x0) / math.sqrt(1 - ab)


def x0_from_noise(x_vp: torch.Tensor, eps: torch.Tensor, tau: int) -> torch.Tensor:
    """Inverse of :func:`noise_from_x0` (the original's ``pred_original_sample``)."""
    ab = _abar(tau)
    return (x_vp - math.sqrt(1 - ab) * eps) / math.sqrt(ab)


# ------------------------------------------------------------------ posteriors
@dataclass(frozen=True)
class Posterior:
    """q(x_{tau_next} | x_tau, x0) = N(c_x0 x0 + c_xt x_tau, std**2) (DDPM eq. 6-7).

    P uses the model's x0_hat, Q the true x0: same coefficients, so Q - P = c_x0 (x0 - x0_hat)."""

    tau: int
    tau_next: int
    c_x0: float
    c_xt: float
    std: float

    def mean(self, x_tau: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.c_x0 * x0 + self.c_xt * x_tau


def posterior(tau: int, tau_next: int) -> Posterior:
    """Coefficients of the step tau -> tau_next (1 <= tau_next < tau <= 1000), exactly:
    a = abar/abar', b = 1 - a, c_x0 = sqrt(abar') b / (1 - abar),
    c_xt = sqrt(a) (1 - abar') / (1 - abar), std**2 = (1 - abar') / (1 - abar) b."""
    if not 0 < _check_tau(tau_next) < _check_tau(tau):
        raise ValueError(f"a DiffC step needs 1 <= tau_next < tau, got {tau} -> {tau_next}")
    ab, ab_n = _abar(tau), _abar(tau_next)
    a = ab / ab_n
    b = 1 - a
    return Posterior(
        tau, tau_next,
        c_x0=math.sqrt(ab_n) * float(b / (1 - ab)),
        c_xt=math.sqrt(a) * float((1 - ab_n) / (1 - ab)),
        std=math.sqrt((1 - ab_n) / (1 - ab) * b),
    )


def P(x_tau: torch.Tensor, x0_hat: torch.Tensor, post: Posterior) -> tuple[torch.Tensor, float]:
    """The shared prior p(x_{tau_next} | x_tau) = N(mean, std**2): (mean, std)."""
    return post.mean(x_tau, x0_hat), post.std


def Q(x_tau: torch.Tensor, x0: torch.Tensor, post: Posterior) -> torch.Tensor:
    """Mean of the true posterior q(x_{tau_next} | x_tau, x0) (std as P)."""
    return post.mean(x_tau, x0)


def normalised_shift(x0: torch.Tensor, x0_hat: torch.Tensor, post: Posterior) -> torch.Tensor:
    """(mean_Q - mean_P) / std, flattened, float64: the mean of the unit Gaussian the
    reverse-channel code simulates."""
    return (x0.float() - x0_hat.float()).flatten().to(torch.float64) * (post.c_x0 / post.std)


def kl_bits(mu: torch.Tensor) -> float:
    """KL(Q || P) in bits for a normalised shift mu: |mu|**2 / (2 ln 2)."""
    return float(mu.square().sum()) / (2 * LN2)


# ------------------------------------------------------------------ probability-flow finish
def ddim_step(x_tau: torch.Tensor, x0_hat: torch.Tensor, tau: int, tau_next: int) -> torch.Tensor:
    """Deterministic DDIM (eta = 0): x' = sqrt(abar') x0_hat + sqrt(1 - abar') eps_hat."""
    ab_n = _abar(tau_next)
    eps = noise_from_x0(x_tau, x0_hat, tau)
    return math.sqrt(ab_n) * x0_hat + math.sqrt(1 - ab_n) * eps


def ddim_finish(model_fn: FlowModelFn, x_tau: torch.Tensor, tau: int, schedule: Sequence[int] = DENOISING_TIMESTEPS) -> torch.Tensor:
    """Denoise x at tau along the schedule's timesteps below tau (ending at 0): the
    original's ``denoise``. Returns x0 (pixels in [-1, 1] or the diffusion latent)."""
    x = x_tau
    for tau_next in [s for s in schedule if s < tau]:
        x0_hat = predict_x0(model_fn, x, tau)
        x = x0_hat if tau_next == 0 else ddim_step(x, x0_hat, tau, tau_next)
        tau = tau_next
    return x


__all__ = [
    "T_MAX", "PIXEL_ENCODING_TIMESTEPS", "LATENT_ENCODING_TIMESTEPS", "DENOISING_TIMESTEPS", "sigma", "flow_time", "alpha_bar",
    "snr", "vp_to_flow_scale", "predict_x0", "noise_from_x0", "x0_from_noise", "Posterior", "posterior", "P", "Q",
    "normalised_shift", "kl_bits", "ddim_step", "ddim_finish", "check_schedule", "FlowModelFn",
]
