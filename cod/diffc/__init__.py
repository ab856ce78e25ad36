"""DiffC on CoD: zero-shot variable-rate coding of the reverse diffusion chain (spec §11, issue 13).

Public API: :func:`encode` / :func:`decode` (:mod:`cod.diffc.chain`), :class:`DiffCConfig`
and the payload format (:mod:`cod.diffc.payload`). The layers, bottom up: ``rng`` (shared
randomness, identical on every device), ``bridge`` (flow <-> DDPM, P, Q, KL, DDIM),
``rcc`` (chunks and ordered random coding), ``coding`` (entropy coding with constriction),
``payload`` (settings and bytes), ``chain`` (the encoder and decoder loops). docs/diffc.md
describes the algorithm and the format (``schedules``: the original's timesteps, torch-free).

The names are imported on first use (lazy_loader, as in :mod:`cod.diffusion`), so
``cod.diffc.payload`` alone (what `cod --help` and `cod info` read) needs no torch.
"""
from typing import TYPE_CHECKING

import lazy_loader

_CHAIN = ["CodedStep", "DiffCResult", "StepStats", "code_step", "decode", "encode", "encoder_steps", "flow_model", "null_condition", "payload_bits_for_bpp", "steps_for_timestep"]
_PAYLOAD = ["CPU_MAX_CHUNK_SIZE", "ORIGINAL_MAX_CHUNK_SIZE", "DiffCConfig", "DiffCPayload"]
if TYPE_CHECKING:
    from cod.diffc.chain import CodedStep, DiffCResult, StepStats, code_step, decode, encode, encoder_steps, flow_model, null_condition, payload_bits_for_bpp, steps_for_timestep
    from cod.diffc.payload import CPU_MAX_CHUNK_SIZE, ORIGINAL_MAX_CHUNK_SIZE, DiffCConfig, DiffCPayload

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submodules={"bridge", "coding", "payload", "rcc", "rng", "schedules"}, submod_attrs={"chain": _CHAIN, "payload": _PAYLOAD})
