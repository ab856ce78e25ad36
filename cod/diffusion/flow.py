"""Rectified flow as CoD trains it (CoD spec §3, §8.1), kept apart from the networks.

Time t in [0, 1]: t = 0 is pure noise, t = 1 is data.

    x_t = t * x + (1 - t) * eps        v = dx_t/dt = x - eps

The networks predict v ("vpred"). Training draws t from a logit-normal distribution
(t = sigmoid(n), n ~ N(0, 1); no shift in CoD).
"""
from __future__ import annotations

import torch


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) or scalar time -> broadcastable against ``like`` (B, ...)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def interpolate(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * x + (1 - t) * noise."""
    t = _bcast(t, x)
    return t * x + (1 - t) * noise


def velocity_target(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target v = x - noise, computed directly in the input precision.

    The official trainer computes (x - x_t) / (1 - t), in bf16 for the latent model; that
    equals x - noise up to rounding and cancels badly as t -> 1 (spec §16)."""
    return x - noise


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Data estimate from a velocity: x_hat = x_t + (1 - t) * v (used by one-step and DMD)."""
    return x_t + (1 - _bcast(t, x_t)) * v


def time_shift(t: torch.Tensor, shift: float = 1.0) -> torch.Tensor:
    """t / (t + (1 - t) * shift); identity for shift 1 (CoD's ``timeshift``)."""
    return t / (t + (1 - t) * shift)


def sample_time(batch: int, device: torch.device | str = "cpu", logit_normal: bool = True, shift: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training times (B,) float32: sigmoid(N(0,1)) (``lognorm_t: true``) or U(0,1), then shifted."""
    if logit_normal:
        t = torch.randn(batch, generator=generator, device=device, dtype=torch.float32).sigmoid()
    else:
        t = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
    return time_shift(t, shift)


def flow_matching_loss(v_pred: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted velocity and x - noise, in float32 (L_fm, §8.1)."""
    return (v_pred.float() - velocity_target(x.float(), noise.float())).pow(2).mean()


def one_step_loss(v0_pred: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Unified post-training term (§8.1, stage 3): ||(noise + v(noise, t=0)) - x||^2, mean."""
    return (noise.float() + v0_pred.float() - x.float()).pow(2).mean()
