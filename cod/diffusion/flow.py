"""Rectified flow as CoD and CoD-Lite train it (CoD spec §3, §8.1; CoD-Lite spec §4.2), kept
apart from the networks: the only place this math lives; the trainers (cod/train/) call it.

Time t in [0, 1]: t = 0 is pure noise, t = 1 is data.

    x_t = t * x + (1 - t) * eps        v = dx_t/dt = x - eps

The CoD networks predict v ("vpred"); the CoD-Lite network predicts x, turned into a velocity
by (x_hat - x_t) / max(1 - t, clamp). Training draws t from a logit-normal distribution
(t = sigmoid(n), n ~ N(0, 1); no shift in CoD).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bcast(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """(B,) or scalar time -> broadcastable against ``like`` (B, ...); a tensor keeps its dtype."""
    t = torch.as_tensor(t, device=like.device)
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


def velocity_from_x(x_pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clamp_min: float = 0.05) -> torch.Tensor:
    """Velocity of an x-prediction: (x_hat - x_t) / max(1 - t, clamp_min) (CoD-Lite spec §4.2)."""
    return (x_pred - x_t) / (1 - _bcast(t, x_t)).clamp(min=clamp_min)


def time_shift(t: torch.Tensor, shift: float = 1.0) -> torch.Tensor:
    """t / (t + (1 - t) * shift); identity for shift 1 (CoD's ``timeshift``)."""
    return t / (t + (1 - t) * shift)


def sample_time(batch: int, device: torch.device | str = "cpu", logit_normal: bool = True, shift: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training times (B,) float32: sigmoid(N(0,1)) (``lognorm_t: true``) or U(0,1), then shifted."""
    if logit_normal:
        t = torch.randn(batch, generator=generator, device=device, dtype=torch.float32).sigmoid()
    else:
        t = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
    return t if shift == 1.0 else time_shift(t, shift)


def add_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw of the forward process for a batch of data ``x``: t ~ sigmoid(N(0, 1)) (B,),
    then eps ~ N(0, I) float32 (in this order, from ``generator``); returns (x_t, t, eps)."""
    t = sample_time(x.shape[0], x.device, generator=generator)
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return interpolate(x, noise.to(x.dtype), t), t, noise


def flow_matching_loss(v_pred: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted velocity and x - noise, in float32 (L_fm, §8.1)."""
    return F.mse_loss(v_pred.float(), velocity_target(x.float(), noise.float()))


def x_flow_matching_loss(x_pred: torch.Tensor, x: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clamp_min: float = 0.05) -> torch.Tensor:
    """L_fm of an x-predicting network: the velocity MSE with both velocities formed from
    x-estimates, (x_hat - x_t) / max(1 - t, clamp) vs (x - x_t) / max(1 - t, clamp)
    (CoD-Lite spec §4.2)."""
    return F.mse_loss(velocity_from_x(x_pred, x_t, t, clamp_min), velocity_from_x(x, x_t, t, clamp_min))


def one_step_loss(x0_pred: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Unified post-training term (§8.1, stage 3): ||x_hat(noise, t=0) - x||^2, mean, float32.
    For a velocity network x_hat = noise + v(noise, 0) (:func:`x0_from_velocity` at t = 0)."""
    return F.mse_loss(x0_pred.float(), x.float())
