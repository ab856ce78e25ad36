"""Rectified flow helpers and the samplers: exactness on straight paths, the official
time grid and Adams coefficients, float32 time accumulation, the CFG interval rule."""
import math

import pytest
import torch

from cod.diffusion import (
    adams_coefficients,
    flow_matching_loss,
    flow_timesteps,
    guidance_active,
    guided,
    initial_noise,
    interpolate,
    sample_adam2,
    sample_euler,
    sample_time,
    velocity_target,
    x0_from_velocity,
)

SAMPLERS = {"euler": sample_euler, "adam2": sample_adam2}


def point_mass_velocity(target):
    """Exact rectified-flow velocity towards a single data point: (x* - x_t) / (1 - t).
    Its paths are straight lines, so any consistent integrator lands on x* exactly."""

    def model_fn(x, t):
        return (target - x) / (1 - t)

    return model_fn


# ------------------------------------------------------------------ time grid
def test_timesteps_official_grid():
    ts = flow_timesteps(25)
    assert ts.dtype == torch.float32 and len(ts) == 26
    assert torch.allclose(ts, torch.cat([torch.arange(25) * 0.04, torch.tensor([1.0])]), atol=1e-6)
    assert flow_timesteps(4).tolist() == [0.0, 0.3199999928474426, 0.6399999856948853, 0.9599999785423279, 1.0]
    ts10 = flow_timesteps(10)
    assert abs(float(ts10[-1] - ts10[-2]) - 0.04) < 1e-6 and abs(float(ts10[1]) - 0.96 / 9) < 1e-6
    assert flow_timesteps(1).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        flow_timesteps(0)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 4, 25])
def test_straight_paths_are_integrated_exactly(name, steps):
    torch.manual_seed(0)
    target = torch.randn(2, 3, 8, 8)
    x0 = torch.randn(2, 3, 8, 8)
    out = SAMPLERS[name](point_mass_velocity(target), x0, flow_timesteps(steps))
    assert torch.allclose(out, target, atol=2e-5), (out - target).abs().max()


def test_euler_matches_hand_rolled_loop():
    ts = flow_timesteps(5)
    f = lambda x, t: torch.sin(3 * t) * x + t  # noqa: E731
    x = torch.linspace(-1, 1, 7)
    ref = x.clone()
    for a, b in zip(ts[:-1], ts[1:]):
        ref = ref + f(ref, a) * (b - a)
    assert torch.equal(sample_euler(f, x, ts), ref)


# ------------------------------------------------------------------ adam2
def test_adam2_coefficients():
    c25 = adams_coefficients(flow_timesteps(25))
    assert [float(c) for c in c25[0]] == [1.0]
    for row in c25[1:]:
        assert [round(float(c), 5) for c in row] == [-0.5, 1.5]
    c4 = adams_coefficients(flow_timesteps(4))
    # the official values, float32 rounding included (conformance manifest, sampler.adam2_coeffs)
    assert [[float(c) for c in row] for row in c4] == [[1.0], [-0.5, 1.5], [-0.5, 1.5], [-0.06250005960464478, 1.0625]]
    last10 = [float(c) for c in adams_coefficients(flow_timesteps(10))[-1]]
    assert last10 == pytest.approx([-0.1875, 1.1875], abs=1e-6)
    assert all(abs(sum(float(c) for c in row) - 1) < 1e-6 for row in c25)
    assert [float(c) for c in adams_coefficients(flow_timesteps(4), order=1)[-1]] == [1.0]


def test_adam2_is_adams_bashforth_with_float32_time():
    """adam2 = x + dt * (c_old v_old + c_new v_new), the net queried at t accumulated in
    float32 (t += dt). (For the official grids, 1..60 steps, the sums happen to equal the grid
    values exactly.)"""
    steps = 25
    ts = flow_timesteps(steps)
    seen = []

    def f(x, t):
        seen.append(t.clone())
        return torch.cos(5 * t) + 0 * x

    x0 = torch.zeros(3)
    out = sample_adam2(f, x0, ts)
    acc, want_t = torch.zeros((), dtype=torch.float32), []
    for d in ts[1:] - ts[:-1]:
        want_t.append(acc.clone())
        acc = acc + d
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(seen, want_t))
    assert all(torch.equal(a, g) for a, g in zip(want_t, ts[:-1]))
    # reference: explicit AB2 on the recorded velocities
    vs = [torch.cos(5 * t) for t in want_t]
    coeffs = adams_coefficients(ts)
    ref = torch.zeros(())
    for i, d in enumerate(ts[1:] - ts[:-1]):
        v = vs[i] if i == 0 else coeffs[i][0] * vs[i - 1] + coeffs[i][1] * vs[i]
        ref = ref + v * d
    assert torch.allclose(out, ref.expand(3), atol=1e-6)
    # and it integrates cos(5t) on [0, 1] far better than euler does
    exact = math.sin(5.0) / 5
    euler = float(sample_euler(lambda x, t: torch.cos(5 * t) + 0 * x, x0, ts)[0])
    assert abs(float(out[0]) - exact) < abs(euler - exact) / 3


def test_callback_sees_every_step():
    infos = []
    out = sample_adam2(lambda x, t: torch.ones_like(x), torch.zeros(2), flow_timesteps(6), callback=infos.append)
    assert [i.i for i in infos] == list(range(6)) and all(i.steps == 6 for i in infos)
    assert infos[-1].t_next == pytest.approx(1.0) and torch.equal(infos[-1].x, out)
    assert [i.t for i in infos] == sorted(i.t for i in infos)


# ------------------------------------------------------------------ guidance
def test_guidance_interval_rule():
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    assert not guidance_active(f32(0.0))
    assert not guidance_active(f32(0.08))
    assert not guidance_active(f32(0.1))  # strict: float32(0.1) is not > 0.1 in float32
    assert guidance_active(f32(0.12))
    assert guidance_active(f32(0.96))
    assert not guidance_active(f32(1.0))


def test_guided_combines_uncond_and_cond():
    """Batch [uncond; cond] in one call; v = u + w (c - u), w = cfg inside (0.1, 1) else 1."""
    calls = []

    def denoiser(x, t, cond):
        calls.append((x.shape[0], t.clone(), cond))
        return cond.expand_as(x) + 0 * x  # v_u = uncond value, v_c = cond value

    u, c = torch.full((1, 2), 1.0), torch.full((1, 2), 3.0)
    fn = guided(denoiser, c, u, scale=3.0)
    x = torch.zeros(1, 2)
    assert torch.equal(fn(x, torch.tensor(0.0)), c)  # unguided: u + 1 * (c - u)
    assert torch.equal(fn(x, torch.tensor(0.5)), u + 3.0 * (c - u))
    assert calls[0][0] == 2 and calls[0][1].shape == (2,) and torch.equal(calls[0][2], torch.cat([u, c]))


def test_first_three_of_25_steps_are_unguided():
    guided_at = []

    def denoiser(x, t, cond):
        return cond.expand_as(x) + 0 * x

    fn = guided(denoiser, torch.ones(1, 1), torch.zeros(1, 1), scale=2.0)

    def spy(x, t):
        v = fn(x, t)
        guided_at.append(bool(v[0, 0] == 2.0))
        return v

    sample_adam2(spy, torch.zeros(1, 1), flow_timesteps(25))
    assert guided_at == [False] * 3 + [True] * 22


# ------------------------------------------------------------------ flow and noise
def test_flow_helpers():
    torch.manual_seed(1)
    x, eps = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x_t = interpolate(x, eps, t)
    assert torch.equal(x_t[0], eps[0]) and torch.equal(x_t[3], x[3])
    v = velocity_target(x, eps)
    assert torch.allclose(x0_from_velocity(x_t, v, t), x, atol=1e-6)
    assert flow_matching_loss(v, x, eps) == 0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = sample_time(1000, generator=g1), sample_time(1000, generator=g2)
    assert torch.equal(a, b) and 0 < a.min() and a.max() < 1 and abs(float(a.mean()) - 0.5) < 0.03


def test_initial_noise_is_the_official_draw():
    n = initial_noise((1, 3, 16, 8), seed=0)
    assert n.dtype == torch.float32
    assert torch.equal(n, torch.randn((1, 3, 16, 8), generator=torch.Generator("cpu").manual_seed(0)))
    assert torch.equal(n, initial_noise((1, 3, 16, 8), seed=0)) and not torch.equal(n, initial_noise((1, 3, 16, 8), seed=1))
