"""Rectified flow and its samplers, kept apart from the networks (k-diffusion style).

The names are imported on first use (lazy_loader), so `cod.diffusion.settings` alone (what
`cod --help` and `cod info` read) needs no torch.
"""
from typing import TYPE_CHECKING

import lazy_loader

_FLOW = ["flow_matching_loss", "interpolate", "one_step_loss", "sample_time", "time_shift", "velocity_target", "x0_from_velocity"]
_SAMPLERS = [
    "GUIDANCE_INTERVAL", "LAST_STEP", "SAMPLERS", "StepInfo", "adams_coefficients", "flow_timesteps", "get_sampler",
    "guidance_active", "guided", "initial_noise", "sample_adam2", "sample_euler",
]
if TYPE_CHECKING:
    from cod.diffusion.flow import flow_matching_loss, interpolate, one_step_loss, sample_time, time_shift, velocity_target, x0_from_velocity
    from cod.diffusion.samplers import (
        GUIDANCE_INTERVAL, LAST_STEP, SAMPLERS, StepInfo, adams_coefficients, flow_timesteps, get_sampler, guidance_active,
        guided, initial_noise, sample_adam2, sample_euler,
    )

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={"flow": _FLOW, "samplers": _SAMPLERS})
