"""ODE samplers for CoD's rectified flow, k-diffusion style (CoD spec §9.2).

Every sampler is a plain function with one signature::

    x1 = sampler(model_fn, x0, timesteps, callback=None)

``model_fn(x, t) -> v`` returns the (already guided) velocity at time ``t`` (a 0-d float32
tensor), ``x0`` is the initial noise (t = 0), ``timesteps`` the float32 grid from
:func:`flow_timesteps` (ending at 1.0) and ``callback(StepInfo)`` runs after every step.

Reads top to bottom:
  1. the time grid (linspace(0, 1 - last_step, N) then 1.0, all float32)
  2. classifier-free guidance with the official interval rule (guided only for 0.1 < t < 1)
  3. euler
  4. adam2: 2nd-order Adams-Bashforth with Lagrange coefficients computed in float32, time
     accumulated in float32 (t += dt), exactly as the official AdamLMSampler
  5. initial noise from a seed (CPU generator), so a decode is reproducible from the file
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LAST_STEP = 0.04  # the final interval of the official grid (``last_step``)
GUIDANCE_INTERVAL = (0.1, 1.0)  # CFG only for lo < t < hi (``guidance_interval_min/max``)


@dataclass
class StepInfo:
    """What a sampler hands its callback after step ``i`` (of ``steps``)."""

    i: int
    steps: int
    t: float  # time the network was queried at
    t_next: float
    x: torch.Tensor  # state after the step
    v: torch.Tensor  # velocity used for the step


Callback = Callable[[StepInfo], None]


# ------------------------------------------------------------------ 1. time grid
def flow_timesteps(steps: int, last_step: float = LAST_STEP, shift: float = 1.0) -> torch.Tensor:
    """(steps + 1,) float32: linspace(0, 1 - last_step, steps), then 1.0, then the time shift
    t / (t + (1 - t) * shift) (identity for CoD's shift 1, up to float32 rounding, kept).

    N=25 gives 0, 0.04, ..., 0.96, 1.0; N=4 gives 0, 0.32, 0.64, 0.96, 1.0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < last_step <= 1.0:
        raise ValueError(f"last_step must be in (0, 1], got {last_step}")
    if steps == 1:
        last_step = 1.0  # the grid is [0, 1] either way
    t = torch.cat([torch.linspace(0.0, 1 - last_step, steps), torch.tensor([1.0])])
    return t / (t + (1 - t) * shift)


# ------------------------------------------------------------------ 2. guidance
def guidance_active(t: torch.Tensor, interval: tuple[float, float] = GUIDANCE_INTERVAL) -> bool:
    """lo < t < hi, compared in float32 as the official code does (t is a float32 tensor)."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)[0]
    return bool((t > interval[0]) & (t < interval[1]))


def guided(
    denoiser: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    interval: tuple[float, float] | None = GUIDANCE_INTERVAL,
) -> ModelFn:
    """Classifier-free guidance around ``denoiser(x, t, cond_map) -> v``: the one place it is
    formed, for the samplers and for the DMD teacher (cod.train.distill).

    One network call on the batch [uncond; cond]; v = v_u + w (v_c - v_u) with w = ``scale``
    for interval[0] < t < interval[1] and w = 1 elsewhere (the combination is still formed,
    as officially; with the default grid the first three of 25 steps are unguided);
    ``interval=None`` guides at every t. ``t`` is a scalar (samplers) or one time per sample
    (training; then ``interval`` must be None). ``uncond`` is the condition map of the all -1
    image (spec §3), not a learned token.
    """
    cond2 = torch.cat([uncond, cond], dim=0)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tt = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1)
        if tt.numel() == 1:
            tt = tt.expand(b)
        elif interval is not None:
            raise ValueError("a guidance interval needs one time for the whole batch")
        out = denoiser(torch.cat([x, x], dim=0), torch.cat([tt, tt]), cond2)
        v_u, v_c = out.chunk(2, dim=0)
        w = scale if interval is None or guidance_active(t, interval) else 1.0
        return v_u + w * (v_c - v_u)

    return model_fn


# ------------------------------------------------------------------ 3. euler
@torch.no_grad()
def sample_euler(model_fn: ModelFn, x: torch.Tensor, timesteps: torch.Tensor, callback: Callback | None = None) -> torch.Tensor:
    """x <- x + v(x, t_i) (t_{i+1} - t_i), the network queried on the grid times."""
    ts = timesteps.to(device=x.device, dtype=torch.float32)
    n = len(ts) - 1
    for i in range(n):
        t_cur, t_next = ts[i], ts[i + 1]
        v = model_fn(x, t_cur)
        x = x + v * (t_next - t_cur)
        if callback is not None:
            callback(StepInfo(i, n, float(t_cur), float(t_next), x, v))
    return x


# ------------------------------------------------------------------ 4. adam2
def adams_coefficients(timesteps: torch.Tensor, order: int = 2) -> list[list[torch.Tensor]]:
    """Per step i, the weights of the last min(order, i+1) velocities (oldest first): the
    integrals over [t_i, t_{i+1}] of the Lagrange basis through those times, normalised to
    sum 1, evaluated in float32 with the official expression order.

    Uniform grid: step 0 (1.0), then (-0.5, 1.5); the official 4-step grid ends with
    (-0.0625, 1.0625) (float32: -0.06250006)."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    ts = timesteps.to(torch.float32)
    coeffs: list[list[torch.Tensor]] = []
    for i in range(len(ts) - 1):
        start, end = ts[i], ts[i + 1]
        if min(order, i + 1) == 1:
            int1 = end - start
            coeffs.append([int1 / int1])
        else:
            t1, t2 = ts[i - 1], ts[i]
            int1 = 0.5 / (t1 - t2) * ((end - t2) ** 2 - (start - t2) ** 2)
            int2 = 0.5 / (t2 - t1) * ((end - t1) ** 2 - (start - t1) ** 2)
            total = int1 + int2
            coeffs.append([int1 / total, int2 / total])
    return coeffs


@torch.no_grad()
def sample_adam2(model_fn: ModelFn, x: torch.Tensor, timesteps: torch.Tensor, callback: Callback | None = None, order: int = 2) -> torch.Tensor:
    """Adams-Bashforth (order 2) on the guided velocities: v = sum_j c_ij v_j, x <- x + v dt.

    The network time is accumulated in float32 (t += dt) from 0, not read off the grid."""
    ts = timesteps.to(device=x.device, dtype=torch.float32)
    coeffs = [[c.to(x.device) for c in row] for row in adams_coefficients(ts, order)]
    dts = ts[1:] - ts[:-1]
    n = len(dts)
    t_cur = torch.zeros((), dtype=torch.float32, device=x.device)
    history: list[torch.Tensor] = []
    for i in range(n):
        history.append(model_fn(x, t_cur))
        history = history[-order:]
        c = coeffs[i]
        recent = history[-len(c):]
        v = c[0] * recent[0]
        for cj, vj in zip(c[1:], recent[1:]):
            v = v + cj * vj
        x = x + v * dts[i]
        t_prev = t_cur
        t_cur = t_cur + dts[i]
        if callback is not None:
            callback(StepInfo(i, n, float(t_prev), float(t_cur), x, v))
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "adam2": sample_adam2}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


# ------------------------------------------------------------------ 5. noise
def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """float32 N(0, I) from ``torch.Generator('cpu').manual_seed(seed)``, as the official CLI
    draws x at t = 0 (move it to the device afterwards)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32)
