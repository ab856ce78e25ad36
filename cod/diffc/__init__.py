"""DiffC on CoD: zero-shot variable-rate coding of the reverse diffusion chain (spec §11, issue 13).

Public API: :func:`encode` / :func:`decode` (:mod:`cod.diffc.chain`), :class:`DiffCConfig`
and the payload format (:mod:`cod.diffc.payload`). The layers, bottom up: ``rng`` (shared
randomness, identical on every device), ``bridge`` (flow <-> DDPM, P, Q, KL, DDIM),
``rcc`` (chunks and ordered random coding), ``coding`` (entropy coding with constriction),
``payload`` (settings and bytes), ``chain`` (the encoder and decoder loops). docs/diffc.md
describes the algorithm and the format.
"""
from cod.diffc.chain import CodedStep, DiffCResult, StepStats, code_step, decode, encode, encoder_steps, flow_model, null_condition, payload_bits_for_bpp, steps_for_timestep
from cod.diffc.payload import CPU_MAX_CHUNK_SIZE, ORIGINAL_MAX_CHUNK_SIZE, DiffCConfig, DiffCPayload

__all__ = [
    "encode", "decode", "encoder_steps", "code_step", "CodedStep", "payload_bits_for_bpp", "flow_model", "null_condition", "steps_for_timestep", "DiffCResult", "StepStats",
    "DiffCConfig", "DiffCPayload", "CPU_MAX_CHUNK_SIZE", "ORIGINAL_MAX_CHUNK_SIZE",
]
