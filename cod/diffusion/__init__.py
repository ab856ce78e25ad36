"""Rectified flow and its samplers, kept apart from the networks (k-diffusion style)."""
from cod.diffusion.flow import (
    flow_matching_loss,
    interpolate,
    one_step_loss,
    sample_time,
    time_shift,
    velocity_target,
    x0_from_velocity,
)
from cod.diffusion.samplers import (
    GUIDANCE_INTERVAL,
    LAST_STEP,
    SAMPLERS,
    StepInfo,
    adams_coefficients,
    flow_timesteps,
    get_sampler,
    guidance_active,
    guided,
    initial_noise,
    sample_adam2,
    sample_euler,
)

__all__ = [
    "interpolate", "velocity_target", "x0_from_velocity", "time_shift", "sample_time", "flow_matching_loss", "one_step_loss",
    "flow_timesteps", "adams_coefficients", "sample_euler", "sample_adam2", "SAMPLERS", "get_sampler", "guided",
    "guidance_active", "initial_noise", "StepInfo", "LAST_STEP", "GUIDANCE_INTERVAL",
]
